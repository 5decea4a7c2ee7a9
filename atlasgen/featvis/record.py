"""Recorders for the optimization loop's `record` hook (`visualize_channels(..., record=)`):
what happens inside the layer while its images are optimized, kept out of the loop itself."""

from __future__ import annotations

import numpy as np
import torch

from atlasgen.featvis.batch import ImageSpec


class LayerMeans:
    """The spatial mean of every channel of the target layer, at every step, for each image:
    while a channel is optimized, how every other channel of its layer responds (the article's
    cross-activation)."""

    def __init__(self) -> None:
        self._steps: dict[ImageSpec, list[torch.Tensor]] = {}

    def __call__(self, step: int, specs: list[ImageSpec], acts: torch.Tensor) -> None:
        means = acts.float().mean(dim=(2, 3)).cpu()
        for i, spec in enumerate(specs):
            self._steps.setdefault(spec, []).append(means[i])

    def series(self, spec: ImageSpec) -> np.ndarray:
        """float32 (steps, channels): row t holds every channel's mean at step t."""
        return torch.stack(self._steps[spec]).numpy().astype(np.float32)
