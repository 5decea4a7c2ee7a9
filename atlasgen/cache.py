"""A content-addressed store of finished work.

An entry is a folder `<root>/<kind>/<ab>/<key>/` with its files and a `meta.json` that
lists every file's size and SHA-256. Entries are written in a temporary sibling folder
and renamed into place, so a reader sees a whole entry or none, and two writers of the
same key (two builds, two ranks) never corrupt it: the second rename loses and its copy is
dropped. An entry whose meta or checksums do not match is a miss, never trusted."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlasgen.digest import canonical_json, content_key  # noqa: F401  (re-exported: keys live with the cache)

log = logging.getLogger(__name__)

FORMAT = 1  # layout version of an entry
ARRAYS = "arrays.npz"
META = "meta.json"


@dataclass
class Entry:
    path: Path
    meta: dict

    def file(self, name: str) -> Path:
        return self.path / name

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / ARRAYS, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.corrupt: list[str] = []  # keys found damaged during this process
        self._verified: dict[tuple[str, str], Entry] = {}  # entries already checked by this process

    def entry_path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def get(self, kind: str, key: str) -> Entry | None:
        """The verified entry, or None if missing or damaged (a damaged one is reported).

        Checksums are verified once per process: entries never change after they are written."""
        if (kind, key) in self._verified:
            return self._verified[kind, key]
        path = self.entry_path(kind, key)
        if not path.is_dir():
            return None
        problem = _verify(path)
        if problem is None:
            entry = self._verified[kind, key] = Entry(path, json.loads((path / META).read_text()))
            return entry
        log.warning("cache entry %s/%s is damaged (%s); recomputing it", kind, key[:12], problem)
        self.corrupt.append(key)
        _discard(path)
        return None

    def put(self, kind: str, key: str, files: dict[str, bytes], arrays: dict[str, np.ndarray] | None = None, meta: dict | None = None) -> Entry:
        """Store an entry atomically and return it."""
        final = self.entry_path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            contents = dict(files)
            if arrays:
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                contents[ARRAYS] = buffer.getvalue()
            listing = {}
            for name, data in contents.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_synced(target, data)
                listing[name] = [len(data), hashlib.sha256(data).hexdigest()]
            record = {"format": FORMAT, "kind": kind, "key": key, "files": listing, **(meta or {})}
            _write_synced(tmp / META, json.dumps(record, indent=1, sort_keys=True).encode())
            try:
                os.rename(tmp, final)
            except OSError:
                # Someone else stored the same key first; theirs is as good as ours unless damaged.
                if _verify(final) is None:
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    _discard(final)
                    os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = self._verified[kind, key] = Entry(final, record)
        return entry

    def keys(self) -> dict[str, list[Path]]:
        """Every stored entry folder, by kind."""
        found: dict[str, list[Path]] = {}
        if not self.root.is_dir():
            return found
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            found[kind_dir.name] = sorted(p for p in kind_dir.glob("??/*") if p.is_dir() and not p.name.startswith("."))
        return found


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _verify(path: Path) -> str | None:
    """None if the entry is whole, else what is wrong with it."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable {META}: {exc}"
    if meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        return f"unknown entry format {meta.get('format')!r}"
    for name, (size, digest) in meta["files"].items():
        try:
            data = (path / name).read_bytes()
        except OSError:
            return f"missing file {name}"
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            return f"checksum mismatch in {name}"
    return None


def _discard(path: Path) -> None:
    """Move a damaged entry out of the way first, so a concurrent reader never sees it half-deleted."""
    trash = path.parent / f".trash-{path.name[:16]}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
