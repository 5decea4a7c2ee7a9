"""Render stage: lay out a `SiteData` as a static site with Jinja templates.

Everything shown is already computed; this module only copies image files out of the
cache (hard links when possible) and writes pages. Every link is page-relative and
ends in an explicit `index.html`, so the site works from `file://`, from any web
server and under a GitHub Pages project prefix alike.
"""

from __future__ import annotations

import filecmp
import importlib.resources
import json
import logging
import math
import os
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape as xml_escape

import jinja2
import markdown
from markupsafe import Markup
from PIL import Image

from .errors import AtlasError
from .sitedata import Example, LayerData, ModelData, Related, SiteData, UnitData

log = logging.getLogger(__name__)

PAGES_LIMIT_BYTES = 1_000_000_000  # GitHub Pages refuses published sites above 1 GB
SIZE_WARNING_BYTES = 800_000_000
FOLDER_ENTRY_WARNING = 3000  # GitHub Pages (and git) get slow with larger folders
FILE_WARNING_BYTES = 100_000_000  # GitHub's per-file limit
MANIFEST_NAME = ".atlasgen-files.json"  # what the previous build wrote, so a rebuild can remove stale files
RESERVED_MODEL_NAMES = {"assets"}
STATIC_ASSETS = ("atlas.css", "atlas.js")
VISUALIZATION_ORDER = ("channel", "negative", "neuron")
VISUALIZATION_LABELS = {
    "channel": "Channel objective",
    "negative": "Negative channel objective",
    "neuron": "Neuron objective (centre unit)",
}
_UNIT_LINK = re.compile(r'(href|src)="unit:([^"#]*)(#[^"]*)?"')


@dataclass
class RenderReport:
    pages: int
    files: int  # all files written or kept
    bytes: int  # total size of the output folder
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- view objects


@dataclass
class ImageRef:
    """An image copied into the site: site-root-relative URL plus its pixel size."""

    src: str
    width: int
    height: int
    alt: str


@dataclass
class ExampleView:
    example: Example
    rank: int
    patch: ImageRef
    heatmap: ImageRef | None


@dataclass
class RelatedView:
    channel: int
    score: float
    url: str | None  # None when that channel is not part of the atlas
    anchor: str | None  # the channel's card on the layer page
    thumb: ImageRef | None


@dataclass
class NavLink:
    url: str
    label: str


@dataclass
class UnitView:
    data: UnitData
    model: str
    layer: str
    url: str  # site-root-relative URL of the unit page
    dir: str  # site-root-relative folder (also its URL: names need no escaping)
    images: dict[str, ImageRef] = field(default_factory=dict)
    diversity: list[ImageRef] = field(default_factory=list)
    top: list[ExampleView] = field(default_factory=list)
    bottom: list[ExampleView] = field(default_factory=list)
    similar: list[RelatedView] = field(default_factory=list)
    cross: list[RelatedView] = field(default_factory=list)
    note: Markup = Markup("")
    prev: NavLink | None = None
    next: NavLink | None = None

    @property
    def channel(self) -> int:
        return self.data.channel

    @property
    def thumb(self) -> ImageRef | None:
        return None if self.data.dead else self.images.get("channel")

    @property
    def sort_activation(self) -> float | None:
        """What 'sort by activation' uses: the dataset max, else the optimized image's activation."""
        if self.data.dataset_max is not None:
            return self.data.dataset_max
        return self.data.activation.get("channel")


@dataclass
class LayerView:
    data: LayerData
    model: str
    url: str
    json_url: str
    units: list[UnitView] = field(default_factory=list)
    note: Markup = Markup("")
    prev: NavLink | None = None
    next: NavLink | None = None

    @property
    def name(self) -> str:
        return self.data.name

    def strip(self, count: int = 8) -> list[UnitView]:
        """A few living channels to preview the layer on the model and atlas pages."""
        return [u for u in self.units if u.thumb is not None][:count]


@dataclass
class ModelView:
    data: ModelData
    url: str
    layers: list[LayerView] = field(default_factory=list)
    note: Markup = Markup("")

    @property
    def name(self) -> str:
        return self.data.name

    def preview(self, count: int = 6) -> list[UnitView]:
        """Thumbnails for the atlas page: spread over the layers, deepest last."""
        picks: list[UnitView] = []
        per_layer = max(1, math.ceil(count / max(1, len(self.layers))))
        for layer in self.layers:
            picks.extend(layer.strip(per_layer))
        return picks[:count]


