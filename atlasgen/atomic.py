"""Atomic file writes: the new content is written beside the target under a name unique to
this process and thread, then renamed over it, so a reader (another build, a web server)
sees the old file or the new one, never half of one. The one helper every writer uses."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A name beside `path` that no other process or thread uses."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}")


def replace_with(path: Path, make: Callable[[Path], object]) -> None:
    """Let `make(tmp)` create the new file, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        make(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    replace_with(path, lambda tmp: tmp.write_bytes(payload))
