"""The lecture's experiments (stages filters, activation_maps, occlusion), each checked for its
defining property on a tiny hand-built network: a first-layer filter image is its weights up
to the stated scaling, a red-square detector's activation map and occlusion map peak on the
square; then their settings' messages and one build of a slice of the demo."""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from atlasgen.config import parse_config
from atlasgen.data import ImageFolder
from atlasgen.errors import ConfigError
from atlasgen.examples import dataset_pass
from atlasgen.settings import ExamplesSettings, FiltersSettings, Preprocess
from atlasgen.stages import get
from atlasgen.stages._topk import example_slots
from atlasgen.stages.activation_maps import activation_maps, overlay
from atlasgen.stages.filters import filter_pixels, first_layer_filters
from atlasgen.stages.occlusion import drawn, occlusion, offsets
from tests.toymodels import DetectorNet, seeded

CPU = torch.device("cpu")
SETTINGS = ExamplesSettings(top_k=3, bottom_k=0, batch_size=8, workers=0)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


class Stored:
    """The part of `stages.Run` a computing stage uses: it keeps what is stored."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []

    def store(self, task, files, arrays=None, meta=None):
        self.entries.append((task, files, arrays, meta))


def computed_filters(model: nn.Module, layers: list[str], pixels: int = 12) -> tuple[dict, dict, dict]:
    """(files, arrays, meta) the filters stage stores for `model`."""
    plan = SimpleNamespace(config=SimpleNamespace(stages=SimpleNamespace(filters=FiltersSettings(pixels=pixels))),
                           loaded=SimpleNamespace(module=model), layers=[SimpleNamespace(name=n) for n in layers],
                           input_size=16)
    run = Stored()
    get("filters").compute(run, plan, ["task"])
    _task, files, arrays, meta = run.entries[0]
    return files, arrays, meta["layers"]


# --- first-layer filters -------------------------------------------------------------------


def test_filter_image_equals_the_weights_up_to_the_stated_scaling():
    model = seeded(nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(),
                                             conv2=nn.Conv2d(4, 2, 3, padding=1))))
    files, arrays, meta = computed_filters(model, ["conv", "relu", "conv2"])
    assert set(meta) == {"conv", "relu"}  # conv2 does not see the input
    assert meta["conv"]["applies"] == "the convolution" and meta["relu"]["applies"] == "the convolution, then ReLU"
    info = meta["conv"]
    assert info["factor"] == 4 and info["kernel"] == [3, 3] and not info["folded"]
    weights = model.conv.weight.detach().numpy()
    shared = np.abs(weights).max()
    assert info["shared_max"] == pytest.approx(shared)
    for c, w in enumerate(weights):
        own = decode(files[f"{info['index']}/{c}.png"])
        assert own.shape == (12, 12, 3)
        # nearest neighbour: every 4 x 4 block is one weight
        assert (own == own[::4, ::4].repeat(4, axis=0).repeat(4, axis=1)).all()
        expected = (w / np.abs(w).max() * 127.5 + 127.5).transpose(1, 2, 0)  # (kh, kw, RGB)
        assert np.abs(own[::4, ::4] - expected).max() <= 0.5
        assert own[::4, ::4].max() == 255 or own[::4, ::4].min() == 0  # the largest |w| reaches an end
        layer_scale = decode(files[f"{info['index']}/{c}-shared.png"])[::4, ::4]
        assert np.abs(layer_scale - (w / shared * 127.5 + 127.5).transpose(1, 2, 0)).max() <= 0.5
    np.testing.assert_array_equal(arrays[f"weights_{info['index']}"], weights)


def test_batch_norm_in_the_layer_is_folded_into_the_filter():
    model = nn.Sequential(OrderedDict(block=nn.Sequential(nn.Conv2d(3, 2, 3, bias=False), nn.BatchNorm2d(2))))
    seeded(model)
    bn = model.block[1]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, -0.5]))  # a negative scale turns the filter's colours over
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    files, arrays, meta = computed_filters(model, ["block"])
    assert meta["block"]["conv"] == "block.0"
    assert meta["block"]["applies"] == "the convolution, then batch norm" and meta["block"]["folded"]
    w = model.block[0].weight.detach().numpy()
    scale = np.array([2.0, -0.5]) / np.sqrt(np.array([4.0, 0.25]) + bn.eps)
    np.testing.assert_allclose(arrays["weights_0"], w * scale[:, None, None, None], rtol=1e-6)
    flipped = decode(files["0/1.png"])[::4, ::4]
    assert np.abs(flipped - (-w[1] / np.abs(w[1]).max() * 127.5 + 127.5).transpose(1, 2, 0)).max() <= 0.5


class BasicConv(nn.Module):
    """GoogLeNet's BasicConv2d: conv and batch norm modules, the ReLU applied in code, in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu_(self.bn(self.conv(x)))


