"""An image file's pixel size from its first bytes, for the `width`/`height` of every `<img>`.

A whole atlas copies some 190,000 images; Pillow's `Image.open` probes its format plugins
for each one and costs ~10x this. The formats atlasgen writes (WebP, PNG, JPEG) and GIF are
read here; anything else, or a header this does not understand, goes to Pillow.
"""

from __future__ import annotations

import struct
from pathlib import Path

HEAD_BYTES = 65536  # a JPEG's frame header follows its EXIF/ICC segments; past this, ask Pillow
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    size = header_size(head)
    if size is None:
        from PIL import Image

        with Image.open(path) as img:  # reads the header only
            size = img.size
    return size


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a file's first bytes, or None when not understood."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])  # type: ignore[return-value]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])  # type: ignore[return-value]
    if head[:2] == b"\xff\xd8":
        return _jpeg(head)
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a" and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20:21] == b"\x2f" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        length = int.from_bytes(head[at + 2:at + 4], "big")
        if marker in _JPEG_FRAMES:
            if at + 9 > len(head):
                return None
            height, width = struct.unpack(">HH", head[at + 5:at + 9])
            return width, height
        if marker == 0xDA:  # start of scan without a frame header: not a JPEG this reads
            return None
        at += 2 + length
    return None
