"""What the stages that optimize with the feature-maps article's recipe share: its settings as
the model's `[visualize.feature-maps-article]` gives them, the inputs of their keys, and one
call that fits the model's input size and runs the recipe with a progress bar."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from atlasgen.objectives.article import NAME


def recipe_of(config):
    """The model's recipe: the article's numbers with its `[visualize.feature-maps-article]` keys over them."""
    return config.stages.visualize.options_for(NAME)


def key_inputs(basis, layer: str) -> dict:
    """What any recipe image of `layer` depends on besides its target."""
    pre = basis.preprocess
    return {**basis.model_inputs(layer), "input_size": pre.input_size, "mean": list(pre.mean), "std": list(pre.std),
            "recipe": dataclasses.asdict(recipe_of(basis.config))}


def run_recipe(run, plan, targets: Sequence, recipe, what: str, score: Sequence = ()):
    """(uint8 (N, S, S, 3) images, [(P_i,) mean activation of each part of target i on its
    image], (N, len(score)) each image's mean activation of each part in `score`): the recipe's
    images of `targets`, in batches, scored as stored (quantized), without transforms."""
    import numpy as np
    import torch

    from atlasgen.featvis.article import optimize_targets, part_means, to_uint8
    from atlasgen.hooks import input_resized
    from atlasgen.models import smallest_input

    loaded = plan.loaded
    size = loaded.preprocess.input_size
    smallest = size if loaded.fixed_input else smallest_input(loaded.module, plan.layers, size)
    steps = sum(o.steps for o in recipe.octaves)
    finals = []
    with input_resized(loaded.module, smallest, loaded.fixed_input), \
            run.bar(len(targets) * steps, f"{plan.config.name}: {what}", "img-step") as bar:
        for start in range(0, len(targets), BATCH):
            run.check_stop()
            finals.append(optimize_targets(loaded.module, targets[start:start + BATCH], recipe, loaded.preprocess,
                                           run.device, progress=bar.update))
        pixels = to_uint8(torch.cat(finals))
        stored = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255
        own = [part_means(loaded.module, stored[i:i + 1], t.parts, loaded.preprocess, run.device)[0]
               for i, t in enumerate(targets)]
        cross = (part_means(loaded.module, stored, score, loaded.preprocess, run.device) if score
                 else np.zeros((len(targets), 0), dtype=np.float32))
    return pixels, own, cross


BATCH = 32  # images per recipe batch (as featvis on CPU)


def entries_of(layer, kind: str) -> list:
    """(task, entry) of this layer's computed `kind` tasks, in plan order (experiments that may
    share a layer and channel are not told apart by assembly's task index)."""
    found = []
    for task in layer.model.tasks_of(kind):
        if task.layer == layer.info.name:
            entry = layer.cache.get(task.kind, task.key)
            if entry is not None:
                found.append((task, entry))
    return found


def written(kind: str, keys: dict) -> list[list[str]]:
    """An experiment's table as the page shows it: [key, TOML value] pairs."""
    return [["kind", json.dumps(kind)]] + [[key, json.dumps(value)] for key, value in keys.items()]
