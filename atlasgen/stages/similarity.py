"""Similarity: each layer's exact co-activation statistics over every position of every
dataset image (mean, std and Pearson r between channels), gathered in the dataset pass; the
unit page lists the most correlated channels."""

from __future__ import annotations


import numpy as np

from atlasgen.sitedata import Related
from atlasgen.stages import Stage, register


class Similarity(Stage):
    name = "similarity"
    version = 1
    order = 30
    title = "similarity"
    reads_dataset = True

    def tasks(self, basis):
        return self.layer_tasks(basis)

    def accumulator(self, task, plan, layer, shared):
        from atlasgen.similarity import Scratch, SizedOnFirstBatch

        return SizedOnFirstBatch(shared.setdefault("scratch", Scratch()))  # one buffer for every layer's centred copies

    def finish(self, run, plan, task, accumulator, done):
        stats = accumulator.stats
        run.store(task, {}, {"mean": stats.mean(), "std": stats.std(),
                             "correlation": stats.correlation().astype(np.float32)})

    def contribute(self, layer):
        from atlasgen.related import top_similar

        arrays = layer.arrays(self.name)
        if arrays is None:
            return
        similar = top_similar(arrays["correlation"], layer.model.config.stages.similarity.top_n)
        for unit in layer.units:
            unit.dataset_mean = float(arrays["mean"][unit.channel])
            unit.dataset_std = float(arrays["std"][unit.channel])
            unit.similar = [Related(int(o), float(s)) for o, s in similar[unit.channel]]


register(Similarity())
