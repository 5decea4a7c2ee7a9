"""`atlasgen build`: plan, compute what the cache lacks, assemble the site data, render.

First gather every number and image (from the cache, computing what is missing), then
write the site; rendering never computes. The plan itself is saved in the cache under a
key of the configuration and the stats of the files it was made from, so a rebuild with
nothing changed re-renders without loading a model (or even importing torch)."""

from __future__ import annotations

import dataclasses
import datetime
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

import numpy as np
from tqdm import tqdm

import atlasgen
from atlasgen import distributed, images
from atlasgen.cache import Cache, Entry, content_key
from atlasgen.config import DEMO, Config, ModelConfig
from atlasgen.errors import AtlasError, ConfigError
from atlasgen.plan import DATASET, FEATVIS, LayerInfo, Unit, channel_range, plan_model, reason, remember, shard
from atlasgen.sitedata import Example, LayerData, ModelData, ReceptiveFieldInfo, Related, SiteData, UnitData

if TYPE_CHECKING:
    import torch

    from atlasgen.models import LoadedModel

log = logging.getLogger(__name__)

DEMO_DATASET_IMAGES = 1000
DEMO_DATASET_SEED = 1234
FEATVIS_CHUNK = 32  # channels stored per optimization call, so an interrupted build keeps finished work


@dataclass
class BuildOptions:
    output: Path | None = None
    only: str | None = None  # compute only MODEL or MODEL/LAYER; the site still shows everything cached
    force: bool = False
    dry_run: bool = False
    device: str | None = None
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)
    progress: bool = True


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
    plan: list[tuple[Unit, str]] = field(default_factory=list)  # (unit, why) of what is (or would be) computed


@dataclass
class ModelWork:
    config: ModelConfig
    weights_label: str
    input_size: int
    layers: list[LayerInfo]
    fields: dict  # layer name -> ReceptiveField (from a saved plan: ReceptiveFieldInfo)
    dataset: Path
    units: list[Unit]
    receptive_key: str
    loaded: LoadedModel | None = None  # None when the plan was taken from the cache


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
    models = list(config.models)
    _check_only_model(config, options.only)
    cache = Cache(config.site.cache)
    plan_key = plan_key_for(config, models, cache)
    if _render_from_saved_plan(config, cache, plan_key, options, summary):
        return summary
    from atlasgen.featvis import pick_device
    from atlasgen.models import check_models

    with _config_source(config):
        check_models(models)

    device = pick_device(distributed.device_for(options.device or config.device, ranks))
    if not options.dry_run:
        _check_writable(options.output or config.site.output, "output folder", "choose another with --output or site.output")
        _check_writable(config.site.cache, "cache folder", "choose another with site.cache")
    distributed.init(ranks, device)
    try:
        with _timed(summary, "plan"), _config_source(config):
            work = prepare(config, models, cache, device)
            plan_key = plan_key or plan_key_for(config, models, cache)  # the demo dataset exists now
            if plan_key and ranks.main:
                _save_plan(cache, plan_key, work)
        units = _only_units(work, options.only)
        mine = shard(units, ranks.rank, ranks.world)
        todo = _missing(cache, mine, options.force, summary)
        summary.plan = [(unit, reason(cache, unit, options.force)) for unit in todo]
        if options.dry_run:
            return summary
        todo_keys = {unit.key for unit in todo}
        with _stop_between_units() as stop:
            for w in work:
                with _timed(summary, "dataset examples"):
                    _compute_dataset(w, [u for u in w.units if u.kind == DATASET and u.key in todo_keys], cache, config, device, options, summary, stop)
            for w in work:
                with _timed(summary, "feature visualization"):
                    _compute_featvis(w, [u for u in w.units if u.kind == FEATVIS and u.key in todo_keys], cache, device, options, summary, stop)
        summary.corrupt = len(cache.corrupt)
        distributed.barrier(ranks)
        if ranks.main:
            with _timed(summary, "render"):
                _render(config, work, cache, options, summary)
    finally:
        distributed.finish(ranks)
    return summary


