"""Procedurally generated images for the built-in demo: deterministic from a seed, no download.

The class is the pattern family (shape, stripes, checker, ...) while colour, position, size and
orientation vary within a class, so a small CNN has to learn colour-agnostic edge, curve, texture
and blob detectors next to plain colour detectors. Every image is drawn with signed distances
(anti-aliased edges) over a shaded background, plus pixel noise."""

from __future__ import annotations

import colorsys
import errno
import functools
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from atlasgen.atomic import raise_if_full, temporary_name
from atlasgen.digest import file_sha256
from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)

MARKER_NAME = ".atlasgen-demo.json"
# Bump when the drawing code changes, so a dataset written by an older version is rewritten.
GENERATOR_VERSION = 1
MIN_SIZE = 16

Canvas = np.ndarray  # float64 (H, W, 3) in [0, 1]
Alpha = np.ndarray  # float64 (H, W) in [0, 1]


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (H, W); read-only because they are shared."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    y, x = np.meshgrid(coords, coords, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(*saturation)
    val = rng.uniform(*value)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val))


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_distance: float = 0.45) -> np.ndarray:
    """A saturated colour far enough from `against` that the pattern is always visible."""
    colour = _random_colour(rng, (0.4, 1.0), (0.35, 1.0))
    for _ in range(32):
        if np.linalg.norm(colour - against) >= min_distance:
            break
        colour = _random_colour(rng, (0.4, 1.0), (0.35, 1.0))
    return colour


def _background(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> tuple[Canvas, np.ndarray]:
    """A muted base colour with gentle low-frequency shading; returns (canvas, base colour)."""
    size = y.shape[0]
    base = _random_colour(rng, (0.0, 0.6), (0.15, 0.95))
    angle = rng.uniform(0.0, 2 * np.pi)
    cycles = rng.uniform(0.3, 1.2)
    phase = rng.uniform(0.0, 2 * np.pi)
    # Kept weak so the "gradient" class stays the only image-wide colour ramp.
    amplitude = rng.uniform(0.0, 0.08)
    along = (x * np.cos(angle) + y * np.sin(angle)) / size
    shade = amplitude * np.cos(2 * np.pi * cycles * along + phase)
    return base[None, None, :] + shade[:, :, None], base


def _rotated(y: np.ndarray, x: np.ndarray, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) relative to (cy, cx), rotated by `angle`."""
    dy, dx = y - cy, x - cx
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _edge_alpha(signed_distance: np.ndarray) -> Alpha:
    """Anti-aliased coverage from a signed distance in pixels (positive inside)."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _polygon_distance(u: np.ndarray, v: np.ndarray, inradius: float, sides: int) -> np.ndarray:
    """Signed distance (approximate at corners) to a regular polygon centred at the origin."""
    distance = np.full(u.shape, np.inf)
    for k in range(sides):
        theta = 2 * np.pi * k / sides
        distance = np.minimum(distance, inradius - (u * np.cos(theta) + v * np.sin(theta)))
    return distance


def _centre(rng: np.random.Generator, size: int, radius: float) -> tuple[float, float]:
    """A centre that keeps most of an object of `radius` inside the image."""
    margin = min(radius * 0.7, size / 2 - 1)
    return rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)


