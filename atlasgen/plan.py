"""Expand a configuration into work units, each with a content key.

A key is the SHA-256 of the canonical JSON of everything that affects the unit's result
(weights digest, dataset fingerprint, the settings that matter for that unit, the
algorithm version) and nothing else: batch sizes, devices and worker counts are left out
because results do not depend on them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atlasgen.cache import Cache, canonical_json, content_key
from atlasgen.config import ModelConfig

if TYPE_CHECKING:  # models imports torch; planning from a saved plan must not
    from atlasgen.models import LoadedModel

# Bump when a stage's algorithm changes its results, so old cache entries stop matching.
ALGORITHM_VERSION = {"featvis": 1, "dataset": 1}

FEATVIS = "featvis"
DATASET = "dataset"


@dataclass(frozen=True)
class LayerInfo:
    name: str  # dotted module name
    channels: int
    height: int  # feature map size for the model's input size
    width: int


def channel_range(config: ModelConfig, layer: LayerInfo) -> range:
    """The channels of `layer` the atlas shows: all, or the configured preview range."""
    if config.channels is None:
        return range(layer.channels)
    return range(config.channels[0], min(config.channels[1], layer.channels))


@dataclass(frozen=True)
class Unit:
    kind: str  # FEATVIS (one channel's visualizations) or DATASET (one layer's examples and statistics)
    model: str
    layer: str
    channel: int | None  # None for DATASET units, which cover every channel of the layer
    inputs: str  # canonical JSON of the key inputs, kept for --dry-run explanations and the entry's meta
    key: str

    @property
    def id(self) -> str:
        where = f"{self.model}/{self.layer}" + ("" if self.channel is None else f"/{self.channel}")
        return f"{self.kind}:{where}"

    def sort_key(self) -> tuple:
        return (self.model, self.kind, self.layer, -1 if self.channel is None else self.channel)


def _make_unit(kind: str, model: str, layer: str, channel: int | None, inputs: dict) -> Unit:
    inputs = {"kind": kind, "version": ALGORITHM_VERSION[kind], **inputs}
    return Unit(kind, model, layer, channel, canonical_json(inputs), content_key(inputs))


def featvis_inputs(loaded: LoadedModel, layer: str) -> dict:
    settings = dataclasses.asdict(loaded.config.stages.visualize)
    settings.pop("batch_size")
    pre = loaded.preprocess
    return {"arch": loaded.config.arch, "weights": loaded.weights_digest, "layer": layer,
            "mean": list(pre.mean), "std": list(pre.std), "visualize": settings}


def dataset_inputs(loaded: LoadedModel, layer: str, fingerprint: str, image_settings: dict) -> dict:
    settings = dataclasses.asdict(loaded.config.stages.examples)
    settings.pop("batch_size")
    settings.pop("workers")
    return {"arch": loaded.config.arch, "weights": loaded.weights_digest, "layer": layer, "dataset": fingerprint,
            "preprocess": dataclasses.asdict(loaded.preprocess), "examples": settings, "images": image_settings}


def plan_model(loaded: LoadedModel, layers: Sequence[LayerInfo], fingerprint: str, image_settings: dict) -> list[Unit]:
    """Every unit of one model: a dataset unit per layer, a featvis unit per channel."""
    name = loaded.config.name
    units = []
    for layer in layers:
        units.append(_make_unit(DATASET, name, layer.name, None, dataset_inputs(loaded, layer.name, fingerprint, image_settings)))
        vis = featvis_inputs(loaded, layer.name)
        units += [_make_unit(FEATVIS, name, layer.name, c, {**vis, "channel": c}) for c in channel_range(loaded.config, layer)]
    return units


def shard(units: Iterable[Unit], rank: int, world: int) -> list[Unit]:
    """This rank's share: a deterministic split, so every unit is computed exactly once."""
    ordered = sorted(units, key=Unit.sort_key)
    return ordered[rank::world]


# ---------------------------------------------------------------- why a unit is computed

def _last_inputs_path(cache: Cache, unit: Unit):
    return cache.root / "last" / unit.kind / f"{content_key({'id': unit.id})}.json"


def remember(cache: Cache, unit: Unit) -> None:
    """Record the inputs this unit was last computed with, to explain the next recompute."""
    path = _last_inputs_path(cache, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{id(unit)}")
    tmp.write_text(unit.inputs)
    tmp.replace(path)


def reason(cache: Cache, unit: Unit, force: bool) -> str:
    """Why `unit` must be computed: forced, never computed, or which inputs changed."""
    if force:
        return "--force"
    path = _last_inputs_path(cache, unit)
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        return "not computed before"
    now = json.loads(unit.inputs)
    changed = sorted(_diff(before, now))
    return f"changed: {', '.join(changed)}" if changed else "cache entry missing or damaged"


def _diff(before: object, now: object, prefix: str = "") -> Iterable[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        for key in before.keys() | now.keys():
            yield from _diff(before.get(key), now.get(key), f"{prefix}.{key}" if prefix else key)
    elif before != now:
        yield prefix or "inputs"
