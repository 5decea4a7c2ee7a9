"""Writing the output folder: only changed files, atomically, and remembering what was written.

The manifest of written files is what makes rebuilds safe: a rebuild removes only files
the previous build listed and this one did not write, so files a user put in the folder
(or a wrongly chosen output folder) are never deleted. Also here: GitHub Pages' limits.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from PIL import Image

from atlasgen.atomic import replace_with

log = logging.getLogger(__name__)

PAGES_LIMIT_BYTES = 1_000_000_000  # GitHub Pages refuses published sites above 1 GB
SIZE_WARNING_BYTES = 800_000_000
FOLDER_ENTRY_WARNING = 3000  # GitHub Pages (and git) get slow with larger folders
FILE_WARNING_BYTES = 100_000_000  # GitHub's per-file limit
MANIFEST_NAME = ".atlasgen-files.json"  # what the previous build wrote, so a rebuild can remove stale files


class SiteWriter:
    """Writes into the output folder, remembering every file so stale ones can be removed."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.written: set[str] = set()
        self._sizes: dict[Path, tuple[int, int]] = {}

    def _target(self, rel: str) -> Path:
        self.written.add(rel)
        path = self.output / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, rel: str, text: str) -> None:
        """Write only when the content changed, so unchanged pages keep their mtime."""
        path = self._target(rel)
        data = text.encode("utf-8")
        if path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
        replace_with(path, lambda tmp: tmp.write_bytes(data))

    def copy_file(self, source: Path, rel: str) -> None:
        """Hard-link `source` to `rel` (copy across devices); keep an identical existing file."""
        path = self._target(rel)
        if path.is_file() and not path.is_symlink() and _same_file(source, path):
            return
        replace_with(path, lambda tmp: _link_or_copy(source, tmp))

    def image_size(self, source: Path) -> tuple[int, int]:
        if source not in self._sizes:
            with Image.open(source) as img:  # reads the header only
                self._sizes[source] = img.size
        return self._sizes[source]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # other device, or a file system without hard links
        shutil.copyfile(source, target)


# --------------------------------------------------------------------------- manifest and stale files


def read_manifest(output: Path) -> list[str]:
    """The files the previous build wrote (none when there was none, or it is unreadable)."""
    path = output / MANIFEST_NAME
    try:
        files = json.loads(path.read_text("utf-8")).get("files", [])
        return [f for f in files if isinstance(f, str)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError):
        log.warning("ignoring unreadable %s", path)
        return []


def write_manifest(writer: SiteWriter, generator: str) -> None:
    manifest = {"generator": generator, "files": sorted(writer.written)}
    writer.write_text(MANIFEST_NAME, json.dumps(manifest, indent=0, sort_keys=True) + "\n")


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve(strict=False).is_relative_to(root.resolve())
    except OSError:
        return False


def remove_stale(output: Path, previous: Iterable[str], current: set[str]) -> list[str]:
    """Remove files the previous build wrote and this one did not; never leave `output`.

    Only files listed in the previous build's manifest are candidates, so files a user put
    in the folder (or a wrongly chosen output folder) are never deleted.
    """
    removed = []
    for rel in sorted(set(previous) - current):
        path = output / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute() or not _inside(output, path.parent):
            log.warning("not removing %s: outside the output folder", rel)
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(rel)
            _prune_empty_dirs(output, path.parent)
    return removed


def _prune_empty_dirs(root: Path, folder: Path) -> None:
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


# --------------------------------------------------------------------------- GitHub Pages limits


def site_size_warnings(output: Path) -> tuple[int, int, list[str]]:
    """(files, bytes, warnings) for GitHub Pages' limits."""
    files = 0
    total = 0
    warnings = []
    for folder, dirs, names in os.walk(output):
        entries = len(dirs) + len(names)
        if entries > FOLDER_ENTRY_WARNING:
            rel = Path(folder).relative_to(output).as_posix()
            warnings.append(f"folder {rel} has {entries} entries (GitHub Pages gets slow above {FOLDER_ENTRY_WARNING})")
        for name in names:
            size = (Path(folder) / name).lstat().st_size
            files += 1
            total += size
            if size > FILE_WARNING_BYTES:
                rel = (Path(folder) / name).relative_to(output).as_posix()
                warnings.append(f"{rel} is {size / 1e6:.0f} MB; GitHub refuses files above 100 MB")
    if total > SIZE_WARNING_BYTES:
        warnings.append(
            f"the site is {total / 1e6:.0f} MB, near GitHub Pages' {PAGES_LIMIT_BYTES // 1_000_000_000} GB limit: "
            "use a smaller image size, fewer examples, or jpeg/webp images"
        )
    return files, total, warnings
