"""Random geometric transforms applied to the image before every step, so the optimized
pattern must survive small shifts, zooms and rotations (this suppresses adversarial
high-frequency noise). Pad, jitter, scale and rotation compose into one affine map per image,
applied to the whole batch with a single `affine_grid` + `grid_sample`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Uniform draws per image per step: x shift, y shift, scale, angle.
DRAWS_PER_STEP = 4
PAD_VALUE = 0.5  # grey, as Lucid pads: the network sees a neutral border, not a wrapped edge


@dataclass(frozen=True)
class TransformRanges:
    """Transform strengths in pixels of the image being optimized."""

    pad: float
    jitter: float
    scale: tuple[float, float]
    rotate: float  # degrees

    def scaled(self, factor: float) -> TransformRanges:
        """The same transforms for an image `factor` times the size (octaves)."""
        return TransformRanges(self.pad * factor, self.jitter * factor, self.scale, self.rotate)


def affine_matrices(uniform: torch.Tensor, size: int, ranges: TransformRanges) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices from (B, 4) uniform draws in [0, 1).

    The output shows a view of side `size + 2 * pad - jitter` pixels (grey outside the image,
    as Lucid's pad then jitter-crop), shifted by up to +-jitter/2, zoomed by a factor in
    `scale` and rotated by up to +-`rotate` degrees about its centre.
    """
    half = size / 2.0
    shift = (uniform[:, :2] - 0.5) * ranges.jitter  # pixels
    low, high = ranges.scale
    zoom = low + (high - low) * uniform[:, 2]
    angle = torch.deg2rad((2.0 * uniform[:, 3] - 1.0) * ranges.rotate)
    view = (size + 2.0 * ranges.pad - ranges.jitter) / size / zoom
    cos, sin = torch.cos(angle) * view, torch.sin(angle) * view
    row_x = torch.stack([cos, -sin, shift[:, 0] / half], dim=1)
    row_y = torch.stack([sin, cos, shift[:, 1] / half], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def random_view(images: torch.Tensor, uniform: torch.Tensor, ranges: TransformRanges) -> torch.Tensor:
    """Apply each image's own random affine view; output has the input's size."""
    size = images.shape[-1]
    theta = affine_matrices(uniform.to(images.device, images.dtype), size, ranges)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Sampling (image - grey) with zero padding puts grey outside the image.
    return F.grid_sample(images - PAD_VALUE, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + PAD_VALUE

