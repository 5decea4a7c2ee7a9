"""Occlusion: for each of a unit's top dataset examples, how much the unit's activation drops
when a square of its patch is greyed out, as the lecture notes (after Zeiler and Fergus) find
what part of an image a unit needs. The unit is the channel at the example's strongest
position, the position its patch is the receptive field of.

A square of `square` times the patch side slides over the patch in steps of `stride` times the
side (defaults 1/4 and 1/8: a 7 x 7 grid), the last step flush with the far edge. Where it lies
the model input is set to 0, which after normalization is the normalization mean colour (the
training data's mean: ImageNet's for torchvision weights, the generated images' for the demo).
Each pixel of the map is the mean drop (activation without occlusion minus with) of the
squares covering it; the image draws it over a lightened grey copy of the patch, red where
covering the pixel lowers the unit and blue where it raises it, opacity in proportion to
|drop| / the largest |drop| of that example. Where the field covers the whole input, the patch
is the whole input, as on the examples.

Costs one forward pass per square: 50 per example at the defaults, so only the layers and
channels `[occlusion]` selects get maps (none by default)."""

from __future__ import annotations

import numpy as np

from atlasgen.sitedata import StageImage
from atlasgen.stages import Stage, get, register
from atlasgen.stages._topk import (dataset_of, example_slots, grey_copy, input_tensor, layer_maps, stored_examples,
                                   top_k_tasks)

RAISE, LOWER = (0, 90, 255), (230, 0, 0)  # occluding raises / lowers the unit
OPACITY = 0.8


def offsets(start: int, length: int, side: int, step: int) -> list[int]:
    """Where a square of `side` starts along a patch edge [start, start + length), the last flush with its end."""
    last = start + max(length - side, 0)
    found = list(range(start, last + 1, step))
    return found if found[-1] == last else [*found, last]


def occlusion(model, layer: str, x, channel: int, position: tuple[int, int], box: tuple[int, int, int, int],
              square: float, stride: float, device, batch_size: int = 32) -> dict:
    """The drops of `channel` at `position` when squares of `box` (top, left, bottom, right, in
    input pixels, may extend past the input) are set to 0 in the normalized input `x` (3, S, S).

    Returns base (the activation without occlusion), tops, lefts, side (h, w) and drops
    (len(tops), len(lefts)), and map: (box height, box width) mean drop of the covering squares."""
    import torch

    top, left, bottom, right = box
    height, width = bottom - top, right - left
    side = (max(1, round(square * height)), max(1, round(square * width)))
    step = (max(1, round(stride * height)), max(1, round(stride * width)))
    tops, lefts = offsets(top, height, side[0], step[0]), offsets(left, width, side[1], step[1])
    squares = [(t, l) for t in tops for l in lefts]
    size = x.shape[-1]
    inputs = [x]
    for t, l in squares:
        occluded = x.clone()
        occluded[:, max(t, 0):min(t + side[0], size), max(l, 0):min(l + side[1], size)] = 0.0
        inputs.append(occluded)
    values = []
    for start in range(0, len(inputs), batch_size):
        act = layer_maps(model, layer, torch.stack(inputs[start:start + batch_size]), device)
        values.append(act[:, channel, position[0], position[1]])
    values = torch.cat(values).double().numpy()
    base, drops = float(values[0]), values[0] - values[1:]
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for (t, l), drop in zip(squares, drops):
        total[t - top:t - top + side[0], l - left:l - left + side[1]] += drop
        count[t - top:t - top + side[0], l - left:l - left + side[1]] += 1
    return {"base": base, "tops": tops, "lefts": lefts, "side": side, "step": step,
            "drops": drops.reshape(len(tops), len(lefts)).astype(np.float32),
            "map": np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)}


