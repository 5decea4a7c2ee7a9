"""Models as data: build a configured model, load its weights, digest them, and find its
layers (dotted module names, output shapes) and preprocessing."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from atlasgen import sources
from atlasgen.config import ModelConfig
from atlasgen.checkpoints import load_weights_file
from atlasgen.digest import file_digest
from atlasgen.errors import AtlasError, ConfigError
from atlasgen.hooks import NHWC, declare_layouts, forward_layers, layout_of, map_shape, output_shapes
from atlasgen.plan import LayerInfo
from atlasgen.settings import Preprocess

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Modules that never start a "layer" of the atlas by default: they repeat the channels
# of the block before them (pooling, activations, norms) or are not feature maps.
_NOT_FEATURE_BLOCKS = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.Flatten, nn.Identity, nn.Linear,
)


@dataclass
class LoadedModel:
    config: ModelConfig
    module: nn.Module
    preprocess: Preprocess
    weights_digest: str
    weights_label: str  # what the page says about the weights
    fixed_input: bool = False  # the model accepts only preprocess.input_size (set when planned)


# ---------------------------------------------------------------- checks before loading


def check_models(models: Sequence[ModelConfig]) -> None:
    """Check architectures and weights names without building anything."""
    problems: list[tuple[str, str]] = []
    for model in models:
        source = sources.for_arch(model.arch)
        if model.weights is not None and not os.path.isfile(model.weights) and not source.weights_names:
            problems.append((f"{model.path}.weights", f"{model.weights!r} is a torchvision weights name, but arch {model.arch!r} is not a torchvision model; give a weights file instead"))
            continue
        problems += source.check(model)
    if problems:
        raise ConfigError(problems)


# ---------------------------------------------------------------- building


def build_model(config: ModelConfig) -> LoadedModel:
    """Instantiate the configured model in eval mode, with its weights and preprocessing."""
    built = sources.for_arch(config.arch).build(config)
    module, digest = built.module, built.digest
    if config.weights is not None and os.path.isfile(config.weights):
        load_weights_file(module, Path(config.weights), config.path)
        digest = file_digest(Path(config.weights))
    if not digest:
        digest = state_dict_digest(module)
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    preprocess = _resolve_preprocess(config, built.preprocess)
    return LoadedModel(config, module, preprocess, digest, config.weights or built.label)


def _resolve_preprocess(config: ModelConfig, declared: Preprocess | None) -> Preprocess:
    base = declared or Preprocess(224, IMAGENET_MEAN, IMAGENET_STD)
    return Preprocess(
        input_size=config.input_size or base.input_size,
        mean=tuple(config.mean) if config.mean else base.mean,
        std=tuple(config.std) if config.std else base.std,
    )


# ---------------------------------------------------------------- digests


def state_dict_digest(module: nn.Module) -> str:
    """SHA-256 over the state_dict's names, shapes, dtypes and bytes, in key order."""
    sha = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        sha.update(json.dumps([key, list(tensor.shape), str(tensor.dtype)]).encode())
        sha.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return sha.hexdigest()


# ---------------------------------------------------------------- layers

# A model whose top level offers fewer blocks than this (VGG's `features`, EfficientNet's
# stages, a ViT's encoder) is opened up, container by container, largest first.
MIN_DEFAULT_LAYERS = 3
# Inside an opened container a bare convolution is shown after the activation that follows
# it (VGG's conv1_1 is read after its ReLU, as the field's atlases show it).
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
_NOT_FEATURE_NAMES = {"Permute", "Flatten", "StochasticDepth"}  # torchvision helpers that repeat a map


