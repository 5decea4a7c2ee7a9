"""Stages: each kind of cached work is one module in this package, registered by name.

A stage declares its tasks for a model (with the inputs of their content keys and a version
that changes when its code's output changes), computes the missing ones and stores them in
the cache, and adds its part of the site data from its cache entries. A stage that reads the
dataset (examples, similarity, histogram) gives the shared dataset pass one accumulator per
layer instead of computing on its own, so every such stage costs a single pass.

The build (`atlasgen.build`) only walks this registry, in `order`; assembly
(`atlasgen.assemble`) asks each stage for its part of every layer. Importing this package
never imports torch: stages import what they compute with inside their methods."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from atlasgen.cache import Cache, Entry
from atlasgen.registry import Registry
from atlasgen.threads import Later

if TYPE_CHECKING:
    import torch

    from atlasgen.assemble import LayerContext
    from atlasgen.plan import KeyBasis, LayerInfo, ModelPlan, Task
    from atlasgen.stream import Accumulator


@dataclass
class DatasetPass:
    """What the shared dataset pass hands each stage when it ends."""

    dataset: Any  # atlasgen.data.ImageFolder
    skipped: list[str]


@dataclass
class Run:
    """What computing stages need: the cache, the device, progress bars, the stop request, and
    a callback for each stored task (the build counts and remembers them)."""

    cache: Cache
    device: torch.device
    bar: Callable[..., Any]  # (total, desc, unit) -> a progress counter (atlasgen.progress): bars or log lines
    check_stop: Callable[[], None]  # raises KeyboardInterrupt after the first Ctrl-C
    on_stored: Callable[[Task], None]  # counts and remembers each stored task
    image_settings: Any  # atlasgen.settings.ImageSettings, for dataset patches
    rank: int = 0
    # Work a stage leaves to finish while the next stage computes (on a GPU: drawing the dataset
    # examples while the feature visualization runs); the build waits for it after that stage.
    later: Later = dataclasses.field(default_factory=lambda: Later(None))

    def store(self, task: Task, files: dict[str, bytes], arrays: dict | None = None, meta: dict | None = None) -> Entry:
        entry = self.cache.put(task.kind, task.key, files, arrays, meta={"inputs": task.inputs, "id": task.id, **(meta or {})})
        self.on_stored(task)
        return entry

    def ensure(self, stage: Stage, plan: ModelPlan, task: Task) -> Entry:
        """The entry of a task another stage depends on, computed here if missing (on another rank's share)."""
        entry = self.cache.get(task.kind, task.key)
        if entry is None:  # not counted: the rank that owns the task counts it
            stage.compute(dataclasses.replace(self, on_stored=lambda _task: None), plan, [task])
            entry = self.cache.get(task.kind, task.key)
        assert entry is not None
        return entry


class Stage:
    """Base of every stage; subclasses set the class attributes and override what they do."""

    name: ClassVar[str]  # the kind of its tasks and the folder of its cache entries
    version: ClassVar[int]  # bump when the stage's results change, so old entries stop matching
    order: ClassVar[int]  # computed and assembled in this order (lower first)
    title: ClassVar[str]  # in the build summary's timings
    reads_dataset: ClassVar[bool] = False  # computed by accumulators in the shared dataset pass
    unit_section: ClassVar[str | None] = None  # a template the unit page includes for this stage's data
    layer_section: ClassVar[str | None] = None  # a template the layer page includes for this stage's data
    experiment: ClassVar[type | None] = None  # the keys of its [[models.experiments]] tables, for an experiment

    def tasks(self, basis: KeyBasis) -> list[Task]:
        raise NotImplementedError

    def layer_tasks(self, basis: KeyBasis, **inputs: Any) -> list[Task]:
        """One task per layer, keyed by the dataset as the pass reads it plus `inputs` (the
        usual `tasks` of a stage that reads the dataset)."""
        from atlasgen.plan import make_task

        dataset = {"dataset": basis.fingerprint, "preprocess": dataclasses.asdict(basis.preprocess),
                   "max_images": basis.config.stages.examples.max_images, **inputs}
        return [make_task(self.name, self.version, basis.config.name, layer.name, None,
                          {**basis.model_inputs(layer.name), **dataset}) for layer in basis.layers]

    def compute(self, run: Run, plan: ModelPlan, tasks: list[Task]) -> None:
        """Compute and store `tasks` (stages that do not read the dataset)."""
        raise NotImplementedError

    def accumulator(self, task: Task, plan: ModelPlan, layer: LayerInfo, shared: dict) -> Accumulator:
        """A fresh accumulator for `task`'s layer (stages that read the dataset); `shared` is one
        dict per pass for resources the pass's accumulators may share."""
        raise NotImplementedError

    def finish(self, run: Run, plan: ModelPlan, task: Task, accumulator: Accumulator, done: DatasetPass) -> None:
        """Store `task`'s result from its accumulator after the pass; by default the arrays the
        accumulator hands out (`accumulator.arrays()`)."""
        run.store(task, {}, accumulator.arrays())

    def contribute(self, layer: LayerContext) -> None:
        """Fill this stage's part of `layer.data` and its units from the cache."""


_REGISTRY: Registry[Stage] = Registry("stage")
register = _REGISTRY.register
get = _REGISTRY.get


def all_stages() -> list[Stage]:
    """Every stage, in the order they are computed and assembled."""
    return _REGISTRY.ordered()


_REGISTRY.discover(__name__, __path__)
