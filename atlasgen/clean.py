"""`atlasgen clean`: drop cache entries that no unit of the current configuration uses."""

from __future__ import annotations

import logging
import re
import shutil

from atlasgen.build import plan_key_for, prepare
from atlasgen.cache import Cache
from atlasgen.config import Config
from atlasgen.models import check_models

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"[0-9a-f]{64}")
_KINDS = ("featvis", "dataset", "receptive", "plans")  # entry kinds; datasets/ and fingerprints/ are kept


def clean_cache(config: Config, dry_run: bool = False) -> tuple[int, int]:
    """Remove unused entries; return (entries removed, bytes freed). Only touches entry
    folders named by a content key under the cache's own kind folders."""
    import torch

    check_models(config.models)
    cache = Cache(config.site.cache)
    work = prepare(config, config.models, cache, torch.device("cpu"))
    used = {unit.key for w in work for unit in w.units} | {w.receptive_key for w in work}
    used.add(plan_key_for(config, config.models, cache))
    removed = freed = 0
    for kind, entries in cache.keys().items():
        if kind not in _KINDS:
            continue
        for path in entries:
            if not _ENTRY.fullmatch(path.name) or path.name in used:
                continue
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            removed, freed = removed + 1, freed + size
            log.debug("%s %s", "would remove" if dry_run else "removing", path)
            if not dry_run:
                shutil.rmtree(path)
    return removed, freed