def _window(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    """Where a texture is drawn: the whole image, a disc or a square, at a random place."""
    size = y.shape[0]
    kind = rng.integers(3)
    if kind == 0:
        return np.ones_like(y)
    radius = rng.uniform(0.2, 0.42) * size
    cy, cx = _centre(rng, size, radius)
    if kind == 1:
        return _edge_alpha(radius - np.hypot(y - cy, x - cx))
    u, v = _rotated(y, x, cy, cx, rng.uniform(0.0, np.pi / 2))
    return _edge_alpha(_polygon_distance(u, v, radius * 0.85, 4))


def _square_wave(phase: np.ndarray, period: float) -> Alpha:
    """Anti-aliased 50% duty stripes from a phase in radians; `period` in pixels sets the edge slope."""
    return np.clip(0.5 + np.sin(phase) * period / (2 * np.pi), 0.0, 1.0)


def _circle(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    radius = rng.uniform(0.1, 0.3) * size
    cy, cx = _centre(rng, size, radius)
    return _edge_alpha(radius - np.hypot(y - cy, x - cx))


def _square(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    half = rng.uniform(0.1, 0.26) * size
    cy, cx = _centre(rng, size, half * 1.4)
    u, v = _rotated(y, x, cy, cx, rng.uniform(0.0, np.pi / 2))
    return _edge_alpha(_polygon_distance(u, v, half, 4))


def _triangle(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    circumradius = rng.uniform(0.16, 0.36) * size
    cy, cx = _centre(rng, size, circumradius)
    u, v = _rotated(y, x, cy, cx, rng.uniform(0.0, 2 * np.pi / 3))
    return _edge_alpha(_polygon_distance(u, v, circumradius / 2, 3))


def _ring(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    radius = rng.uniform(0.14, 0.36) * size
    thickness = rng.uniform(0.025, 0.07) * size
    cy, cx = _centre(rng, size, radius)
    return _edge_alpha(thickness / 2 - np.abs(np.hypot(y - cy, x - cx) - radius))


def _stripes(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    period = rng.uniform(0.08, 0.2) * size
    u, _ = _rotated(y, x, 0.0, 0.0, rng.uniform(0.0, np.pi))
    phase = 2 * np.pi * u / period + rng.uniform(0.0, 2 * np.pi)
    return _square_wave(phase, period) * _window(rng, y, x)


def _waves(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    period = rng.uniform(0.1, 0.2) * size
    wavelength = rng.uniform(0.3, 0.55) * size
    # Amplitude comparable to the stripe period, so the curvature is plain at any scale.
    amplitude = rng.uniform(0.8, 1.4) * period
    u, v = _rotated(y, x, 0.0, 0.0, rng.uniform(0.0, np.pi))
    bent = u + amplitude * np.sin(2 * np.pi * v / wavelength + rng.uniform(0.0, 2 * np.pi))
    phase = 2 * np.pi * bent / period + rng.uniform(0.0, 2 * np.pi)
    return _square_wave(phase, period) * _window(rng, y, x)


def _checker(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    cell = rng.uniform(0.06, 0.16) * size
    u, v = _rotated(y, x, 0.0, 0.0, rng.uniform(0.0, np.pi / 2))
    offset_u, offset_v = rng.uniform(0.0, 2 * cell, 2)
    product = np.sin(np.pi * (u + offset_u) / cell) * np.sin(np.pi * (v + offset_v) / cell)
    return np.clip(0.5 + product * cell / np.pi, 0.0, 1.0) * _window(rng, y, x)


def _dots(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    size = y.shape[0]
    spacing = rng.uniform(0.1, 0.2) * size
    radius = rng.uniform(0.18, 0.32) * spacing
    u, v = _rotated(y, x, 0.0, 0.0, rng.uniform(0.0, np.pi / 2))
    offset_u, offset_v = rng.uniform(0.0, spacing, 2)
    du = np.mod(u + offset_u, spacing) - spacing / 2
    dv = np.mod(v + offset_v, spacing) - spacing / 2
    return _edge_alpha(radius - np.hypot(du, dv)) * _window(rng, y, x)


def _blob(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    """Soft Gaussian blobs with no hard edge."""
    size = y.shape[0]
    alpha = np.zeros_like(y)
    for _ in range(rng.integers(1, 3)):
        sigma = rng.uniform(0.08, 0.18) * size
        cy, cx = _centre(rng, size, sigma * 1.5)
        alpha = np.maximum(alpha, np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)))
    return alpha


def _gradient(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Alpha:
    """A linear ramp across the whole image, from the background colour to the pattern colour."""
    size = y.shape[0]
    u, _ = _rotated(y, x, size / 2, size / 2, rng.uniform(0.0, 2 * np.pi))
    spread = rng.uniform(0.6, 1.0) * size
    return np.clip(0.5 + u / spread, 0.0, 1.0)


PATTERNS: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray], Alpha]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "ring": _ring,
    "stripes": _stripes,
    "waves": _waves,
    "checker": _checker,
    "dots": _dots,
    "blob": _blob,
    "gradient": _gradient,
}
# The class index is the position of the pattern family in this tuple.
CLASSES: tuple[str, ...] = tuple(PATTERNS)


def _check_size(size: int) -> None:
    if size < MIN_SIZE:
        raise AtlasError(f"demo image size must be at least {MIN_SIZE} pixels, got {size}")


def render_class(rng: np.random.Generator, label: int, size: int = 64) -> np.ndarray:
    """One uint8 (size, size, 3) image of class `label`."""
    _check_size(size)
    y, x = _grid(size)
    canvas, base = _background(rng, y, x)
    colour = _contrasting_colour(rng, base)
    alpha = PATTERNS[CLASSES[label]](rng, y, x)[:, :, None]
    canvas = canvas * (1.0 - alpha) + colour[None, None, :] * alpha
    noise = rng.uniform(0.0, 0.05)
    canvas = canvas + rng.normal(0.0, noise, canvas.shape)
    return np.floor(np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_image(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, int]:
    """A random image of a random class: (RGB image, class index)."""
    label = int(rng.integers(len(CLASSES)))
    return Image.fromarray(render_class(rng, label, size)), label


def generate_arrays(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`count` images with balanced classes in shuffled order: uint8 (N, H, W, 3), int64 (N,)."""
    if count < 0:
        raise AtlasError(f"demo image count must be zero or more, got {count}")
    if seed < 0:
        raise AtlasError(f"demo dataset seed must be zero or more, got {seed}")
    _check_size(size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count, dtype=np.int64) % len(CLASSES))
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = render_class(rng, int(label), size)
    return images, labels


def _marker(count: int, seed: int, size: int) -> dict:
    return {"count": count, "seed": seed, "size": size, "version": GENERATOR_VERSION, "classes": list(CLASSES)}


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_images(folder: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Write the images; their SHA-256 by relative path (the dataset's manifest)."""
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    hashes = {}
    for index, (image, label) in enumerate(zip(images, labels)):
        # Fixed encoder settings and no metadata: identical arguments give identical bytes.
        rel = f"{CLASSES[label]}/{index:05d}.png"
        Image.fromarray(image).save(folder / rel, format="PNG", compress_level=6)
        hashes[rel] = file_sha256(folder / rel)
    return hashes


def damage(folder: Path, marker: dict) -> str | None:
    """None when the folder holds exactly the images its marker lists, byte for byte."""
    files = marker.get("files")
    if not isinstance(files, dict):
        return "no manifest of its images"
    from atlasgen.data import IMAGE_SUFFIXES  # what a dataset pass reads (other files change nothing)

    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    if present != set(files):
        odd = sorted(present ^ set(files))
        return f"{len(odd)} images missing or added ({odd[0]})"
    for rel, digest in files.items():
        if (folder / rel).is_symlink() or file_sha256(folder / rel) != digest:
            return f"{rel} changed"
    return None


def _complete(folder: Path, wanted: dict) -> bool:
    """`folder` is the dataset `wanted` describes, whole; a damaged one is reported."""
    marker = _read_marker(folder)
    if marker is None or {k: marker.get(k) for k in wanted} != wanted:
        return False
    problem = damage(folder, marker)
    if problem:
        log.warning("demo dataset %s is damaged (%s); generating it again", folder, problem)
    return problem is None


def _refuse_foreign(folder: Path) -> None:
    """A non-empty folder without our marker holds the user's files: never replace it."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise AtlasError(f"{folder} is a file or a link; the demo dataset needs a folder there")
    if folder.is_dir() and any(folder.iterdir()) and _read_marker(folder) is None:
        raise AtlasError(f"{folder} exists and is not an atlasgen demo dataset; choose another folder or remove it")


def _move_into_place(staging: Path, folder: Path, wanted: dict) -> None:
    """Rename `staging` to `folder`. A whole dataset another process put there first is kept
    as it is (a build may be reading it); an outdated or damaged one is retired first."""
    for _ in range(5):
        try:
            os.rename(staging, folder)  # succeeds when `folder` is absent or empty
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if _complete(folder, wanted):
            return
        _refuse_foreign(folder)  # checked again: the folder may have appeared while we wrote
        retired = folder.with_name(temporary_name(folder.name, "old"))
        try:
            os.rename(folder, retired)
        except FileNotFoundError:  # another process retired it first
            continue
        shutil.rmtree(retired, ignore_errors=True)
    raise AtlasError(f"could not put the demo dataset in place at {folder}: other processes keep replacing it")


def write_demo_dataset(folder: Path, count: int = 1000, seed: int = 1234, size: int = 64) -> Path:
    """Write `folder/<class>/<index:05d>.png` (the images of `generate_arrays(count, seed, size)`).

    Written into a temporary sibling folder and renamed into place, so `folder` is either absent
    or complete. The marker file lists every image's SHA-256: a complete folder with the same
    arguments is returned untouched, a damaged one (an image missing, added or changed) is
    generated again. Concurrent callers all return the same whole folder."""
    folder = Path(folder)
    wanted = _marker(count, seed, size)
    if _complete(folder, wanted):
        return folder
    _refuse_foreign(folder)
    images, labels = generate_arrays(count, seed, size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(temporary_name(folder.name))
    try:
        hashes = _write_images(staging, images, labels)
        (staging / MARKER_NAME).write_text(json.dumps({**wanted, "files": hashes}, sort_keys=True))
        _move_into_place(staging, folder, wanted)
    except OSError as exc:
        raise_if_full(exc, folder.parent, int(images.nbytes))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d demo images to %s", count, folder)
    return folder
