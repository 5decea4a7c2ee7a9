"""Cross-activation during optimization: while atlasgen's channel objective optimizes a
channel's image, the spatial mean of every channel of its layer at every step (recorded through
the loop's `record` hook, `atlasgen.featvis.record.LayerMeans`). The unit page plots the
channel's own series and the few other channels that end highest, as an inline SVG chart: the
article's way of mapping how similar each feature is to the others.

    [[models.experiments]]
    kind = "cross-activation"
    layer = "conv3"
    channels = [1, 5]
    top = 5
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from atlasgen.experiments import check_channel, layer_info, of_kind, problem
from atlasgen.parsers import integer, list_of, nonempty_string, required, setting
from atlasgen.plan import make_task
from atlasgen.stages import Stage, get, register
from atlasgen.stages.featvis import key_settings

OBJECTIVE = "channel"
MAX_POINTS = 96  # points per plotted line: a step of every ceil(steps / 96)


@dataclass(frozen=True)
class CrossActivation:
    """Every channel's mean activation over the steps while chosen channels are optimized."""

    layer: str = required(nonempty_string, "the layer, one of the atlas's layers of this model")
    channels: tuple[int, ...] = required(list_of(integer(0), nonempty=True, unique=True), "the channels optimized")
    top: int = setting(5, integer(1, 20), "other channels plotted: those with the highest mean at the last step")


def _settings(config):
    return dataclasses.replace(config.stages.visualize, objectives=(OBJECTIVE,))


class CrossActivationStage(Stage):
    name = "cross-activation"
    version = 2  # 2: featvis optimizes through a clamp, not a sigmoid (its version is now a key input)
    order = 62
    title = "cross-activation"
    experiment = CrossActivation
    unit_section = "partials/cross_activation.html"

    def tasks(self, basis):
        pre, tasks, seen = basis.preprocess, [], set()
        for exp in of_kind(basis.config, self.name):
            layer = layer_info(basis, exp, exp.settings.layer)
            for i, channel in enumerate(exp.settings.channels):
                check_channel(basis, exp, layer, channel, f"channels[{i}]")
                if (layer.name, channel) in seen:
                    raise problem(basis.config, exp, f"channels[{i}]", f"channel {channel} of {layer.name} is already "
                                  "in a cross-activation experiment; list it once")
                seen.add((layer.name, channel))
                inputs = {**basis.model_inputs(layer.name), "mean": list(pre.mean), "std": list(pre.std),
                          "visualize": key_settings(_settings(basis.config)), "channel": channel, "top": exp.settings.top,
                          "optimizer": get("featvis").version}  # it runs that stage's optimization
                tasks.append(make_task(self.name, self.version, basis.config.name, layer.name, channel, inputs))
        return tasks

    def compute(self, run, plan, tasks):
        from atlasgen.featvis import visualize_channels
        from atlasgen.featvis.batch import ImageSpec
        from atlasgen.featvis.record import LayerMeans
        from atlasgen.hooks import input_resized
        from atlasgen.models import smallest_input

        loaded, settings = plan.loaded, _settings(plan.config)
        size = loaded.preprocess.input_size
        smallest = size if loaded.fixed_input else smallest_input(loaded.module, plan.layers, size)
        by_layer: dict[str, list] = {}
        for task in tasks:
            by_layer.setdefault(task.layer, []).append(task)
        with input_resized(loaded.module, smallest, loaded.fixed_input), \
                run.bar(len(tasks) * settings.steps, f"{plan.config.name}: cross-activation", "img-step") as bar:
            for layer, layer_tasks in by_layer.items():
                run.check_stop()
                recorder = LayerMeans()
                visualize_channels(loaded.module, layer, [t.channel for t in layer_tasks], settings, loaded.preprocess,
                                   run.device, progress=bar.update, record=recorder)
                for task in layer_tasks:
                    run.store(task, {}, {"series": recorder.series(ImageSpec(task.channel, OBJECTIVE))})

    def contribute(self, layer):
        entries = layer.channel_entries(self.name)
        for unit in layer.units:
            entry = entries.get(unit.channel)
            if entry is not None:
                top = int(json.loads(entry.meta["inputs"])["top"])
                unit.extras[self.name] = chart(entry.arrays()["series"], unit.channel, top)


def chart(series: np.ndarray, channel: int, top: int) -> dict:
    """What the unit page plots: the channel's own line and the `top` other channels with the
    highest mean at the last step, each as (x, y) points in [0, 1] (x: step, y: from the lowest
    to the highest value plotted), with the value range and the step count."""
    steps, channels = series.shape
    others = [int(c) for c in np.argsort(-series[-1], kind="stable") if c != channel][:top]
    shown = [channel] + others
    every = max(1, -(-steps // MAX_POINTS))
    picked = list(range(0, steps, every)) + ([steps - 1] if (steps - 1) % every else [])
    values = series[np.ix_(picked, shown)]
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    lines = []
    for j, c in enumerate(shown):
        points = [(i / max(steps - 1, 1), (float(values[k, j]) - low) / span) for k, i in enumerate(picked)]
        lines.append({"channel": c, "own": c == channel, "points": points, "final": float(series[-1, c])})
    return {"lines": lines, "low": low, "high": high, "steps": steps, "channels": channels}


register(CrossActivationStage())
