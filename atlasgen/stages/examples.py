"""Dataset examples: per channel, the top-k images by the channel's max over positions and the
bottom-k by its min, kept during the dataset pass and drawn as receptive-field patches (or
whole images with a heat map where the field covers the input)."""

from __future__ import annotations

import dataclasses

from atlasgen.plan import make_task
from atlasgen.sitedata import SIDES, Example
from atlasgen.stages import Stage, get, register


class Examples(Stage):
    name = "dataset"  # the cache folder and key kind of dataset examples since atlasgen 0.1
    version = 1
    order = 20
    title = "dataset examples"
    reads_dataset = True

    def tasks(self, basis):
        settings = dataclasses.asdict(basis.config.stages.examples)
        for speed_only in ("batch_size", "workers"):
            settings.pop(speed_only)
        inputs = {"dataset": basis.fingerprint, "preprocess": dataclasses.asdict(basis.preprocess),
                  "examples": settings, "images": basis.images.patch_inputs()}
        return [make_task(self.name, self.version, basis.config.name, layer.name, None,
                          {**basis.model_inputs(layer.name), **inputs}) for layer in basis.layers]

    def accumulator(self, task, plan, layer, shared):
        from atlasgen.examples import ExtremesAccumulator

        return ExtremesAccumulator(task.layer, plan.config.stages.examples)

    def finish(self, run, plan, task, accumulator, done):
        from atlasgen.examples import channel_max, draw_patches, example_maps
        from atlasgen.stages.receptive import load_fields

        receptive = get("receptive")
        field = load_fields(run.ensure(receptive, plan, plan.tasks_of(receptive.name)[0]))[task.layer]
        extremes, settings = accumulator.result(), plan.config.stages.examples
        # The model's part now; drawing and storing (CPU work) may go on beside the next stage.
        planned = example_maps(plan.loaded.module, extremes, field, done.dataset, settings, run.device)

        def draw_and_store() -> None:
            patches = draw_patches(planned, extremes, field, done.dataset, settings, run.image_settings)
            arrays = {**extremes.arrays(), "max": channel_max(extremes), **patches.arrays}
            run.store(task, patches.files, arrays, meta={"sources": done.dataset.relative_paths, "examples": patches.names})

        run.later.submit(draw_and_store)

    def contribute(self, layer):
        entry = layer.entry(self.name)
        if entry is None:
            return
        arrays = layer.arrays(self.name)
        sources, names = entry.meta["sources"], entry.meta["examples"]
        listed = entry.meta["files"]
        # Python lists once per layer: indexing numpy arrays element by element costs more than
        # the rest of assembling 116,000 examples of a whole atlas.
        tables = {f"{side}_{field}": arrays[f"{side}_{field}"].tolist() for side in SIDES
                  for field in ("index", "box", "value", "pos")}
        maxima = arrays["max"].tolist()
        for unit in layer.units:
            c = unit.channel
            unit.dataset_max = float(maxima[c])
            for side in SIDES:
                boxes, values, positions = tables[f"{side}_box"][c], tables[f"{side}_value"][c], tables[f"{side}_pos"][c]
                for rank, index in enumerate(tables[f"{side}_index"][c]):
                    if index < 0:
                        continue
                    patch = names["patch"].format(channel=c, side=side, rank=rank)
                    heat = names.get("heatmap", "").format(channel=c, side=side, rank=rank)
                    getattr(unit, side).append(Example(
                        source=sources[int(index)], box=tuple(int(v) for v in boxes[rank]), value=float(values[rank]),
                        position=tuple(int(v) for v in positions[rank]),
                        patch=entry.file(patch), heatmap=entry.file(heat) if heat in listed else None,
                    ))


register(Examples())