def test_what_the_layer_applies_after_the_conv_is_measured():
    model = seeded(nn.Sequential(OrderedDict(conv1=BasicConv(), bn=nn.BatchNorm2d(4), relu=nn.ReLU(inplace=True))))
    found = first_layer_filters(model, ["conv1", "conv1.conv", "conv1.bn", "bn", "relu"], 16)
    assert {layer: info["applies"] for layer, info in found.items()} == {
        "conv1": "the convolution, then batch norm, then ReLU",
        "conv1.conv": "the convolution",
        "conv1.bn": "the convolution, then batch norm",  # measured before the in-place ReLU
    }  # bn and relu follow conv1's ReLU, not the convolution: not first-layer filters


def test_a_block_with_a_second_conv_is_not_a_first_layer():
    model = seeded(nn.Sequential(OrderedDict(stem=nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))))
    assert first_layer_filters(model, ["stem", "stem.0", "stem.1"], 16).keys() == {"stem.0", "stem.1"}


def test_filter_pixels_of_a_zero_filter_are_grey():
    assert (filter_pixels(np.zeros((3, 2, 2)), 0.0, 2) == 128).all()


# --- a red-square detector and its examples -------------------------------------------------


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blue-green noise: not red anywhere."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = rng.integers(0, 60, (size, size))
    img[..., 1:] = rng.integers(100, 256, (size, size, 2))
    return img


SQUARE = (10, 14, 16, 20)  # (top, left, bottom, right) of the red square, input pixels (= source pixels)


@pytest.fixture(scope="module")
def red_square(tmp_path_factory) -> ImageFolder:
    """32 px images of blue-green noise; image 2 has a 6 px red square at SQUARE."""
    folder = tmp_path_factory.mktemp("red")
    rng = np.random.default_rng(3)
    for i in range(6):
        img = background(rng, 32)
        if i == 2:
            top, left, bottom, right = SQUARE
            img[top:bottom, left:right] = (255, 0, 0)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return ImageFolder(folder, Preprocess(input_size=32))


class RedBlobNet(nn.Module):
    """Layer `pool`: the redness (R - (G + B) / 2 of raw RGB, ReLU'd) averaged over 12 x 12
    windows at stride 4, so a unit's receptive field (its patch) is 12 px and the square fits in it."""

    def __init__(self, preprocess: Preprocess = Preprocess()):
        super().__init__()
        self.detect = DetectorNet(preprocess)
        self.pool = nn.Conv2d(1, 1, 12, stride=4, bias=False)
        with torch.no_grad():
            self.pool.weight.fill_(1 / 144)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.detect(x)[:, :1])


def test_activation_map_of_a_red_square_detector_peaks_on_the_square(red_square):
    model = DetectorNet()
    arrays = dataset_pass(model, ["relu"], red_square, SETTINGS, CPU)["relu"].arrays()
    slots = example_slots(arrays, [0], 2)
    assert slots[0] == (0, 0, 2)
    maps = activation_maps(model, "relu", red_square, slots, CPU)
    amap = maps[0, 0]
    assert amap.shape == (32, 32)  # the whole image, not a patch
    top, left, bottom, right = SQUARE
    row, col = np.unravel_index(amap.argmax(), amap.shape)
    assert top <= row < bottom and left <= col < right
    assert amap[top + 2:bottom - 2, left + 2:right - 2].min() > 0 and amap[:5].max() == 0  # zero away from the square
    view = Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 40)
    image = np.asarray(overlay(view, amap, float(arrays["top_value"][0, 0]), None)).astype(int)
    orange = image[..., 0] - image[..., 2]
    row, col = np.unravel_index(orange.argmax(), orange.shape)
    assert top <= row < bottom and left <= col < right


