"""The feature-maps article's optimization loop (its recipe: `atlasgen/objectives/article.py`).

Plain gradient descent on pixels in [0, 1], one image per target, batched: each image's loss
is the recipe's distance between its target activations and C, summed over the target's parts
(one part per unit, so a combined target descends on the sum of its units' losses), and each
image's gradient is scaled on its own, so no image depends on the others in its batch. After
every step the image is clamped to [0, 1] and blurred with a small Gaussian kernel; between
octaves it is resized up (bilinear).

A target's units are a channel's whole map or some of its units in reading order (row by
row) of the map at the model's input size; at the other octaves' sizes those units are the
cells at the same fractions of the map (nearest neighbour)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atlasgen.hooks import eval_mode, forward_layers
from atlasgen.objectives.article import Recipe, distance
from atlasgen.settings import Preprocess

INIT_NOISE = 0.1  # width of the uniform noise around grey the images start from
_RMS_EPS = 1e-12


@dataclass(frozen=True)
class Part:
    """What one image drives: a channel of a layer, all of its map or its first `units` units."""

    layer: str
    channel: int
    units: int | None = None  # the first n units in reading order; None = every unit
    grid: tuple[int, int] | None = None  # (h, w) of the map at the model's input size, which `units` count in


@dataclass(frozen=True)
class Target:
    parts: tuple[Part, ...]
    name: str  # seeds the image's noise, so an image does not depend on its batch

    def seed(self, seed: int) -> int:
        text = f"atlasgen-article:{seed}:{self.name}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def unit_mask(part: Part, height: int, width: int, device: torch.device) -> torch.Tensor | None:
    """(height, width) bool: the part's units at this map size; None for the whole map."""
    if part.units is None:
        return None
    grid_h, grid_w = part.grid or (height, width)
    base = torch.zeros(grid_h * grid_w, device=device)
    base[: part.units] = 1
    resized = F.interpolate(base.view(1, 1, grid_h, grid_w), size=(height, width), mode="nearest")
    return resized[0, 0] > 0


def part_values(acts: torch.Tensor, part: Part) -> torch.Tensor:
    """(B, k) the part's unit activations of every image, from the layer's maps (B, C, h, w)."""
    maps = acts[:, part.channel].float()
    mask = unit_mask(part, maps.shape[-2], maps.shape[-1], maps.device)
    return maps.flatten(1) if mask is None else maps[:, mask]


def target_losses(acts: dict[str, torch.Tensor], targets: Sequence[Target], recipe: Recipe) -> torch.Tensor:
    """(B,) each image's loss: the sum over its parts of the recipe's distance."""
    layers = {part.layer for target in targets for part in target.parts}
    if len(layers) == 1 and all(len(t.parts) == 1 and t.parts[0].units is None for t in targets):
        # The common case, whole channels of one layer: one batched gather (same values as below).
        acts_of = acts[layers.pop()]
        channels = torch.tensor([t.parts[0].channel for t in targets], device=acts_of.device)
        z = acts_of[torch.arange(len(targets), device=acts_of.device), channels].float().flatten(1)
        return distance(z, recipe.metric, recipe.constant)
    losses = []
    for i, target in enumerate(targets):
        losses.append(sum(distance(part_values(acts[part.layer][i:i + 1], part), recipe.metric, recipe.constant)[0]
                          for part in target.parts))
    return torch.stack(losses)


def gaussian_blur(images: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """A `kernel` x `kernel` Gaussian blur with reflected borders (torchvision's gaussian_blur)."""
    if kernel <= 1 or sigma <= 0:
        return images
    offsets = torch.arange(kernel, device=images.device, dtype=images.dtype) - (kernel - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    pad = kernel // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    channels = images.shape[1]
    x = F.conv2d(x, weights.view(1, 1, 1, kernel).expand(channels, 1, 1, kernel).contiguous(), groups=channels)
    return F.conv2d(x, weights.view(1, 1, kernel, 1).expand(channels, 1, kernel, 1).contiguous(), groups=channels)


def octave_sides(recipe: Recipe, input_size: int) -> list[int]:
    return [max(8, int(round(o.scale * input_size))) for o in recipe.octaves]


def optimize_targets(
    model: nn.Module, targets: Sequence[Target], recipe: Recipe, preprocess: Preprocess, device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The recipe's images of `targets`, float (N, 3, S, S) in [0, 1] on the CPU (S: the last octave's side)."""
    sides = octave_sides(recipe, preprocess.input_size)
    layers = sorted({part.layer for target in targets for part in target.parts})
    mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)
    noise = [torch.rand((3, sides[0], sides[0]), generator=torch.Generator().manual_seed(t.seed(recipe.seed)))
             for t in targets]
    x = (0.5 + (torch.stack(noise) - 0.5) * INIT_NOISE).to(device)
    with eval_mode(model, frozen=True):
        for octave, side in zip(recipe.octaves, sides):
            if x.shape[-1] != side:
                x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
            for k in range(octave.steps):
                t = k / (octave.steps - 1) if octave.steps > 1 else 0.0
                lr = octave.lr[0] + (octave.lr[1] - octave.lr[0]) * t
                sigma = octave.blur[0] + (octave.blur[1] - octave.blur[0]) * t
                x.requires_grad_(True)
                with torch.enable_grad():
                    acts = forward_layers(model, (x - mean) / std, layers)
                    (grad,) = torch.autograd.grad(target_losses(acts, targets, recipe).sum(), x)
                with torch.no_grad():
                    # RMS over the pixels the gradient reaches: a loss that reaches a few units (L-infinity,
                    # a neuron) moves its pixels as far as one that reaches every unit, not further.
                    flat = grad.flatten(1)
                    reached = (flat != 0).sum(dim=1).clamp_min(1)
                    rms = (flat.pow(2).sum(dim=1) / reached).sqrt().clamp_min(_RMS_EPS).view(-1, 1, 1, 1)
                    x = (x - lr * recipe.step_unit * grad / rms).clamp(0, 1)
                    x = gaussian_blur(x, recipe.blur_kernel, sigma)
                if progress is not None:
                    progress(len(targets))
    return x.detach().cpu()


@torch.no_grad()
def part_means(model: nn.Module, images: torch.Tensor, parts: Sequence[Part], preprocess: Preprocess,
               device: torch.device) -> np.ndarray:
    """(N, P) the mean activation of each part's units on each image, as it is (no transforms)."""
    mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)
    with eval_mode(model, frozen=True):
        acts = forward_layers(model, (images.to(device) - mean) / std, sorted({p.layer for p in parts}))
    return torch.stack([part_values(acts[p.layer], p).mean(dim=1) for p in parts], dim=1).cpu().numpy().astype(np.float32)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
