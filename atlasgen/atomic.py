"""Atomic writes and their leftovers: new content is written beside the target under a name
that carries the writing process's id and host, then renamed over it, so a reader (another
build, a web server) sees the old file or the new one, never half of one. A process killed
mid-write leaves its temporary behind; `clean_leftovers` removes those whose process is gone.
The one helper every writer uses."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)

HOST = socket.gethostname().replace("/", "_") or "host"
# `.<name>.<tmp|old|trash>-<pid>@<host>-<8 hex>`: what a writer leaves when killed.
_LEFTOVER = re.compile(r"\..+\.(?:tmp|old|trash)-(\d+)@(.+)-[0-9a-f]{8}")
FOREIGN_HOST_AGE_S = 24 * 3600  # another host's process cannot be asked whether it lives


def temporary_name(name: str, kind: str = "tmp") -> str:
    """A hidden name for a temporary beside `name` that no other process or thread uses."""
    return f".{name}.{kind}-{os.getpid()}@{HOST}-{uuid.uuid4().hex[:8]}"


def temporary_sibling(path: Path) -> Path:
    return path.with_name(temporary_name(path.name))


def replace_with(path: Path, make: Callable[[Path], object]) -> None:
    """Let `make(tmp)` create the new file, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        make(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise_if_full(exc, path.parent)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    replace_with(path, lambda tmp: tmp.write_bytes(payload))


def raise_if_full(exc: OSError, folder: Path, needed: int | None = None) -> None:
    """Turn 'no space left' into a message naming the folder and the space it needs."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    need = f"at least {needed / 1e6:.1f} MB" if needed else "more space"
    have = f"; {free / 1e6:.1f} MB free" if free is not None else ""
    raise AtlasError(f"no space left on the device of {folder} (it needs {need}{have}); free some space or "
                     "choose a folder on another disk, then run the same command again: finished work is kept") from exc


def _alive(pid: int, host: str, path: Path) -> bool:
    if host != HOST:
        try:
            return time.time() - path.lstat().st_mtime < FOREIGN_HOST_AGE_S
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_leftovers(folder: Path, recursive: bool = False, depth: int | None = None) -> int:
    """Remove temporaries under `folder` left by processes that no longer run; their count.

    Only names of atlasgen's temporary pattern are candidates; links are never followed."""
    removed = 0
    if not folder.is_dir() or folder.is_symlink():
        return 0
    base = len(folder.parts)
    for here, dirs, files in os.walk(folder):
        here_path = Path(here)
        for name in dirs + files:
            match = _LEFTOVER.fullmatch(name)
            if match is None:  # the common case, without a Path: a whole atlas's site has 100,000 files
                continue
            path = here_path / name
            if _alive(int(match.group(1)), match.group(2), path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
            log.debug("removed leftover %s", path)
        level = len(here_path.parts) - base + 1
        if not recursive or (depth is not None and level >= depth):
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not _LEFTOVER.fullmatch(d) and not (here_path / d).is_symlink()]
    return removed
