"""Writing the output folder: what atlasgen owns there, only changed files, atomically.

Every file is first planned, then the whole plan is checked against the folder, and only
then is anything written: a file atlasgen did not write (one not in the manifest of the
previous build) is never overwritten, and no write goes through a symbolic link. A rebuild
removes only files the previous build listed, this one did not write, and that nobody
changed since. Site images are reflinked from the cache where the file system can
(copy-on-write: editing one never changes the other), else copied; never hard-linked, since
image optimizers rewrite files in place. Also here: GitHub Pages' limits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
from pathlib import Path

from PIL import Image

from atlasgen.atomic import clean_leftovers, replace_with
from atlasgen.digest import file_digest, file_sha256
from atlasgen.errors import AtlasError
from atlasgen.folders import MANIFEST_NAME, SHOWN, inside_without_links, read_manifest

log = logging.getLogger(__name__)

PAGES_LIMIT_BYTES = 1_000_000_000  # GitHub Pages refuses published sites above 1 GB
SIZE_WARNING_BYTES = 800_000_000
FOLDER_ENTRY_WARNING = 3000  # GitHub Pages (and git) get slow with larger folders
FILE_WARNING_BYTES = 100_000_000  # GitHub's per-file limit
FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, XFS, bcachefs)


class SiteWriter:
    """Plans every file of the site, then checks and writes them in `commit`.

    `previous` is the manifest of the last build into `output` ({file: record})."""

    def __init__(self, output: Path, previous: dict[str, dict] | None = None) -> None:
        self.output = output
        self.previous = previous or {}
        self.planned: dict[str, bytes | Path] = {}  # file -> its text, or the cache file to copy
        self.records: dict[str, dict] = {}
        self._sizes: dict[Path, tuple[int, int]] = {}

    @property
    def written(self) -> set[str]:
        return set(self.planned)

    def write_text(self, rel: str, text: str) -> None:
        self.planned[rel] = text.encode("utf-8")

    def copy_file(self, source: Path, rel: str) -> None:
        self.planned[rel] = Path(source)

    def image_size(self, source: Path) -> tuple[int, int]:
        if source not in self._sizes:
            with Image.open(source) as img:  # reads the header only
                self._sizes[source] = img.size
        return self._sizes[source]

    def check(self) -> None:
        """Refuse the plan, before writing anything, if it would overwrite a file atlasgen did
        not write, write through a symbolic link, or use one name as both file and folder."""
        folders = {parent.as_posix() for rel in self.planned for parent in Path(rel).parents if parent != Path(".")}
        clashes = sorted(folders & set(self.planned))
        if clashes:
            raise AtlasError(
                f"the site would need {clashes[0]!r} as both a file and a folder: a model or layer is named like a page file; rename it"
            )
        latest = read_manifest(self.output)  # a build writing this folder at the same time adds to it
        if latest:
            self.previous = {**latest, **self.previous}
        foreign, linked = [], []
        safe_folders: dict[str, bool] = {}  # each folder's chain of parents checked once
        for rel in sorted(self.planned):
            path = self.output / rel
            parent = posixpath.dirname(rel)
            if parent not in safe_folders:
                safe_folders[parent] = not Path(rel).is_absolute() and inside_without_links(self.output, path)
            if not safe_folders[parent] or path.is_symlink():
                linked.append(rel)
            elif (path.exists() or path.is_symlink()) and (rel not in self.previous or path.is_dir()):
                foreign.append(rel)
        if linked:
            raise AtlasError(f"not writing {', '.join(linked[:SHOWN])} in {self.output}: the path leads through a symbolic link; "
                             "nothing was written. Remove the link")
        if foreign:
            raise AtlasError(
                f"{self.output} already holds {', '.join(foreign[:SHOWN])}{' ...' if len(foreign) > SHOWN else ''}, "
                "which atlasgen did not write and would have to replace; nothing was written. "
                "Move or rename those files, or choose another output folder"
            )

    def commit(self, generator: str) -> list[str]:
        """Check the plan, write what changed, remove stale files, write the manifest;
        return the stale files removed."""
        self.check()
        self.output.mkdir(parents=True, exist_ok=True)
        # Listed before they are written: a build killed halfway leaves a folder still known as atlasgen's.
        self._write_manifest(generator, {rel: self.previous.get(rel, {}) for rel in {*self.previous, *self.planned}})
        for rel, content in sorted(self.planned.items()):
            if isinstance(content, Path):
                self._copy(rel, content)
            else:
                self._write(rel, content)
        removed = self._remove_stale()
        clean_leftovers(self.output, recursive=True)
        self._write_manifest(generator, self.records)
        return removed

    def _write_manifest(self, generator: str, files: dict[str, dict]) -> None:
        manifest = {"generator": generator, "files": dict(sorted(files.items()))}
        data = (json.dumps(manifest, indent=0, sort_keys=True) + "\n").encode()
        replace_with(self.output / MANIFEST_NAME, lambda tmp: tmp.write_bytes(data))

    def _write(self, rel: str, data: bytes) -> None:
        """Write only when the content changed, so unchanged pages keep their mtime."""
        path = self.output / rel
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_with(path, lambda tmp: tmp.write_bytes(data))
        self._record(rel, hashlib.sha256(data).hexdigest())

    def _copy(self, rel: str, source: Path) -> None:
        """Keep an existing copy that nobody changed since the last build, else copy again."""
        path = self.output / rel
        digest = file_digest(source)
        before = self.previous.get(rel, {})
        if not (before.get("sha256") == digest and path.is_file() and _stat_of(path) == (before.get("size"), before.get("mtime_ns"))):
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_with(path, lambda tmp: reflink_or_copy(source, tmp))
        self._record(rel, digest)

    def _record(self, rel: str, digest: str) -> None:
        size, mtime = _stat_of(self.output / rel)
        self.records[rel] = {"sha256": digest, "size": size, "mtime_ns": mtime}

    def _remove_stale(self) -> list[str]:
        """Remove files the previous build wrote and this one did not, unless changed since."""
        removed = []
        for rel in sorted(set(self.previous) - set(self.planned) - {MANIFEST_NAME}):
            path = self.output / rel
            if Path(rel).is_absolute() or not inside_without_links(self.output, path):
                log.warning("not removing %s: outside the output folder", rel)
                continue
            if not path.is_file() or path.is_symlink():
                continue
            expected = self.previous[rel].get("sha256")
            if expected and file_sha256(path) != expected:
                log.warning("keeping %s: it changed since atlasgen wrote it", path)
                continue
            path.unlink()
            removed.append(rel)
            _prune_empty_dirs(self.output, path.parent)
        return removed


def _stat_of(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def reflink_or_copy(source: Path, target: Path) -> None:
    """A copy-on-write clone of `source` where the file system supports it, else a plain copy."""
    try:
        import fcntl

        with open(source, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return
    except (ImportError, OSError):
        pass
    shutil.copyfile(source, target)


def _prune_empty_dirs(root: Path, folder: Path) -> None:
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
