"""Writing the output folder: what atlasgen owns there, only changed files, atomically.

Every file is first planned, then the whole plan is checked against the folder, and only
then is anything written: a file atlasgen did not write (one not in the manifest of the
previous build) is never overwritten, and no write goes through a symbolic link. A rebuild
removes only files the previous build listed, this one did not write, and that nobody
changed since. A file that replaces another is written beside it and renamed over it, so a
reader sees the old one or the new one; a new file is created in its place (`O_EXCL`). Site
images are reflinked from the cache where the file system can (copy-on-write: editing one
never changes the other), else copied; never hard-linked, since image optimizers rewrite
files in place. Also here: GitHub Pages' limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from atlasgen.atomic import clean_leftovers, raise_if_full, replace_with
from atlasgen.digest import file_digest, file_sha256
from atlasgen.errors import AtlasError
from atlasgen.folders import MANIFEST_NAME, SHOWN, inside_without_links, read_manifest

from .imagesize import image_size

try:
    import fcntl
except ImportError:  # not on Windows: copies only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

BUDGET_WARNING_SHARE = 0.8  # of [site] budget_mb: the summary warns above it
FOLDER_ENTRY_WARNING = 3000  # GitHub Pages (and git) get slow with larger folders
FILE_WARNING_BYTES = 100_000_000  # GitHub's per-file limit
FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, XFS, bcachefs)


class SiteWriter:
    """Plans every file of the site, then checks and writes them in `commit`.

    `previous` is the manifest of the last build into `output` ({file: record}); `digests`
    maps source files whose SHA-256 is already known (the cache's verified meta) to it, so
    copying them needs no second read. Paths are handled as strings and each file is looked at
    with one `lstat`: a whole GoogLeNet atlas has over 100,000 files."""

    def __init__(self, output: Path, previous: dict[str, dict] | None = None, digests: dict[str, str] | None = None) -> None:
        self.output = output
        self.previous = previous or {}
        self.digests = digests or {}
        self.planned: dict[str, bytes | Path] = {}  # file -> its text, or the cache file to copy
        self.records: dict[str, dict] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # copied image -> its (width, height), kept in its record
        self._found: dict[str, os.stat_result | None] = {}  # planned file -> what `check` found there
        self._reflink = fcntl is not None  # until the file system refuses one

    @property
    def written(self) -> set[str]:
        return set(self.planned)

    def write_text(self, rel: str, text: str) -> None:
        self.planned[rel] = text.encode("utf-8")

    def copy_file(self, source: Path, rel: str) -> None:
        self.planned[rel] = source

    def image_size(self, source: Path, rel: str) -> tuple[int, int]:
        """The pixel size of the image `source` copied to `rel`: from the last build's record of
        `rel` when that was a copy of the same bytes, else from the file's header (a rebuild would
        otherwise read the header of every image of the site again)."""
        if rel in self._sizes:  # an image several pages show, published once
            return self._sizes[rel]
        before = self.previous.get(rel, {})
        if "width" in before and before.get("sha256") == self.digests.get(os.fspath(source)):
            size = before["width"], before["height"]
        else:
            size = image_size(source)
        self._sizes[rel] = size
        return size

    def check(self) -> None:
        """Refuse the plan, before writing anything, if it would overwrite a file atlasgen did
        not write, write through a symbolic link, or use one name as both file and folder."""
        folders = _folders(self.planned)
        clashes = sorted(folders & set(self.planned))
        if clashes:
            raise AtlasError(
                f"the site would need {clashes[0]!r} as both a file and a folder: a model or layer is named like a page file; rename it"
            )
        latest = read_manifest(self.output)  # a build writing this folder at the same time adds to it
        if latest:
            self.previous = {**latest, **self.previous}
        root = os.fspath(self.output)
        safe = {"": True}  # the output folder itself may be a link its owner made; each folder below is checked once
        for folder in sorted(folders, key=lambda f: f.count("/")):
            parent = posixpath.dirname(folder)
            safe[folder] = safe[parent] and not os.path.islink(os.path.join(root, folder))
        foreign, linked = [], []
        for rel in sorted(self.planned):
            if posixpath.isabs(rel) or ".." in rel.split("/") or not safe[posixpath.dirname(rel)]:
                linked.append(rel)
                continue
            try:
                found: os.stat_result | None = os.lstat(os.path.join(root, rel))
            except FileNotFoundError:
                found = None
            except NotADirectoryError:  # a file where the plan has a folder: replacing it needs its owner
                foreign.append(rel)
                continue
            self._found[rel] = found
            if found is None:
                continue
            if stat.S_ISLNK(found.st_mode):
                linked.append(rel)
            elif rel not in self.previous or stat.S_ISDIR(found.st_mode):
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
        if not self.planned.keys() <= self.previous.keys() or not (self.output / MANIFEST_NAME).is_file():
            self._write_manifest(generator, {rel: self.previous.get(rel, {}) for rel in {*self.previous, *self.planned}})
        root = os.fspath(self.output)
        for folder in sorted(_folders(self.planned)):  # parents first; each made once
            os.makedirs(os.path.join(root, folder), exist_ok=True)
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
        # One file per line, each line by json's C encoder: `indent` would use its Python
        # encoder, seconds for the 120,000 files of a whole atlas.
        lines = ",\n".join(f"{json.dumps(rel)}: {json.dumps(files[rel], sort_keys=True)}" for rel in sorted(files))
        data = f'{{"generator": {json.dumps(generator)}, "files": {{\n{lines}\n}}}}\n'.encode()
        replace_with(self.output / MANIFEST_NAME, lambda tmp: tmp.write_bytes(data))

    def _write(self, rel: str, data: bytes) -> None:
        """Write only when the content changed, so unchanged pages keep their mtime."""
        path = os.path.join(self.output, rel)
        found = self._found.get(rel)
        digest = hashlib.sha256(data).hexdigest()
        before = self.previous.get(rel, {})
        if found is not None and _unchanged(before, found, digest):
            self.records[rel] = before
            return
        if found is None:
            found = _create(path, lambda fd: _write_all(fd, data))
        elif not (found.st_size == len(data) and _read(path) == data):
            found = _replace(path, lambda fd: _write_all(fd, data))
        self.records[rel] = _record(digest, found if found is not None else os.stat(path))

    def _copy(self, rel: str, source: Path) -> None:
        """Keep an existing copy that nobody changed since the last build, else copy again."""
        path = os.path.join(self.output, rel)
        found = self._found.get(rel)
        before = self.previous.get(rel, {})
        digest = self.digests.get(os.fspath(source))
        if found is not None and before.get("sha256"):
            digest = digest or file_digest(source)
            if _unchanged(before, found, digest):
                self._keep(rel, dict(before))
                return
        hashed: list[str] = []

        def fill(fd: int) -> None:
            self._clone(source, fd, hashed if digest is None else None)

        found = _create(path, fill) if found is None else _replace(path, fill)
        self._keep(rel, _record(digest or (hashed[0] if hashed else file_digest(source)), found))

    def _keep(self, rel: str, record: dict) -> None:
        """Record a copied file, with its pixel size when it is an image a page shows."""
        if rel in self._sizes:
            record["width"], record["height"] = self._sizes[rel]
        self.records[rel] = record

    def _clone(self, source: Path, fd: int, hashed: list[str] | None) -> None:
        """Copy `source` into the open file `fd`: a reflink where the file system shares blocks,
        else its bytes (hashed on the way when `hashed` asks for the digest)."""
        with open(source, "rb") as src:
            if self._reflink:
                try:
                    fcntl.ioctl(fd, FICLONE, src.fileno())
                    return
                except OSError:
                    self._reflink = False  # this file system cannot: copy every file from now on
            data = src.read()
        if hashed is not None:
            hashed.append(hashlib.sha256(data).hexdigest())
        _write_all(fd, data)

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


def _folders(files: Iterable[str]) -> set[str]:
    """Every folder above the (site-relative, posix) files, without the root."""
    out: set[str] = set()
    for rel in files:
        folder = posixpath.dirname(rel)
        while folder and folder not in out:
            out.add(folder)
            folder = posixpath.dirname(folder)
    return out


def _unchanged(before: dict, found: os.stat_result, digest: str) -> bool:
    """The file is what the last build wrote with this content, untouched since."""
    return (before.get("sha256") == digest and stat.S_ISREG(found.st_mode)
            and (found.st_size, found.st_mtime_ns) == (before.get("size"), before.get("mtime_ns")))


def _record(digest: str, found: os.stat_result) -> dict:
    return {"sha256": digest, "size": found.st_size, "mtime_ns": found.st_mtime_ns}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _create(path: str, fill: Callable[[int], object]) -> os.stat_result:
    """A file that was absent when the plan was checked, created in its place and filled there:
    no temporary to rename, about a fifth less time per file (a first build creates 60,000 of
    them). `O_EXCL` never opens what appeared since, and never follows a link; if anything did
    appear (a build writing the same folder at the same time), the file is replaced atomically as
    usual. A build killed while filling leaves a short file that does not match its record in the
    manifest (written first), so the next build rewrites it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except FileExistsError:
        return _replace(path, fill)
    try:
        fill(fd)
        found = os.fstat(fd)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):  # the part written is ours; already gone is fine
            os.unlink(path)
        if isinstance(exc, OSError):
            raise_if_full(exc, Path(path).parent)
        raise
    os.close(fd)
    return found


