"""What the stages that revisit a unit's top dataset examples share (activation maps,
occlusion): which layers and channels a setting selects, a key built on the examples task
(whose key already holds the weights, the dataset's fingerprint and the examples settings
that chose the images), and reading the stored top-k back. Torch is imported only by the
functions that run the model."""

from __future__ import annotations

import fnmatch
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from atlasgen.errors import ConfigError
from atlasgen.plan import KeyBasis, LayerInfo, Task, channel_range, make_task
from atlasgen.stages import get

if TYPE_CHECKING:
    import torch
    from torch import nn

    from atlasgen.cache import Entry
    from atlasgen.data import ImageFolder

log = logging.getLogger(__name__)


def selected_layers(basis: KeyBasis, settings: Any, table: str) -> list[tuple[LayerInfo, list[int]]]:
    """(layer, channels) that `settings.layers` and `settings.channels` pick among the atlas's
    layers and shown channels; a pattern that matches no layer is a configuration problem."""
    problems, picked = [], []
    for i, pattern in enumerate(settings.layers):
        if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in basis.layers):
            names = ", ".join(layer.name for layer in basis.layers)
            problems.append((f"{table}.layers[{i}]", f"{pattern!r} matches none of the layers of model "
                             f"{basis.config.name!r} ({names}); give one of them or a glob pattern over them"))
    if problems:
        raise ConfigError(problems)
    for layer in basis.layers:
        if any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in settings.layers):
            channels = list(channel_range(basis.config, layer))
            if settings.channels is not None:
                channels = [c for c in channels if settings.channels[0] <= c < settings.channels[1]]
            if channels:
                picked.append((layer, channels))
    return picked


def top_k_tasks(kind: str, version: int, basis: KeyBasis, settings: Any, **inputs: Any) -> list[Task]:
    """One task per selected layer, keyed by that layer's examples task and `inputs`."""
    examples = {task.layer: task for task in get("dataset").tasks(basis)}
    top_k = min(settings.top_k, basis.config.stages.examples.top_k)
    return [make_task(kind, version, basis.config.name, layer.name, None,
                      {"examples": examples[layer.name].key, "channels": channels, "top_k": top_k,
                       "images": basis.images.patch_inputs(), **inputs})
            for layer, channels in selected_layers(basis, settings, kind)]


def stored_examples(run, plan, task: Task) -> Entry | None:
    """The examples entry `task` was planned on, or None (with a warning) when it is missing."""
    examples = next(t for t in plan.tasks_of("dataset") if t.layer == task.layer)
    entry = run.cache.get(examples.kind, examples.key)
    if entry is None:
        log.warning("%s: the dataset examples of %s are not computed yet; %s is left for the next build",
                    plan.config.name, task.layer, task.kind)
    return entry


def example_slots(arrays: dict[str, np.ndarray], channels: list[int], k: int) -> list[tuple[int, int, int]]:
    """(channel, rank, dataset index) of each kept top example among the first `k`."""
    index = arrays["top_index"]
    return [(c, rank, int(index[c, rank])) for c in channels for rank in range(min(k, index.shape[1]))
            if index[c, rank] >= 0]


def dataset_of(plan) -> ImageFolder:
    """The dataset as the pass read it (same files, same order, same limit)."""
    from atlasgen.data import ImageFolder

    return ImageFolder(plan.dataset, plan.loaded.preprocess, plan.config.stages.examples.max_images)


def input_tensor(dataset: ImageFolder, index: int) -> torch.Tensor:
    from atlasgen.errors import AtlasError

    tensor = dataset[index][0]
    if tensor is None:
        raise AtlasError(f"dataset image {dataset.names[index]!r} can no longer be read; rebuild so the dataset pass "
                         "sees the current files")
    return tensor


def grey_copy(image):
    """`image` (PIL) as a lightened grey RGB image, so a coloured map drawn over it reads the same on any colours."""
    from PIL import Image

    grey = np.asarray(image.convert("L"), dtype=np.float32) * 0.5 + 96
    return Image.fromarray(np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))


def layer_maps(model: nn.Module, layer: str, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, C, H, W) output of `layer` for the inputs `batch`, on the CPU."""
    import torch

    from atlasgen.hooks import eval_mode, forward_layers

    with eval_mode(model), torch.inference_mode():
        return forward_layers(model, batch.to(device), [layer])[layer].float().cpu()
