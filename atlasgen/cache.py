"""A content-addressed store of finished work.

An entry is a folder `<root>/<kind>/<ab>/<key>/` with its files and a `meta.json` that
lists every file's size and SHA-256 and carries the SHA-256 of its own text, so every byte
of an entry is verified. Entries are written in a temporary sibling folder and renamed into
place, so a reader sees a whole entry or none, and two writers of the
same key (two builds, two ranks) never corrupt it: the second rename loses and its copy is
dropped. An entry whose meta or checksums do not match is a miss, never trusted."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlasgen.atomic import raise_if_full, temporary_name
from atlasgen.digest import canonical_json, content_key  # noqa: F401  (re-exported: keys live with the cache)
from atlasgen.forks import balanced_chunks, forked_map

log = logging.getLogger(__name__)

FORMAT = 2  # layout version of an entry; 2: meta.json carries its own checksum
ARRAYS = "arrays.npz"
META = "meta.json"
FORK_CHECK_BYTES = 1 << 20  # of meta.json (about 10,000 files listed): less is checked in this process


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
        self._checked: dict[tuple[str, str], bool] = {}  # found damaged or not by `check`, not read yet

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
        problem = _verify(path, kind, key) if self._checked.pop((kind, key), True) else None
        if problem is None:
            entry = self._verified[kind, key] = Entry(path, json.loads((path / META).read_text()))
            return entry
        if problem == _OLD_FORMAT:
            log.info("cache entry %s/%s was written by an older atlasgen; recomputing it", kind, key[:12])
            _discard(path)
            return None
        log.warning("cache entry %s/%s is damaged (%s); recomputing it", kind, key[:12], problem)
        self.corrupt.append(key)
        _discard(path)
        return None

    def check(self, entries: Sequence[tuple[str, str]]) -> None:
        """Verify many (kind, key) entries ahead of `get`, in forked processes where there are
        cores: a rebuild of a large atlas reads and hashes every byte of its cache. `get` then
        trusts an entry found whole here, and handles a damaged one as it always does."""
        todo = [pair for pair in dict.fromkeys(entries) if pair not in self._verified]
        sizes = {pair: _meta_size(self.entry_path(*pair)) for pair in todo}
        # The size of meta.json, which lists every file, stands for the work; largest first.
        todo = sorted((pair for pair in todo if sizes[pair] is not None), key=lambda pair: -sizes[pair])

        def verify(start: int, stop: int) -> list[bool]:
            return [_verify(self.entry_path(*pair), *pair) is not None for pair in todo[start:stop]]

        costs = [sizes[pair] for pair in todo]
        bounds = balanced_chunks(costs) if sum(costs) >= FORK_CHECK_BYTES else [(0, len(todo))]
        damaged = (flag for chunk in forked_map(verify, bounds) for flag in chunk)
        self._checked.update(zip(todo, damaged))

    def put(self, kind: str, key: str, files: dict[str, bytes], arrays: dict[str, np.ndarray] | None = None, meta: dict | None = None) -> Entry:
        """Store an entry atomically and return it."""
        final = self.entry_path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / temporary_name(key[:16])
        tmp.mkdir()
        needed = 0
        try:
            contents = dict(files)
            if arrays:
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                contents[ARRAYS] = buffer.getvalue()
            listing = {}
            needed = sum(len(data) for data in contents.values())
            for name, data in contents.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                # Not fsynced one by one (2 ms each: 70 s for one GoogLeNet layer's patches): every
                # byte is checked against meta.json on read, so a file torn by a crash is a miss.
                target.write_bytes(data)
                listing[name] = [len(data), hashlib.sha256(data).hexdigest()]
            record = {"format": FORMAT, "kind": kind, "key": key, "files": listing, **(meta or {})}
            record["checksum"] = hashlib.sha256(_meta_bytes(record)).hexdigest()
            _write_synced(tmp / META, _meta_bytes(record))
            try:
                os.rename(tmp, final)
            except OSError as exc:
                raise_if_full(exc, self.root, needed)
                # Someone else stored the same key first; theirs is as good as ours unless damaged.
                if _verify(final, kind, key) is None:
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    _discard(final)
                    try:
                        os.rename(tmp, final)
                    except OSError:  # a third writer replaced it first: keep theirs if whole
                        if _verify(final, kind, key) is not None:
                            raise
                        shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise_if_full(exc, self.root, needed)
            raise
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


def _meta_bytes(record: dict) -> bytes:
    """meta.json's exact bytes: the record (with or without its checksum) in one fixed layout."""
    return json.dumps(record, indent=1, sort_keys=True).encode()


_OLD_FORMAT = "written by an older atlasgen"


def _verify(path: Path, kind: str | None = None, key: str | None = None) -> str | None:
    """None if every byte of the entry is as written, else what is wrong with it."""
    try:
        raw = (path / META).read_bytes()
        meta = json.loads(raw)
    except (OSError, ValueError) as exc:
        return f"unreadable {META}: {exc}"
    if not isinstance(meta, dict):
        return f"{META} is not an object"
    if isinstance(meta.get("format"), int) and meta["format"] < FORMAT:
        return _OLD_FORMAT
    checksum = meta.pop("checksum", None)
    if meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        return f"unknown entry format {meta.get('format')!r}"
    if checksum != hashlib.sha256(_meta_bytes(meta)).hexdigest() or raw != _meta_bytes({**meta, "checksum": checksum}):
        return f"checksum mismatch in {META}"
    if (kind, key) != (None, None) and (meta.get("kind"), meta.get("key")) != (kind, key):
        return f"{META} names another entry"
    unlisted = sorted(_files_in(path) - set(meta["files"]) - {META})
    if unlisted:
        return f"unlisted file {unlisted[0]}"
    root = os.fspath(path)
    for name, (size, digest) in meta["files"].items():
        try:
            with open(os.path.join(root, name), "rb") as handle:  # not pathlib: 190,000 files in a large atlas
                data = handle.read()
        except OSError:
            return f"missing file {name}"
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            return f"checksum mismatch in {name}"
    return None


def _meta_size(path: Path) -> int | None:
    """The size of an entry's meta.json, None if there is no entry."""
    try:
        return os.stat(os.path.join(path, META)).st_size
    except OSError:
        return None if not path.is_dir() else 0  # a folder without its meta: damaged, verified to say so


def _files_in(path: Path) -> set[str]:
    """Every file under `path`, as '/'-separated relative names."""
    root = os.fspath(path)
    found = set()
    for folder, _, names in os.walk(root):
        prefix = os.path.relpath(folder, root).replace(os.sep, "/")
        found.update(names if prefix == "." else (f"{prefix}/{name}" for name in names))
    return found


def _discard(path: Path) -> None:
    """Move a damaged entry out of the way first, so a concurrent reader never sees it half-deleted."""
    trash = path.parent / temporary_name(path.name[:16], "trash")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
