"""Render stage: lay out a `SiteData` as a static site with Jinja templates.

Everything shown is already computed; this package only copies image files out of the
cache (reflinks when possible, else copies) and writes pages, only into a folder atlasgen
owns (`atlasgen.folders`). Every link is page-relative and ends
in an explicit `index.html`, so the site works from `file://`, from any web server and
under a GitHub Pages project prefix alike.

    urls         where pages and files live, and page-relative links
    formats      numbers, objective labels, citation files
    writer       the output folder: changed files only, manifest, stale files, size limits
    imagesize    an image's pixel size from its header
    notes        Markdown notes and their `unit:` links
    views        what the templates show (and copying the images)
    search       the offline search index, a script the pages load when a search starts
    twin         the JSON twin of a layer page
    pages        page types and fixed files as data, and the loop that writes them
    environment  the Jinja environment, its filters and globals
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from atlasgen.errors import AtlasError
from atlasgen.folders import claim_output
from atlasgen.heap import few_full_collections
from atlasgen.sitedata import SiteData

from .environment import make_environment
from .notes import NoteBook, load_notes
from .pages import all_pages, page_folders, render_fixed_files, render_pages, reserved_names
from .search import SEARCH_FILE, search_index
from .views import build_views
from .writer import SiteWriter, site_size_warnings

__all__ = ["RenderReport", "render_site"]

log = logging.getLogger(__name__)


@dataclass
class RenderReport:
    pages: int
    files: int  # all files written or kept
    bytes: int  # total size of the output folder
    warnings: list[str] = field(default_factory=list)


def render_site(site: SiteData, output: Path, templates: Path | None = None, notes: Path | None = None,
                adopt: bool = False, raw_html: bool = False) -> RenderReport:
    """Write the static atlas for `site` into `output` and report its size.

    `templates` is searched before the built-in templates (override any template or
    partial by name); `notes` holds Markdown notes (`index.md`, `<model>.md`,
    `<model>/<layer>.md`, `<model>/<layer>/<channel>.md`). `adopt` lets atlasgen build into a
    folder of someone else's files (never replacing them); `raw_html` keeps the notes' HTML
    as written instead of sanitizing it.
    """
    output = Path(output)
    if templates is not None and not Path(templates).is_dir():
        raise AtlasError(f"templates folder {templates} does not exist")
    with few_full_collections():
        return _render_site(site, output, templates, notes, adopt, raw_html)


def _render_site(site: SiteData, output: Path, templates: Path | None, notes: Path | None, adopt: bool,
                 raw_html: bool) -> RenderReport:
    warnings: list[str] = []
    previous = claim_output(output, adopt)

    began = time.perf_counter()
    env = make_environment(Path(templates) if templates else None)
    writer = SiteWriter(output, previous, site.file_digests)
    models = build_views(site, writer, reserved_names())
    pages = all_pages(site, models)
    folders = page_folders(pages)
    book = NoteBook(load_notes(Path(notes) if notes else None), folders, warnings, raw_html)
    viewed = time.perf_counter()
    count = render_pages(env, site, models, pages, writer, book)
    render_fixed_files(env, site, folders, writer)
    writer.write_text(SEARCH_FILE, search_index(models))  # after the pages: it holds their notes' text
    rendered = time.perf_counter()

    removed = writer.commit(f"atlasgen {site.version}")
    if removed:
        log.info("removed %d stale files from %s", len(removed), output)
    written = time.perf_counter()

    files, total, size_warnings = site_size_warnings(output, writer.records)
    log.debug("render: views %.1f s, pages %.1f s, files %.1f s, size check %.1f s", viewed - began, rendered - viewed,
              written - rendered, time.perf_counter() - written)
    warnings.extend(size_warnings)
    for message in warnings:
        log.warning("%s", message)
    log.info("rendered %d pages, %d files, %.1f MB into %s", count, files, total / 1e6, output)
    return RenderReport(pages=count, files=files, bytes=total, warnings=warnings)