def _replace(path: str, fill: Callable[[int], object]) -> os.stat_result:
    """`atomic.replace_with` for a file written through its descriptor; the new file's stat."""
    result: list[os.stat_result] = []

    def make(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            fill(fd)
            result.append(os.fstat(fd))
        finally:
            os.close(fd)

    replace_with(Path(path), make)
    return result[0]


def _prune_empty_dirs(root: Path, folder: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


# --------------------------------------------------------------------------- GitHub Pages limits


def site_size_warnings(output: Path, known: dict[str, dict] | None = None) -> tuple[int, int, list[str]]:
    """(files, bytes, warnings) for GitHub Pages' limits; `known` are the records of files just
    written ({site-relative path: {"size": ...}}), whose size need not be asked again."""
    files = 0
    total = 0
    warnings = []
    known = known or {}
    root = os.fspath(output)
    for folder, dirs, names in os.walk(root):
        entries = len(dirs) + len(names)
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        if entries > FOLDER_ENTRY_WARNING:
            warnings.append(f"folder {rel_folder} has {entries} entries (GitHub Pages gets slow above {FOLDER_ENTRY_WARNING})")
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in names:
            record = known.get(prefix + name)
            size = record["size"] if record and "size" in record else os.lstat(os.path.join(folder, name)).st_size
            files += 1
            total += size
            if size > FILE_WARNING_BYTES:
                rel = (Path(folder) / name).relative_to(output).as_posix()
                warnings.append(f"{rel} is {size / 1e6:.0f} MB; GitHub refuses files above 100 MB")
    return files, total, warnings


def over_budget(total: int, budget_mb: float) -> tuple[bool, str | None]:
    """(whether the site's `total` bytes exceed `budget_mb`, what to say about it) for the
    `[site] budget_mb` setting; nothing to say under BUDGET_WARNING_SHARE of it, or without one."""
    if budget_mb <= 0 or total <= BUDGET_WARNING_SHARE * budget_mb * 1e6:
        return False, None
    over = total > budget_mb * 1e6
    where = "over" if over else "near"
    return over, (
        f"the site is {total / 1e6:,.1f} MB, {where} site.budget_mb = {budget_mb:,g} (GitHub Pages publishes at most "
        '1,000): set [site.images] visualizations = "jpeg" (only re-encodes them, about a third of the bytes), a '
        "smaller visualize.size or examples.patch_size, or fewer objectives or examples; or raise site.budget_mb "
        "(0 = no limit)"
    )
