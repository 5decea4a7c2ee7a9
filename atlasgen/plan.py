"""The plan: every model expanded into tasks, each with a content key, and saved in the cache.

A task is one piece of cached work of one stage (a channel's visualizations, a layer's
dataset examples, a model's receptive fields). Its key is the SHA-256 of the canonical JSON
of everything that affects its result (weights digest, dataset fingerprint, the settings
that matter, the stage's version) and nothing else: batch sizes, devices and worker counts
are left out because results do not depend on them.

The plan itself is saved in the cache under a key of the configuration and the stats of the
files it was made from, so a rebuild with nothing changed re-renders without loading a model
(or even importing torch)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import atlasgen
from atlasgen import sources
from atlasgen.cache import Cache
from atlasgen.config import DEMO, Config, ModelConfig
from atlasgen.digest import canonical_json, content_key

if TYPE_CHECKING:  # models imports torch; planning from a saved plan must not
    from atlasgen.models import LoadedModel
    from atlasgen.settings import ImageSettings, Preprocess

DEMO_DATASET_IMAGES = 1000
DEMO_DATASET_SEED = 1234


@dataclass(frozen=True)
class LayerInfo:
    name: str  # dotted module name
    channels: int
    height: int  # feature map size for the model's input size
    width: int
    layout: str = "nchw"  # how the module lays its output out (atlasgen.hooks)


@dataclass(frozen=True)
class Task:
    kind: str  # the stage that computes it (and its cache folder)
    model: str
    layer: str  # "" for a task that covers the whole model
    channel: int | None  # None for a task that covers every channel of its layer
    inputs: str  # canonical JSON of the key inputs, kept for --dry-run explanations and the entry's meta
    key: str

    @property
    def id(self) -> str:
        where = "/".join([self.model] + [self.layer] * bool(self.layer) + [str(self.channel)] * (self.channel is not None))
        return f"{self.kind}:{where}"

    def sort_key(self) -> tuple:
        return (self.model, self.kind, self.layer, -1 if self.channel is None else self.channel)


def make_task(kind: str, version: int, model: str, layer: str, channel: int | None, inputs: dict) -> Task:
    inputs = {"kind": kind, "version": version, **inputs}
    return Task(kind, model, layer, channel, canonical_json(inputs), content_key(inputs))


@dataclass(frozen=True)
class KeyBasis:
    """What the content keys of one model's tasks are made of, besides each stage's settings."""

    config: ModelConfig
    weights_digest: str
    preprocess: Preprocess
    fingerprint: str  # the dataset's content
    images: ImageSettings  # how dataset patches are encoded
    layers: tuple[LayerInfo, ...]

    def model_inputs(self, layer: str) -> dict:
        return {"arch": self.config.arch, "weights": self.weights_digest, "layer": layer}


@dataclass
class ModelPlan:
    """One model as the build sees it: loaded (or read from a saved plan) with its tasks."""

    config: ModelConfig
    weights_label: str
    input_size: int
    layers: list[LayerInfo]
    dataset: Path
    tasks: list[Task] = field(default_factory=list)
    loaded: LoadedModel | None = None  # None when the plan was read from the cache

    def tasks_of(self, kind: str) -> list[Task]:
        return [task for task in self.tasks if task.kind == kind]


def channel_range(config: ModelConfig, layer: LayerInfo) -> range:
    """The channels of `layer` the atlas shows: all, or the configured preview range."""
    if config.channels is None:
        return range(layer.channels)
    return range(config.channels[0], min(config.channels[1], layer.channels))


def shard(tasks: Iterable[Task], rank: int, world: int) -> list[Task]:
    """This rank's share: a deterministic split, so every task is computed exactly once. Each
    kind is dealt out on its own, so kinds with one task per unit give a unit's tasks to one
    rank (the files a stage derives from another stage's results are made where those are)."""
    ordered = sorted(tasks, key=Task.sort_key)
    by_kind: dict[tuple[str, str], list[Task]] = {}
    for task in ordered:
        by_kind.setdefault((task.model, task.kind), []).append(task)
    return [task for same in by_kind.values() for task in same[rank::world]]


def dataset_path(model: ModelConfig, cache: Cache) -> Path:
    """The dataset folder; the built-in demo dataset lives in the cache."""
    if model.dataset != DEMO:
        return Path(model.dataset)
    return cache.root / "datasets" / f"demo-{DEMO_DATASET_SEED}-{DEMO_DATASET_IMAGES}"


# ---------------------------------------------------------------- saved plans


def plan_key_for(config: Config, cache: Cache) -> str | None:
    """A key of everything a plan is made from, by file stats rather than contents (cheap);
    None when a model depends on something that cannot be stat'ed (an installed module)."""
    from importlib.metadata import PackageNotFoundError, version

    from atlasgen import stages  # its modules import this one

    # The stages and their versions: a plan saved before a stage existed lacks its tasks.
    parts: dict = {"atlasgen": atlasgen.__version__, "config": config.digest, "models": [],
                   "stages": [[stage.name, stage.version] for stage in stages.all_stages()]}
    try:
        parts["torch"] = [version("torch"), version("torchvision")]
    except PackageNotFoundError:
        return None
    for model in config.models:
        files = sources.for_arch(model.arch).key_files(model)
        if files is None:
            return None
        if model.weights and os.path.isfile(model.weights):
            files.append(model.weights)
        listing = _listing(dataset_path(model, cache))
        if listing is None:
            return None
        parts["models"].append({"files": [_stat(f) for f in files], "dataset": content_key({"files": listing})})
    return content_key(parts)


def _stat(path: str) -> list:
    stat = os.stat(path)
    return [path, stat.st_size, stat.st_mtime_ns]


def _listing(folder: Path) -> list | None:
    if not folder.is_dir():
        return None
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [_stat(os.path.join(root, name)) for name in sorted(files)]
    return found


def save_plan(cache: Cache, key: str, plans: Sequence[ModelPlan]) -> None:
    models = [{"index": p.config.index, "weights_label": p.weights_label, "input_size": p.input_size,
               "layers": [dataclasses.asdict(layer) for layer in p.layers], "dataset": str(p.dataset),
               "tasks": [dataclasses.asdict(task) for task in p.tasks]} for p in plans]
    cache.put("plans", key, {}, meta={"models": models})


def load_plan(config: Config, cache: Cache, key: str) -> list[ModelPlan] | None:
    entry = cache.get("plans", key)
    if entry is None or any("tasks" not in m for m in entry.meta["models"]):
        return None
    return [ModelPlan(config=config.models[m["index"]], weights_label=m["weights_label"], input_size=m["input_size"],
                      layers=[LayerInfo(**layer) for layer in m["layers"]], dataset=Path(m["dataset"]),
                      tasks=[Task(**task) for task in m["tasks"]])
            for m in entry.meta["models"]]
