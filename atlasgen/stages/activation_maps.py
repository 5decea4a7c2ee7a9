"""Activation maps of an input: for each of a unit's top dataset examples, the channel's whole
map over the image as the model sees it (every position, not only the receptive field of the
strongest one), overlaid on the image, as the lecture notes show a layer's response to one
input. Shown on demand on the unit page (a <details> element: no script, works from file://).

Only the layers and channels `[activation_maps]` selects get maps (none by default: an atlas
of every unit would hold top_k more images per unit), and only the first `top_k` top
examples (3 by default, at most `examples.top_k`). The map is upsampled bilinearly over a grey
copy of the image and drawn in the top examples' orange with an opacity in proportion to the value, on
the channel's dataset max (the best top example's value): 0 and below are not drawn, the
dataset max is fully coloured. The outline is the receptive field of the strongest position
(the top example's patch), where the field fits inside the input.

The images are read back by the indices the examples task stored and run through the model
once each; one task per selected layer, keyed on that layer's examples task."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from atlasgen.sitedata import StageImage
from atlasgen.stages import Stage, get, register
from atlasgen.stages._topk import (dataset_of, example_slots, grey_copy, input_tensor, layer_maps, stored_examples,
                                   top_k_tasks)

if TYPE_CHECKING:
    from PIL import Image

VIEW_SIDE = (128, 224)  # the overlay's side: the input's, at least 128 px and at most 224 px
OUTLINE = (255, 255, 255)


def overlay(view: Image.Image, amap: np.ndarray, high: float, box: tuple[int, int, int, int] | None) -> Image.Image:
    """`view` with `amap` (H, W) drawn over it, on the scale 0 .. `high`; `box` (top, left,
    bottom, right) in `view` pixels is outlined."""
    from PIL import ImageDraw

    from atlasgen.examples import HEAT_COLOURS, overlay_heat

    heat = np.clip(amap / high, 0, 1) if high > 0 else np.zeros_like(amap)
    image = overlay_heat(grey_copy(view), heat, HEAT_COLOURS["top"])
    if box is not None:
        top, left, bottom, right = box
        ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), outline=OUTLINE, width=1)
    return image


def activation_maps(model, layer: str, dataset, slots: list[tuple[int, int, int]], device, batch_size: int = 32
                    ) -> dict[tuple[int, int], np.ndarray]:
    """(channel, rank) -> the channel's (H, W) map over the example's image."""
    import torch

    indices = sorted({i for _c, _rank, i in slots})
    maps: dict[int, np.ndarray] = {}
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        act = layer_maps(model, layer, torch.stack([input_tensor(dataset, i) for i in chunk]), device)
        maps.update({i: act[row].numpy() for row, i in enumerate(chunk)})
    return {(c, rank): maps[i][c] for c, rank, i in slots}


class ActivationMaps(Stage):
    name = "activation_maps"
    version = 1
    order = 50
    title = "activation maps"
    unit_section = "partials/activation_maps.html"

    def tasks(self, basis):
        return top_k_tasks(self.name, self.version, basis, basis.config.stages.activation_maps)

    def compute(self, run, plan, tasks):
        from atlasgen.data import input_view
        from atlasgen.examples import encode
        from atlasgen.images import EXTENSIONS
        from atlasgen.stages.receptive import load_fields
        from PIL import Image

        fields = load_fields(run.ensure(get("receptive"), plan, plan.tasks_of("receptive")[0]))
        ext = EXTENSIONS[run.image_settings.format]
        size = plan.input_size
        side = min(max(size, VIEW_SIDE[0]), VIEW_SIDE[1])
        for task in tasks:
            run.check_stop()
            entry = stored_examples(run, plan, task)
            if entry is None:
                continue
            arrays, inputs = entry.arrays(), _inputs(task)
            dataset = dataset_of(plan)
            slots = example_slots(arrays, inputs["channels"], inputs["top_k"])
            maps = activation_maps(plan.loaded.module, task.layer, dataset, slots, run.device,
                                   plan.config.stages.examples.batch_size)
            rf = fields[task.layer]
            files, stored = {}, np.full((len(inputs["channels"]), inputs["top_k"], *_shape(maps)), np.nan, np.float32)
            row = {c: n for n, c in enumerate(inputs["channels"])}
            for c, rank, i in slots:
                view = input_view(dataset.load_source(i), size).resize((side, side), Image.Resampling.BICUBIC)
                box = None if rf.covers_input else tuple(round(v * side / size) for v in rf.box(*arrays["top_pos"][c, rank]))
                image = overlay(view, maps[c, rank], float(arrays["top_value"][c, 0]), box)
                files[f"{c}/{rank}.{ext}"] = encode(image, run.image_settings)
                stored[row[c], rank] = maps[c, rank]
            run.store(task, files, {"maps": stored}, meta={"ext": ext, "outlined": not rf.covers_input})

    def contribute(self, layer):
        entry = layer.entry(self.name)
        if entry is None:
            return
        inputs, ext = _inputs(entry.meta), entry.meta["ext"]
        for unit in layer.units:
            if unit.channel not in inputs["channels"]:
                continue
            ranks = []
            for rank in range(inputs["top_k"]):
                name = f"{unit.channel}/{rank}.{ext}"
                if name in entry.meta["files"]:
                    ranks.append(rank)
                    unit.stage_images[f"actmap-{rank}.{ext}"] = StageImage(
                        entry.file(name), f"Activation map of channel {unit.channel} over its top example {rank + 1}")
            unit.extras[self.name] = {"ranks": ranks, "ext": ext, "outlined": entry.meta["outlined"]}


def _inputs(task_or_meta) -> dict:
    import json

    inputs = task_or_meta.inputs if hasattr(task_or_meta, "inputs") else task_or_meta["inputs"]
    return json.loads(inputs)


def _shape(maps: dict) -> tuple[int, int]:
    return next(iter(maps.values())).shape if maps else (0, 0)


register(ActivationMaps())
