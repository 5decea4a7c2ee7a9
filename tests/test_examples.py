import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from atlasgen.data import ImageFolder, input_view, load_rgb
from atlasgen import examples
from atlasgen.errors import AtlasError
from atlasgen.examples import (CHECKER, _RunningExtremes, crop_marked, dataset_pass, extract_patches)
from atlasgen.stream import resolve_workers
from atlasgen.hooks import forward_layers
from atlasgen.receptive import ReceptiveField, receptive_fields
from atlasgen.settings import ExamplesSettings, ImageSettings, Preprocess
from atlasgen.similarity import top_similar
from tests.toymodels import BranchNet, DetectorNet, PlainNet, seeded, write_dataset

CPU = torch.device("cpu")
SETTINGS = ExamplesSettings(top_k=5, bottom_k=4, patch_size=40, batch_size=8, workers=0)


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise")
    write_dataset(folder, count=40, size=32)
    return folder


def brute_force(model, dataset, layer, top_k, bottom_k):
    """Every activation of every readable image at once, then sort: the reference answer."""
    indices = np.array([i for i in range(len(dataset)) if dataset[i][0] is not None])
    with torch.no_grad():
        act = forward_layers(model, torch.stack([dataset[i][0] for i in indices]), [layer])[layer]
    act = act.double().numpy()
    n, c, h, w = act.shape
    flat = act.reshape(n, c, h * w)
    result = {}
    for kind, values, positions, k, sign in (("top", flat.max(2), flat.argmax(2), top_k, -1),
                                             ("bottom", flat.min(2), flat.argmin(2), bottom_k, 1)):
        order = [np.lexsort((indices, sign * values[:, ch]))[:k] for ch in range(c)]
        result[kind] = (np.stack([indices[o] for o in order]), np.stack([values[o, ch] for ch, o in enumerate(order)]),
                        np.stack([np.stack(np.divmod(positions[o, ch], w), -1) for ch, o in enumerate(order)]))
    per_channel = act.transpose(1, 0, 2, 3).reshape(c, -1)
    result["mean"], result["std"] = per_channel.mean(1), per_channel.std(1)
    result["corr"] = np.corrcoef(per_channel)
    result["max"] = per_channel.max(1)
    return result, len(indices)


@pytest.mark.parametrize("model_class, layers", [(PlainNet, ["conv1", "pool", "conv2"]),
                                                 (BranchNet, ["mix", "mix.b5", "res", "down"])])
def test_pass_equals_brute_force(noise_folder, model_class, layers):
    model = seeded(model_class())
    dataset = ImageFolder(noise_folder, Preprocess(input_size=32))
    results = dataset_pass(model, layers, dataset, SETTINGS, CPU)
    assert list(results) == layers
    for layer in layers:
        ex = results[layer]
        ref, readable = brute_force(model, dataset, layer, SETTINGS.top_k, SETTINGS.bottom_k)
        assert ex.images_seen == readable == 42
        for kind in ("top", "bottom"):
            index, value, pos = ref[kind]
            assert np.array_equal(getattr(ex, f"{kind}_index"), index), (layer, kind)
            assert np.allclose(getattr(ex, f"{kind}_value"), value, rtol=1e-5, atol=1e-6)
            assert np.array_equal(getattr(ex, f"{kind}_pos"), pos), (layer, kind)
        assert np.allclose(ex.mean, ref["mean"], rtol=1e-5, atol=1e-6)
        assert np.allclose(ex.std, ref["std"], rtol=1e-5, atol=1e-6)
        assert np.allclose(ex.max, ref["max"], rtol=1e-5, atol=1e-6)
        assert np.allclose(ex.correlation, ref["corr"], atol=1e-5)
        assert ex.skipped == ["broken.png"]


