"""`atlasgen layers`: what a model offers to the atlas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from atlasgen.config import DEMO, ModelConfig, load_config
from atlasgen.errors import AtlasError
from atlasgen.plan import channel_range
from atlasgen.settings import StageSettings


def _model_config(config_path: Path, model: str | None) -> ModelConfig:
    if config_path.is_file():
        config = load_config(config_path)
        if model is None:
            return config.models[0]
        for candidate in config.models:
            if candidate.name == model:
                return candidate
    elif model is None:
        raise AtlasError(f"{config_path} not found; name a model, for example `atlasgen layers googlenet`")
    # Not a configured model: a torchvision architecture (random weights: only shapes matter) or the demo.
    return ModelConfig(name=model.replace(":", "_"), arch=model, weights=None, layers=None, channels=None, dataset=DEMO,
                       input_size=None, mean=None, std=None, stages=StageSettings(), index=0)


def layer_table(config_path: Path, model: str | None) -> Iterator[str]:
    from atlasgen.models import build_model, check_models, select_layers
    from atlasgen.receptive import receptive_fields

    config = _model_config(config_path, model)
    check_models([config])
    loaded = build_model(config)
    layers = select_layers(loaded)
    size = loaded.preprocess.input_size
    fields = receptive_fields(loaded.module, [layer.name for layer in layers], size)
    yield f"{config.name} ({config.arch}), input {size}x{size}"
    yield f"{'layer':<28} {'channels':>8} {'output':>12} {'receptive field':>18} {'stride':>7}"
    for layer in layers:
        rf = fields[layer.name]
        field_text = f"{rf.size[0]}x{rf.size[1]}" + (" (all)" if rf.covers_input else "")
        # A module whose output is not (N, C, H, W) says how it is read: "nhwc", "tokens:1" (one class token left out)
        output = f"{layer.height}x{layer.width}" + ("" if layer.layout == "nchw" else f" {layer.layout}")
        yield f"{layer.name:<28} {layer.channels:>8} {output:>12} {field_text:>18} {rf.stride[0]:>7}"
    total, shown = sum(layer.channels for layer in layers), sum(len(channel_range(config, layer)) for layer in layers)
    yield f"{len(layers)} layers, {total} channels" + (f", {shown} in the atlas (channels = {list(config.channels)})" if shown != total else "")
