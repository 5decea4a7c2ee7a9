"""What the templates show: the site data plus the URLs of its pages and copied images.

`build_views` copies every image out of the cache into the site (the only file work
before the pages) and links the views together: previous/next, related channels that
are part of the atlas, and each channel's card on its layer page.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from markupsafe import Markup

from atlasgen import objectives
from atlasgen.errors import AtlasError
from atlasgen.sitedata import BranchInfo, Example, LayerData, ModelData, Related, SiteData, StageImage, UnitData

from .experiments import ExperimentView, experiment_views
from .formats import format_number, objective_label, objective_order
from .urls import TWIN_FILE, check_segment, layer_dir, model_dir, page_url, shared_example, unit_anchor, unit_dir
from .writer import SiteWriter


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
    patch: ImageRef | None  # None when no page shows it (weakest examples that are ties at zero)
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


@dataclass(kw_only=True)
class _InSequence:
    """A page among its siblings (the units of a layer, the layers of a model): its note and neighbours."""

    note: Markup = Markup("")  # set when the page is rendered
    prev: NavLink | None = None
    next: NavLink | None = None


@dataclass
class BranchView:
    """A branch on its layer page: where its first unit in the atlas is, how many are shown."""

    info: BranchInfo
    anchor: str  # the branch's entry in the layer page's branch list
    first: UnitView | None  # its first unit in the atlas
    shown: int

    @property
    def channels(self) -> int:
        return self.info.stop - self.info.start


@dataclass
class UnitView(_InSequence):
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
    stage_images: dict[str, ImageRef] = field(default_factory=dict)  # stages' images, by file name
    experiments: list[ExperimentView] = field(default_factory=list)  # the experiment pages of this unit
    branch: BranchView | None = None  # the branch of a concatenating layer it belongs to

    @property
    def channel(self) -> int:
        return self.data.channel

    @property
    def branch_unit(self) -> int | None:
        """Its number within its branch (channel 171 of GoogLeNet's inception4b is unit 11 of the 3x3 branch)."""
        return None if self.branch is None else self.channel - self.branch.info.start

    @property
    def thumb(self) -> ImageRef | None:
        # a dead channel or a flat grey image previews nothing
        return None if self.data.dead or "channel" in self.data.still else self.images.get("channel")

    @property
    def recipe(self) -> tuple[str, ImageRef] | None:
        """(label, image) of a recipe objective with its own loop (a preset such as the
        feature-maps article's), shown beside the channel image on the layer page."""
        for name, ref in self.images.items():
            if name in objectives.names() and objectives.get(name).own_loop:
                return objective_label(name), ref
        return None

    @property
    def bottom_ties_at_zero(self) -> bool:
        """Every weakest example is exactly 0: ties in file-name order that say nothing."""
        return ties_at_zero(self.data.bottom)

    @property
    def sort_activation(self) -> float | None:
        """What 'sort by activation' uses: the dataset max, else the optimized image's activation."""
        if self.data.dataset_max is not None:
            return self.data.dataset_max
        return self.data.activation.get("channel")


@dataclass
class LayerView(_InSequence):
    data: LayerData
    model: str
    url: str
    json_url: str
    units: list[UnitView] = field(default_factory=list)
    stage_images: dict[str, ImageRef] = field(default_factory=dict)  # stages' images, by file name
    experiments: list[ExperimentView] = field(default_factory=list)
    branches: list[BranchView] = field(default_factory=list)

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


# --------------------------------------------------------------------------- building views


def ties_at_zero(examples: list[Example]) -> bool:
    return bool(examples) and all(ex.value == 0 for ex in examples)


def _ext(path: Path, default: str) -> str:
    return path.suffix.lower() or f".{default}"


def _image(writer: SiteWriter, source: Path, rel: str, alt: str) -> ImageRef:
    writer.copy_file(source, rel)
    width, height = writer.image_size(source, rel)
    return ImageRef(src=rel, width=width, height=height, alt=alt)


def _shared_examples(layer: LayerData, digests: dict[str, str]) -> set[str]:
    """Digests of the example images that the examples of `layer` hold more than once, by the cache's
    verified digests: a layer whose field covers the input shows the same whole image for every
    channel that ranks it, and neighbouring channels often rank the same crop. Each is published
    once for the layer instead of beside every page (half the files of a whole GoogLeNet atlas)."""
    counts = Counter(digests.get(os.fspath(path)) for unit in layer.units for ex in (*unit.top, *unit.bottom)
                     for path in (ex.patch, ex.heatmap) if path is not None)
    return {digest for digest, count in counts.items() if digest is not None and count > 1}


def _example_image(writer: SiteWriter, view: UnitView, shared: set[str], source: Path, rel: str, alt: str) -> ImageRef:
    digest = writer.digests.get(os.fspath(source))
    if digest in shared:
        rel = shared_example(view.model, view.layer, digest, posixpath.splitext(rel)[1])
    return _image(writer, source, rel, alt)


def _unit_images(writer: SiteWriter, site: SiteData, view: UnitView, shared: set[str]) -> None:
    label = f"{view.model} {view.layer} channel {view.channel}"
    for name in objective_order(view.data.images):
        source = view.data.images[name]
        check_segment(name, "objective")  # it names the image file
        what = objective_label(name).lower()
        view.images[name] = _image(
            writer, source, f"{view.dir}/{name}{_ext(source, site.image_format)}", f"Feature visualization of {label}: {what}"
        )
    for i, source in enumerate(view.data.diversity):
        view.diversity.append(
            _image(
                writer,
                source,
                f"{view.dir}/diversity-{i}{_ext(source, site.image_format)}",
                f"Feature visualization of {label}: diversity image {i + 1}",
            )
        )
    for kind, examples, target in (("top", view.data.top, view.top), ("bottom", view.data.bottom, view.bottom)):
        # Ties at zero are not shown (the page says why): copying them would add files and
        # bytes no page loads, half of a ReLU network's images.
        shown = kind == "top" or not ties_at_zero(examples)
        for i, ex in enumerate(examples):
            if not shown:
                target.append(ExampleView(example=ex, rank=i + 1, patch=None, heatmap=None))
                continue
            word = "strongest" if kind == "top" else "weakest"
            patch = _example_image(
                writer,
                view,
                shared,
                ex.patch,
                f"{view.dir}/{kind}-{i}{_ext(ex.patch, site.image_format)}",
                f"{word.capitalize()} dataset example {i + 1} of {label}: {ex.source}, activation {format_number(ex.value)}",
            )
            heat = None
            if ex.heatmap is not None:
                heat = _example_image(
                    writer,
                    view,
                    shared,
                    ex.heatmap,
                    f"{view.dir}/{kind}-{i}-heat{_ext(ex.heatmap, site.image_format)}",
                    f"Activation of {label} over the whole image {ex.source}",
                )
            target.append(ExampleView(example=ex, rank=i + 1, patch=patch, heatmap=heat))
    view.stage_images = _stage_images(writer, view.data.stage_images, view.dir)


def _stage_images(writer: SiteWriter, images: dict[str, StageImage], folder: str) -> dict[str, ImageRef]:
    """Copy the images stages show on a page into the page's folder, under their names."""
    refs = {}
    for name, image in images.items():
        check_segment(name, "stage image")
        refs[name] = _image(writer, image.path, f"{folder}/{name}", image.alt)
    return refs


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


_SAFE_ANCHOR = re.compile(r"[A-Za-z0-9_-]+")


def _place_in_branches(layer: LayerView) -> None:
    for index, info in enumerate(layer.data.branches):
        members = [u for u in layer.units if info.start <= u.channel < info.stop]
        name = info.name if _SAFE_ANCHOR.fullmatch(info.name) else str(index)  # module names may be any identifier
        branch = BranchView(info=info, anchor=f"branch-{name}", first=members[0] if members else None, shown=len(members))
        for unit in members:
            unit.branch = branch
        layer.branches.append(branch)


def _nav(items: list[Any], label: Callable[[Any], str]) -> list[tuple[NavLink | None, NavLink | None]]:
    links = [NavLink(url=item.url, label=label(item)) for item in items]
    return [(links[i - 1] if i > 0 else None, links[i + 1] if i + 1 < len(links) else None) for i in range(len(items))]


def build_views(site: SiteData, writer: SiteWriter, reserved: Collection[str] = ()) -> list[ModelView]:
    """Copy every image and gather what the templates show; notes are attached later.

    `reserved` are the names a model may not take: what the site already has at its root.
    """
    models = []
    seen_models: set[str] = set()
    for model in site.models:
        check_segment(model.name, "model")
        if model.name.lower() in reserved or model.name in seen_models:
            raise AtlasError(f"model name {model.name!r} is reserved or used twice")
        seen_models.add(model.name)
        mview = ModelView(data=model, url=page_url(model_dir(model.name)))
        seen_layers: set[str] = set()
        for layer in model.layers:
            check_segment(layer.name, "layer")
            if layer.name in seen_layers:
                raise AtlasError(f"layer {layer.name!r} appears twice in model {model.name!r}")
            seen_layers.add(layer.name)
            base = layer_dir(model.name, layer.name)
            lview = LayerView(data=layer, model=model.name, url=page_url(base), json_url=f"{base}/{TWIN_FILE}")
            lview.stage_images = _stage_images(writer, layer.stage_images, base)
            shared = _shared_examples(layer, writer.digests)
            for unit in sorted(layer.units, key=lambda u: u.channel):
                folder = unit_dir(model.name, layer.name, unit.channel)
                uview = UnitView(data=unit, model=model.name, layer=layer.name, url=page_url(folder), dir=folder)
                _unit_images(writer, site, uview, shared)
                lview.units.append(uview)
            _place_in_branches(lview)
            by_channel = {u.channel: u for u in lview.units}
            for uview in lview.units:
                uview.similar = _related(uview.data.similar, lview, by_channel)
                uview.cross = _related(uview.data.cross, lview, by_channel)
            lview.experiments = experiment_views(writer, model.name, layer.name, layer.experiments, _image)
            for eview in lview.experiments:
                if eview.data.channel in by_channel:
                    by_channel[eview.data.channel].experiments.append(eview)
            for uview, (prev, next_) in zip(lview.units, _nav(lview.units, lambda u: f"channel {u.channel}")):
                uview.prev, uview.next = prev, next_
            mview.layers.append(lview)
        for lview, (prev, next_) in zip(mview.layers, _nav(mview.layers, lambda lv: lv.name)):
            lview.prev, lview.next = prev, next_
        models.append(mview)
    return models
