"""A feature visualization that did not move: optimization starts from a nearly uniform grey
image, and sometimes the best image it finds is still nearly uniform grey (the first-hour report
saw 7 of 32 blank demo conv2 cards; 5 by the thresholds below). Such an image shows no feature;
the pages flag it, with what was measured, instead of passing it off as one. A uniform but saturated colour is a result (a
colour-selective channel), not a failure, so both the spread and the distance from grey count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Of 255. Measured on the demo atlas: blank-looking images had a largest per-colour standard
# deviation of 7.1-8.6 and a mean distance from mid-grey of 8.8-10.8; the faintest image with a
# visible pattern had 16.0 and 11.9.
FLAT_SPREAD = 10.0
NEAR_GREY = 16.0


def stillness(path: Path) -> tuple[float, float]:
    """(largest per-colour standard deviation, mean absolute distance from mid-grey), of 255."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    return float(rgb.std(axis=(0, 1)).max()), float(np.abs(rgb - 127.5).mean())


def still_reason(path: Path) -> str | None:
    """Why the image counts as not moved, or None when it shows something."""
    spread, distance = stillness(path)
    if spread >= FLAT_SPREAD or distance >= NEAR_GREY:
        return None
    return (f"the best image the optimization found is nearly uniform grey (colour spread {spread:.0f} and distance "
            f"from grey {distance:.0f}, of 255): no pattern it tried excites this channel more than that")


def still_images(images: dict[str, Path]) -> dict[str, str]:
    """Objective name -> reason, for each image in `images` that did not move from grey."""
    reasons = {name: still_reason(path) for name, path in images.items()}
    return {name: reason for name, reason in reasons.items() if reason}
