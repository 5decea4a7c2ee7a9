"""Page types as data: every kind of page the atlas has, and the fixed files beside them.

As mkdocs lists its static templates, `PAGE_TYPES` lists the atlas's pages: the atlas
index, a page per model, per layer and per unit, each with its template, its folder and
the pages it has in a given atlas, with what their templates need. Everything that must
know which pages exist reads that one list: the page loop, the sitemap, the notes (which
pages a note may belong to or link to) and the names a model may not take. `FIXED_FILES`
does the same for the files every atlas has (stylesheet, script, 404 page, citation...),
so a model cannot be named like one of them.
"""

from __future__ import annotations

import os
import posixpath
import traceback
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterable, Iterator

import jinja2
from markupsafe import Markup

from atlasgen.errors import AtlasError
from atlasgen.forks import chunks, forked_map
from atlasgen.sitedata import SiteData

from .experiments import experiment_pages
from .formats import citation_cff, robots_txt, sitemap_xml
from .notes import NoteBook
from .twin import layer_json
from .urls import PAGE_FILE, TWIN_FILE, layer_dir, model_dir, page_url, public_url, relative_url, unit_dir
from .experiments import ExperimentView
from .views import LayerView, ModelView, UnitView
from atlasgen.folders import MANIFEST_NAME

from .writer import SiteWriter

View = ModelView | LayerView | UnitView | ExperimentView | None  # None: the atlas index, which shows the whole site
# (position in the atlas tree, the view a page shows, what its template needs besides the common context)
Walk = Callable[[SiteData, list[ModelView]], Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]]


@dataclass(frozen=True)
class PageType:
    name: str
    template: str
    folder: Callable[[Any], str]  # the page's view -> its site-root-relative folder ("" is the root)
    walk: Walk  # every page of this type in an atlas
    # other files the page has in its folder: (file name, view -> text)
    extras: tuple[tuple[str, Callable[[Any], str]], ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """The names a page of this type takes in its folder."""
        return (PAGE_FILE, *(name for name, _ in self.extras))

    def pages(self, site: SiteData, models: list[ModelView]) -> Iterator[Page]:
        for order, view, context in self.walk(site, models):
            note_html = site.note_html if view is None else view.data.note_html
            yield Page(type=self, folder=self.folder(view), order=order, view=view, note_html=note_html, context=context)


@dataclass(frozen=True)
class Page:
    type: PageType
    folder: str
    order: tuple[int, ...]  # (model, layer, unit) indices: sorting by it gives the atlas's reading order
    view: View
    note_html: str  # the data's note, shown when the notes folder has none for this page
    context: dict[str, Any]


def _index_pages(site: SiteData, models: list[ModelView]) -> Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]:
    yield (), None, {}


def _model_pages(site: SiteData, models: list[ModelView]) -> Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]:
    for i, m in enumerate(models):
        yield (i,), m, {"model": m}


def _layer_pages(site: SiteData, models: list[ModelView]) -> Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]:
    sections = list(getattr(site, "layer_sections", None) or [])  # partials stages add (templates/layer.html)
    for i, m in enumerate(models):
        for j, lv in enumerate(m.layers):
            yield (i, j), lv, {"model": m, "layer": lv, "sections": sections}


def _unit_pages(site: SiteData, models: list[ModelView]) -> Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]:
    # Partials that later stages add to every unit page, in order (see templates/unit.html).
    sections = list(getattr(site, "unit_sections", None) or [])
    for i, m in enumerate(models):
        for j, lv in enumerate(m.layers):
            for k, u in enumerate(lv.units):
                yield (i, j, k), u, {"model": m, "layer": lv, "unit": u, "sections": sections}


INDEX = PageType("index", "index.html", lambda _: "", _index_pages)
MODEL = PageType("model", "model.html", lambda m: model_dir(m.name), _model_pages)
LAYER = PageType(
    "layer", "layer.html", lambda lv: layer_dir(lv.model, lv.name), _layer_pages, extras=((TWIN_FILE, layer_json),)
)
UNIT = PageType("unit", "unit.html", lambda u: unit_dir(u.model, u.layer, u.channel), _unit_pages)
EXPERIMENT = PageType("experiment", "experiment.html", lambda e: e.dir, experiment_pages)
PAGE_TYPES: tuple[PageType, ...] = (INDEX, MODEL, LAYER, UNIT, EXPERIMENT)


def all_pages(site: SiteData, models: list[ModelView]) -> list[Page]:
    """Every page of the atlas, in reading order: the index, then each model followed by its layers and units."""
    return sorted((page for ptype in PAGE_TYPES for page in ptype.pages(site, models)), key=lambda page: page.order)


def page_folders(pages: Iterable[Page]) -> set[str]:
    return {page.folder for page in pages}


# --------------------------------------------------------------------------- fixed files


@dataclass(frozen=True)
class FixedFile:
    path: str  # site-root-relative
    # (environment, site, page folders) -> the file's text, or None when this site has none
    make: Callable[[jinja2.Environment, SiteData, set[str]], str | None]


