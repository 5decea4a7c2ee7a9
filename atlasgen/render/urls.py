"""Where every page and file of the site lives, and how pages link to each other.

Folder names are the model, layer and channel names as they are (so they must need no
escaping), and every link is page-relative and ends in an explicit `index.html`: the
site then works from `file://`, from any web server and under a GitHub Pages project
prefix alike.
"""

from __future__ import annotations

import posixpath
import re

from atlasgen.errors import AtlasError
from atlasgen.sitedata import SiteData

PAGE_FILE = "index.html"  # every page is the index of its own folder
TWIN_FILE = "index.json"  # the machine-readable twin beside a layer page

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_segment(name: str, what: str) -> None:
    """Names become folders and URL segments as they are, so they must need no escaping."""
    if not _SAFE_SEGMENT.fullmatch(name):
        raise AtlasError(
            f"{what} name {name!r} cannot be used in the site's URLs: use letters, digits, '.', '_' and '-'"
        )


def model_dir(model: str) -> str:
    return model


def layer_dir(model: str, layer: str) -> str:
    return f"{model}/{layer}"


def unit_dir(model: str, layer: str, channel: int) -> str:
    return f"{model}/{layer}/{channel}"


def shared_example(model: str, layer: str, digest: str, ext: str) -> str:
    """Where an example image that several of a layer's examples show is published once: named by
    its bytes' SHA-256 (128 bits of it), in one of 16 folders so that none grows past GitHub
    Pages' comfort (a layer of a large dataset may show thousands of distinct whole images)."""
    return f"{model}/{layer}/examples/{digest[0]}/{digest[:32]}{ext}"


def page_url(folder: str) -> str:
    """Site-root-relative URL of the page of `folder` ("" is the site root)."""
    return f"{folder}/{PAGE_FILE}" if folder else PAGE_FILE


def relative_url(target: str, page_dir: str) -> str:
    """`target` (site-root-relative URL, or `#anchor`, or absolute URL) as seen from `page_dir`."""
    if target.startswith(("#", "http://", "https://", "mailto:")):
        return target
    path, hash_, fragment = target.partition("#")
    if hash_ and path == page_url(page_dir):
        return "#" + fragment  # same page: a plain fragment scrolls without reloading
    return _relpath(path, page_dir) + (hash_ + fragment if hash_ else "")


def _relpath(path: str, start: str) -> str:
    """`posixpath.relpath` for the clean relative paths of the site, without its two `abspath`
    calls (a whole atlas asks this a few million times)."""
    to, here = path.split("/") if path else [], start.split("/") if start else []
    if path.startswith("/") or {"", ".", ".."} & {*to, *here}:
        return posixpath.relpath(path, start or ".")
    common = 0
    for a, b in zip(to, here):
        if a != b:
            break
        common += 1
    return "/".join([".."] * (len(here) - common) + to[common:]) or "."


def unit_anchor(channel: int) -> str:
    return f"unit-{channel}"


def public_url(site: SiteData, page_dir: str) -> str | None:
    """Stable public URL of a page folder (ending in '/'), when `site.url` is configured."""
    if not site.url:
        return None
    base = site.url.rstrip("/") + "/"
    return base + (page_dir + "/" if page_dir else "")