# --------------------------------------------------------------------------- paths and links


_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _check_segment(name: str, what: str) -> None:
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


def relative_url(target: str, page_dir: str) -> str:
    """`target` (site-root-relative URL, or `#anchor`, or absolute URL) as seen from `page_dir`."""
    if target.startswith(("#", "http://", "https://", "mailto:")):
        return target
    path, hash_, fragment = target.partition("#")
    if hash_ and path == (f"{page_dir}/index.html" if page_dir else "index.html"):
        return "#" + fragment  # same page: a plain fragment scrolls without reloading
    rel = posixpath.relpath(path, page_dir or ".")
    return rel + (hash_ + fragment if hash_ else "")


def unit_anchor(channel: int) -> str:
    return f"unit-{channel}"


def public_url(site: SiteData, page_dir: str) -> str | None:
    """Stable public URL of a page folder (ending in '/'), when `site.url` is configured."""
    if not site.url:
        return None
    base = site.url.rstrip("/") + "/"
    return base + (page_dir + "/" if page_dir else "")


# --------------------------------------------------------------------------- formatting filters


def format_number(value: float | None) -> str:
    """Activations: 3 significant digits, no exponent for everyday magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) < 0.001:
        return f"{value:.2e}"
    return f"{value:.3g}"


def format_score(value: float | None) -> str:
    """Correlations and other scores in [-1, 1]: signed, two decimals."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.2f}".replace("-", "\u2212")


def format_ratio(activation: float | None, reference: float | None) -> str:
    """How an optimized image's activation compares with the dataset maximum."""
    # a negative objective drives the channel down: the dataset max is no yardstick for it
    if activation is None or reference is None or reference <= 0 or not math.isfinite(activation) or activation < 0:
        return ""
    ratio = activation / reference
    if ratio >= 1:
        return f"{ratio:.1f}\u00d7 the dataset max"
    percent = 100 * ratio
    return f"{percent:.0f}% of the dataset max" if percent >= 10 else f"{percent:.2g}% of the dataset max"


def format_dims(values: Iterable[int], sep: str = "\u00d7") -> str:
    return sep.join(str(v) for v in values)


def bibtex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially inside a BibTeX field."""
    out = []
    for ch in text:
        if ch in "{}&%$#_":
            out.append("\\" + ch)
        elif ch == "~":
            out.append("\\textasciitilde{}")
        elif ch == "^":
            out.append("\\textasciicircum{}")
        elif ch == "\\":
            out.append("\\textbackslash{}")
        else:
            out.append(ch)
    return "".join(out)


def is_group_author(name: str) -> bool:
    """A name written in braces, as in BibTeX ("{atlasgen contributors}"), names a group, not a person."""
    name = name.strip()
    return len(name) > 2 and name[0] == "{" and name[-1] == "}" and bool(name[1:-1].strip())


def author_plain(name: str) -> str:
    """The name as readers see it: a group's braces removed."""
    name = " ".join(name.split())
    return name[1:-1].strip() if is_group_author(name) else name


def author_last_first(name: str) -> str:
    """'Ada Lovelace' -> 'Lovelace, Ada' (Highwire's preferred form); names with a comma and groups stay."""
    if is_group_author(name):
        return author_plain(name)
    name = " ".join(name.split())
    if "," in name or " " not in name:
        return name
    first, last = name.rsplit(" ", 1)
    return f"{last}, {first}"


def bibtex_authors(names: Iterable[str]) -> str:
    """The author field: people as written, groups in braces so BibTeX does not split them."""
    parts = [("{" + bibtex_escape(author_plain(n)) + "}") if is_group_author(n) else bibtex_escape(author_plain(n))
             for n in names]
    return " and ".join(parts) or "Anonymous"


def bibtex_key(*parts: str | int) -> str:
    key = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9:._-]+", "-", key).strip("-") or "atlas"


# --------------------------------------------------------------------------- environment


def builtin_templates() -> Path:
    """The shipped templates: the `atlasgen.templates` package, or `templates/` in a checkout."""
    try:
        path = Path(str(importlib.resources.files("atlasgen.templates")))
        if (path / "base.html").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "templates"


@jinja2.pass_context
def _rel_filter(ctx: jinja2.runtime.Context, target: str) -> str:
    return relative_url(target, ctx.get("page_dir", ""))


