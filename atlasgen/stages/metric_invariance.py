"""Metric invariance: the same channels optimized with the feature-maps article's recipe under
each of its distances to C (L1, L2, L-infinity), side by side on one page per layer, as the
article compares them.

    [[models.experiments]]
    kind = "metric-invariance"
    layer = "conv3"
    channels = [1, 5]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from atlasgen import images
from atlasgen.experiments import check_channel, layer_info, of_kind, problem
from atlasgen.objectives.article import METRICS
from atlasgen.parsers import integer, list_of, nonempty_string, required
from atlasgen.plan import make_task
from atlasgen.sitedata import ExperimentPage, Figure, FigureRow
from atlasgen.stages import Stage, register
from atlasgen.stages._recipe import entries_of, key_inputs, recipe_of, run_recipe, written

FORMULAS = {"l1": "L1: sum(C - z)", "l2": "L2: sqrt(sum((C - z)^2))", "linf": "L-infinity: max |C - z|"}


@dataclass(frozen=True)
class MetricInvariance:
    """Chosen channels under each distance of the article's recipe."""

    layer: str = required(nonempty_string, "the layer, one of the atlas's layers of this model")
    channels: tuple[int, ...] = required(list_of(integer(0), nonempty=True, unique=True), "the channels compared")


class MetricInvarianceStage(Stage):
    name = "metric-invariance"
    version = 1
    order = 66
    title = "metric invariance"
    experiment = MetricInvariance

    def tasks(self, basis):
        tasks, seen = [], set()
        for exp in of_kind(basis.config, self.name):
            s = exp.settings
            layer = layer_info(basis, exp, s.layer)
            for i, channel in enumerate(s.channels):
                check_channel(basis, exp, layer, channel, f"channels[{i}]")
            if layer.name in seen:
                raise problem(basis.config, exp, "layer", f"another metric-invariance experiment compares {layer.name}; "
                              "list all its channels in one")
            seen.add(layer.name)
            inputs = {**key_inputs(basis, layer.name), "channels": list(s.channels), "metrics": list(METRICS)}
            tasks.append(make_task(self.name, self.version, basis.config.name, layer.name, None, inputs))
        return tasks

    def compute(self, run, plan, tasks):
        from atlasgen.featvis.article import Part, Target

        recipe = recipe_of(plan.config)
        for task in tasks:
            channels = json.loads(task.inputs)["channels"]
            targets = [Target((Part(task.layer, c),), f"{task.layer}:{c}") for c in channels]
            files, values = {}, []
            for metric in METRICS:
                pixels, own, _ = run_recipe(run, plan, targets, dataclasses.replace(recipe, metric=metric),
                                            f"metric invariance {task.layer} ({metric})")
                files.update({f"{metric}-{c}.png": images.encode(pixels[i], "png") for i, c in enumerate(channels)})
                values.append([v[0] for v in own])
            run.store(task, files, {"values": np.asarray(values, dtype=np.float32)},
                      meta={"settings": written(self.name, {"layer": task.layer, "channels": channels})})

    def contribute(self, layer):
        for task, entry in entries_of(layer, self.name):
            channels = json.loads(task.inputs)["channels"]
            values = entry.arrays()["values"]  # (metrics, channels)
            rows = [FigureRow(f"Channel {c}", [Figure(entry.file(f"{metric}-{c}.png"), FORMULAS[metric],
                                                      [("channel mean", float(values[m, i]))])
                                               for m, metric in enumerate(METRICS)])
                    for i, c in enumerate(channels)]
            layer.data.experiments.append(ExperimentPage(
                kind=self.name, folder="metric-invariance", title="Metric invariance",
                intro="Each channel optimized with the feature-maps article's recipe under each of its distances between "
                      "the channel's activations z and the constant C; if the feature, not the metric, shapes the image, "
                      "a row's images look alike. L-infinity's gradient reaches only the unit farthest from C at each "
                      "step, so its image changes one receptive field at a time.",
                rows=rows, settings=entry.meta["settings"]))


register(MetricInvarianceStage())
