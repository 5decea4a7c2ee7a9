"""Assembly: gather every number and image path of the site from the cache into `SiteData`.

Each stage adds its own part of each layer (`Stage.contribute`); what depends on several
stages (selectivity, dead channels) is derived here once they all have. Numpy only: a site
can be assembled and rendered from the cache without importing torch."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import atlasgen
from atlasgen import stages
from atlasgen.cache import Cache, Entry
from atlasgen.atlasversion import atlas_version
from atlasgen.config import DEMO, Config
from atlasgen.plan import LayerInfo, ModelPlan, Task, channel_range
from atlasgen.published import public_arch, public_weights
from atlasgen.sitedata import LayerData, ModelData, SiteData, UnitData
from atlasgen.stillness import still_images

log = logging.getLogger(__name__)


@dataclass
class LayerContext:
    """One layer during assembly: its site data, its units, and the cache entries of every
    stage's tasks for it (each loaded at most once)."""

    model: ModelPlan
    info: LayerInfo
    data: LayerData
    cache: Cache
    index: dict[tuple[str, str, int | None], Task]
    digests: dict[str, str] = field(default_factory=dict)  # the site's `file_digests`, filled from each entry's meta
    _arrays: dict[str, dict[str, np.ndarray] | None] = field(default_factory=dict)
    _listed: set[Path] = field(default_factory=set)

    @property
    def units(self) -> list[UnitData]:
        return self.data.units

    def _get(self, task: Task | None) -> Entry | None:
        entry = None if task is None else self.cache.get(task.kind, task.key)
        if entry is not None and entry.path not in self._listed:  # verified by `get`: render need not hash its files again
            self._listed.add(entry.path)
            root = str(entry.path)  # str(entry.file(name)) for the names atlasgen writes, without a Path per file
            self.digests.update({f"{root}/{name}": digest for name, (_, digest) in entry.meta["files"].items()})
        return entry

    def model_entry(self, kind: str) -> Entry | None:
        """The entry of a task that covers the whole model."""
        return self._get(self.index.get((kind, "", None)))

    def entry(self, kind: str) -> Entry | None:
        """The entry of a task that covers this layer."""
        return self._get(self.index.get((kind, self.info.name, None)))

    def arrays(self, kind: str) -> dict[str, np.ndarray] | None:
        """The arrays of this layer's `kind` entry, or None when it is not computed."""
        if kind not in self._arrays:
            entry = self.entry(kind)
            self._arrays[kind] = entry.arrays() if entry is not None else None
        return self._arrays[kind]

    def channel_entries(self, kind: str) -> dict[int, Entry | None]:
        """The entries of per-channel tasks, by the channel of each unit."""
        return {u.channel: self._get(self.index.get((kind, self.info.name, u.channel))) for u in self.units}


def site_data(config: Config, plans: Sequence[ModelPlan], cache: Cache) -> SiteData:
    sections = [s.unit_section for s in stages.all_stages() if s.unit_section]
    digests: dict[str, str] = {}
    models = [model_data(plan, cache, digests) for plan in plans]
    return SiteData(
        title=config.site.title, authors=list(config.site.authors), url=config.site.url, version=atlasgen.__version__,
        built=datetime.date.today().isoformat(), config_digest=atlas_version(plans)[:12], image_format=config.site.images.format,
        models=models, unit_sections=sections, preview=config.preview, file_digests=digests,
        visualization_format=config.site.images.visualizations,
        layer_sections=[s.layer_section for s in stages.all_stages() if s.layer_section],
    )


def model_data(plan: ModelPlan, cache: Cache, digests: dict[str, str] | None = None) -> ModelData:
    config = plan.config
    dataset = "built-in demo dataset" if config.dataset == DEMO else str(plan.dataset.name)
    digest = json.loads(plan.tasks[0].inputs).get("weights") if plan.tasks else None
    model = ModelData(name=config.name, arch=public_arch(config.arch), weights=public_weights(plan.weights_label, digest),
                      dataset=dataset, input_size=plan.input_size)
    index = {(t.kind, t.layer, t.channel): t for t in plan.tasks}
    for info in plan.layers:
        data = LayerData(name=info.name, channels=info.channels, shape=(info.channels, info.height, info.width),
                         receptive_field=None, units=[UnitData(channel=c) for c in channel_range(config, info)],
                         layout=info.layout)
        layer = LayerContext(plan, info, data, cache, index, {} if digests is None else digests)
        for stage in stages.all_stages():
            stage.contribute(layer)
        for unit in data.units:
            _derive(unit)
        lowest = [ex.value for unit in data.units for ex in unit.bottom]
        data.nonnegative = bool(lowest) and min(lowest) >= 0
        log.debug("assembled %s/%s: %d units, %d with visualizations, %d dead, %d did not move%s", config.name, info.name,
                  len(data.units), sum(bool(u.images) for u in data.units), sum(u.dead for u in data.units),
                  sum(bool(u.still) for u in data.units), ", never below zero" if data.nonnegative else "")
        model.layers.append(data)
    return model


def _derive(unit: UnitData) -> None:
    """The numbers that combine several stages' results."""
    if None not in (unit.dataset_max, unit.dataset_mean, unit.dataset_std):
        std = unit.dataset_std
        unit.selectivity = (unit.dataset_max - unit.dataset_mean) / std if std > 0 else 0.0
    reached = unit.activation.get("channel", unit.activation.get("neuron"))
    known = [value for value in (unit.dataset_max, reached) if value is not None]
    unit.dead = bool(known) and all(value <= 0 for value in known)  # never positive, by any measure we have
    if not unit.dead:  # a dead channel's page already says why there is nothing to see
        unit.still = still_images(unit.images)
