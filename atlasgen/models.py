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
from atlasgen.digest import file_digest
from atlasgen.errors import AtlasError, ConfigError
from atlasgen.hooks import output_shapes
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


def load_weights_file(module: nn.Module, file: Path, path: str) -> None:
    """Load a state_dict or a checkpoint wrapping one; strip DataParallel's `module.` prefix."""
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AtlasError(f"{path}.weights: cannot read {file} as PyTorch weights: {type(exc).__name__}: {exc}") from exc
    state = _find_state_dict(data)
    if state is None:
        raise AtlasError(f"{path}.weights: {file} holds no state_dict (expected a dict of tensors, or a checkpoint with 'state_dict' or 'model')")
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {', '.join(result.missing_keys[:4])}{' ...' if len(result.missing_keys) > 4 else ''}")
        if result.unexpected_keys:
            parts.append(f"unexpected {', '.join(result.unexpected_keys[:4])}{' ...' if len(result.unexpected_keys) > 4 else ''}")
        raise AtlasError(f"{path}.weights: {file.name} does not match the architecture: {'; '.join(parts)}")


def _find_state_dict(data: object) -> dict | None:
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    if isinstance(data, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            found = _find_state_dict(data.get(key))
            if found is not None:
                return found
    return None


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


def default_layer_names(module: nn.Module) -> list[str]:
    """The top-level blocks that may produce feature maps (shapes are checked later)."""
    return [name for name, child in module.named_children() if not isinstance(child, _NOT_FEATURE_BLOCKS)]


def feature_layers(module: nn.Module, input_size: int, candidates: Sequence[str]) -> list[LayerInfo]:
    """Run one forward pass on a blank input and keep the candidates that output (1, C, H, W)
    feature maps, in the order the forward pass reaches them."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    shapes = output_shapes(module, torch.zeros(1, 3, input_size, input_size, device=device), candidates)
    return [LayerInfo(name, shape[1], shape[2], shape[3]) for name, shape in shapes.items() if len(shape) == 4]


def select_layers(loaded: LoadedModel) -> list[LayerInfo]:
    """The configured layers: glob patterns over dotted module names, or the default blocks."""
    config, module = loaded.config, loaded.module
    names = [name for name, _ in module.named_modules() if name]
    if config.layers is None:
        candidates = default_layer_names(module)
    else:
        problems = []
        candidates = []
        for i, pattern in enumerate(config.layers):
            matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                problems.append((f"{config.path}.layers[{i}]", f"no layer matches {pattern!r}; layers: {_layer_hint(loaded)}"))
            candidates += [name for name in matched if name not in candidates]
        if problems:
            raise ConfigError(problems)
    try:
        layers = feature_layers(module, loaded.preprocess.input_size, candidates)
    except RuntimeError as exc:
        raise AtlasError(
            f"{config.path}: the model fails on a {loaded.preprocess.input_size}x{loaded.preprocess.input_size} input "
            f"({str(exc).splitlines()[0]}); set input_size to a size the model accepts"
        ) from exc
    if config.layers is not None:
        skipped = [name for name in candidates if name not in {layer.name for layer in layers}]
        if skipped:
            log.info("%s: skipping modules that do not output feature maps: %s", config.name, ", ".join(skipped[:8]))
    if not layers:
        raise AtlasError(f"{config.path}: none of the selected modules outputs a feature map (N, C, H, W)")
    _check_channels(config, layers)
    return layers


def _layer_hint(loaded: LoadedModel) -> str:
    """The default layers, to show when a pattern matches nothing."""
    names = default_layer_names(loaded.module)
    try:
        names = [layer.name for layer in feature_layers(loaded.module, loaded.preprocess.input_size, names)]
    except RuntimeError:
        pass
    shown = ", ".join(names[:24]) + (" ..." if len(names) > 24 else "")
    return f"{shown} (or any dotted module name; `atlasgen layers` lists them)"


def _check_channels(config: ModelConfig, layers: Sequence[LayerInfo]) -> None:
    if config.channels is None:
        return
    smallest = min(layers, key=lambda layer: layer.channels)
    if config.channels[0] >= smallest.channels:
        raise ConfigError([(f"{config.path}.channels", f"range {config.channels[0]}:{config.channels[1]} starts past the last channel of {smallest.name} ({smallest.channels} channels)")])