def test_relu_ties_go_to_the_lower_index_and_each_image_counts_once(tmp_path):
    # identical images: every value ties, so ranks follow dataset order
    for i in range(7):
        Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / f"{i}.png")
    dataset = ImageFolder(tmp_path, Preprocess(input_size=16))
    ex = dataset_pass(DetectorNet(), ["relu"], dataset, ExamplesSettings(top_k=3, bottom_k=3, batch_size=2,
                                                                         workers=0), CPU)["relu"]
    assert ex.top_index.tolist() == [[0, 1, 2]] * 3 and ex.bottom_index.tolist() == [[0, 1, 2]] * 3
    assert ex.top_value[0, 0] > 0 and ex.bottom_value[1, 0] == 0.0


def test_more_slots_than_images(tmp_path):
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 80, 10, 10)).save(tmp_path / f"{i}.png")
    dataset = ImageFolder(tmp_path, Preprocess(input_size=16))
    ex = dataset_pass(DetectorNet(), ["detect"], dataset, ExamplesSettings(top_k=10, bottom_k=10, workers=0),
                      CPU)["detect"]
    assert ex.top_index.shape == (3, 3) and ex.top_index[0].tolist() == [2, 1, 0]
    assert ex.bottom_index[0].tolist() == [0, 1, 2]


def test_running_state_does_not_grow():
    extremes = _RunningExtremes(k=4, largest=True)
    for start in range(0, 400, 16):
        extremes.update(torch.randn(16, 6, 9), torch.arange(start, start + 16))
    assert extremes.value.shape == extremes.index.shape == extremes.pos.shape == (6, 4)


def test_skipped_files_reported_with_worker_processes(noise_folder, caplog):
    dataset = ImageFolder(noise_folder, Preprocess(input_size=32))
    calls = []
    settings = ExamplesSettings(top_k=2, bottom_k=2, batch_size=16, workers=2)
    with caplog.at_level(logging.WARNING):
        results = dataset_pass(seeded(PlainNet()), ["conv1", "conv2"], dataset, settings, CPU, progress=calls.append)
    assert results["conv1"].skipped == results["conv2"].skipped == ["broken.png"]
    assert sum(calls) == len(dataset) == 43
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken.png" in warnings[0].getMessage()


def test_max_images_setting_limits_the_pass(noise_folder):
    dataset = ImageFolder(noise_folder, Preprocess(input_size=32))
    settings = ExamplesSettings(top_k=3, bottom_k=3, batch_size=4, workers=0, max_images=10)
    ex = dataset_pass(seeded(PlainNet()), ["conv1"], dataset, settings, CPU)["conv1"]
    assert ex.images_seen == 10 and ex.top_index.max() < 10


def test_workers_automatic(monkeypatch):
    monkeypatch.setattr("atlasgen.threads.cores", lambda: 1)
    assert resolve_workers(-1) == 0
    monkeypatch.setattr("atlasgen.threads.cores", lambda: 16)
    assert resolve_workers(-1) == 4 and resolve_workers(2) == 2


# --- patches ---------------------------------------------------------------------------


