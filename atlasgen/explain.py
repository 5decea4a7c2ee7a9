"""Why a task is computed: forced, never computed, or which of its key inputs changed since
it was last computed (doit's "why" for `--dry-run`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from atlasgen.atomic import write_atomic
from atlasgen.cache import Cache
from atlasgen.digest import content_key
from atlasgen.plan import Task


def _last_inputs_path(cache: Cache, task: Task) -> Path:
    return cache.root / "last" / task.kind / f"{content_key({'id': task.id})}.json"


def remember(cache: Cache, task: Task) -> None:
    """Record the inputs this task was last computed with, to explain the next recompute."""
    write_atomic(_last_inputs_path(cache, task), task.inputs)


def reason(cache: Cache, task: Task, force: bool) -> str:
    """Why `task` must be computed: forced, never computed, or which inputs changed."""
    if force:
        return "--force"
    try:
        before = json.loads(_last_inputs_path(cache, task).read_text())
    except (OSError, ValueError):
        return "not computed before"
    changed = sorted(_diff(before, json.loads(task.inputs)))
    return f"changed: {', '.join(changed)}" if changed else "cache entry missing or damaged"


def _diff(before: object, now: object, prefix: str = "") -> Iterable[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        for key in before.keys() | now.keys():
            yield from _diff(before.get(key), now.get(key), f"{prefix}.{key}" if prefix else key)
    elif before != now:
        yield prefix or "inputs"
