"""What each image maximizes, given the target layer's activations (B, C, h, w).

- channel: the spatial mean of the channel; negative: minus that; neuron: the centre unit;
- diversity: D images of one channel, each maximizing the channel while a Gram-matrix term
  (Lucid's `diversity`) pushes the D images' layer statistics apart.

Losses are per image and summed over the batch, so no image's gradient depends on which
other images share its batch (diversity groups are always kept together)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SINGLE_OBJECTIVES = ("channel", "negative", "neuron")
_MAGNITUDE_EPS = 1e-30
_SCALE_EPS = 1e-12


@dataclass(frozen=True)
class ImageSpec:
    """One image of the optimization: which channel, which objective, which diversity index."""

    channel: int
    objective: str
    index: int = 0


def image_seed(seed: int, spec: ImageSpec) -> int:
    """A 63-bit seed from (seed, channel, objective, index) only: never from batch position."""
    text = f"atlasgen-featvis:{seed}:{spec.channel}:{spec.objective}:{spec.index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def spatial_mean(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(B,) spatial mean of each image's own channel."""
    picked = acts[torch.arange(acts.shape[0], device=acts.device), channels]
    return picked.flatten(1).mean(dim=1)


def centre_unit(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(B,) the unit at (h // 2, w // 2) of each image's own channel (lucent's convention)."""
    h, w = acts.shape[-2:]
    return acts[torch.arange(acts.shape[0], device=acts.device), channels, h // 2, w // 2]


def gram_similarity(group_acts: torch.Tensor) -> torch.Tensor:
    """(D,) mean cosine similarity of each image's channel Gram matrix to the others' in the group."""
    d = group_acts.shape[0]
    flat = group_acts.flatten(2)  # (D, C, hw)
    grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
    cosine = grams @ grams.T
    return (cosine.sum(dim=1) - cosine.diagonal()) / max(d - 1, 1)


@dataclass(frozen=True)
class BatchObjective:
    """The objectives of one batch, as index tensors on the device."""

    channels: torch.Tensor  # (B,) int64
    sign: torch.Tensor  # (B,) +1 maximize the spatial mean, -1 minimize it, 0 for neuron
    neuron: torch.Tensor  # (B,) bool
    groups: tuple[torch.Tensor, ...]  # index tensors of the diversity groups
    diversity_weight: float

    @staticmethod
    def build(specs: list[ImageSpec], diversity_weight: float, device: torch.device) -> BatchObjective:
        sign = [-1.0 if s.objective == "negative" else 0.0 if s.objective == "neuron" else 1.0 for s in specs]
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(specs):
            if s.objective == "diversity":
                groups.setdefault(s.channel, []).append(i)
        return BatchObjective(
            channels=torch.tensor([s.channel for s in specs], device=device),
            sign=torch.tensor(sign, device=device),
            neuron=torch.tensor([s.objective == "neuron" for s in specs], device=device),
            groups=tuple(torch.tensor(g, device=device) for g in groups.values()),
            diversity_weight=diversity_weight,
        )

    def loss(self, acts: torch.Tensor) -> torch.Tensor:
        """Sum over images of each image's loss (to minimize)."""
        acts = acts.float()
        value = torch.where(self.neuron, centre_unit(acts, self.channels), self.sign * spatial_mean(acts, self.channels))
        losses = -value
        if self.diversity_weight > 0:
            for group in self.groups:
                # Scale-free weighting: the similarity term is measured in units of the group's
                # current activation, so one weight works for any model's activation scale.
                magnitude = spatial_mean(acts[group], self.channels[group]).abs().mean().detach() + _MAGNITUDE_EPS
                penalty = self.diversity_weight * magnitude * gram_similarity(acts[group])
                losses = losses.index_add(0, group, penalty)
        # Each image's loss in units of its layer's RMS activation: untrained or unusual models
        # have activations of 1e-7, where Adam's epsilon would otherwise swamp the gradient.
        scale = acts.flatten(1).pow(2).mean(dim=1).sqrt().detach().clamp_min(_SCALE_EPS)
        return (losses / scale).sum()
