"""Spatial neuron maps (the article's mixed_6b figures): for a chosen channel, the images that
maximize its first 1, 2, ..., n neurons in reading order (row by row) of the layer's map at the
model's input size, each with the feature-maps article's recipe, so a strip shows how each
added neuron changes the whole image.

    [[models.experiments]]
    kind = "neuron-maps"
    layer = "conv4"
    channel = 7
    neurons = 8
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from atlasgen import images
from atlasgen.experiments import check_channel, layer_info, of_kind, problem
from atlasgen.parsers import integer, nonempty_string, required, setting
from atlasgen.plan import make_task
from atlasgen.sitedata import ExperimentPage, Figure, FigureRow
from atlasgen.stages import Stage, register
from atlasgen.stages._recipe import entries_of, key_inputs, recipe_of, run_recipe, written


@dataclass(frozen=True)
class NeuronMaps:
    """Images maximizing the first 1, 2, ..., n neurons of one channel's map."""

    layer: str = required(nonempty_string, "the layer, one of the atlas's layers of this model")
    channel: int = required(integer(0), "the channel")
    neurons: int = setting(6, integer(1, 256), "n: the strip has one image per count 1, 2, ..., n")


class NeuronMapsStage(Stage):
    name = "neuron-maps"
    version = 1
    order = 60
    title = "neuron maps"
    experiment = NeuronMaps

    def tasks(self, basis):
        tasks, seen = [], set()
        for exp in of_kind(basis.config, self.name):
            s = exp.settings
            layer = layer_info(basis, exp, s.layer)
            check_channel(basis, exp, layer, s.channel, "channel")
            if s.neurons > layer.height * layer.width:
                raise problem(basis.config, exp, "neurons", f"the map of {layer.name} has {layer.height * layer.width} "
                              f"neurons ({layer.height}x{layer.width}); ask for at most that many")
            if (layer.name, s.channel) in seen:
                raise problem(basis.config, exp, "channel", f"another neuron-maps experiment shows channel {s.channel} "
                              f"of {layer.name}; keep one")
            seen.add((layer.name, s.channel))
            inputs = {**key_inputs(basis, layer.name), "channel": s.channel, "neurons": s.neurons,
                      "grid": [layer.height, layer.width]}
            tasks.append(make_task(self.name, self.version, basis.config.name, layer.name, s.channel, inputs))
        return tasks

    def compute(self, run, plan, tasks):
        from atlasgen.featvis.article import Part, Target

        recipe = recipe_of(plan.config)
        for task in tasks:
            inputs = json.loads(task.inputs)
            grid = tuple(inputs["grid"])
            targets = [Target((Part(task.layer, task.channel, k, grid),), f"{task.layer}:{task.channel}:first-{k}")
                       for k in range(1, inputs["neurons"] + 1)]
            pixels, values, _ = run_recipe(run, plan, targets, recipe, f"neuron maps of {task.layer} {task.channel}")
            run.store(task, {f"neurons-{k + 1}.png": images.encode(pixels[k], "png") for k in range(len(targets))},
                      {"values": np.array([v[0] for v in values], dtype=np.float32)},
                      meta={"settings": written(self.name, {"layer": task.layer, "channel": task.channel,
                                                            "neurons": inputs["neurons"]})})

    def contribute(self, layer):
        for task, entry in entries_of(layer, self.name):
            inputs = json.loads(task.inputs)
            width = inputs["grid"][1]
            values = entry.arrays()["values"]
            figures = []
            for k, value in enumerate(values, start=1):
                row, col = divmod(k - 1, width)
                figures.append(Figure(entry.file(f"neurons-{k}.png"), f"first {k} (adds row {row}, column {col})",
                                      [("mean of those neurons", float(value))]))
            c = task.channel
            layer.data.experiments.append(ExperimentPage(
                kind=self.name, folder=f"{c}/neuron-maps", title=f"Neuron maps of channel {c}",
                intro=f"Each image maximizes the first k neurons of channel {c}'s {inputs['grid'][0]}x{width} map, "
                      "counted in reading order (row by row from the top left), with the feature-maps article's recipe; "
                      "from left to right one more neuron joins the objective.",
                rows=[FigureRow("First k neurons", figures)], settings=entry.meta["settings"], channel=c))


register(NeuronMapsStage())
