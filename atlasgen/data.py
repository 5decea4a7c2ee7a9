"""Image folder dataset: listing, content fingerprint, the model's preprocessing, and
skipping of unreadable files.

Geometry of the preprocessing (shared by `ImageFolder` and `source_box`, so a box in
model-input pixels maps back exactly): resize so the shorter side is `input_size`
(the longer side truncated like torchvision's `Resize`), then centre-crop a square of
`input_size` (offset rounded like torchvision's `CenterCrop`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from atlasgen.atomic import write_atomic
from atlasgen.digest import file_sha256
from atlasgen.errors import AtlasError
from atlasgen.settings import Preprocess

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
FINGERPRINT_VERSION = "atlasgen-dataset-1"
MEMO_FILE = "file-hashes.json"
# Errors PIL raises for unreadable, truncated or hostile files.
UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_images(folder: Path) -> list[Path]:
    """Every image below `folder` (recursive, suffix case-insensitive), sorted by posix relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AtlasError(f"dataset folder {str(folder)!r} does not exist or is not a folder; "
                         "set the dataset path in atlas.toml to a folder of images")
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _require_images(folder: Path, paths: list[Path]) -> None:
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise AtlasError(f"dataset folder {str(folder)!r} contains no images ({suffixes}); "
                         "add images or point the dataset path at another folder")


# --- fingerprint ---------------------------------------------------------------------


def _load_memo(memo_path: Path) -> dict[str, dict]:
    try:
        data = json.loads(memo_path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("file-hash memo %s is unreadable; rehashing the dataset", memo_path)
        return {}


def _save_memo(memo_path: Path, memo: dict[str, dict]) -> None:
    write_atomic(memo_path, json.dumps(memo, sort_keys=True))  # concurrent builds see the old or the new memo


def dataset_fingerprint(folder: Path, memo_dir: Path) -> str:
    """sha256 over the sorted (relative path, content sha256) of every image.

    Content hashes are memoized in `memo_dir/file-hashes.json` keyed by (absolute path,
    size, mtime_ns), so a rebuild rehashes only new or changed files; a `touch` rehashes
    the file but leaves the fingerprint unchanged.
    """
    folder = Path(folder)
    paths = list_images(folder)
    _require_images(folder, paths)
    memo_path = Path(memo_dir) / MEMO_FILE
    memo = _load_memo(memo_path)
    changed = False
    digest = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for path in paths:
        key = str(path.resolve())
        stat = path.stat()
        entry = memo.get(key)
        if not (isinstance(entry, dict) and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns):
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}
            memo[key] = entry
            changed = True
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{entry['sha256']}\n".encode())
    if changed:
        _save_memo(memo_path, memo)
    return digest.hexdigest()


# --- preprocessing geometry ----------------------------------------------------------


def resized_size(image_size: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(height, width) after resizing the shorter side of an (height, width) image to `input_size`."""
    height, width = image_size
    if height <= width:
        return input_size, max(input_size, int(input_size * width / height))
    return max(input_size, int(input_size * height / width)), input_size


def crop_origin(resized: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(top, left) of the centre crop in the resized image."""
    return int(round((resized[0] - input_size) / 2.0)), int(round((resized[1] - input_size) / 2.0))


def source_box(image_size: tuple[int, int], input_size: int,
               box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Map a (top, left, bottom, right) box in model-input pixels to source-image pixels.

    `image_size` is the source's (height, width). The result is (top, left, bottom, right),
    widened outward to whole pixels, and may extend past the image like the input box.
    """
    resized = resized_size(image_size, input_size)
    crop_top, crop_left = crop_origin(resized, input_size)
    scale_y = image_size[0] / resized[0]
    scale_x = image_size[1] / resized[1]
    top, left, bottom, right = box
    return (math.floor((top + crop_top) * scale_y + 1e-9), math.floor((left + crop_left) * scale_x + 1e-9),
            math.ceil((bottom + crop_top) * scale_y - 1e-9), math.ceil((right + crop_left) * scale_x - 1e-9))


def load_rgb(path: Path) -> Image.Image:
    """Decode fully as RGB: EXIF rotation applied, greyscale/palette expanded, alpha composited on white."""
    with Image.open(path) as img:
        img.load()  # decode now, so truncated files fail here and not later
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def input_view(img: Image.Image, input_size: int) -> Image.Image:
    """The square the model sees: shorter side resized to `input_size`, centre crop."""
    height, width = resized_size((img.height, img.width), input_size)
    resized = img.resize((width, height), Image.Resampling.BILINEAR)
    top, left = crop_origin((height, width), input_size)
    return resized.crop((left, top, left + input_size, top + input_size))


def to_tensor(img: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    """(3, S, S) float32, scaled to [0, 1] and normalized with the model's mean and std."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    std = np.asarray(preprocess.std, dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


# --- dataset -------------------------------------------------------------------------


class ImageFolder(torch.utils.data.Dataset):
    """Images below `folder` in sorted order; item = (normalized (3, S, S) tensor, index).

    An unreadable item is `(None, index)`; `collate_skipping` drops it and lists its index,
    so the main process learns which files failed even with DataLoader workers.
    """

    def __init__(self, folder: Path, preprocess: Preprocess, max_images: int = 0):
        self.folder = Path(folder)
        paths = list_images(self.folder)
        _require_images(self.folder, paths)
        self.paths = paths[:max_images] if max_images > 0 else paths
        self.names = [p.relative_to(self.folder).as_posix() for p in self.paths]
        self.preprocess = preprocess

    @property
    def relative_paths(self) -> list[str]:
        """Posix paths relative to the folder, in dataset-index order (same as `names`)."""
        return self.names

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int]:
        try:
            img = load_rgb(self.paths[index])
        except UNREADABLE_ERRORS:
            return None, index
        return to_tensor(input_view(img, self.preprocess.input_size), self.preprocess), index

    def load_source(self, index: int) -> Image.Image:
        """The source image as RGB; AtlasError if it became unreadable since the dataset pass."""
        try:
            return load_rgb(self.paths[index])
        except UNREADABLE_ERRORS as exc:
            raise AtlasError(f"dataset image {self.names[index]!r} can no longer be read ({exc}); "
                             "rebuild so the dataset pass sees the current files") from exc


def collate_skipping(batch: list[tuple[torch.Tensor | None, int]]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
    """(stacked tensors or None, their dataset indices, indices of unreadable items)."""
    good = [(t, i) for t, i in batch if t is not None]
    failed = [i for t, i in batch if t is None]
    images = torch.stack([t for t, _ in good]) if good else None
    return images, torch.tensor([i for _, i in good], dtype=torch.int64), failed
