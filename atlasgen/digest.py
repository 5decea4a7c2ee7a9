"""Content digests: SHA-256 of files (memoized by path, size and mtime for the life of the
process) and of canonical JSON. The one place atlasgen hashes anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_FILE_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_digest(path: Path) -> str:
    """`file_sha256`, memoized by (path, size, mtime) for the life of the process."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _FILE_MEMO:
        _FILE_MEMO[memo_key] = file_sha256(path)
    return _FILE_MEMO[memo_key]


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_key(inputs: dict) -> str:
    """SHA-256 of the canonical JSON of everything that affects a result."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()
