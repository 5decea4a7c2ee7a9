"""What the render stage is given: plain data, every number already computed and every
image already a file in the cache. Render only lays these out as pages and copies the
image files; it never computes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SIDES = ("top", "bottom")  # a channel's strongest and weakest dataset examples


@dataclass
class Example:
    """One dataset example of a channel (top-k or bottom-k)."""

    source: str  # image path relative to the dataset folder (posix)
    box: tuple[int, int, int, int]  # crop box in source-image pixels: left, top, right, bottom (may extend past the image)
    value: float  # the channel's max (top) or min (bottom) over positions on this image
    position: tuple[int, int]  # (row, col) of the extreme in the layer's feature map
    patch: Path  # image file in the cache: the receptive-field crop (or whole image when the field covers it)
    heatmap: Path | None = None  # image file in the cache: whole image with the channel's activation overlaid


@dataclass
class StageImage:
    """An image a stage shows on a unit or layer page, copied beside the page under its name."""

    path: Path  # the file in the cache
    alt: str


@dataclass
class Related:
    channel: int
    score: float


@dataclass
class UnitData:
    channel: int
    # objective name ("channel", "negative", "neuron") -> image file in the cache
    images: dict[str, Path] = field(default_factory=dict)
    diversity: list[Path] = field(default_factory=list)
    # objective name -> how strongly the final image activates the channel (no transforms)
    activation: dict[str, float] = field(default_factory=dict)
    dataset_max: float | None = None  # strongest activation over the dataset (one position of one image)
    dataset_best_mean: float | None = None  # highest spatial mean over the dataset images (one image, all positions)
    dataset_mean: float | None = None  # mean over every position of every dataset image
    dataset_std: float | None = None  # standard deviation over every position of every dataset image
    selectivity: float | None = None  # (dataset_max - dataset_mean) / dataset_std: how far the peak stands out
    dead: bool = False  # never activates, neither on the dataset nor by optimization
    # objective name -> why its image did not move from the grey start (flat), for the pages to flag
    still: dict[str, str] = field(default_factory=dict)
    top: list[Example] = field(default_factory=list)
    bottom: list[Example] = field(default_factory=list)
    similar: list[Related] = field(default_factory=list)  # co-activation over the dataset (Pearson r)
    cross: list[Related] = field(default_factory=list)  # "this image also excites": other channels' response to this channel's image
    note_html: str = ""
    extras: dict[str, object] = field(default_factory=dict)  # stage name -> what that stage shows on the unit page
    stage_images: dict[str, StageImage] = field(default_factory=dict)  # file name in the unit's folder -> image


@dataclass
class ReceptiveFieldInfo:
    size: tuple[int, int]  # (h, w) in model-input pixels
    stride: tuple[int, int]
    covers_input: bool


@dataclass
class Figure:
    """One image of an experiment page, with the numbers shown under it."""

    image: Path  # image file in the cache
    caption: str
    values: list[tuple[str, float]] = field(default_factory=list)  # (what, value)


@dataclass
class FigureRow:
    title: str
    figures: list[Figure]
    intro: str = ""


@dataclass
class ExperimentPage:
    """A page of an experiment (`[[models.experiments]]`), in its layer's folder."""

    kind: str  # the stage that made it
    folder: str  # relative to the layer's folder: "5/neuron-maps", "metric-invariance-3-5"
    title: str
    intro: str
    rows: list[FigureRow]
    settings: list[tuple[str, str]]  # (key, value) of its [[models.experiments]] table, as written
    channel: int | None = None  # the unit whose page links to it; None = the layer page links to it
    note_html: str = ""


@dataclass
class BranchInfo:
    """One branch of a layer that concatenates its children's outputs (atlasgen.branches)."""

    name: str  # the child module within the layer
    label: str  # short and unique within the layer: "3x3", "pool"
    ops: str  # what it does, in order: "1x1 conv, 3x3 conv"
    start: int  # its first channel in the layer
    stop: int  # one past its last


@dataclass
class LayerData:
    name: str  # dotted module name, also the URL segment
    channels: int  # channels the layer has
    shape: tuple[int, int, int]  # (C, H, W) for the model's input size
    receptive_field: ReceptiveFieldInfo | None
    units: list[UnitData] = field(default_factory=list)  # the rendered channels, in channel order
    note_html: str = ""
    nonnegative: bool = False  # never below zero on the dataset (it follows a ReLU): weakest examples are ties at 0
    layout: str = "nchw"  # how the module's output is read as a map (atlasgen.hooks)
    extras: dict[str, object] = field(default_factory=dict)  # stage name -> what that stage shows on the layer page
    stage_images: dict[str, StageImage] = field(default_factory=dict)  # file name in the layer's folder -> image
    experiments: list[ExperimentPage] = field(default_factory=list)
    branches: list[BranchInfo] = field(default_factory=list)  # in channel order; empty unless it concatenates branches


@dataclass
class ModelData:
    name: str  # id in URLs
    arch: str
    weights: str
    dataset: str
    input_size: int
    layers: list[LayerData] = field(default_factory=list)
    note_html: str = ""


@dataclass
class SiteData:
    title: str
    authors: list[str]
    url: str | None  # public base URL, for citations and canonical links only
    version: str  # atlasgen version
    built: str  # build date, ISO YYYY-MM-DD
    config_digest: str  # the atlas's version: digest of what determines its content (atlasversion.py)
    image_format: str  # "webp", "jpeg" or "png": the format of the dataset patches
    models: list[ModelData] = field(default_factory=list)
    note_html: str = ""
    unit_sections: list[str] = field(default_factory=list)  # templates the unit page includes, one per stage that has one
    layer_sections: list[str] = field(default_factory=list)  # templates the layer page includes, likewise
    preview: bool = False  # built with [build] preview: every page says it is not the real atlas
    visualization_format: str = "png"  # "png" (the pixels the values were measured on) or "jpeg" (a copy)
    # image file (as a string) -> its SHA-256 where already known (the cache's verified meta), so render need not read it twice
    file_digests: dict[str, str] = field(default_factory=dict)
