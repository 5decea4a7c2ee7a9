"""What the architecture alone decides, in one small task per model: the exact receptive field
of every selected layer (`atlasgen.receptive`) and the branches of the layers that concatenate
them (`atlasgen.branches`)."""

from __future__ import annotations

import dataclasses

from atlasgen.cache import Entry
from atlasgen.plan import make_task
from atlasgen.sitedata import BranchInfo, ReceptiveFieldInfo
from atlasgen.stages import Stage, register


def load_fields(entry: Entry) -> dict:
    """layer name -> ReceptiveField."""
    from atlasgen.receptive import ReceptiveField

    return {name: ReceptiveField(**{k: tuple(v) if isinstance(v, list) else v for k, v in rf.items()})
            for name, rf in entry.meta["fields"].items()}


class Receptive(Stage):
    name = "receptive"
    version = 2  # 2: and branches
    order = 10
    title = "receptive fields"

    def tasks(self, basis):
        inputs = {"arch": basis.config.arch, "weights": basis.weights_digest, "input_size": basis.preprocess.input_size,
                  "layers": [layer.name for layer in basis.layers]}
        return [make_task(self.name, self.version, basis.config.name, "", None, inputs)]

    def compute(self, run, plan, tasks):
        from atlasgen.branches import concat_branches
        from atlasgen.receptive import receptive_fields

        for task in tasks:
            fields = receptive_fields(plan.loaded.module, [layer.name for layer in plan.layers], plan.input_size)
            maps = [layer.name for layer in plan.layers if layer.layout == "nchw"]  # channels on axis 1
            branches = concat_branches(plan.loaded.module, maps, plan.input_size)
            run.store(task, {}, meta={"fields": {name: dataclasses.asdict(rf) for name, rf in fields.items()},
                                      "branches": {name: [dataclasses.asdict(b) for b in found] for name, found in branches.items()}})

    def contribute(self, layer):
        entry = layer.model_entry(self.name)
        if entry is not None:
            rf = entry.meta["fields"][layer.info.name]
            layer.data.receptive_field = ReceptiveFieldInfo(tuple(rf["size"]), tuple(rf["stride"]), rf["covers_input"])
            layer.data.branches = [BranchInfo(**b) for b in entry.meta.get("branches", {}).get(layer.info.name, [])]


register(Receptive())
