"""Combined objectives: one image that maximizes the sum of several units' objectives (each
the feature-maps article's distance of a whole channel to C), in one layer or in several,
shown next to each unit optimized alone, with every unit's mean activation on every image
(the article's feature 199 of Mixed_6a with feature 201 of Mixed_6b).

    [[models.experiments]]
    kind = "combined"
    name = "edges-and-blobs"
    units = [{layer = "conv3", channel = 1}, {layer = "conv4", channel = 7}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from atlasgen import images
from atlasgen.experiments import check_channel, layer_info, of_kind, problem
from atlasgen.parsers import integer, list_of, nonempty_string, required, table_of, url_id
from atlasgen.plan import make_task
from atlasgen.sitedata import ExperimentPage, Figure, FigureRow
from atlasgen.stages import Stage, register
from atlasgen.stages._recipe import entries_of, key_inputs, recipe_of, run_recipe, written


@dataclass(frozen=True)
class Unit:
    """One unit of a combination."""

    layer: str = required(nonempty_string, "the layer, one of the atlas's layers of this model")
    channel: int = required(integer(0), "the channel")


@dataclass(frozen=True)
class Combined:
    """One image maximizing the sum of several units' objectives, beside each unit alone."""

    name: str = required(url_id, "the page's name in its URL (<model>/<first unit's layer>/combined-<name>/)")
    units: tuple[Unit, ...] = required(list_of(table_of(Unit, "a unit"), nonempty=True),
                                       "the units, as {layer = \"...\", channel = N} tables")


def _label(unit: dict) -> str:
    return f"{unit['layer']} {unit['channel']}"


class CombinedStage(Stage):
    name = "combined"
    version = 1
    order = 64
    title = "combined objectives"
    experiment = Combined

    def tasks(self, basis):
        tasks, names = [], set()
        for exp in of_kind(basis.config, self.name):
            s = exp.settings
            if s.name in names:
                raise problem(basis.config, exp, "name", f"another combined experiment is named {s.name!r}; "
                              "give each its own name")
            names.add(s.name)
            units = []
            for i, unit in enumerate(s.units):
                layer = layer_info(basis, exp, unit.layer, f"units[{i}].layer")
                check_channel(basis, exp, layer, unit.channel, f"units[{i}].channel")
                units.append({"layer": unit.layer, "channel": unit.channel})
            if len({(u["layer"], u["channel"]) for u in units}) != len(units):
                raise problem(basis.config, exp, "units", "a unit is listed twice; list each once")
            inputs = {**key_inputs(basis, s.units[0].layer), "layers": sorted({u["layer"] for u in units}),
                      "name": s.name, "units": units}
            tasks.append(make_task(self.name, self.version, basis.config.name, s.units[0].layer, None, inputs))
        return tasks

    def compute(self, run, plan, tasks):
        from atlasgen.featvis.article import Part, Target

        recipe = recipe_of(plan.config)
        for task in tasks:
            inputs = json.loads(task.inputs)
            parts = tuple(Part(u["layer"], u["channel"]) for u in inputs["units"])
            targets = [Target(parts, "combined:" + "+".join(f"{p.layer}:{p.channel}" for p in parts))]
            targets += [Target((p,), f"{p.layer}:{p.channel}") for p in parts]
            pixels, _, values = run_recipe(run, plan, targets, recipe, f"combined {inputs['name']}", score=parts)
            files = {"combined.png": images.encode(pixels[0], "png")}
            files.update({f"unit-{i}.png": images.encode(pixels[i + 1], "png") for i in range(len(parts))})
            run.store(task, files, {"values": np.asarray(values, dtype=np.float32)},
                      meta={"settings": written(self.name, {"name": inputs["name"]}) +
                            [["units", "[" + ", ".join(f"{{layer = {json.dumps(u['layer'])}, channel = {u['channel']}}}"
                                                       for u in inputs["units"]) + "]"]]})

    def contribute(self, layer):
        for task, entry in entries_of(layer, self.name):
            inputs = json.loads(task.inputs)
            units, values = inputs["units"], entry.arrays()["values"]  # values (1 + units, units)

            def numbers(row: int) -> list[tuple[str, float]]:
                return [(f"{_label(u)}:", float(values[row, j])) for j, u in enumerate(units)]

            together = [Figure(entry.file("combined.png"), " + ".join(_label(u) for u in units), numbers(0))]
            alone = [Figure(entry.file(f"unit-{i}.png"), f"{_label(u)} alone", numbers(i + 1)) for i, u in enumerate(units)]
            layer.data.experiments.append(ExperimentPage(
                kind=self.name, folder=f"combined-{inputs['name']}", title=f"Combined objective {inputs['name']}",
                intro="One image optimized for the sum of the units' objectives (each the feature-maps article's distance "
                      "of a whole channel to C), next to each unit optimized alone with the same recipe; under each "
                      "image, every unit's mean activation on it.",
                rows=[FigureRow("Together", together), FigureRow("Each unit alone", alone)],
                settings=entry.meta["settings"]))


register(CombinedStage())