def test_offsets_end_flush_with_the_patch():
    assert offsets(4, 12, 3, 2) == [4, 6, 8, 10, 12, 13]
    assert offsets(0, 16, 4, 2) == [0, 2, 4, 6, 8, 10, 12]
    assert offsets(0, 3, 5, 1) == [0]


def test_occlusion_map_of_a_red_square_detector_peaks_on_the_square(red_square):
    model = RedBlobNet()
    arrays = dataset_pass(model, ["pool"], red_square, SETTINGS, CPU)["pool"].arrays()
    assert arrays["top_index"][0, 0] == 2
    position = tuple(int(v) for v in arrays["top_pos"][0, 0])
    assert position == (2, 3)  # the 12 x 12 window holding the square and the detector's 2 px fringe
    box = (8, 12, 20, 24)  # its receptive field: rows 8..20, cols 12..24
    x = red_square[2][0]
    result = occlusion(model, "pool", x, 0, position, box, 0.25, 0.125, CPU, batch_size=7)
    assert result["side"] == (3, 3) and result["step"] == (2, 2)  # 1/4 and 1/8 of 12 px, rounded
    assert result["base"] == pytest.approx(float(arrays["top_value"][0, 0]), rel=1e-5)
    assert result["drops"].shape == (len(result["tops"]), len(result["lefts"])) == (6, 6)
    drop_map = result["map"]
    assert drop_map.shape == (12, 12)
    top, left, bottom, right = SQUARE
    inside = drop_map[top - box[0]:bottom - box[0], left - box[1]:right - box[1]]
    row, col = np.unravel_index(drop_map.argmax(), drop_map.shape)
    assert top <= row + box[0] < bottom and left <= col + box[1] < right
    # the far corner only reaches the square's edge through the detector's 5 x 5 window
    assert inside.min() > 0 and drop_map[:2, :2].max() < 0.25 * drop_map.max()
    patch = Image.fromarray(np.full((48, 48, 3), 128, np.uint8))
    image = np.asarray(drawn(patch, drop_map)).astype(int)
    red = image[..., 0] - image[..., 2]
    row, col = np.unravel_index(red.argmax(), red.shape)
    assert top <= row // 4 + box[0] < bottom and left <= col // 4 + box[1] < right


# --- settings ---------------------------------------------------------------------------------


def config(text: str, tmp_path: Path):
    import tomllib

    return parse_config(tomllib.loads(text + '\n[[models]]\nname = "demo"\narch = "demo"\n'), tmp_path / "atlas.toml")


def test_bad_settings_name_their_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config('[occlusion]\nsquare = 2.0\nlayers = "conv1"\n[activation_maps]\ntop_k = 0\nchannel = "0:2"', tmp_path)
    text = str(caught.value)
    assert "occlusion.square: must be at most 1.0, got 2.0" in text
    assert "occlusion.layers: expected a list, got a string 'conv1'" in text
    assert "activation_maps.top_k: must be at least 1, got 0" in text
    assert "activation_maps.channel: unknown key; did you mean 'channels'?" in text


def test_a_stride_past_the_square_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config("[occlusion]\nstride = 0.5", tmp_path)
    assert caught.value.problems == [("occlusion.stride", "0.5 is larger than occlusion.square (0.25): parts of each "
                                      "patch would never be covered; make it at most the square")]


