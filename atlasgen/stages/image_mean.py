"""Image mean: each channel's highest spatial mean over the dataset images (the mean over
positions of its map on one image, maximized over images), gathered in the dataset pass. It
is the dataset's like-for-like yardstick for the objectives that maximize a spatial mean
(channel, diversity): comparing those with the single-position maximum made a working
visualization read as a few per cent."""

from __future__ import annotations


import numpy as np

from atlasgen.stages import Stage, register


class BestMeanAccumulator:
    def __init__(self) -> None:
        self.best = None  # float32 (C,): the highest spatial mean seen so far

    def update(self, act, _indices) -> None:
        import torch

        batch_best = act.float().mean(dim=(2, 3)).amax(dim=0)
        self.best = batch_best if self.best is None else torch.maximum(self.best, batch_best)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"best_mean": self.best.cpu().numpy().astype(np.float32)}


class ImageMean(Stage):
    name = "image_mean"
    version = 1
    order = 36
    title = "image mean"
    reads_dataset = True

    def tasks(self, basis):
        return self.layer_tasks(basis)

    def accumulator(self, task, plan, layer, shared):
        return BestMeanAccumulator()

    def contribute(self, layer):
        arrays = layer.arrays(self.name)
        if arrays is None:
            return
        for unit in layer.units:
            unit.dataset_best_mean = float(arrays["best_mean"][unit.channel])


register(ImageMean())
