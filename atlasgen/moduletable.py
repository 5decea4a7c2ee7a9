"""`atlasgen layers --all`: every named module of a model with its type and output shape, the
names `layers` in atlas.toml may choose from (the default table lists only feature blocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from atlasgen.config import load_config


def configured(config_path: Path, model: str) -> bool:
    """Whether `model` names a model of the config (else it is a torchvision name or the demo)."""
    return config_path.is_file() and any(m.name == model for m in load_config(config_path).models)


def module_table(config_path: Path, model: str | None) -> Iterator[str]:
    import torch

    from atlasgen.hooks import eval_mode, output_shapes
    from atlasgen.layertable import _model_config
    from atlasgen.models import build_model, check_models

    config = _model_config(config_path, model)
    check_models([config])
    loaded = build_model(config)
    size = loaded.preprocess.input_size
    modules = [(name, module) for name, module in loaded.module.named_modules() if name]
    with eval_mode(loaded.module, frozen=True):
        shapes = output_shapes(loaded.module, torch.zeros(1, 3, size, size), [name for name, _ in modules])
    yield f"{config.name} ({config.arch}), input {size}x{size}: every named module"
    yield f"{'module':<36} {'type':<22} {'output':>16}"
    maps = 0
    for name, module in modules:
        shape = shapes.get(name)
        if shape is None:
            out = "(not reached)"
        elif not shape:
            out = "(not a tensor)"
        else:
            out = "x".join(str(v) for v in shape[1:])
            maps += len(shape) == 4
        yield f"{name:<36} {type(module).__name__:<22} {out:>16}"
    yield f"{len(modules)} modules, {maps} with a feature map (channels x height x width): any of them can go in `layers`"
