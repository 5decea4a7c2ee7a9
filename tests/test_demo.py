"""The built-in demo: generated dataset, DemoNet, shipped weights, training."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from atlasgen.demo import (
    CLASSES,
    DEMO_INPUT_SIZE,
    DEMO_MEAN,
    DEMO_STD,
    WEIGHTS_PATH,
    build_demo_model,
    generate_arrays,
    generate_image,
    write_demo_dataset,
)
from atlasgen.demo.data import MARKER_NAME, _marker, _move_into_place
from atlasgen.demo.net import load_weights, seeded_demo_net
from atlasgen.demo.train import TEST_DATA_OFFSET, TRAIN_DATA_OFFSET, evaluate, to_input, train
from atlasgen.errors import AtlasError

# Far from the training and test seeds of `train(seed=0)`, so these images are new to the weights.
FRESH_SEED = 987_654


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    images, labels = generate_arrays(40, seed=5)
    again_images, again_labels = generate_arrays(40, seed=5)
    other_images, _ = generate_arrays(40, seed=6)
    assert images.dtype == np.uint8 and images.shape == (40, 64, 64, 3)
    assert labels.dtype == np.int64 and labels.shape == (40,)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    assert not np.array_equal(images, other_images)


def test_every_class_occurs_balanced():
    _, labels = generate_arrays(10 * len(CLASSES), seed=1)
    assert np.bincount(labels, minlength=len(CLASSES)).tolist() == [10] * len(CLASSES)


def test_images_vary_within_a_class_and_use_the_range():
    images, labels = generate_arrays(60, seed=2)
    first_class = images[labels == 0]
    # No two images of one class are the same picture, and pixel values span most of 0..255.
    assert len({image.tobytes() for image in first_class}) == len(first_class)
    assert images.min() < 30 and images.max() > 225


def test_generate_image_is_deterministic_for_a_seeded_generator():
    image, label = generate_image(np.random.default_rng(3), size=32)
    again, again_label = generate_image(np.random.default_rng(3), size=32)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert 0 <= label < len(CLASSES) and label == again_label
    assert image.tobytes() == again.tobytes()


def test_bad_arguments_are_user_errors():
    with pytest.raises(AtlasError, match="size"):
        generate_arrays(2, seed=0, size=4)
    with pytest.raises(AtlasError, match="count"):
        generate_arrays(-1, seed=0)
    with pytest.raises(AtlasError, match="seed"):
        generate_arrays(2, seed=-1)


def test_written_dataset_is_byte_identical_across_runs(tmp_path):
    first = write_demo_dataset(tmp_path / "a", count=30, seed=7, size=32)
    second = write_demo_dataset(tmp_path / "b", count=30, seed=7, size=32)
    other = write_demo_dataset(tmp_path / "c", count=30, seed=8, size=32)
    digest = tree_digest(first)
    pngs = [name for name in digest if name.endswith(".png")]
    assert len(pngs) == 30
    assert {name.split("/")[0] for name in pngs} == set(CLASSES)
    assert digest == tree_digest(second)
    assert digest != tree_digest(other)


def test_written_images_are_the_generated_arrays(tmp_path):
    from PIL import Image

    folder = write_demo_dataset(tmp_path / "demo", count=12, seed=9, size=32)
    images, labels = generate_arrays(12, seed=9, size=32)
    for index in (0, 5, 11):
        path = folder / CLASSES[labels[index]] / f"{index:05d}.png"
        assert np.array_equal(np.asarray(Image.open(path)), images[index])


def test_complete_dataset_is_not_rewritten(tmp_path):
    folder = write_demo_dataset(tmp_path / "demo", count=20, seed=1, size=32)
    files = sorted(p for p in folder.rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in files]
    (folder / "untouched.txt").write_text("kept")
    assert write_demo_dataset(tmp_path / "demo", count=20, seed=1, size=32) == folder
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert (folder / "untouched.txt").read_text() == "kept"
    # No temporary siblings are left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_dataset_with_other_arguments_is_replaced(tmp_path):
    write_demo_dataset(tmp_path / "demo", count=20, seed=1, size=32)
    folder = write_demo_dataset(tmp_path / "demo", count=10, seed=2, size=32)
    assert len(list(folder.rglob("*.png"))) == 10
    assert '"seed": 2' in (folder / MARKER_NAME).read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_incomplete_or_foreign_folder_is_never_returned_as_complete(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(AtlasError, match="not an atlasgen demo dataset"):
        write_demo_dataset(foreign, count=10, seed=1, size=32)
    assert (foreign / "holiday.jpg").read_bytes() == b"not ours"
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]

    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(AtlasError, match="is a file"):
        write_demo_dataset(a_file, count=10, seed=1, size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.png", "photos"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list(write_demo_dataset(empty, count=10, seed=1, size=32).rglob("*.png"))) == 10


def test_demo_net_channel_counts_and_layer_names():
    model = build_demo_model(pretrained=False)
    names = [name for name, _ in model.named_children()]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "conv4", "relu4", "head"]
    widths = [getattr(model, name)[0].out_channels for name in ("conv1", "conv2", "conv3", "conv4")]
    assert widths == [16, 32, 64, 128]
    assert 150 <= sum(widths) <= 300
    assert not model.training
    logits = model(torch.zeros(2, 3, DEMO_INPUT_SIZE, DEMO_INPUT_SIZE))
    assert logits.shape == (2, len(CLASSES))


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_demo_model(pretrained=False).state_dict()
    assert torch.equal(torch.rand(3), expected)
    second = build_demo_model(pretrained=False).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_mean_and_std_match_the_generated_data():
    images, _ = generate_arrays(300, seed=FRESH_SEED)
    pixels = images.reshape(-1, 3) / 255.0
    assert np.allclose(pixels.mean(0), DEMO_MEAN, atol=0.03)
    assert np.allclose(pixels.std(0), DEMO_STD, atol=0.03)


def test_shipped_weights_are_small_float32_and_load():
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size < 5_000_000
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    pretrained = build_demo_model().state_dict()
    assert all(torch.equal(pretrained[k], state[k]) for k in state)


def test_bad_weights_file_is_a_user_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    for path in (garbage, other, tmp_path / "missing.pt"):
        with pytest.raises(AtlasError, match="does not hold DemoNet weights"):
            load_weights(seeded_demo_net(), path)


def test_shipped_weights_classify_fresh_images():
    assert FRESH_SEED not in (TRAIN_DATA_OFFSET, TEST_DATA_OFFSET)  # the shipped weights used seed 0
    images, labels = generate_arrays(500, seed=FRESH_SEED)
    accuracy = evaluate(build_demo_model(), images, labels)
    assert accuracy >= 0.8


def test_to_input_normalizes_channels_first():
    images = np.full((1, 4, 4, 3), 255, dtype=np.uint8)
    x = to_input(images)
    assert x.shape == (1, 3, 4, 4)
    assert torch.allclose(x[0, :, 0, 0], (1 - torch.tensor(DEMO_MEAN)) / torch.tensor(DEMO_STD))


def test_short_training_lowers_the_loss_and_writes_weights(tmp_path):
    output = tmp_path / "nested" / "weights.pt"
    messages: list[str] = []
    result = train(output, seed=3, epochs=1, train_images=256, test_images=40, log=messages.append)
    assert result["loss_end"] < result["loss_start"]
    assert 0.0 <= result["accuracy"] <= 1.0
    assert (result["train_images"], result["test_images"], result["epochs"]) == (256, 40, 1)
    assert result["seconds"] > 0 and messages
    state = torch.load(output, map_location="cpu", weights_only=True)
    assert state.keys() == build_demo_model(pretrained=False).state_dict().keys()
    assert [p.name for p in output.parent.iterdir()] == ["weights.pt"]


def test_training_is_reproducible_for_a_seed(tmp_path):
    first = train(tmp_path / "a.pt", seed=4, epochs=1, train_images=128, test_images=20, log=lambda _: None)
    second = train(tmp_path / "b.pt", seed=4, epochs=1, train_images=128, test_images=20, log=lambda _: None)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["accuracy"] == second["accuracy"]


def test_training_rejects_bad_arguments_before_working(tmp_path):
    with pytest.raises(AtlasError, match="at least 1"):
        train(tmp_path / "w.pt", epochs=0)
    with pytest.raises(AtlasError, match="seed"):
        train(tmp_path / "w.pt", seed=-2)
    with pytest.raises(AtlasError, match="is a folder"):
        train(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["delete", "truncate", "add"])
def test_damaged_dataset_is_generated_again(tmp_path, damage, caplog):
    folder = write_demo_dataset(tmp_path / "demo", count=12, seed=3, size=32)
    first = sorted(folder.rglob("*.png"))
    originals = {p: p.read_bytes() for p in first}
    if damage == "delete":
        first[4].unlink()
    elif damage == "truncate":
        first[4].write_bytes(originals[first[4]][:40])
    else:
        (folder / CLASSES[0] / "99999.png").write_bytes(originals[first[0]])
    assert write_demo_dataset(tmp_path / "demo", count=12, seed=3, size=32) == folder
    assert "is damaged" in caplog.text
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*.png"))} == originals
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_a_second_writer_keeps_the_whole_dataset_in_place(tmp_path):
    """The race of two builds on a fresh cache: the late writer must not swap out a complete
    folder that the first one is already reading."""
    folder = write_demo_dataset(tmp_path / "demo", count=10, seed=2, size=32)
    inode = folder.stat().st_ino
    staging = tmp_path / ".demo.tmp-late"
    late = write_demo_dataset(tmp_path / "late", count=10, seed=2, size=32)
    os.rename(late, staging)
    _move_into_place(staging, folder, _marker(10, 2, 32))
    assert folder.stat().st_ino == inode  # kept, not replaced