def background(rng, size):
    """Blue-green noise: not red anywhere, so the red detector stays at 0."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = rng.integers(0, 60, (size, size))
    img[..., 1:] = rng.integers(100, 256, (size, size, 2))
    return img


@pytest.fixture(scope="module")
def red_squares(tmp_path_factory):
    """64 px sources (input 32 px, so every source pixel is half an input pixel): image 3 has a
    10 px red square at (20, 30); image 5 a 6 px red square in its top-left corner."""
    folder = tmp_path_factory.mktemp("red")
    rng = np.random.default_rng(1)
    for i in range(12):
        img = background(rng, 64)
        if i == 3:
            img[20:30, 30:40] = (255, 0, 0)
        if i == 5:
            img[0:6, 0:6] = (255, 0, 0)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    dataset = ImageFolder(folder, Preprocess(input_size=32))
    model = DetectorNet()
    ex = dataset_pass(model, ["relu"], dataset, SETTINGS, CPU)["relu"]
    rf = receptive_fields(model, ["relu"], 32)["relu"]
    return dataset, model, ex, rf


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_top_patch_of_red_detector_is_the_red_square(red_squares):
    dataset, model, ex, rf = red_squares
    assert rf == ReceptiveField(size=(5, 5), stride=(1, 1), offset=(-2, -2), covers_input=False)
    assert ex.top_index[0, :2].tolist() == [3, 5]
    assert ex.top_pos[0, 0].tolist() == [12, 17]  # input square rows 10..14, cols 15..19
    assert top_similar(ex.correlation, 1)[0][0][0] == 2  # the copied channel
    patches = extract_patches(model, ex, rf, dataset, SETTINGS, ImageSettings(format="png"), CPU, channels=[0])
    best = patches.of(0, "top")[0]
    assert (best.source, best.box, best.position, best.patch) == ("03.png", (30, 20, 40, 30), (12, 17), "0/top-0.png")
    pixels = decode(patches.files[best.patch])
    assert pixels.shape == (40, 40, 3)
    assert (pixels[..., 0] > 230).all() and (pixels[..., 1:] < 25).all()  # red edge to edge, centred
    assert [e.rank for e in patches.of(0, "bottom")] == [0, 1, 2, 3]
    assert set(patches.files) == {e.patch for e in patches.examples}
    # what the build stores: boxes as arrays, file names as format strings
    assert patches.arrays["top_box"][0, 0].tolist() == [30, 20, 40, 30]
    assert (patches.arrays["top_box"][1:] == -1).all()  # channels not drawn
    assert patches.names == {"patch": "{channel}/{side}-{rank}.png"}
    assert patches.names["patch"].format(channel=0, side="top", rank=0) in patches.files


def test_clipped_part_of_a_box_is_marked_not_stretched(red_squares):
    dataset, model, ex, rf = red_squares
    patches = extract_patches(model, ex, rf, dataset, SETTINGS, ImageSettings(format="png"), CPU, channels=[0])
    corner = patches.of(0, "top")[1]
    assert corner.source == "05.png" and corner.position == (0, 0)
    assert corner.box == (-4, -4, 6, 6)  # input box (-2, -2, 3, 3) at scale 2
    pixels = decode(patches.files[corner.patch])
    # 4 of the 10 source pixels are outside: the first 16 of 40 patch pixels are checker
    outside = np.concatenate([pixels[:16].reshape(-1, 3), pixels[:, :16].reshape(-1, 3)])
    assert set(np.unique(outside)) == set(CHECKER)
    assert (pixels[16:, 16:, 0] > 230).all() and (pixels[16:, 16:, 1:] < 25).all()


def test_crop_marked_keeps_scale():
    img = Image.new("RGB", (20, 10), (0, 255, 0))
    patch = np.asarray(crop_marked(img, (-5, 10, 15, 30), 40)).astype(int)  # rows -5..15, cols 10..30
    # rows -5..0 and 10..15 and cols 20..30 are outside: 10 + 10 px of 40 rows, 20 px of 40 cols
    assert (patch[10:30, :20] == (0, 255, 0)).all()
    assert set(np.unique(patch[:10])) == set(CHECKER) and set(np.unique(patch[30:])) == set(CHECKER)
    assert set(np.unique(patch[10:30, 20:])) == set(CHECKER)


def test_field_covering_input_gives_whole_image_and_heat_map(red_squares):
    dataset, model, ex, _rf = red_squares
    covering = ReceptiveField(size=(40, 40), stride=(1, 1), offset=(-4, -4), covers_input=True)
    patches = extract_patches(model, ex, covering, dataset, SETTINGS, ImageSettings(format="png"), CPU, channels=[0])
    best = patches.of(0, "top")[0]
    assert best.heatmap == "0/top-0-heat.png" and best.box == (0, 0, 64, 64)
    assert patches.names["heatmap"].format(channel=0, side="top", rank=0) == best.heatmap
    view, heat = decode(patches.files[best.patch]), decode(patches.files[best.heatmap])
    seen = input_view(load_rgb(dataset.paths[3]), 32).resize((40, 40), Image.Resampling.BICUBIC)
    assert np.array_equal(view, np.asarray(seen))
    changed = np.abs(heat - view).sum(-1) > 30
    assert changed[15, 21]  # the square's centre (source 25, 35 -> patch 15.6, 21.9)
    assert not changed[:5].any() and not changed[:, :8].any()  # far from the square: untouched


def test_heat_maps_of_several_channels_are_each_channels_own(red_squares):
    """The maps of a batch's images come back in one transfer; each heat map must still be its
    own channel's (drawn alone, the same bytes)."""
    dataset, model, ex, _rf = red_squares
    covering = ReceptiveField(size=(40, 40), stride=(1, 1), offset=(-4, -4), covers_input=True)
    png = ImageSettings(format="png")
    together = extract_patches(model, ex, covering, dataset, SETTINGS, png, CPU, channels=[0, 1])
    for c in (0, 1):
        alone = extract_patches(model, ex, covering, dataset, SETTINGS, png, CPU, channels=[c])
        assert alone.files and all(together.files[name] == data for name, data in alone.files.items())
    assert together.files["0/top-0-heat.png"] != together.files["1/top-0-heat.png"]  # the channels differ


