"""Experiment pages (`[[models.experiments]]`): their images copied into the site and the
page type that lists them. An experiment page lives in its layer's folder
(`<model>/<layer>/<folder>/index.html`) and shows rows of figures, the experiment's table as
written, and the same citation block as every page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from atlasgen.sitedata import ExperimentPage, Figure, SiteData

from .urls import check_segment, layer_dir, page_url
from .writer import SiteWriter


@dataclass
class FigureView:
    data: Figure
    image: Any  # views.ImageRef


@dataclass
class ExperimentView:
    data: ExperimentPage
    model: str
    layer: str
    url: str
    dir: str
    rows: list[tuple[Any, list[FigureView]]] = field(default_factory=list)  # (FigureRow, its figures)
    note: Any = ""

    @property
    def title(self) -> str:
        return self.data.title


def experiment_views(writer: SiteWriter, model: str, layer: str, pages: list[ExperimentPage],
                     image_ref: Any) -> list[ExperimentView]:
    """Copy each page's images beside it; `image_ref(writer, source, rel, alt)` makes an ImageRef."""
    views = []
    for page in pages:
        for segment in page.folder.split("/"):
            check_segment(segment, "experiment folder")
        folder = f"{layer_dir(model, layer)}/{page.folder}"
        view = ExperimentView(page, model, layer, page_url(folder), folder)
        for row in page.rows:
            figures = [FigureView(figure, image_ref(writer, figure.image, f"{folder}/{figure.image.name}",
                                                    f"{page.title}: {figure.caption}")) for figure in row.figures]
            view.rows.append((row, figures))
        views.append(view)
    return views


def experiment_pages(site: SiteData, models: list) -> Iterator[tuple[tuple[int, ...], Any, dict[str, Any]]]:
    """Every experiment page, after its layer's units in reading order."""
    for i, m in enumerate(models):
        for j, lv in enumerate(m.layers):
            for k, ev in enumerate(lv.experiments):
                yield (i, j, len(lv.units) + k), ev, {"model": m, "layer": lv, "experiment": ev}
