"""The images of one optimization batch and their combined loss.

Each image is an `ImageSpec` (channel, objective, index); the loss asks every objective in
the registry (`atlasgen.objectives`) for the value its images should maximize. Losses are
per image and summed over the batch, so no image's gradient depends on which other images
share its batch (a grouped objective's images are always kept together)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atlasgen import objectives
from atlasgen.featvis.transforms import align_to_image
from atlasgen.settings import VisSettings

_SCALE_EPS = 1e-12


@dataclass(frozen=True)
class ImageSpec:
    """One image of the optimization: which channel, which objective, which index in its set."""

    channel: int
    objective: str
    index: int = 0


def image_seed(seed: int, spec: ImageSpec) -> int:
    """A 63-bit seed from (seed, channel, objective, index) only: never from batch position."""
    text = f"atlasgen-featvis:{seed}:{spec.channel}:{spec.objective}:{spec.index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def image_specs(channels: Sequence[int], settings: VisSettings) -> list[ImageSpec]:
    """Every image to optimize, channel by channel, objectives in settings order."""
    specs = []
    for channel in channels:
        for objective in settings.objectives:
            count = objectives.get(objective).images(settings)
            specs.extend(ImageSpec(int(channel), objective, i) for i in range(count))
    return specs


def pack_batches(specs: list[ImageSpec], batch_size: int) -> list[list[ImageSpec]]:
    """Greedy packing in order; the image set of a grouped objective is never split."""
    sets: list[list[ImageSpec]] = []
    for spec in specs:
        if spec.index > 0 and sets and objectives.get(spec.objective).grouped:
            sets[-1].append(spec)
        else:
            sets.append([spec])
    batches: list[list[ImageSpec]] = []
    for images in sets:
        if batches and len(batches[-1]) + len(images) <= batch_size:
            batches[-1].extend(images)
        else:
            batches.append(list(images))
    return batches


@dataclass(frozen=True)
class Part:
    """The images of one objective in a batch, as index tensors on the device."""

    objective: objectives.Objective
    rows: torch.Tensor  # (n,) positions in the batch
    channels: torch.Tensor  # (n,) each image's channel


def batch_parts(specs: list[ImageSpec], device: torch.device) -> list[Part]:
    """One part per objective present, in first-appearance order."""
    rows: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        rows.setdefault(spec.objective, []).append(i)
    return [Part(objectives.get(name), torch.tensor(idx, device=device),
                 torch.tensor([specs[i].channel for i in idx], device=device))
            for name, idx in rows.items()]


@dataclass(frozen=True)
class BatchObjective:
    parts: list[Part]
    settings: VisSettings

    @staticmethod
    def build(specs: list[ImageSpec], settings: VisSettings, device: torch.device) -> BatchObjective:
        return BatchObjective(batch_parts(specs, device), settings)

    def loss(self, acts: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over images of each image's loss (to minimize); `theta` (B, 2, 3): each image's
        random view, for the objectives that follow it."""
        acts = acts.float()
        value = acts.new_zeros(acts.shape[0])
        for part in self.parts:
            value = value.index_put((part.rows,), self._part_loss(part, acts, theta))
        losses = -value
        # Each image's loss in units of its layer's RMS activation: untrained or unusual models
        # have activations of 1e-7, where Adam's epsilon would otherwise swamp the gradient.
        # A norm over the per-image dimensions, not `flatten(1)`: channels-last activations
        # would be copied first (10 ms of a 230 ms step of inception3a at batch 32 on CPU).
        dims = tuple(range(1, acts.dim()))
        scale = (torch.linalg.vector_norm(acts.detach(), dim=dims) / acts[0].numel() ** 0.5).clamp_min(_SCALE_EPS)
        return (losses / scale).sum()

    def _part_loss(self, part: Part, acts: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        if not part.objective.follows_view or theta is None:
            return part.objective.loss(acts, part.rows, part.channels, self.settings)
        aligned = align_to_image(acts[part.rows, part.channels], theta[part.rows])[:, None]
        n = aligned.shape[0]
        return part.objective.loss(aligned, torch.arange(n, device=acts.device),
                                   torch.zeros(n, dtype=torch.long, device=acts.device), self.settings)

    def scores(self, acts: torch.Tensor) -> torch.Tensor:
        """(B,) each image's reported score on untransformed activations."""
        acts = acts.float()
        out = acts.new_zeros(acts.shape[0])
        for part in self.parts:
            out[part.rows] = part.objective.score(acts, part.rows, part.channels, self.settings)
        return out
