"""Receptive fields: the exact field of every selected layer (`atlasgen.receptive`); they
depend only on the architecture and the input size, so a model has one small task."""

from __future__ import annotations

import dataclasses

from atlasgen.cache import Entry
from atlasgen.plan import make_task
from atlasgen.sitedata import ReceptiveFieldInfo
from atlasgen.stages import Stage, register


def load_fields(entry: Entry) -> dict:
    """layer name -> ReceptiveField."""
    from atlasgen.receptive import ReceptiveField

    return {name: ReceptiveField(**{k: tuple(v) if isinstance(v, list) else v for k, v in rf.items()})
            for name, rf in entry.meta["fields"].items()}


class Receptive(Stage):
    name = "receptive"
    version = 1
    order = 10
    title = "receptive fields"

    def tasks(self, basis):
        inputs = {"arch": basis.config.arch, "weights": basis.weights_digest, "input_size": basis.preprocess.input_size,
                  "layers": [layer.name for layer in basis.layers]}
        return [make_task(self.name, self.version, basis.config.name, "", None, inputs)]

    def compute(self, run, plan, tasks):
        from atlasgen.receptive import receptive_fields

        for task in tasks:
            fields = receptive_fields(plan.loaded.module, [layer.name for layer in plan.layers], plan.input_size)
            run.store(task, {}, meta={"fields": {name: dataclasses.asdict(rf) for name, rf in fields.items()}})

    def contribute(self, layer):
        entry = layer.model_entry(self.name)
        if entry is not None:
            rf = entry.meta["fields"][layer.info.name]
            layer.data.receptive_field = ReceptiveFieldInfo(tuple(rf["size"]), tuple(rf["stride"]), rf["covers_input"])


register(Receptive())