def _template_source(name: str) -> Callable[[jinja2.Environment, SiteData, set[str]], str]:
    """A template file copied as it is (the user's templates folder may override it)."""

    def make(env: jinja2.Environment, site: SiteData, folders: set[str]) -> str:
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        return source

    return make


def _not_found_page(env: jinja2.Environment, site: SiteData, folders: set[str]) -> str:
    # 404.html is served at any depth, so it carries its own CSS and links only absolutely.
    css = _template_source("atlas.css")(env, site, folders)
    return env.get_template("404.html").render(site=site, inline_css=Markup(css), home=public_url(site, ""))


FIXED_FILES: tuple[FixedFile, ...] = (
    FixedFile("assets/atlas.css", _template_source("atlas.css")),
    FixedFile("assets/atlas.js", _template_source("atlas.js")),
    FixedFile("404.html", _not_found_page),
    FixedFile(".nojekyll", lambda env, site, folders: ""),  # GitHub Pages: serve files as they are
    FixedFile("CITATION.cff", lambda env, site, folders: citation_cff(site)),
    FixedFile("robots.txt", lambda env, site, folders: robots_txt(site)),
    FixedFile("sitemap.xml", lambda env, site, folders: sitemap_xml(site, folders) if site.url else None),
)


def reserved_names() -> frozenset[str]:
    """Names a model may not take: what the site root holds besides the model folders
    (lower case: a case-insensitive file system would mix `Index.html` with `index.html`)."""
    names = {ff.path.split("/", 1)[0] for ff in FIXED_FILES}
    names.update(INDEX.files)
    names.add(MANIFEST_NAME)
    return frozenset(name.lower() for name in names)


def reserved_layer_names() -> frozenset[str]:
    """Names a layer may not take: the files a model page has in its folder."""
    return frozenset(name.lower() for name in MODEL.files)


# --------------------------------------------------------------------------- writing


def _date_parts(built: str) -> tuple[str, str]:
    """(YYYY, YYYY/MM/DD) of the build date, tolerant of a full ISO timestamp."""
    try:
        day = date.fromisoformat(built[:10])
    except ValueError:
        return built[:4], built
    return f"{day.year:04d}", day.strftime("%Y/%m/%d")


PAGES_PER_CHUNK = 64  # pages a forked process renders per task


def render_pages(
    env: jinja2.Environment, site: SiteData, models: list[ModelView], pages: list[Page], writer: SiteWriter, notes: NoteBook
) -> int:
    """Write every page (and the files beside it); the number of pages written.

    Jinja holds the GIL, so the pages are rendered in forked processes where the machine has
    cores for them (`atlasgen.forks`), and written here in reading order. The notes are attached
    to the views here first: the search index reads them after the pages."""
    year, pub_date = _date_parts(site.built)
    common = {"site": site, "models": models, "year": year, "publication_date": pub_date, "accessed": site.built[:10]}
    page_notes = []
    for page in pages:
        note = notes.for_page(page.folder, page.note_html)
        if page.view is not None:
            page.view.note = note
        page_notes.append(note)

    def render(start: int, stop: int) -> list[tuple[str, str]]:
        files = []
        for page, note in zip(pages[start:stop], page_notes[start:stop]):
            files.append((page_url(page.folder), _render_page(env, site, common, page, note)))
            files.extend((posixpath.join(page.folder, name), make(page.view)) for name, make in page.type.extras)
        return files

    for files in forked_map(render, chunks(len(pages), PAGES_PER_CHUNK)):
        for rel, text in files:
            writer.write_text(rel, text)
    return len(pages)


def _render_page(env: jinja2.Environment, site: SiteData, common: dict[str, Any], page: Page, note: Markup) -> str:
    try:
        return env.get_template(page.type.template).render(
            **common,
            page_dir=page.folder,
            public_url=public_url(site, page.folder),
            root=relative_url(page_url(""), page.folder),
            note=note,
            **page.context,
        )
    except Exception as exc:
        raise template_error(env, exc, page_url(page.folder)) from None


def template_error(env: jinja2.Environment, exc: Exception, page: str) -> Exception:
    """A template's error as the user can act on it: which template file and line, on which page.
    An error raised outside any template (an atlasgen bug) is returned as it is."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f"{exc.filename or exc.name}, line {exc.lineno}"
    else:
        # Jinja gives a template's frames the template's file and line.
        folders = tuple(os.path.join(folder, "") for folder in getattr(env.loader, "searchpath", ()))
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(folders)]
        if not frames:
            return exc
        where = f"{frames[-1].filename}, line {frames[-1].lineno}"
    message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else f"{type(exc).__name__}: {exc}"
    return AtlasError(f"template error in {where}: {message} (rendering {page}); fix the template, or remove it "
                      "from the templates folder to use the built-in one")


def render_fixed_files(env: jinja2.Environment, site: SiteData, folders: set[str], writer: SiteWriter) -> None:
    for fixed in FIXED_FILES:
        try:
            text = fixed.make(env, site, folders)
        except Exception as exc:
            raise template_error(env, exc, fixed.path) from None
        if text is not None:
            writer.write_text(fixed.path, text)