@contextmanager
def _config_source(config: Config) -> Iterator[None]:
    """Name the configuration file in problems found after loading it (layers, weights names)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(config.path)) from None


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
    """Set by the first Ctrl-C; compute loops stop at the next unit boundary."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def _stop_between_units() -> Iterator[_StopRequest]:
    """First Ctrl-C: finish the units in progress, then stop; second Ctrl-C: stop at once.
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


def _only_units(work: Sequence[ModelWork], only: str | None) -> list[Unit]:
    """The units `--only MODEL[/LAYER]` asks for (all without it)."""
    units = [unit for w in work for unit in w.units]
    if not only:
        return units
    model, _, layer = only.partition("/")
    chosen = [u for u in units if u.model == model and (not layer or u.layer == layer)]
    if not chosen:
        layers = next(w.layers for w in work if w.config.name == model)
        raise AtlasError(f"--only {only!r}: model {model!r} has no selected layer {layer!r}; layers: {', '.join(l.name for l in layers)}")
    return chosen


def prepare(config: Config, models: Sequence[ModelConfig], cache: Cache, device: torch.device) -> list[ModelWork]:
    """Load each model, select its layers and plan its units."""
    return [_prepare_model(model, config, cache, device) for model in models]


def _prepare_model(model: ModelConfig, config: Config, cache: Cache, device: torch.device) -> ModelWork:
    from atlasgen.data import dataset_fingerprint
    from atlasgen.models import build_model, select_layers

    loaded = build_model(model)
    layers = select_layers(loaded)
    loaded.module.to(device)
    fields, receptive_key = _receptive_fields(loaded, layers, cache)
    folder = _dataset_folder(model, cache)
    fingerprint = dataset_fingerprint(folder, cache.root / "fingerprints")
    image_settings = dataclasses.asdict(config.site.images)
    units = plan_model(loaded, layers, fingerprint, image_settings)
    return ModelWork(model, loaded.weights_label, loaded.preprocess.input_size, layers, fields, folder, units,
                     receptive_key, loaded)


def _receptive_fields(loaded: LoadedModel, layers: Sequence[LayerInfo], cache: Cache) -> tuple[dict, str]:
    """Receptive fields depend only on the architecture and input size; cached as a small entry."""
    from atlasgen.receptive import ReceptiveField, receptive_fields

    names = [layer.name for layer in layers]
    key = content_key({"kind": "receptive", "version": 1, "arch": loaded.config.arch, "weights": loaded.weights_digest,
                       "input_size": loaded.preprocess.input_size, "layers": names})
    entry = cache.get("receptive", key)
    if entry is not None:
        return {name: ReceptiveField(**{k: tuple(v) if isinstance(v, list) else v for k, v in rf.items()})
                for name, rf in entry.meta["fields"].items()}, key
    cpu_module = loaded.module
    fields = receptive_fields(cpu_module, names, loaded.preprocess.input_size)
    cache.put("receptive", key, {}, meta={"fields": {name: dataclasses.asdict(rf) for name, rf in fields.items()}})
    return fields, key


def _dataset_path(model: ModelConfig, cache: Cache) -> Path:
    if model.dataset != DEMO:
        return Path(model.dataset)
    return cache.root / "datasets" / f"demo-{DEMO_DATASET_SEED}-{DEMO_DATASET_IMAGES}"


def _dataset_folder(model: ModelConfig, cache: Cache) -> Path:
    """The dataset folder, generating the built-in demo dataset on first use."""
    folder = _dataset_path(model, cache)
    if model.dataset != DEMO:
        return folder
    from atlasgen.demo import write_demo_dataset

    return write_demo_dataset(folder, count=DEMO_DATASET_IMAGES, seed=DEMO_DATASET_SEED)


def _missing(cache: Cache, units: Sequence[Unit], force: bool, summary: BuildSummary) -> list[Unit]:
    todo = []
    for unit in units:
        if not force and cache.get(unit.kind, unit.key) is not None:
            summary.cached[unit.kind] += 1
        else:
            todo.append(unit)
    return todo


def _bar(options: BuildOptions, total: int, desc: str, unit: str) -> tqdm:
    disable = None if options.progress and options.ranks.main else True
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------- compute stages


def _compute_dataset(work: ModelWork, units: list[Unit], cache: Cache, config: Config, device: torch.device,
                     options: BuildOptions, summary: BuildSummary, stop: _StopRequest) -> None:
    if not units:
        return
    from atlasgen.data import ImageFolder
    from atlasgen.examples import dataset_pass, extract_patches

    loaded = work.loaded
    settings = loaded.config.stages.examples
    dataset = ImageFolder(work.dataset, loaded.preprocess, settings.max_images)
    layer_names = [unit.layer for unit in units]
    start = time.perf_counter()
    with _bar(options, len(dataset), f"{loaded.config.name}: dataset pass", "img") as bar:
        results = dataset_pass(loaded.module, layer_names, dataset, settings, device, progress=bar.update)
    elapsed = time.perf_counter() - start
    summary.images_per_second = len(dataset) / elapsed if elapsed > 0 else None
    for unit in units:
        stop.check()
        ex = results[unit.layer]
        summary.skipped_images = sorted(set(summary.skipped_images) | set(ex.skipped))
        patches = extract_patches(loaded.module, ex, work.fields[unit.layer], dataset, settings, config.site.images, device)
        arrays = {name: getattr(ex, name) for name in _EXAMPLE_ARRAYS}
        arrays.update(patches.arrays)
        cache.put(DATASET, unit.key, patches.files, arrays,
                  meta={"inputs": unit.inputs, "id": unit.id, "sources": dataset.relative_paths, "examples": patches.names})
        remember(cache, unit)
        summary.computed[DATASET] += 1


_EXAMPLE_ARRAYS = ("top_index", "top_value", "top_pos", "bottom_index", "bottom_value", "bottom_pos",
                   "mean", "std", "max", "correlation")


def _compute_featvis(work: ModelWork, units: list[Unit], cache: Cache, device: torch.device,
                     options: BuildOptions, summary: BuildSummary, stop: _StopRequest) -> None:
    if not units:
        return
    from atlasgen.featvis import visualize_channels

    loaded = work.loaded
    settings = loaded.config.stages.visualize
    by_layer: dict[str, list[Unit]] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append(unit)
    total = len(units) * _images_per_channel(settings) * settings.steps  # image-steps, as featvis reports them
    with _bar(options, total, f"{loaded.config.name}: feature visualization", "img-step") as bar:
        for layer, layer_units in by_layer.items():
            for start in range(0, len(layer_units), FEATVIS_CHUNK):
                stop.check()
                chunk = layer_units[start:start + FEATVIS_CHUNK]
                bar.set_postfix_str(f"{layer} {chunk[0].channel}-{chunk[-1].channel}")
                result = visualize_channels(loaded.module, layer, [u.channel for u in chunk], settings, loaded.preprocess, device,
                                            progress=bar.update)
                for i, unit in enumerate(chunk):
                    _store_featvis(cache, unit, result, i)
                    summary.computed[FEATVIS] += 1
                if not options.ranks.main:
                    log.info("rank %d: %s %s channels %d-%d done", options.ranks.rank, loaded.config.name, layer, chunk[0].channel, chunk[-1].channel)


def _images_per_channel(settings) -> int:
    return sum(settings.diversity if name == "diversity" else 1 for name in settings.objectives)


def _store_featvis(cache: Cache, unit: Unit, result, i: int) -> None:
    files = {}
    for objective, array in result.images.items():
        if objective == "diversity":
            for d, image in enumerate(array[i]):
                files[f"diversity-{d}.png"] = images.encode(image, "png")
        else:
            files[f"{objective}.png"] = images.encode(array[i], "png")
    arrays = {f"activation_{name}": np.asarray(values[i], dtype=np.float32) for name, values in result.activation.items()}
    arrays["layer_response"] = np.asarray(result.layer_response[i], dtype=np.float32)
    cache.put(FEATVIS, unit.key, files, arrays, meta={"inputs": unit.inputs, "id": unit.id})
    remember(cache, unit)


# ---------------------------------------------------------------- assemble and render


def _render(config: Config, work: list[ModelWork], cache: Cache, options: BuildOptions, summary: BuildSummary) -> None:
    from atlasgen.render import render_site

    site = SiteData(
        title=config.site.title, authors=list(config.site.authors), url=config.site.url, version=atlasgen.__version__,
        built=datetime.date.today().isoformat(), config_digest=config.digest[:12], image_format=config.site.images.format,
        models=[_model_data(w, cache) for w in work],
    )
    output = options.output or config.site.output
    report = render_site(site, output, config.site.templates, config.site.notes)
    summary.output, summary.pages, summary.bytes = output, report.pages, report.bytes
    summary.warnings += report.warnings


def _model_data(work: ModelWork, cache: Cache) -> ModelData:
    config = work.config
    dataset = "built-in demo dataset" if config.dataset == DEMO else str(Path(config.dataset).name)
    model = ModelData(name=config.name, arch=config.arch, weights=work.weights_label, dataset=dataset,
                      input_size=work.input_size)
    units_by_id = {unit.id: unit for unit in work.units}
    for layer in work.layers:
        model.layers.append(_layer_data(work, layer, units_by_id, cache))
    return model


def _entry(cache: Cache, unit: Unit | None) -> Entry | None:
    return None if unit is None else cache.get(unit.kind, unit.key)


def _layer_data(work: ModelWork, layer: LayerInfo, units_by_id: dict[str, Unit], cache: Cache) -> LayerData:
    from atlasgen.related import cross_activation, top_similar

    config = work.config
    rf = work.fields[layer.name]
    data = LayerData(name=layer.name, channels=layer.channels, shape=(layer.channels, layer.height, layer.width),
                     receptive_field=ReceptiveFieldInfo(tuple(rf.size), tuple(rf.stride), rf.covers_input))
    dataset_entry = _entry(cache, units_by_id.get(f"{DATASET}:{config.name}/{layer.name}"))
    stats = dataset_entry.arrays() if dataset_entry else None
    channels = list(channel_range(config, layer))
    top_n = config.stages.similarity.top_n
    similar = top_similar(stats["correlation"], top_n) if stats is not None else None
    featvis = {c: _entry(cache, units_by_id.get(f"{FEATVIS}:{config.name}/{layer.name}/{c}")) for c in channels}
    responses = {c: e.arrays() for c, e in featvis.items() if e is not None}
    cross = None
    if stats is not None and responses:
        order = sorted(responses)
        matrix = np.stack([responses[c]["layer_response"] for c in order])
        cross = dict(zip(order, cross_activation(matrix, order, stats["mean"], stats["std"], top_n)))
    for c in channels:
        unit = UnitData(channel=c)
        entry = featvis[c]
        if entry is not None:
            for name in entry.meta["files"]:
                if name.startswith("diversity-"):
                    unit.diversity.append(entry.file(name))
                elif name.endswith(".png"):
                    unit.images[name[:-4]] = entry.file(name)
            unit.diversity.sort(key=lambda p: int(p.stem.split("-")[1]))
            unit.activation = {k[len("activation_"):]: float(v) for k, v in responses[c].items() if k.startswith("activation_")}
        if stats is not None:
            _add_dataset_data(unit, c, stats, dataset_entry)
            unit.similar = [Related(int(o), float(s)) for o, s in similar[c]]
        if cross is not None and c in cross:
            unit.cross = [Related(int(o), float(s)) for o, s in cross[c]]
        reached = unit.activation.get("channel", unit.activation.get("neuron"))
        known = [value for value in (unit.dataset_max, reached) if value is not None]
        unit.dead = bool(known) and all(value <= 0 for value in known)  # never positive, by any measure we have
        data.units.append(unit)
    return data


def _add_dataset_data(unit: UnitData, c: int, stats: dict, entry: Entry) -> None:
    unit.dataset_max = float(stats["max"][c])
    unit.dataset_mean = float(stats["mean"][c])
    std = float(stats["std"][c])
    unit.selectivity = (unit.dataset_max - unit.dataset_mean) / std if std > 0 else 0.0
    sources = entry.meta["sources"]
    names = entry.meta["examples"]
    for side, target in (("top", unit.top), ("bottom", unit.bottom)):
        for j, index in enumerate(stats[f"{side}_index"][c]):
            if index < 0:
                continue
            patch = names["patch"].format(channel=c, side=side, rank=j)
            heat = names.get("heatmap", "").format(channel=c, side=side, rank=j)
            heat_path = entry.file(heat) if heat in entry.meta["files"] else None  # the entry lists its files
            target.append(Example(
                source=sources[int(index)], box=tuple(int(v) for v in stats[f"{side}_box"][c, j]),
                value=float(stats[f"{side}_value"][c, j]), position=tuple(int(v) for v in stats[f"{side}_pos"][c, j]),
                patch=entry.file(patch), heatmap=heat_path,
            ))


# ---------------------------------------------------------------- saved plans


def plan_key_for(config: Config, models: Sequence[ModelConfig], cache: Cache) -> str | None:
    """A key of everything a plan is made from, by file stats rather than contents (cheap);
    None when a model depends on something that cannot be stat'ed (an installed module)."""
    from importlib.metadata import PackageNotFoundError, version

    parts: dict = {"atlasgen": atlasgen.__version__, "config": config.digest, "models": []}
    try:
        parts["torch"] = [version("torch"), version("torchvision")]
    except PackageNotFoundError:
        return None
    for model in models:
        files = []
        if ":" in model.arch:
            target = model.arch.rpartition(":")[0]
            if not target.endswith(".py"):
                return None
            files.append(target)
        if model.arch == DEMO:
            files.append(str(Path(atlasgen.__file__).parent / "demo" / "weights.pt"))
        if model.weights and os.path.isfile(model.weights):
            files.append(model.weights)
        listing = _listing(_dataset_path(model, cache))
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


