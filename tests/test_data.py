import os

import numpy as np
import pytest
import torch
from PIL import Image

import atlasgen.data as data
from atlasgen.data import (ImageFolder, collate_skipping, dataset_fingerprint, list_images, source_box)
from atlasgen.errors import AtlasError
from atlasgen.settings import Preprocess
from tests.toymodels import write_dataset


def save(path, size=(8, 8), colour=(10, 20, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_list_images_is_recursive_case_insensitive_and_sorted(tmp_path):
    for name in ["b/z.JPG", "a.png", "b/a.WebP", "c/d/e.tiff", "notes.txt", "x.PNG.bak", "A.bmp"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["A.bmp", "a.png", "b/a.WebP", "b/z.JPG", "c/d/e.tiff"]


def test_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(AtlasError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere", Preprocess())
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="empty.*no images"):
        ImageFolder(tmp_path / "empty", Preprocess())


def test_fingerprint_changes_on_add_remove_modify_but_not_touch(tmp_path):
    folder, memo = tmp_path / "images", tmp_path / "memo"
    save(folder / "a.png")
    save(folder / "sub/b.png", colour=(1, 2, 3))
    first = dataset_fingerprint(folder, memo)
    assert dataset_fingerprint(folder, memo) == first

    stat = (folder / "a.png").stat()
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert dataset_fingerprint(folder, memo) == first

    save(folder / "c.png")
    added = dataset_fingerprint(folder, memo)
    assert added != first
    (folder / "c.png").unlink()
    assert dataset_fingerprint(folder, memo) == first

    save(folder / "a.png", colour=(11, 20, 30))
    assert dataset_fingerprint(folder, memo) not in (first, added)

    (folder / "a.png").rename(folder / "renamed.png")
    assert dataset_fingerprint(folder, memo) not in (first, added)


def test_fingerprint_memo_avoids_rehashing(tmp_path, monkeypatch):
    folder, memo = tmp_path / "images", tmp_path / "memo"
    for i in range(3):
        save(folder / f"{i}.png", colour=(i, i, i))
    dataset_fingerprint(folder, memo)
    hashed = []
    real = data.file_sha256
    monkeypatch.setattr(data, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    dataset_fingerprint(folder, memo)
    assert hashed == []
    save(folder / "1.png", colour=(9, 9, 9))
    dataset_fingerprint(folder, memo)
    assert hashed == ["1.png"]


def test_corrupt_memo_is_ignored(tmp_path):
    folder, memo = tmp_path / "images", tmp_path / "memo"
    save(folder / "a.png")
    first = dataset_fingerprint(folder, memo)
    (memo / data.MEMO_FILE).write_text("{not json")
    assert dataset_fingerprint(folder, memo) == first


def test_items_are_normalized_crops_and_modes_become_rgb(tmp_path):
    folder = tmp_path / "images"
    names = write_dataset(folder, count=5, size=16)
    pre = Preprocess(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dataset = ImageFolder(folder, pre)
    assert dataset.names == sorted(names + ["broken.png"])
    grey_tensor, index = dataset[dataset.names.index("grey.png")]
    assert grey_tensor.shape == (3, 16, 16) and index == dataset.names.index("grey.png")
    assert torch.equal(grey_tensor[0], grey_tensor[1]) and torch.equal(grey_tensor[1], grey_tensor[2])
    rgba_tensor, _ = dataset[dataset.names.index("rgba.png")]
    assert rgba_tensor.shape == (3, 16, 16)
    # the 24 px wide image is centre-cropped: columns 4..19 of the source
    wide = dataset.names.index("b/img000.png")
    source = np.asarray(Image.open(folder / "b/img000.png"), dtype=np.float32) / 255
    expected = (source[:, 4:20] - 0.5) / 0.25
    assert np.allclose(dataset[wide][0].numpy().transpose(1, 2, 0), expected, atol=1e-5)
    assert dataset[dataset.names.index("broken.png")] == (None, dataset.names.index("broken.png"))


def test_max_images_keeps_the_first_in_order(tmp_path):
    write_dataset(tmp_path, count=6, size=8)
    dataset = ImageFolder(tmp_path, Preprocess(input_size=8), max_images=3)
    assert len(dataset) == 3 and dataset.names == sorted(dataset.names)


def test_collate_drops_failures_and_reports_them():
    batch = [(torch.zeros(3, 2, 2), 4), (None, 5), (torch.ones(3, 2, 2), 6)]
    images, indices, failed = collate_skipping(batch)
    assert images.shape == (2, 3, 2, 2) and indices.tolist() == [4, 6] and failed == [5]
    images, indices, failed = collate_skipping([(None, 1)])
    assert images is None and indices.numel() == 0 and failed == [1]


@pytest.mark.parametrize("image_size", [(32, 32), (64, 64), (48, 80), (90, 30), (33, 47)])
def test_source_box_inverts_resize_and_centre_crop(image_size):
    input_size = 16
    height, width = image_size
    # each edge of the mapped box is the source pixel holding the input edge, widened outward
    resized = data.resized_size(image_size, input_size)
    top, left = data.crop_origin(resized, input_size)
    scale_y, scale_x = height / resized[0], width / resized[1]
    box = source_box(image_size, input_size, (2, 3, 10, 12))
    assert box[0] <= (2 + top) * scale_y < box[0] + 1
    assert box[1] <= (3 + left) * scale_x < box[1] + 1
    assert box[2] - 1 < (10 + top) * scale_y <= box[2]
    assert box[3] - 1 < (12 + left) * scale_x <= box[3]
    whole = source_box(image_size, input_size, (0, 0, input_size, input_size))
    # the whole input is the centre of the image, input_size resized pixels on each side
    assert 0 <= (whole[2] - whole[0]) - input_size * scale_y < 2
    assert 0 <= (whole[3] - whole[1]) - input_size * scale_x < 2
    assert abs((whole[1] + whole[3]) - width) <= 2 and abs((whole[0] + whole[2]) - height) <= 2
    assert whole[0] >= 0 and whole[1] >= 0 and whole[2] <= height and whole[3] <= width


def test_source_box_exact_for_integer_scales():
    assert source_box((64, 64), 32, (10, 15, 15, 20)) == (20, 30, 30, 40)
    # 64 x 96 -> 32 x 48, crop columns 8..40: input column 0 is source column 16
    assert source_box((64, 96), 32, (-2, 0, 3, 5)) == (-4, 16, 6, 26)


def test_palette_with_transparency_and_exif_rotation(tmp_path):
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1  # the blue entry is transparent: shown on white
    palette.save(tmp_path / "p.gif", transparency=1)
    img = data.load_rgb(tmp_path / "p.gif")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (6, 2), (0, 200, 0)).save(tmp_path / "rot.jpg", exif=exif)
    assert data.load_rgb(tmp_path / "rot.jpg").size == (2, 6)
