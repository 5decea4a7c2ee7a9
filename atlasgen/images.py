"""Encode image arrays as files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}  # format -> file extension


def encode(image: Image.Image | np.ndarray, fmt: str = "png", quality: int = 90, full_colour: bool = False) -> bytes:
    """A PIL image or uint8 (H, W, 3) array -> PNG, JPEG or WebP bytes; PNG is lossless and deterministic.
    `full_colour` keeps JPEG's colour at every pixel (4:4:4) instead of one per 2x2 block."""
    buffer = io.BytesIO()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0 if full_colour else -1)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buffer.getvalue()