@pytest.mark.parametrize("fmt, magic", [("webp", b"RIFF"), ("jpeg", b"\xff\xd8"), ("png", b"\x89PNG")])
def test_patch_formats(red_squares, fmt, magic):
    dataset, model, ex, rf = red_squares
    patches = extract_patches(model, ex, rf, dataset, SETTINGS, ImageSettings(format=fmt, quality=80), CPU, channels=[1])
    ext = {"jpeg": "jpg"}.get(fmt, fmt)
    assert all(name.startswith("1/") and name.endswith(ext) for name in patches.files)
    assert all(data.startswith(magic) for data in patches.files.values())
    assert len(patches.files) == SETTINGS.top_k + SETTINGS.bottom_k


def test_top_patch_of_edge_detector_is_dark_left_bright_right(red_squares):
    dataset, model, ex, rf = red_squares
    patches = extract_patches(model, ex, rf, dataset, SETTINGS, ImageSettings(format="png"), CPU, channels=[1])
    grey = decode(patches.files[patches.of(1, "top")[0].patch]).mean(-1)
    # the detector weighs the field's 2 left columns negatively and its 2 right columns positively
    assert grey[:, 24:].mean() > grey[:, :16].mean() + 40


class SequenceNet(torch.nn.Module):
    """Its only layer outputs (batch, channels, length): not a feature map."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 4, 3)

    def forward(self, x):
        return self.conv(x.flatten(2))


def test_error_in_the_background_fold_reaches_the_caller_and_no_thread_is_left(noise_folder):
    dataset = ImageFolder(noise_folder, Preprocess(input_size=32))
    with pytest.raises(AtlasError, match="outputs a 3-d tensor"):
        dataset_pass(SequenceNet(), ["conv"], dataset, SETTINGS, CPU)
    dataset_pass(seeded(PlainNet()), ["conv1"], dataset, SETTINGS, CPU)
    assert not [t for t in threading.enumerate() if t.name.startswith("atlasgen-fold")]


def test_fold_runs_on_its_own_thread_and_its_thread_count_does_not_leak(noise_folder, monkeypatch):
    dataset = ImageFolder(noise_folder, Preprocess(input_size=32))
    seen = set()
    update = examples.ExtremesAccumulator.update

    def recording_update(self, act, indices):
        seen.add((threading.current_thread().name.split("_")[0], torch.get_num_threads()))
        update(self, act, indices)

    monkeypatch.setattr(examples.ExtremesAccumulator, "update", recording_update)
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # the fold thread then runs with one
    try:
        dataset_pass(seeded(PlainNet()), ["conv1"], dataset, SETTINGS, CPU)
        assert seen == {("atlasgen-fold", 1)}
        with ThreadPoolExecutor(1) as later:
            assert later.submit(torch.get_num_threads).result() == 4
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
