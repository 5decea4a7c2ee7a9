"""The feature-maps article's recipe as one more image of every unit, beside atlasgen's own
(`atlasgen/objectives/article.py`): on when `feature-maps-article` is in `visualize.objectives`.
Its own stage and keys, so turning it on or changing its numbers recomputes only its images."""

from __future__ import annotations

import numpy as np

from atlasgen import images
from atlasgen.objectives.article import NAME
from atlasgen.plan import channel_range, make_task
from atlasgen.stages import Stage, register
from atlasgen.stages._recipe import key_inputs, recipe_of, run_recipe


class ArticleRecipe(Stage):
    name = "article"
    version = 1
    order = 45
    title = "feature-maps article recipe"

    def tasks(self, basis):
        if NAME not in basis.config.stages.visualize.objectives:
            return []
        return [make_task(self.name, self.version, basis.config.name, layer.name, c,
                          {**key_inputs(basis, layer.name), "channel": c})
                for layer in basis.layers for c in channel_range(basis.config, layer)]

    def compute(self, run, plan, tasks):
        from atlasgen.featvis.article import Part, Target

        targets = [Target((Part(t.layer, t.channel),), f"{t.layer}:{t.channel}") for t in tasks]
        pixels, values, _ = run_recipe(run, plan, targets, recipe_of(plan.config), "feature-maps article recipe")
        for i, task in enumerate(tasks):
            run.store(task, {f"{NAME}.png": images.encode(pixels[i], "png")},
                      {"activation": np.asarray(values[i][0], dtype=np.float32)})

    def contribute(self, layer):
        entries = layer.channel_entries(self.name)
        for unit in layer.units:
            entry = entries.get(unit.channel)
            if entry is not None:
                unit.images[NAME] = entry.file(f"{NAME}.png")
                unit.activation[NAME] = float(entry.arrays()["activation"])


register(ArticleRecipe())