def module_shapes(module: nn.Module, input_size: int) -> dict[str, tuple[int, ...]]:
    """The output shape of every named module on a blank input, in the order the forward pass
    reaches them (a module that is never called, a ModuleList say, is absent)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    names = [name for name, _ in module.named_modules() if name]
    return output_shapes(module, torch.zeros(1, 3, input_size, input_size, device=device), names)


def _is_block(child: nn.Module) -> bool:
    return not isinstance(child, _NOT_FEATURE_BLOCKS) and type(child).__name__ not in _NOT_FEATURE_NAMES


def _blocks(prefix: str, parent: nn.Module, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The children of `parent` that output feature maps; containers that are never called
    themselves (ModuleList) are opened at once."""
    names: list[str] = []
    after_leaf = False  # the last name kept is a bare layer that norms/activations may follow
    for child_name, child in parent.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if prefix and after_leaf and isinstance(child, _ACTIVATIONS) and name in shapes:
            names[-1] = name
            continue
        if prefix and after_leaf and isinstance(child, _NORMS):
            continue
        after_leaf = False
        if not _is_block(child):
            continue
        if name not in shapes:
            names += _blocks(name, child, shapes)
        elif layout_of(shapes[name]) is not None:
            names.append(name)
            after_leaf = not any(True for _ in child.children())
    return names