def test_a_layer_pattern_that_matches_nothing_is_named(tmp_path):
    from atlasgen.plan import KeyBasis, LayerInfo
    from atlasgen.settings import ImageSettings

    model = config('[activation_maps]\nlayers = ["conv*", "mixed5b"]', tmp_path).models[0]
    layers = (LayerInfo("conv1", 16, 64, 64), LayerInfo("conv2", 32, 32, 32))
    basis = KeyBasis(model, "w", Preprocess(), "f", ImageSettings(), layers)
    with pytest.raises(ConfigError) as caught:
        get("activation_maps").tasks(basis)
    assert caught.value.problems == [("activation_maps.layers[1]", "'mixed5b' matches none of the layers of model 'demo' "
                                      "(conv1, conv2); give one of them or a glob pattern over them")]
    model = config('[occlusion]\nlayers = ["conv2"]\nchannels = "4:6"\ntop_k = 50', tmp_path).models[0]
    tasks = get("occlusion").tasks(KeyBasis(model, "w", Preprocess(), "f", ImageSettings(), layers))
    assert [(t.layer, json.loads(t.inputs)["channels"], json.loads(t.inputs)["top_k"]) for t in tasks] == [("conv2", [4, 5], 10)]
    plain = KeyBasis(config("", tmp_path).models[0], "w", Preprocess(), "f", ImageSettings(), layers)
    assert get("occlusion").tasks(plain) == [] and get("activation_maps").tasks(plain) == []  # off by default
    assert len(get("filters").tasks(plain)) == 1
    hidden = KeyBasis(config("[filters]\nshow = false", tmp_path).models[0], "w", Preprocess(), "f", ImageSettings(), layers)
    assert get("filters").tasks(hidden) == []


# --- a build ---------------------------------------------------------------------------------

BUILD = """
[build]
device = "cpu"
[visualize]
objectives = ["channel"]
size = 32
steps = 2
[examples]
top_k = 3
bottom_k = 1
patch_size = 32
[activation_maps]
layers = ["conv3"]
channels = "0:1"
top_k = 2
[occlusion]
layers = ["conv*"]
channels = "1:2"
top_k = 2
square = {square}
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1", "conv3"]
channels = "0:2"
dataset = "images"
"""


@pytest.mark.slow
def test_a_build_shows_each_experiment_where_it_is_turned_on(tmp_path):
    from atlasgen.build import BuildOptions, build
    from atlasgen.config import load_config
    from atlasgen.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "images", count=24, seed=5)
    path = tmp_path / "atlas.toml"
    path.write_text(BUILD.format(square=0.25))
    first = build(load_config(path), BuildOptions(progress=False))
    assert {k: first.computed[k] for k in ("filters", "activation_maps", "occlusion")} == {
        "filters": 1, "activation_maps": 1, "occlusion": 2}
    site = tmp_path / "site" / "demo"
    conv1 = (site / "conv1/0/index.html").read_text()
    assert "Filter weights" in conv1 and "<code>conv1.0</code>" in conv1 and "then batch norm" in conv1
    assert decode((site / "conv1/0/filter.png").read_bytes()).shape == (48, 48, 3)  # 3 x 3 at x16
    layer = (site / "conv1/index.html").read_text()
    assert all(f'src="filter-{c}.png"' in layer for c in range(2)) and (site / "conv1/filter-1.png").is_file()
    twin = json.loads((site / "conv1/index.json").read_text())
    assert twin["stage_images"]["filter-0.png"] == "filter-0.png" and twin["units"][0]["stage_images"] == {"filter.png": "0/filter.png"}
    assert "Filter weights" not in (site / "conv3/0/index.html").read_text()  # conv3 does not see the input
    maps = (site / "conv3/0/index.html").read_text()
    assert "<details" in maps and 'src="actmap-0.webp"' in maps and 'src="actmap-1.webp"' in maps
    assert "Activation maps" not in (site / "conv3/1/index.html").read_text()
    for unit in ("conv1/1", "conv3/1"):
        page = (site / unit / "index.html").read_text()
        assert 'src="occlusion-0.webp"' in page and 'src="top-0.webp"' in page.split('id="occlusion-heading"')[1]
        assert (site / unit / "occlusion-1.webp").is_file()
    assert "Occlusion" not in (site / "conv3/0/index.html").read_text()

    again = build(load_config(path), BuildOptions(progress=False))
    assert sum(again.computed.values()) == 0
    path.write_text(BUILD.format(square=0.5))
    changed = build(load_config(path), BuildOptions(progress=False))
    assert changed.computed == {"occlusion": 2}
