"""A feature visualization that did not move: the optimization starts from a flat grey image,
and when no gradient reaches it (a channel that is zero on every position of the start image,
behind a ReLU) or it barely responds, the final image is still nearly flat. Such an image shows
no feature; the pages flag it with the reason instead of passing it off as one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FLAT_SPREAD = 2.0  # standard deviation of grey levels (0-255) below which an image reads as flat


def is_flat(path: Path) -> bool:
    with Image.open(path) as img:
        grey = np.asarray(img.convert("L"), dtype=np.float32)
    return float(grey.std()) < FLAT_SPREAD


def still_reason(reached: float | None) -> str:
    """Why an image stayed flat, from the activation its final image reaches."""
    if reached is not None and reached <= 0:
        return ("the optimization never raised the channel above zero: on the grey start image the channel is zero "
                "everywhere (it follows a ReLU), so no gradient reached the image")
    return "the image barely changed from its grey start: the channel's response to it stayed weak"


def still_images(images: dict[str, Path], activation: dict[str, float]) -> dict[str, str]:
    """Objective name -> reason, for each image in `images` that is flat."""
    return {name: still_reason(activation.get(name)) for name, path in images.items() if is_flat(path)}
