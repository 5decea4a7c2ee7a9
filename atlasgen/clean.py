"""`atlasgen clean`: drop cache entries that no task of the current configuration uses, and
the temporaries of builds that were killed."""

from __future__ import annotations

import logging
import re
import shutil

from atlasgen import stages
from atlasgen.atomic import clean_leftovers
from atlasgen.build import prepare
from atlasgen.cache import Cache
from atlasgen.config import Config
from atlasgen.folders import CACHE_LINK_DEPTH, check_cache
from atlasgen.models import check_models
from atlasgen.plan import plan_key_for

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"[0-9a-f]{64}")


def clean_cache(config: Config, dry_run: bool = False) -> tuple[int, int]:
    """Remove unused entries; return (entries removed, bytes freed). Only touches entry
    folders named by a content key under the cache's own kind folders."""
    import torch

    check_models(config.models)
    check_cache(config.site.cache)  # removing through a link would remove someone else's files
    if not dry_run:
        leftovers = clean_leftovers(config.site.cache, recursive=True, depth=CACHE_LINK_DEPTH)
        if leftovers:
            log.info("removed %d temporary files left by builds that were stopped", leftovers)
    cache = Cache(config.site.cache)
    plans = prepare(config, config.models, cache, torch.device("cpu"))
    used = {task.key for plan in plans for task in plan.tasks}
    used.add(plan_key_for(config, cache))
    kinds = {stage.name for stage in stages.all_stages()} | {"plans"}  # datasets/ and fingerprints/ are kept
    removed = freed = 0
    for kind, entries in cache.keys().items():
        if kind not in kinds:
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