def make_environment(user_templates: Path | None = None) -> jinja2.Environment:
    """The one Jinja environment: user folder first, autoescaping, atlas filters."""
    search = [str(user_templates)] if user_templates else []
    search.append(str(builtin_templates()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        rel=_rel_filter,
        num=format_number,
        score=format_score,
        dims=format_dims,
        bibtex=bibtex_escape,
        bibtex_authors=bibtex_authors,
        last_first=author_last_first,
        plain_author=author_plain,
    )
    env.globals.update(ratio=format_ratio, anchor=unit_anchor, labels=VISUALIZATION_LABELS, bibkey=bibtex_key)
    return env


# --------------------------------------------------------------------------- files


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
        _replace_with(path, lambda tmp: tmp.write_bytes(data))

    def copy_file(self, source: Path, rel: str) -> None:
        """Hard-link `source` to `rel` (copy across devices); keep an identical existing file."""
        path = self._target(rel)
        if path.is_file() and not path.is_symlink() and _same_file(source, path):
            return
        _replace_with(path, lambda tmp: _link_or_copy(source, tmp))

    def image(self, source: Path, rel: str, alt: str) -> ImageRef:
        self.copy_file(source, rel)
        width, height = self.image_size(source)
        return ImageRef(src=rel, width=width, height=height, alt=alt)

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


def _replace_with(path: Path, make: Callable[[Path], object]) -> None:
    """Create the new file beside the old one and rename it over, never leaving half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    make(tmp)
    os.replace(tmp, path)


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


def _read_manifest(output: Path) -> list[str]:
    path = output / MANIFEST_NAME
    try:
        files = json.loads(path.read_text("utf-8")).get("files", [])
        return [f for f in files if isinstance(f, str)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError):
        log.warning("ignoring unreadable %s", path)
        return []


# --------------------------------------------------------------------------- notes


def load_notes(notes: Path | None) -> dict[str, str]:
    """Markdown notes by the site-root-relative folder of the page they belong to."""
    found: dict[str, str] = {}
    if notes is None:
        return found
    if not notes.is_dir():
        raise AtlasError(f"notes folder {notes} does not exist")
    for path in sorted(notes.rglob("*.md")):
        rel = path.relative_to(notes).as_posix()[: -len(".md")]
        key = "" if rel == "index" else rel
        found[key] = path.read_text("utf-8")
    return found


def render_markdown(text: str) -> str:
    return markdown.markdown(text, extensions=["extra", "sane_lists"], output_format="html")


def rewrite_unit_links(html: str, page_dir: str, pages: set[str], warnings: list[str], where: str) -> str:
    """`unit:model/layer/channel` (or `unit:model/layer`, `unit:model`) -> a page-relative link."""

    def replace(match: re.Match[str]) -> str:
        attr, target, fragment = match.group(1), match.group(2).strip("/"), match.group(3) or ""
        folder = target
        if folder not in pages:
            warnings.append(f"{where}: link to unknown unit {target!r}")
            return f'{attr}="{relative_url("index.html", page_dir)}" data-unresolved="{target}"'
        page = f"{folder}/index.html" if folder else "index.html"
        return f'{attr}="{relative_url(page, page_dir)}{fragment}"'

    return _UNIT_LINK.sub(replace, html)


class NoteBook:
    """Notes for pages: a Markdown file from the notes folder wins over `note_html` from the data."""

    def __init__(self, notes: dict[str, str], pages: set[str], warnings: list[str]) -> None:
        self.notes = notes
        self.pages = pages
        self.warnings = warnings
        for key in sorted(set(notes) - pages):
            warnings.append(f"note {key or 'index'}.md matches no page of the atlas")

    def for_page(self, page_dir: str, fallback_html: str) -> Markup:
        where = f"note {page_dir or 'index'}"
        if page_dir in self.notes:
            html = render_markdown(self.notes[page_dir])
        elif fallback_html:
            html = fallback_html
        else:
            return Markup("")
        return Markup(rewrite_unit_links(html, page_dir, self.pages, self.warnings, where))


# --------------------------------------------------------------------------- building views


def _ext(path: Path, default: str) -> str:
    return path.suffix.lower() or f".{default}"


def _objective_order(images: dict[str, Path]) -> list[str]:
    known = [name for name in VISUALIZATION_ORDER if name in images]
    return known + sorted(set(images) - set(known))


def _unit_images(writer: SiteWriter, site: SiteData, view: UnitView) -> None:
    label = f"{view.model} {view.layer} channel {view.channel}"
    for name in _objective_order(view.data.images):
        source = view.data.images[name]
        _check_segment(name, "objective")
        what = VISUALIZATION_LABELS.get(name, f"{name} objective").lower()
        view.images[name] = writer.image(
            source, f"{view.dir}/{name}{_ext(source, site.image_format)}", f"Feature visualization of {label}: {what}"
        )
    for i, source in enumerate(view.data.diversity):
        view.diversity.append(
            writer.image(
                source,
                f"{view.dir}/diversity-{i}{_ext(source, site.image_format)}",
                f"Feature visualization of {label}: diversity image {i + 1}",
            )
        )
    for kind, examples, target in (("top", view.data.top, view.top), ("bottom", view.data.bottom, view.bottom)):
        for i, ex in enumerate(examples):
            word = "strongest" if kind == "top" else "weakest"
            patch = writer.image(
                ex.patch,
                f"{view.dir}/{kind}-{i}{_ext(ex.patch, site.image_format)}",
                f"{word.capitalize()} dataset example {i + 1} of {label}: {ex.source}, activation {format_number(ex.value)}",
            )
            heat = None
            if ex.heatmap is not None:
                heat = writer.image(
                    ex.heatmap,
                    f"{view.dir}/{kind}-{i}-heat{_ext(ex.heatmap, site.image_format)}",
                    f"Activation of {label} over the whole image {ex.source}",
                )
            target.append(ExampleView(example=ex, rank=i + 1, patch=patch, heatmap=heat))


def _related(items: list[Related], layer: LayerView, by_channel: dict[int, UnitView]) -> list[RelatedView]:
    out = []
    for item in items:
        other = by_channel.get(item.channel)
        out.append(
            RelatedView(
                channel=item.channel,
                score=item.score,
                url=other.url if other else None,
                anchor=f"{layer.url}#{unit_anchor(item.channel)}" if other else None,
                thumb=other.thumb if other else None,
            )
        )
    return out


def _nav(items: list[Any], label: Any) -> list[tuple[NavLink | None, NavLink | None]]:
    links = [NavLink(url=item.url, label=label(item)) for item in items]
    return [(links[i - 1] if i > 0 else None, links[i + 1] if i + 1 < len(links) else None) for i in range(len(items))]


def build_views(site: SiteData, writer: SiteWriter) -> list[ModelView]:
    """Copy every image and gather what the templates show; notes are attached later."""
    models = []
    seen_models: set[str] = set()
    for model in site.models:
        _check_segment(model.name, "model")
        if model.name in RESERVED_MODEL_NAMES or model.name in seen_models:
            raise AtlasError(f"model name {model.name!r} is reserved or used twice")
        seen_models.add(model.name)
        mview = ModelView(data=model, url=f"{model_dir(model.name)}/index.html")
        seen_layers: set[str] = set()
        for layer in model.layers:
            _check_segment(layer.name, "layer")
            if layer.name in seen_layers:
                raise AtlasError(f"layer {layer.name!r} appears twice in model {model.name!r}")
            seen_layers.add(layer.name)
            base = layer_dir(model.name, layer.name)
            lview = LayerView(data=layer, model=model.name, url=f"{base}/index.html", json_url=f"{base}/index.json")
            for unit in sorted(layer.units, key=lambda u: u.channel):
                folder = unit_dir(model.name, layer.name, unit.channel)
                uview = UnitView(data=unit, model=model.name, layer=layer.name, url=f"{folder}/index.html", dir=folder)
                _unit_images(writer, site, uview)
                lview.units.append(uview)
            by_channel = {u.channel: u for u in lview.units}
            for uview in lview.units:
                uview.similar = _related(uview.data.similar, lview, by_channel)
                uview.cross = _related(uview.data.cross, lview, by_channel)
            for uview, (prev, next_) in zip(lview.units, _nav(lview.units, lambda u: f"channel {u.channel}")):
                uview.prev, uview.next = prev, next_
            mview.layers.append(lview)
        for lview, (prev, next_) in zip(mview.layers, _nav(mview.layers, lambda lv: lv.name)):
            lview.prev, lview.next = prev, next_
        models.append(mview)
    return models


def page_folders(models: list[ModelView]) -> set[str]:
    folders = {""}
    for m in models:
        folders.add(model_dir(m.name))
        for lv in m.layers:
            folders.add(layer_dir(m.name, lv.name))
            folders.update(u.dir for u in lv.units)
    return folders


# --------------------------------------------------------------------------- machine-readable twin


def stable_float(value: float | None) -> float | None:
    """Round to 6 significant digits so JSON is stable across platforms; NaN/inf -> null."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _example_json(ex: ExampleView, layer_url_dir: str) -> dict[str, Any]:
    return {
        "source": ex.example.source,
        "box": dict(zip(("left", "top", "right", "bottom"), (int(v) for v in ex.example.box))),
        "value": stable_float(ex.example.value),
        "position": {"row": int(ex.example.position[0]), "col": int(ex.example.position[1])},
        "patch": relative_url(ex.patch.src, layer_url_dir),
        "heatmap": relative_url(ex.heatmap.src, layer_url_dir) if ex.heatmap else None,
    }


def layer_json(layer: LayerView) -> str:
    """The layer page as data: byte-identical for identical input (sorted keys, rounded floats)."""
    here = layer_dir(layer.model, layer.name)
    rf = layer.data.receptive_field
    units = []
    for u in layer.units:
        units.append(
            {
                "channel": u.channel,
                "page": relative_url(u.url, here),
                "images": {name: relative_url(img.src, here) for name, img in u.images.items()},
                "diversity": [relative_url(img.src, here) for img in u.diversity],
                "activation": {name: stable_float(v) for name, v in u.data.activation.items()},
                "dataset_max": stable_float(u.data.dataset_max),
                "dataset_mean": stable_float(u.data.dataset_mean),
                "selectivity": stable_float(u.data.selectivity),
                "dead": bool(u.data.dead),
                "examples": {
                    "top": [_example_json(ex, here) for ex in u.top],
                    "bottom": [_example_json(ex, here) for ex in u.bottom],
                },
                "similar": [{"channel": r.channel, "score": stable_float(r.score)} for r in u.similar],
                "cross": [{"channel": r.channel, "score": stable_float(r.score)} for r in u.cross],
            }
        )
    doc = {
        "model": layer.model,
        "layer": layer.name,
        "channels": layer.data.channels,
        "shape": list(layer.data.shape),
        "receptive_field": None
        if rf is None
        else {"size": list(rf.size), "stride": list(rf.stride), "covers_input": bool(rf.covers_input)},
        "box_format": "left, top, right, bottom in source-image pixels (right/bottom exclusive)",
        "units": units,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- citation files


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def citation_cff(site: SiteData) -> str:
    lines = [
        "cff-version: 1.2.0",
        'message: "If you use this atlas, please cite it as below."',
        "type: dataset",
        f"title: {_yaml_str(site.title)}",
        "authors:",
    ]
    for author in site.authors or ["Unknown"]:
        name = author_last_first(author)
        if is_group_author(author):
            lines.append(f"  - name: {_yaml_str(name)}")
        elif ", " in name:
            family, given = name.split(", ", 1)
            lines += [f"  - family-names: {_yaml_str(family)}", f"    given-names: {_yaml_str(given)}"]
        else:
            lines.append(f"  - name: {_yaml_str(name)}")
    lines.append(f"date-released: {_yaml_str(site.built)}")
    if site.url:
        lines.append(f"url: {_yaml_str(site.url)}")
    lines.append(f"version: {_yaml_str(site.config_digest[:12])}")
    lines.append(f"keywords: [feature visualization, interpretability, {_yaml_str('atlasgen ' + site.version)}]")
    return "\n".join(lines) + "\n"


def sitemap_xml(site: SiteData, folders: Iterable[str]) -> str:
    entries = []
    for folder in sorted(folders):
        loc = public_url(site, folder)
        entries.append(f"  <url><loc>{xml_escape(loc or '')}</loc><lastmod>{xml_escape(site.built)}</lastmod></url>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n' + "\n".join(entries) + "\n</urlset>\n"
    )


def robots_txt(site: SiteData) -> str:
    text = "User-agent: *\nAllow: /\n"
    if site.url:
        text += f"Sitemap: {public_url(site, '')}sitemap.xml\n"
    return text


# --------------------------------------------------------------------------- pages


def _date_parts(built: str) -> tuple[str, str]:
    """(YYYY, YYYY/MM/DD) of the build date, tolerant of a full ISO timestamp."""
    try:
        day = date.fromisoformat(built[:10])
    except ValueError:
        return built[:4], built
    return f"{day.year:04d}", day.strftime("%Y/%m/%d")


def _render_pages(env: jinja2.Environment, site: SiteData, models: list[ModelView], writer: SiteWriter, notes: NoteBook) -> int:
    year, pub_date = _date_parts(site.built)
    common = {"site": site, "models": models, "year": year, "publication_date": pub_date, "accessed": site.built[:10]}

    def page(template: str, page_dir: str, **context: Any) -> None:
        html = env.get_template(template).render(
            **common,
            page_dir=page_dir,
            public_url=public_url(site, page_dir),
            root=relative_url("index.html", page_dir),
            **context,
        )
        writer.write_text(f"{page_dir}/index.html" if page_dir else "index.html", html)

    count = 0
    page("index.html", "", note=notes.for_page("", site.note_html))
    count += 1
    for m in models:
        m.note = notes.for_page(model_dir(m.name), m.data.note_html)
        page("model.html", model_dir(m.name), model=m, note=m.note)
        count += 1
        for lv in m.layers:
            lv.note = notes.for_page(layer_dir(m.name, lv.name), lv.data.note_html)
            page("layer.html", layer_dir(m.name, lv.name), model=m, layer=lv, note=lv.note)
            writer.write_text(lv.json_url, layer_json(lv))
            count += 1
            for u in lv.units:
                u.note = notes.for_page(u.dir, u.data.note_html)
                page("unit.html", u.dir, model=m, layer=lv, unit=u, note=u.note)
                count += 1
    return count


def _render_extras(env: jinja2.Environment, site: SiteData, models: list[ModelView], writer: SiteWriter) -> None:
    for name in STATIC_ASSETS:
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]  # user folder may override
        writer.write_text(f"assets/{name}", source)
    css, _, _ = env.loader.get_source(env, "atlas.css")  # type: ignore[union-attr]
    # 404.html is served at any depth, so it carries its own CSS and links only absolutely.
    writer.write_text("404.html", env.get_template("404.html").render(site=site, inline_css=Markup(css), home=public_url(site, "")))
    writer.write_text(".nojekyll", "")
    writer.write_text("CITATION.cff", citation_cff(site))
    writer.write_text("robots.txt", robots_txt(site))
    if site.url:
        writer.write_text("sitemap.xml", sitemap_xml(site, page_folders(models)))


# --------------------------------------------------------------------------- report


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


# --------------------------------------------------------------------------- entry point


def render_site(site: SiteData, output: Path, templates: Path | None = None, notes: Path | None = None) -> RenderReport:
    """Write the static atlas for `site` into `output` and report its size.

    `templates` is searched before the built-in templates (override any template or
    partial by name); `notes` holds Markdown notes (`index.md`, `<model>.md`,
    `<model>/<layer>.md`, `<model>/<layer>/<channel>.md`).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if templates is not None and not Path(templates).is_dir():
        raise AtlasError(f"templates folder {templates} does not exist")
    warnings: list[str] = []
    previous = _read_manifest(output)
    if not previous and any(output.iterdir()):
        log.info("%s already holds files atlasgen did not record; they are left in place", output)

    env = make_environment(Path(templates) if templates else None)
    writer = SiteWriter(output)
    models = build_views(site, writer)
    book = NoteBook(load_notes(Path(notes) if notes else None), page_folders(models), warnings)
    pages = _render_pages(env, site, models, writer, book)
    _render_extras(env, site, models, writer)

    removed = remove_stale(output, previous, writer.written | {MANIFEST_NAME})
    if removed:
        log.info("removed %d stale files from %s", len(removed), output)
    manifest = {"generator": f"atlasgen {site.version}", "files": sorted(writer.written)}
    writer.write_text(MANIFEST_NAME, json.dumps(manifest, indent=0, sort_keys=True) + "\n")

    files, total, size_warnings = site_size_warnings(output)
    warnings.extend(size_warnings)
    for message in warnings:
        log.warning("%s", message)
    log.info("rendered %d pages, %d files, %.1f MB into %s", pages, files, total / 1e6, output)
    return RenderReport(pages=pages, files=files, bytes=total, warnings=warnings)
