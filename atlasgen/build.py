"""`atlasgen build`: plan, compute what the cache lacks stage by stage, assemble, render.

First gather every number and image (from the cache, computing what is missing), then
write the site; rendering never computes. When the saved plan matches and every task is
cached, the site is re-rendered without loading a model (or even importing torch)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from atlasgen import distributed, stages, threads
from atlasgen.assemble import site_data
from atlasgen.cache import Cache
from atlasgen.config import DEMO, Config, ModelConfig
from atlasgen.errors import AtlasError, ConfigError
from atlasgen.explain import reason, remember
from atlasgen.heap import few_full_collections
from atlasgen.plan import (KeyBasis, ModelPlan, Task, dataset_path, load_plan, plan_key_for, save_plan, shard,
                           DEMO_DATASET_IMAGES, DEMO_DATASET_SEED)
from atlasgen.progress import progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class BuildOptions:
    output: Path | None = None
    only: str | None = None  # compute only MODEL or MODEL/LAYER; the site still shows everything cached
    force: bool = False
    dry_run: bool = False
    device: str | None = None
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)
    progress: bool = True
    adopt: bool = False  # build into a folder of someone else's files, never replacing them


@dataclass
class BuildSummary:
    computed: Counter = field(default_factory=Counter)
    cached: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    corrupt: int = 0
    skipped_images: list[str] = field(default_factory=list)
    images_per_second: float | None = None
    output: Path | None = None
    pages: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    plan: list[tuple[Task, str]] = field(default_factory=list)  # (task, why) of what is (or would be) computed


@contextmanager
def _timed(summary: BuildSummary, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        summary.seconds[stage] = summary.seconds.get(stage, 0.0) + time.perf_counter() - start


def build(config: Config, options: BuildOptions | None = None) -> BuildSummary:
    """Build the atlas described by `config`; return what was done."""
    options = options or BuildOptions()
    summary = BuildSummary()
    ranks = options.ranks
    _check_only_model(config, options.only)
    _check_folders(config, options)
    cache = Cache(config.site.cache)
    plan_key = plan_key_for(config, cache)
    if _render_from_saved_plan(config, cache, plan_key, options, summary):
        return summary
    from atlasgen.featvis import pick_device
    from atlasgen.models import check_models

    with _config_source(config):
        check_models(config.models)
    device = pick_device(distributed.device_for(options.device or config.device, ranks))
    if not options.dry_run:
        _check_writable(options.output or config.site.output, "output folder", "choose another with --output or site.output")
        _check_writable(config.site.cache, "cache folder", "choose another with site.cache")
    distributed.init(ranks, device)
    try:
        with _timed(summary, "plan"), _config_source(config):
            plans = prepare(config, config.models, cache, device)
            plan_key = plan_key or plan_key_for(config, cache)  # the demo dataset exists now
            if plan_key and ranks.main:
                save_plan(cache, plan_key, plans)
        mine = shard(_only_tasks(plans, options.only), ranks.rank, ranks.world)
        todo = _missing(cache, mine, options.force, summary)
        if ranks.world > 1:
            log.info("rank %d of %d on %s: %d of the atlas's tasks are this rank's, %d to compute", ranks.rank,
                     ranks.world, device, len(mine), len(todo))
        if ranks.world == 1:  # what --only leaves out is still rendered from the cache: count it as reused
            asked = set(mine)
            _missing(cache, [t for plan in plans for t in plan.tasks if t not in asked], False, summary)
        summary.plan = [(task, reason(cache, task, options.force)) for task in todo]
        if options.dry_run:
            return summary
        began = time.perf_counter()
        _compute(plans, set(todo), config, cache, device, options, summary)
        summary.corrupt = len(cache.corrupt)
        if ranks.world > 1:
            log.info("rank %d of %d computed its share in %.1f s", ranks.rank, ranks.world, time.perf_counter() - began)
        distributed.barrier(ranks)
        if ranks.main:
            with _timed(summary, "render"):
                _render(config, plans, cache, options, summary)
    finally:
        distributed.finish(ranks)
    return summary


def _compute(plans: Sequence[ModelPlan], todo: set[Task], config: Config, cache: Cache, device: torch.device,
             options: BuildOptions, summary: BuildSummary) -> None:
    """Every stage in order; the stages that read the dataset share one pass per model, run
    where the first of them stands in the order."""

    def stored(task: Task) -> None:
        remember(cache, task)
        summary.computed[task.kind] += 1

    def bar(total: int, desc: str, unit: str):
        return progress(total, desc, unit, enabled=options.progress, bars=options.ranks.main)

    passed = False
    # On a GPU the dataset examples are drawn (CPU work) while the next stage keeps the GPU busy.
    with _stop_between_tasks() as stop, threads.later(device.type == "cuda") as later:
        run = stages.Run(cache, device, bar, stop.check, stored, config.site.images, rank=options.ranks.rank,
                         later=later)
        for stage in stages.all_stages():
            if stage.reads_dataset:
                if not passed:
                    _dataset_passes(run, plans, todo, summary)
                passed = True
                continue
            for plan in plans:
                tasks = [t for t in plan.tasks_of(stage.name) if t in todo]
                if tasks:
                    with _timed(summary, stage.title):
                        stage.compute(run, plan, tasks)
            _finish_later(later, summary)


def _finish_later(later: threads.Later, summary: BuildSummary) -> None:
    """Wait for what the dataset pass left to finish, before any later stage reads it."""
    if not later.given:
        return
    if later.pending:
        log.info("finishing the dataset examples of %d layer(s)", later.pending)
    with _timed(summary, "dataset pass"):
        later.wait()


def _dataset_passes(run: stages.Run, plans: Sequence[ModelPlan], todo: set[Task], summary: BuildSummary) -> None:
    from atlasgen.stages._pass import run_dataset_pass

    for plan in plans:
        wanted = {stage: [t for t in plan.tasks_of(stage.name) if t in todo]
                  for stage in stages.all_stages() if stage.reads_dataset}
        wanted = {stage: tasks for stage, tasks in wanted.items() if tasks}
        if wanted:
            with _timed(summary, "dataset pass"):
                rate, skipped = run_dataset_pass(run, plan, wanted)
            summary.images_per_second = rate or None
            summary.skipped_images = sorted(set(summary.skipped_images) | set(skipped))


@contextmanager
def _config_source(config: Config) -> Iterator[None]:
    """Name the configuration file in problems found after loading it (layers, weights names)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(config.path)) from None