def _save_plan(cache: Cache, key: str, work: Sequence[ModelWork]) -> None:
    models = []
    for w in work:
        models.append({
            "index": w.config.index, "weights_label": w.weights_label, "input_size": w.input_size,
            "layers": [dataclasses.asdict(layer) for layer in w.layers],
            "fields": {name: {"size": list(rf.size), "stride": list(rf.stride), "covers_input": rf.covers_input}
                       for name, rf in w.fields.items()},
            "dataset": str(w.dataset), "units": [dataclasses.asdict(unit) for unit in w.units],
            "receptive_key": w.receptive_key,
        })
    cache.put("plans", key, {}, meta={"models": models})


def _load_plan(config: Config, cache: Cache, key: str) -> list[ModelWork] | None:
    entry = cache.get("plans", key)
    if entry is None:
        return None
    return [
        ModelWork(
            config=config.models[m["index"]], weights_label=m["weights_label"], input_size=m["input_size"],
            layers=[LayerInfo(**layer) for layer in m["layers"]],
            fields={name: ReceptiveFieldInfo(tuple(f["size"]), tuple(f["stride"]), f["covers_input"]) for name, f in m["fields"].items()},
            dataset=Path(m["dataset"]), units=[Unit(**unit) for unit in m["units"]], receptive_key=m["receptive_key"],
        )
        for m in entry.meta["models"]
    ]


def _render_from_saved_plan(config: Config, cache: Cache, key: str | None, options: BuildOptions, summary: BuildSummary) -> bool:
    """Render straight from the cache when the saved plan matches and every unit is there."""
    if key is None or options.force or options.dry_run or options.ranks.world > 1:
        return False
    with _timed(summary, "plan"):
        work = _load_plan(config, cache, key)
        if work is None:
            return False
        _only_units(work, options.only)  # an unknown --only layer is an error here too
        trial = BuildSummary()
        if _missing(cache, [unit for w in work for unit in w.units], False, trial):
            return False
    summary.cached = trial.cached
    _check_writable(options.output or config.site.output, "output folder", "choose another with --output or site.output")
    with _timed(summary, "render"):
        _render(config, work, cache, options, summary)
    return True