def drawn(patch, drop_map: np.ndarray):
    """`patch` (PIL, any size) lightened to grey with `drop_map` (any shape) over it, stretched to fit."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    grey = np.asarray(grey_copy(patch), dtype=np.float32)
    scale = float(np.abs(drop_map).max())
    values = torch.from_numpy(drop_map / scale if scale > 0 else drop_map)[None, None].float()
    up = F.interpolate(values, size=(patch.height, patch.width), mode="nearest")[0, 0].numpy()[:, :, None]
    colour = np.where(up > 0, np.asarray(LOWER, np.float32), np.asarray(RAISE, np.float32))
    alpha = OPACITY * np.abs(up)
    return Image.fromarray(np.clip(grey * (1 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8))


class Occlusion(Stage):
    name = "occlusion"
    version = 1
    order = 51
    title = "occlusion"
    unit_section = "partials/occlusion.html"

    def tasks(self, basis):
        settings = basis.config.stages.occlusion
        return top_k_tasks(self.name, self.version, basis, settings, square=settings.square, stride=settings.stride)

    def compute(self, run, plan, tasks):
        from PIL import Image

        from atlasgen.data import input_view, source_box
        from atlasgen.examples import crop_marked, encode
        from atlasgen.images import EXTENSIONS
        from atlasgen.stages.receptive import load_fields

        fields = load_fields(run.ensure(get("receptive"), plan, plan.tasks_of("receptive")[0]))
        ext = EXTENSIONS[run.image_settings.format]
        size, examples = plan.input_size, plan.config.stages.examples
        with run.bar(len(tasks), f"{plan.config.name}: occlusion", "layer") as bar:
            for task in tasks:
                run.check_stop()
                entry = stored_examples(run, plan, task)
                if entry is None:
                    continue
                arrays, inputs = entry.arrays(), _inputs(task.inputs)
                dataset, rf = dataset_of(plan), fields[task.layer]
                files, found = {}, {}
                for c, rank, i in example_slots(arrays, inputs["channels"], inputs["top_k"]):
                    pos = tuple(int(v) for v in arrays["top_pos"][c, rank])
                    box = (0, 0, size, size) if rf.covers_input else rf.box(*pos)
                    result = occlusion(plan.loaded.module, task.layer, input_tensor(dataset, i), c, pos, box,
                                       inputs["square"], inputs["stride"], run.device, examples.batch_size)
                    img = dataset.load_source(i)
                    if rf.covers_input:
                        patch = input_view(img, size).resize((examples.patch_size,) * 2, Image.Resampling.BICUBIC)
                    else:
                        patch = crop_marked(img, source_box((img.height, img.width), size, box), examples.patch_size)
                    files[f"{c}/{rank}.{ext}"] = encode(drawn(patch, result["map"]), run.image_settings)
                    found[c, rank] = result
                bar.update(1)
                run.store(task, files, _arrays(found, inputs), meta={"ext": ext, **_geometry(found)})

    def contribute(self, layer):
        entry = layer.entry(self.name)
        if entry is None:
            return
        inputs, ext = _inputs(entry.meta["inputs"]), entry.meta["ext"]
        arrays = entry.arrays()
        for n, c in enumerate(inputs["channels"]):
            unit = next((u for u in layer.units if u.channel == c), None)
            if unit is None:
                continue
            ranks = [rank for rank in range(inputs["top_k"]) if f"{c}/{rank}.{ext}" in entry.meta["files"]]
            for rank in ranks:
                unit.stage_images[f"occlusion-{rank}.{ext}"] = StageImage(
                    entry.file(f"{c}/{rank}.{ext}"), f"Occlusion map of channel {c} on its top example {rank + 1}")
            unit.extras[self.name] = {
                "ranks": ranks, "ext": ext, "square": inputs["square"], "stride": inputs["stride"],
                "side": entry.meta.get("side"), "step": entry.meta.get("step"),
                "base": [float(arrays["base"][n, r]) for r in ranks], "drop": [float(arrays["max_drop"][n, r]) for r in ranks]}


def _inputs(text: str) -> dict:
    import json

    return json.loads(text)


def _arrays(found: dict, inputs: dict) -> dict[str, np.ndarray]:
    shape = (len(inputs["channels"]), inputs["top_k"])
    base, max_drop = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    row = {c: n for n, c in enumerate(inputs["channels"])}
    arrays = {}
    for (c, rank), result in found.items():
        base[row[c], rank], max_drop[row[c], rank] = result["base"], float(result["drops"].max())
        arrays[f"drops_{c}_{rank}"] = result["drops"]
    return {"base": base, "max_drop": max_drop, **arrays}


def _geometry(found: dict) -> dict:
    """The square and step in input pixels (the same for every example of a layer)."""
    if not found:
        return {}
    first = next(iter(found.values()))
    return {"side": list(first["side"]), "step": list(first["step"])}


register(Occlusion())
