"""Which folders atlasgen may write into, checked before anything is written.

The output folder is atlasgen's when it is missing, empty, or holds the manifest of what
an earlier build wrote there (`MANIFEST_NAME`); any other folder holds someone else's work
and is refused unless the user adopts it (`--adopt`), and even then no file atlasgen did not
write is overwritten or removed. Neither the output nor the cache may hold a symbolic link
in a place atlasgen writes, and the two may not be the same folder or one inside the other.
No torch, no Jinja: the checks run before any model loads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)

MANIFEST_NAME = ".atlasgen-files.json"  # what atlasgen wrote into the output folder
SHOWN = 5  # foreign files or links named in a message
# The cache's own folder levels: <cache>/<kind>/<ab>/<key>, datasets/<name>/<image>.
CACHE_LINK_DEPTH = 3


def read_manifest(output: Path) -> dict[str, dict] | None:
    """{file: record} atlasgen wrote into `output` last time, or None when there is no manifest.

    A record holds the file's `size`, `mtime_ns` and `sha256` when written by this version (and
    an image's `width` and `height`, for the next build's pages); manifests of earlier versions list names only (empty records)."""
    path = output / MANIFEST_NAME
    if path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return None
    files = data.get("files", []) if isinstance(data, dict) else []
    if isinstance(files, list):
        return {f: {} for f in files if isinstance(f, str)}
    if isinstance(files, dict):
        return {f: r if isinstance(r, dict) else {} for f, r in files.items() if isinstance(f, str)}
    return {}


def _nested(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def path_problems(output: Path, cache: Path, project: Path) -> list[str]:
    """What is wrong with this pair of folders (no file system changes)."""
    out, cch, root = output.resolve(), cache.resolve(), project.resolve()
    problems = []
    if out == root or out in root.parents:
        problems.append(f"{str(output)!r} would put the site over the project itself; use a subfolder such as 'site'")
    if out == cch:
        problems.append(f"the output folder and the cache are the same folder {str(out)!r}; give them separate folders")
    elif _nested(out, cch):
        inner, outer = ("cache", "output folder") if cch.is_relative_to(out) else ("output folder", "cache")
        problems.append(
            f"the {inner} {str(cch if inner == 'cache' else out)!r} lies inside the {outer} "
            f"{str(out if inner == 'cache' else cch)!r}: the cache would be published, or the site mixed with cached work; "
            "give them separate folders, such as 'site' and '.atlas-cache'"
        )
    return problems


def links_under(root: Path, depth: int | None = None) -> list[str]:
    """Symbolic links inside `root` (not followed), as 'relative/path -> target', up to `depth` levels."""
    found: list[str] = []
    if not root.is_dir():
        return found
    # os.scandir's entries know a link from the directory listing itself: no stat per file, and a
    # whole atlas's output folder holds over 100,000 of them.
    pending = [(os.fspath(root), "", 1)]
    while pending:
        folder, rel, level = pending.pop()
        try:
            listing = list(os.scandir(folder))
        except OSError:  # unreadable: skipped, as os.walk does
            continue
        for entry in listing:
            path = f"{rel}{entry.name}"
            if entry.is_symlink():
                found.append(f"{path} -> {os.readlink(entry.path)}")
            elif entry.is_dir() and (depth is None or level < depth):
                pending.append((entry.path, path + "/", level + 1))
    return sorted(found)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def foreign_files(output: Path) -> list[str]:
    """Top-level entries of a folder without atlasgen's manifest (what makes it someone else's)."""
    try:
        return sorted(p.name + ("/" if p.is_dir() else "") for p in output.iterdir())
    except OSError:  # missing, or under a file: the writability check reports it
        return []


def claim_output(output: Path, adopt: bool = False, option: str = "site.output") -> dict[str, dict]:
    """Check that atlasgen may write into `output`; return what it wrote there before.

    Raises before anything is written when the folder holds someone else's files (unless
    `adopt`), is not a folder, or holds symbolic links."""
    if output.exists() and not output.is_dir():
        raise AtlasError(f"{option} {str(output)!r} is a file, not a folder; choose a folder for the site")
    previous = read_manifest(output)
    if previous is None:
        foreign = foreign_files(output)
        if foreign and not adopt:
            raise AtlasError(
                f"{option} {str(output)!r} already holds files atlasgen did not write ({_listing(foreign)}); "
                "nothing was written. Choose an empty or new folder, or pass --adopt to build into this folder "
                "(atlasgen then adds its files beside these and never overwrites or removes them)"
            )
        previous = {}
    links = links_under(output)
    if links:
        raise AtlasError(
            f"{option} {str(output)!r} holds symbolic links ({_listing(links)}); atlasgen does not write through links: "
            "remove them (copy what they point to, if the site needs it) or choose another folder"
        )
    return previous


def check_cache(cache: Path) -> None:
    """The cache's own folder levels must be real folders, so no entry is written elsewhere."""
    if cache.exists() and not cache.is_dir():
        raise AtlasError(f"site.cache {str(cache)!r} is a file, not a folder; choose a folder for the cache")
    links = links_under(cache, CACHE_LINK_DEPTH)
    if links:
        raise AtlasError(
            f"site.cache {str(cache)!r} holds symbolic links ({_listing(links)}); atlasgen does not write through links: "
            "remove them, or point site.cache itself at the folder you want"
        )


def inside_without_links(root: Path, path: Path) -> bool:
    """True when `path` lies under `root` and no folder between them is a symbolic link."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    if ".." in rel.parts:
        return False
    current = root
    for part in rel.parts[:-1]:
        current = current / part
        if current.is_symlink():
            return False
    return True