def _check_folders(config: Config, options: BuildOptions) -> None:
    """Before any work: the output folder is atlasgen's (or adopted), apart from the cache,
    and neither holds links; leftovers of killed builds are removed from the cache."""
    from atlasgen.atomic import clean_leftovers
    from atlasgen.folders import CACHE_LINK_DEPTH, check_cache, claim_output, path_problems

    if options.output is not None:
        problems = path_problems(options.output, config.site.cache, config.root)
        if problems:
            raise AtlasError(f"--output: {problems[0]}")
    output = options.output or config.site.output
    if options.ranks.main:
        claim_output(output, options.adopt, "--output" if options.output is not None else "site.output")
    check_cache(config.site.cache)
    if options.dry_run:
        return
    removed = clean_leftovers(config.site.cache, recursive=True, depth=CACHE_LINK_DEPTH)
    if removed:
        log.info("removed %d temporary files left in the cache by builds that were stopped", removed)


def _check_writable(folder: Path, what: str, fix: str) -> None:
    """Fail before any work if results could not be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".atlasgen-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AtlasError(f"{what} {str(folder)!r} is not writable ({exc.strerror or exc}); {fix}") from None


class _StopRequest:
    """Set by the first Ctrl-C; compute loops stop at the next task boundary."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def _stop_between_tasks() -> Iterator[_StopRequest]:
    """First Ctrl-C: finish the tasks in progress, then stop; second Ctrl-C: stop at once.
    The previous SIGINT handler is restored afterwards."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(_signum, _frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        log.warning("stopping after the units in progress (press Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_only_model(config: Config, only: str | None) -> None:
    name = (only or "").split("/", 1)[0]
    if only and name not in {m.name for m in config.models}:
        raise AtlasError(f"--only {only!r}: no model named {name!r}; models: {', '.join(m.name for m in config.models)}")


def _only_tasks(plans: Sequence[ModelPlan], only: str | None) -> list[Task]:
    """The tasks `--only MODEL[/LAYER]` asks for (all without it; a model's own tasks go with it)."""
    tasks = [task for plan in plans for task in plan.tasks]
    if not only:
        return tasks
    model, _, layer = only.partition("/")
    if layer and not any(t.model == model and t.layer == layer for t in tasks):
        layers = next(p.layers for p in plans if p.config.name == model)
        raise AtlasError(f"--only {only!r}: model {model!r} has no selected layer {layer!r}; layers: {', '.join(l.name for l in layers)}")
    return [t for t in tasks if t.model == model and (not layer or t.layer in ("", layer))]


def prepare(config: Config, models: Sequence[ModelConfig], cache: Cache, device: torch.device) -> list[ModelPlan]:
    """Load each model, select its layers and plan every stage's tasks."""
    return [_prepare_model(model, config, cache, device) for model in models]


def _prepare_model(model: ModelConfig, config: Config, cache: Cache, device: torch.device) -> ModelPlan:
    from atlasgen.data import dataset_fingerprint
    from atlasgen.models import build_model, fixed_input, select_layers
    from atlasgen.render.pages import reserved_layer_names

    loaded = build_model(model)
    layers = select_layers(loaded)
    clashes = [layer.name for layer in layers if layer.name.lower() in reserved_layer_names()]
    if clashes:
        raise AtlasError(f"{model.path}: layer {clashes[0]!r} is named like a page file of the model's folder; "
                         "select layers with other names (models[].layers)")
    loaded.fixed_input = fixed_input(loaded.module, layers, loaded.preprocess.input_size)
    model = _sized_for(model, loaded)
    loaded.module.to(device)
    folder = _dataset_folder(model, cache)
    basis = KeyBasis(model, loaded.weights_digest, loaded.preprocess,
                     dataset_fingerprint(folder, cache.root / "fingerprints"), config.site.images, tuple(layers))
    tasks = [task for stage in stages.all_stages() for task in stage.tasks(basis)]
    return ModelPlan(model, loaded.weights_label, loaded.preprocess.input_size, layers, folder, tasks, loaded)


def _sized_for(model: ModelConfig, loaded) -> ModelConfig:
    """A fixed-size model (a vision transformer) is visualized at its own input size."""
    size = loaded.preprocess.input_size
    if not loaded.fixed_input or model.stages.visualize.size == size:
        return model
    log.info("%s accepts only %dx%d inputs: its visualizations are made at that size", model.name, size, size)
    visualize = dataclasses.replace(model.stages.visualize, size=size)
    return dataclasses.replace(model, stages=dataclasses.replace(model.stages, visualize=visualize))


def _dataset_folder(model: ModelConfig, cache: Cache) -> Path:
    """The dataset folder, generating the built-in demo dataset on first use."""
    folder = dataset_path(model, cache)
    if model.dataset != DEMO:
        return folder
    from atlasgen.demo import write_demo_dataset

    return write_demo_dataset(folder, count=DEMO_DATASET_IMAGES, seed=DEMO_DATASET_SEED)


def _missing(cache: Cache, tasks: Sequence[Task], force: bool, summary: BuildSummary) -> list[Task]:
    todo = []
    if not force:
        cache.check([(task.kind, task.key) for task in tasks])
    for task in tasks:
        if not force and cache.get(task.kind, task.key) is not None:
            summary.cached[task.kind] += 1
        else:
            todo.append(task)
    return todo


def _render(config: Config, plans: Sequence[ModelPlan], cache: Cache, options: BuildOptions, summary: BuildSummary) -> None:
    from atlasgen.render import render_site
    from atlasgen.render.writer import over_budget

    output = options.output or config.site.output
    with few_full_collections():
        report = render_site(site_data(config, plans, cache), output, config.site.templates, config.site.notes,
                             adopt=options.adopt, raw_html=config.site.raw_html_notes)
    summary.output, summary.pages, summary.bytes = output, report.pages, report.bytes
    summary.warnings += report.warnings
    over, message = over_budget(report.bytes, config.site.budget_mb)
    if over:
        raise AtlasError(f"{message} (the site is written to {output})")
    if message:
        log.warning("%s", message)
        summary.warnings.append(message)


def _render_from_saved_plan(config: Config, cache: Cache, key: str | None, options: BuildOptions, summary: BuildSummary) -> bool:
    """Render straight from the cache when the saved plan matches and every task is there."""
    if key is None or options.force or options.dry_run or options.ranks.world > 1:
        return False
    with _timed(summary, "plan"):
        plans = load_plan(config, cache, key)
        if plans is None:
            return False
        _only_tasks(plans, options.only)  # an unknown --only layer is an error here too
        trial = BuildSummary()
        if _missing(cache, [task for plan in plans for task in plan.tasks], False, trial):
            return False
    summary.cached = trial.cached
    _check_writable(options.output or config.site.output, "output folder", "choose another with --output or site.output")
    with _timed(summary, "render"):
        _render(config, plans, cache, options, summary)
    return True
