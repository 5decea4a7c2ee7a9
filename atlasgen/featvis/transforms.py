"""Random geometric transforms applied to the image before every step, so the optimized
pattern must survive small shifts, zooms and rotations (this suppresses adversarial
high-frequency noise). Pad, jitter, scale and rotation compose into one affine map per image,
applied to the whole batch with a single `affine_grid` + `grid_sample`.

Pad and jitter are fractions of the image side, so a transform does the same to a 32 px image
as to a 224 px one, and the same at every octave of the optimization. Objectives that look
at positions of the image (a neuron) read the activations through `align_to_image`, which
undoes each image's view, so the unit they follow stays on the content it optimizes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Uniform draws per image per step: x shift, y shift, scale, angle.
DRAWS_PER_STEP = 4
PAD_VALUE = 0.5  # grey, as Lucid pads: the network sees a neutral border, not a wrapped edge


@dataclass(frozen=True)
class TransformRanges:
    """Transform strengths: pad and jitter as fractions of the image side."""

    pad: float
    jitter: float
    scale: tuple[float, float]
    rotate: float  # degrees


def affine_matrices(uniform: torch.Tensor, ranges: TransformRanges, strength: torch.Tensor | float = 1.0) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices (output -> input, coordinates in [-1, 1]) from (B, 4)
    uniform draws in [0, 1).

    The output shows a view of side `1 + 2 * pad - jitter` image sides (grey outside the image,
    as Lucid's pad then jitter-crop), shifted by up to +-jitter/2 of the side, zoomed by a factor
    in `scale` and rotated by up to +-`rotate` degrees about its centre. `strength` (a number or
    a 0-d tensor, so that a replayed step can change it in place) scales every range: 0 is the
    identity view.
    """
    shift = (uniform[:, :2] - 0.5) * (2.0 * ranges.jitter) * strength  # in [-1, 1] coordinates: a side is 2
    low, high = ranges.scale
    zoom = 1.0 + ((low - 1.0) + (high - low) * uniform[:, 2]) * strength
    angle = torch.deg2rad((2.0 * uniform[:, 3] - 1.0) * ranges.rotate * strength)
    view = (1.0 + (2.0 * ranges.pad - ranges.jitter) * strength) / zoom
    cos, sin = torch.cos(angle) * view, torch.sin(angle) * view
    row_x = torch.stack([cos, -sin, shift[:, 0]], dim=1)
    row_y = torch.stack([sin, cos, shift[:, 1]], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def sampling_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype to resample `tensor` in. On CUDA, grid_sample's backward adds each output's
    gradient into its source pixels with atomic additions, in an order that changes from run to
    run; in float64 those few-term sums of float32 values round the same in almost every order,
    so a float32 gradient (and the optimization, which amplifies any difference) repeats."""
    return torch.float64 if tensor.is_cuda else tensor.dtype


def random_view(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply each image's affine view `theta` (B, 2, 3); output has the input's size."""
    dtype = sampling_dtype(images)
    grid = F.affine_grid(theta.to(dtype), list(images.shape), align_corners=False)
    # Sampling (image - grey) with zero padding puts grey outside the image.
    view = F.grid_sample((images - PAD_VALUE).to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return view.to(images.dtype) + PAD_VALUE


def inverse(theta: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) the inverse affine maps: input -> output coordinates."""
    # The 2x2 inverse written out: torch.linalg.inv waits for the GPU to check for singularity.
    a, b, c, d = theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1]
    linear = torch.stack([torch.stack([d, -b], dim=1), torch.stack([-c, a], dim=1)], dim=1) / (a * d - b * c)[:, None, None]
    return torch.cat([linear, -(linear @ theta[:, :, 2:])], dim=2)


def align_to_image(maps: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Activation maps (n, h, w) of transformed views, resampled so that cell (i, j) holds the
    unit nearest to the place where the untransformed image's cell (i, j) went (zero where that
    place left the view). Under the identity view this is `maps` itself."""
    dtype = sampling_dtype(maps)
    maps = maps[:, None]
    grid = F.affine_grid(inverse(theta.float()).to(dtype), list(maps.shape), align_corners=False)
    # Nearest: each cell is one real unit (the one now over that content), not a blend of
    # neighbours whose best patterns differ (measured: blends settle further from a linear
    # layer's exact optimum).
    aligned = F.grid_sample(maps.to(dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return aligned[:, 0].to(maps.dtype)