def default_layer_names(module: nn.Module, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The model's blocks: its top-level modules that output feature maps, with the one plain
    container among them opened (VGG's convolutions, EfficientNet's, ConvNeXt's and timm's
    stages, DenseNet's dense blocks), then the largest container opened while there are fewer
    than MIN_DEFAULT_LAYERS (a ViT's encoder blocks)."""
    modules = dict(module.named_modules())

    def inner(name: str) -> list[str]:
        """The blocks inside `name`, through wrappers of one block (a ViT's encoder.layers)."""
        found = _blocks(name, modules[name], shapes)
        while len(found) == 1 and _blocks(found[0], modules[found[0]], shapes):
            found = _blocks(found[0], modules[found[0]], shapes)
        return found if len(found) > 1 else []

    names = _blocks("", module, shapes)
    # The one plain container among the blocks holds the network's stages (timm's `blocks`,
    # torchvision's `features`); several plain containers side by side are the stages (ResNet).
    while True:
        plain = [name for name in names if type(modules[name]) in (nn.Sequential, nn.ModuleList)]
        stages = inner(plain[0]) if len(plain) == 1 else []
        if not stages:
            break
        at = names.index(plain[0])
        names[at:at + 1] = stages
    while len(names) < MIN_DEFAULT_LAYERS:
        opened = {name: inner(name) for name in names}
        openable = [name for name in names if opened[name]]
        if not openable:
            break
        largest = max(openable, key=lambda name: sum(p.numel() for p in modules[name].parameters()))
        at = names.index(largest)
        names[at:at + 1] = opened[largest]
    order = list(shapes)
    return sorted(names, key=order.index)


def feature_layers(shapes: dict[str, tuple[int, ...]], candidates: Sequence[str],
                   channels_last: frozenset[str] = frozenset()) -> list[LayerInfo]:
    """The candidates whose outputs are feature maps, in the order the forward pass reaches them
    (`channels_last`: outputs known to be (N, H, W, C) though their shape cannot tell)."""
    layers = []
    for name, shape in shapes.items():
        layout = (NHWC if name in channels_last else layout_of(shape)) if name in candidates else None
        if layout is not None:
            layers.append(LayerInfo(name, *map_shape(shape, layout), layout=layout))
    return layers


def select_layers(loaded: LoadedModel) -> list[LayerInfo]:
    """The configured layers: glob patterns over dotted module names, or the default blocks.
    Their layouts are declared on the model, so every forward pass hands out maps."""
    config, module = loaded.config, loaded.module
    shapes = _shapes_or_fail(loaded)
    if config.layers is None:
        candidates = default_layer_names(module, shapes)
    else:
        names = [name for name, _ in module.named_modules() if name]
        problems = []
        candidates = []
        for i, pattern in enumerate(config.layers):
            matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                problems.append((f"{config.path}.layers[{i}]", f"no layer matches {pattern!r}; layers: {_layer_hint(module, shapes)}"))
            candidates += [name for name in matched if name not in candidates]
        if problems:
            raise ConfigError(problems)
    layers = feature_layers(shapes, candidates, _channels_last_cubes(loaded, shapes, candidates))
    if config.layers is not None:
        skipped = [name for name in candidates if name not in {layer.name for layer in layers}]
        if skipped:
            log.info("%s: skipping modules that do not output feature maps: %s", config.name, ", ".join(skipped[:8]))
    if not layers:
        raise AtlasError(f"{config.path}: none of the selected modules outputs a feature map "
                         "(batch, channels, height, width), a channels-last map or a sequence of patch tokens")
    declare_layouts(module, {layer.name: layer.layout for layer in layers})
    _check_channels(config, layers)
    return layers


def _channels_last_cubes(loaded: LoadedModel, shapes: dict[str, tuple[int, ...]], candidates: Sequence[str]) -> frozenset[str]:
    """4-d outputs with as many channels as rows and columns cannot be read from one shape: a
    second input size shows which sizes are spatial."""
    cubes = [name for name in candidates if len(shapes.get(name, ())) == 4 and len(set(shapes[name][1:])) == 1]
    if not cubes:
        return frozenset()
    size = loaded.preprocess.input_size + 32
    device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
    try:
        other = output_shapes(loaded.module, torch.zeros(1, 3, size, size, device=device), cubes)
    except Exception:  # noqa: BLE001 - a model of one input size: keep the NCHW reading
        return frozenset()
    return frozenset(name for name in cubes if len(other.get(name, ())) == 4 and other[name][1] == other[name][2] != other[name][3])


def _shapes_or_fail(loaded: LoadedModel) -> dict[str, tuple[int, ...]]:
    size = loaded.preprocess.input_size
    try:
        return module_shapes(loaded.module, size)
    except Exception as exc:  # a model's own checks raise anything (AssertionError, ValueError, ...)
        raise AtlasError(
            f"{loaded.config.path}: the model fails on a {size}x{size} input "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); set input_size to a size the model accepts"
        ) from exc


def _layer_hint(module: nn.Module, shapes: dict[str, tuple[int, ...]]) -> str:
    """The default layers, to show when a pattern matches nothing."""
    names = [layer.name for layer in feature_layers(shapes, default_layer_names(module, shapes))]
    shown = ", ".join(names[:24]) + (" ..." if len(names) > 24 else "")
    return f"{shown} (or any dotted module name; `atlasgen layers --all` lists them)"


def _check_channels(config: ModelConfig, layers: Sequence[LayerInfo]) -> None:
    if config.channels is None:
        return
    smallest = min(layers, key=lambda layer: layer.channels)
    if config.channels[0] >= smallest.channels:
        raise ConfigError([(f"{config.path}.channels", f"range {config.channels[0]}:{config.channels[1]} starts past the last channel of {smallest.name} ({smallest.channels} channels)")])


# ---------------------------------------------------------------- input sizes


def _accepts(module: nn.Module, layers: Sequence[LayerInfo], size: int) -> bool:
    """Whether a forward pass of a `size` px input reaches every layer (any model's own checks apply)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            forward_layers(module, torch.zeros(1, 3, size, size, device=device), [layer.name for layer in layers])
        return True
    except Exception:  # noqa: BLE001 - any failure means "not this size"
        return False


def fixed_input(module: nn.Module, layers: Sequence[LayerInfo], input_size: int) -> bool:
    """Whether `input_size` is the only size the model accepts (a vision transformer's): two
    forward passes, cheap enough to run whenever a model is planned. (32 px apart, so a model
    that wants multiples of 32 is not taken for a fixed-size one.)"""
    return not _accepts(module, layers, input_size + 32) and not _accepts(module, layers, input_size - 32)


def smallest_input(module: nn.Module, layers: Sequence[LayerInfo], input_size: int) -> int:
    """The smallest square input the model accepts up to its deepest layer in `layers`, by
    bisection between 8 px and `input_size` (known to work: the layers were found at it)."""
    low, high = 8, input_size
    if _accepts(module, layers, low):
        return low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _accepts(module, layers, middle) else (middle, high)
    return high
