"""Dataset examples: the top-k and bottom-k images of every channel, kept as running
extremes during the dataset pass (`atlasgen.stream`), then drawn as receptive-field patches
(or whole images with heat maps) of the chosen examples.

`dataset_pass` runs the pass for examples and co-activation statistics alone, for callers
outside a build (tests, benchmarks)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from atlasgen import threads
from atlasgen.images import EXTENSIONS, encode as encode_bytes
from atlasgen.data import ImageFolder, input_view, source_box
from atlasgen.errors import AtlasError
from atlasgen.hooks import eval_mode, forward_layers
from atlasgen.receptive import ReceptiveField
from atlasgen.settings import ExamplesSettings, ImageSettings
from atlasgen.sitedata import SIDES
from atlasgen.similarity import Scratch, SizedOnFirstBatch
from atlasgen.stream import as_feature_map, stream_dataset

log = logging.getLogger(__name__)

@dataclass
class Extremes:
    layer: str
    top_index: np.ndarray  # int64 (C, k) dataset indices, best first
    top_value: np.ndarray  # float32 (C, k)
    top_pos: np.ndarray  # int64 (C, k, 2) (row, col) in the feature map
    bottom_index: np.ndarray  # int64 (C, k) lowest first
    bottom_value: np.ndarray  # float32 (C, k)
    bottom_pos: np.ndarray  # int64 (C, k, 2)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{side}_{what}": getattr(self, f"{side}_{what}") for side in SIDES for what in ("index", "value", "pos")}


@dataclass
class LayerExamples(Extremes):
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 (C,) over images and positions
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 (C,) population std
    max: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float32 (C,) max over everything
    correlation: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # float32 (C, C) Pearson r over all positions
    images_seen: int = 0
    skipped: list[str] = field(default_factory=list)  # unreadable files (relative paths)


# --- running extremes ----------------------------------------------------------------


class _RunningExtremes:
    """Top-k (or bottom-k) images per channel by the channel's max (or min) over positions.

    Batches arrive in dataset order, so appending a batch after the kept entries and
    sorting stably keeps equal values in ascending dataset index: ties go to the lower index.
    """

    def __init__(self, k: int, largest: bool):
        self.k = k
        self.largest = largest
        self.value: torch.Tensor | None = None  # (C, <=k)
        self.index: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None  # flat position in the map

    def update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """`flat` (B, C, H*W) activations of images `indices` (B,), ascending."""
        if self.k == 0:
            return
        # Values first (amax is ~4x cheaper than max with indices); positions only for the new entrants.
        value = (flat.amax(dim=2) if self.largest else flat.amin(dim=2)).T  # (C, B)
        index = indices.to(value.device).expand_as(value)
        kept = 0 if self.value is None else self.value.shape[1]
        if kept:
            value = torch.cat([self.value, value], dim=1)
            index = torch.cat([self.index, index], dim=1)
        # stable sort on (k + B) columns instead of topk: topk's order among ties is unspecified.
        order = torch.sort(value, dim=1, descending=self.largest, stable=True).indices[:, : self.k]
        pos = torch.zeros_like(order)
        if kept:  # kept entries keep their position; entrants get theirs below
            pos = torch.cat([self.pos, pos.new_zeros(value.shape[0], value.shape[1] - kept)], dim=1).gather(1, order)
        channel, slot = (order >= kept).nonzero(as_tuple=True)
        rows = flat[order[channel, slot] - kept, channel]  # (entrants, H*W)
        pos[channel, slot] = rows.argmax(dim=1) if self.largest else rows.argmin(dim=1)  # first extreme on ties
        self.value = value.gather(1, order)
        self.index = index.gather(1, order)
        self.pos = pos

    def arrays(self, channels: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.value is None:
            empty = np.zeros((channels, 0), dtype=np.int64)
            return empty, empty.astype(np.float32), np.zeros((channels, 0, 2), dtype=np.int64)
        pos = self.pos.cpu().numpy()
        rows_cols = np.stack([pos // width, pos % width], axis=-1).astype(np.int64)
        return (self.index.cpu().numpy().astype(np.int64), self.value.float().cpu().numpy(), rows_cols)


class ExtremesAccumulator:
    """The running top-k and bottom-k of one layer."""

    def __init__(self, layer: str, settings: ExamplesSettings):
        self.layer = layer
        self.top = _RunningExtremes(settings.top_k, largest=True)
        self.bottom = _RunningExtremes(settings.bottom_k, largest=False)
        self.channels = 0
        self.map_width = 1

    def update(self, act: torch.Tensor, indices: torch.Tensor) -> None:
        self.channels, self.map_width = act.shape[1], act.shape[3]
        flat = act.flatten(2)
        self.top.update(flat, indices)
        self.bottom.update(flat, indices)

    def result(self) -> Extremes:
        top = self.top.arrays(self.channels, self.map_width)
        bottom = self.bottom.arrays(self.channels, self.map_width)
        return Extremes(self.layer, *top, *bottom)


def channel_max(extremes: Extremes) -> np.ndarray:
    """float32 (C,): the max over everything is the best top example's value."""
    if extremes.top_value.shape[1]:
        return extremes.top_value[:, 0].copy()
    return np.full(extremes.top_value.shape[0], np.nan, dtype=np.float32)


def dataset_pass(model: nn.Module, layers: Sequence[str], dataset: ImageFolder, settings: ExamplesSettings,
                 device: torch.device, progress: Callable[[int], None] | None = None) -> dict[str, LayerExamples]:
    """One pass over `dataset` for every layer: extremes, moments, max and co-activation."""
    layers = list(dict.fromkeys(layers))
    scratch = Scratch()  # one buffer for every layer's centred copies
    extremes = {name: ExtremesAccumulator(name, settings) for name in layers}
    moments = {name: SizedOnFirstBatch(scratch) for name in layers}
    seen, skipped = stream_dataset(model, {name: [extremes[name], moments[name]] for name in layers}, dataset,
                                   settings, device, progress)
    results = {}
    for name in layers:
        found, co = extremes[name].result(), moments[name].stats
        results[name] = LayerExamples(**vars(found), mean=co.mean(), std=co.std(), max=channel_max(found),
                                      correlation=co.correlation().astype(np.float32), images_seen=seen,
                                      skipped=list(skipped))
    return results


# --- patches -------------------------------------------------------------------------

CHECKER = (128, 176)  # grey levels of the squares marking area outside the source image
CHECKER_CELL = 8  # pixels of a checker square in the patch
HEAT_COLOURS = {"top": (255, 80, 0), "bottom": (0, 120, 255)}
HEAT_OPACITY = 0.65
_EXTENSIONS = EXTENSIONS
PATCH_NAME = "{channel}/{side}-{rank}.{ext}"
HEAT_NAME = "{channel}/{side}-{rank}-heat.{ext}"


@dataclass
class ExampleRecord:
    """One example's patch, ready to become a `sitedata.Example`."""

    channel: int
    side: str  # "top" or "bottom"
    rank: int  # 0 = strongest
    index: int  # dataset index
    source: str  # image path relative to the dataset folder (posix)
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in source pixels; may extend past the image
    value: float
    position: tuple[int, int]  # (row, col) in the feature map
    patch: str  # key into PatchSet.files
    heatmap: str | None = None  # key into PatchSet.files, for fields covering the input


@dataclass
class PatchSet:
    """Everything the build stores for one layer's examples.

    `files` go into the cache entry as they are; `arrays` (numpy, no pickles) and `names`
    (JSON) let the build fill `sitedata.Example` from the cache without this object."""

    files: dict[str, bytes]  # relative file name ("12/top-3.webp") -> encoded image
    examples: list[ExampleRecord]  # ordered by channel, side (top first), rank
    arrays: dict[str, np.ndarray]  # "top_box", "bottom_box": int64 (C, k, 4) (left, top, right, bottom), -1 if not drawn
    names: dict[str, str]  # "patch" (and "heatmap" when the field covers the input): format strings
    #                        with {channel}, {side} and {rank} giving the keys of `files`

    def of(self, channel: int, side: str) -> list[ExampleRecord]:
        return [e for e in self.examples if e.channel == channel and e.side == side]


def checker(width: int, height: int) -> Image.Image:
    """A grey checkerboard: the mark for area outside the source image."""
    yy, xx = np.mgrid[0:height, 0:width]
    cells = ((yy // CHECKER_CELL) + (xx // CHECKER_CELL)) % 2
    grey = np.where(cells == 0, CHECKER[0], CHECKER[1]).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def crop_marked(img: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """Crop (top, left, bottom, right) from `img`, resized to size x size; the part of the box
    outside the image is a checkerboard at its true scale (the image is never stretched)."""
    top, left, bottom, right = box
    scale_x, scale_y = size / (right - left), size / (bottom - top)
    inner = (max(left, 0), max(top, 0), min(right, img.width), min(bottom, img.height))
    canvas = checker(size, size)
    if inner[2] <= inner[0] or inner[3] <= inner[1]:
        return canvas
    x0, y0 = round((inner[0] - left) * scale_x), round((inner[1] - top) * scale_y)
    x1, y1 = round((inner[2] - left) * scale_x), round((inner[3] - top) * scale_y)
    if x1 > x0 and y1 > y0:
        canvas.paste(img.crop(inner).resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC), (x0, y0))
    return canvas


def overlay_heat(view: Image.Image, heat: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """`view` with `heat` (values in [0, 1], any shape) upsampled and blended in `colour`."""
    tensor = torch.from_numpy(np.asarray(heat, dtype=np.float32))[None, None]
    up = F.interpolate(tensor, size=(view.height, view.width), mode="bilinear", align_corners=False)
    alpha = (HEAT_OPACITY * up[0, 0].clamp(0, 1).numpy())[:, :, None]
    base = np.asarray(view, dtype=np.float32)
    blended = base * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def encode(img: Image.Image, image: ImageSettings) -> bytes:
    fmt = image.format.lower()
    if fmt not in _EXTENSIONS:
        raise AtlasError(f"image format {image.format!r} is not supported; use webp, jpeg or png")
    return encode_bytes(img, fmt, image.quality)


def _example_slots(ex: Extremes, channels: Sequence[int]) -> list[tuple[int, str, int, int, float, tuple[int, int]]]:
    """(channel, side, rank, dataset index, value, position) of every example to draw."""
    slots = []
    for c in channels:
        for side, index, value, pos in (("top", ex.top_index, ex.top_value, ex.top_pos),
                                        ("bottom", ex.bottom_index, ex.bottom_value, ex.bottom_pos)):
            for rank in range(index.shape[1]):
                slots.append((c, side, rank, int(index[c, rank]), float(value[c, rank]),
                              (int(pos[c, rank, 0]), int(pos[c, rank, 1]))))
    return slots


def _activation_maps(model: nn.Module, layer: str, dataset: ImageFolder, indices: list[int],
                     needed: dict[int, set[int]], batch_size: int, device: torch.device) -> dict[tuple[int, int], np.ndarray]:
    """(dataset index, channel) -> the channel's (H, W) map, for the channels each image needs."""
    maps: dict[tuple[int, int], np.ndarray] = {}
    # The batch's images decoded in parallel: a GPU runs them faster than one thread decodes them.
    with eval_mode(model), torch.inference_mode(), threads.pool() as pool:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            tensors = list(pool.map(lambda i: dataset[i][0], chunk))
            if any(t is None for t in tensors):
                bad = [dataset.names[i] for i, t in zip(chunk, tensors) if t is None]
                raise AtlasError(f"dataset image {bad[0]!r} can no longer be read; rebuild so the dataset pass "
                                 "sees the current files")
            act = as_feature_map(layer, forward_layers(model, torch.stack(tensors).to(device), [layer])[layer])
            wanted = [(row, i, c) for row, i in enumerate(chunk) for c in sorted(needed[i])]
            rows = torch.tensor([row for row, _, _ in wanted], device=act.device)
            channels = torch.tensor([c for _, _, c in wanted], device=act.device)
            picked = act[rows, channels].float().cpu().numpy()  # one transfer per batch, not one per map
            for k, (_, i, c) in enumerate(wanted):
                maps[i, c] = picked[k]
    return maps


def _dataset_range(ex: Extremes, channel: int, amap: np.ndarray) -> tuple[float, float]:
    """(max, min) of the channel over the dataset; the map's own where a side was not kept."""
    high = float(ex.top_value[channel, 0]) if ex.top_value.shape[1] else float(amap.max())
    low = float(ex.bottom_value[channel, 0]) if ex.bottom_value.shape[1] else float(amap.min())
    return high, low


def _heat(amap: np.ndarray, side: str, high: float, low: float) -> np.ndarray:
    """Where a top example is high (or a bottom example low), on the channel's dataset range."""
    span = high - low
    if span <= 0:
        return np.zeros_like(amap)
    return (amap - low) / span if side == "top" else (high - amap) / span


def extract_patches(model: nn.Module, ex: Extremes, rf: ReceptiveField, dataset: ImageFolder,
                    settings: ExamplesSettings, image: ImageSettings, device: torch.device,
                    channels: Sequence[int] | None = None) -> PatchSet:
    """Draw the top and bottom examples of `channels` (default all) of one layer.

    Fields inside the input: the field's box mapped to source pixels is cropped from the
    source image (part outside the image marked with a checkerboard) and resized to
    `settings.patch_size`; files "<channel>/<side>-<rank>.<ext>". Fields covering the
    input (`rf.covers_input`): the patch is the whole image as the model sees it, and a
    second file "<channel>/<side>-<rank>-heat.<ext>" overlays the channel's activation;
    this re-runs `model` (already on `device`) on the distinct example images only.
    """
    return draw_patches(example_maps(model, ex, rf, dataset, settings, device, channels), ex, rf, dataset, settings, image)


@dataclass
class ExampleMaps:
    """What drawing a layer's examples needs from the model: its example slots and, where the
    field covers the input, each example's activation map ((dataset index, channel) -> (H, W))."""

    slots: list
    maps: dict[tuple[int, int], np.ndarray]


def example_maps(model: nn.Module, ex: Extremes, rf: ReceptiveField, dataset: ImageFolder, settings: ExamplesSettings,
                 device: torch.device, channels: Sequence[int] | None = None) -> ExampleMaps:
    """The model's part of `extract_patches`; the rest (`draw_patches`) is CPU work on images."""
    channels = list(range(ex.top_index.shape[0])) if channels is None else list(channels)
    slots = _example_slots(ex, channels)
    maps: dict[tuple[int, int], np.ndarray] = {}
    if rf.covers_input:
        needed: dict[int, set[int]] = defaultdict(set)
        for c, _kind, _rank, i, _value, _pos in slots:
            needed[i].add(c)
        maps = _activation_maps(model, ex.layer, dataset, sorted(needed), needed, settings.batch_size, device)
    return ExampleMaps(slots, maps)


def draw_patches(planned: ExampleMaps, ex: Extremes, rf: ReceptiveField, dataset: ImageFolder,
                 settings: ExamplesSettings, image: ImageSettings) -> PatchSet:
    """The patches (and heat maps) of `planned`'s example slots, drawn on a thread per core."""
    slots, maps = planned.slots, planned.maps
    ext = _EXTENSIONS.get(image.format.lower(), image.format)
    by_image: dict[int, list] = defaultdict(list)
    for slot in slots:
        by_image[slot[3]].append(slot)
    files: dict[str, bytes] = {}
    records: dict[tuple[int, str, int], ExampleRecord] = {}

    def draw(i: int) -> tuple[dict[str, bytes], dict[tuple[int, str, int], ExampleRecord]]:
        return _draw_source(i, by_image[i], dataset, rf, maps, ex, settings, image, ext)

    # One source image per thread at a time (each decoded once); results are merged in image
    # order, as one thread would.
    with threads.pool() as pool:
        for drawn_files, drawn_records in pool.map(draw, sorted(by_image)):
            files.update(drawn_files)
            records.update(drawn_records)
    ordered = [records[c, side, rank] for c, side, rank, *_ in slots]
    names = {"patch": PATCH_NAME.replace("{ext}", ext)}
    if rf.covers_input:
        names["heatmap"] = HEAT_NAME.replace("{ext}", ext)
    return PatchSet(files=files, examples=ordered, arrays=_box_arrays(ex, ordered), names=names)


def _draw_source(i: int, slots: list, dataset: ImageFolder, rf: ReceptiveField, maps: dict[tuple[int, int], np.ndarray],
                 ex: Extremes, settings: ExamplesSettings, image: ImageSettings, ext: str
                 ) -> tuple[dict[str, bytes], dict[tuple[int, str, int], ExampleRecord]]:
    """The patches (and heat maps) of every example slot that source image `i` fills."""
    files: dict[str, bytes] = {}
    records: dict[tuple[int, str, int], ExampleRecord] = {}
    input_size = dataset.preprocess.input_size
    img = dataset.load_source(i)
    hw = (img.height, img.width)
    view, view_bytes = None, b""
    if rf.covers_input:  # the same whole-image patch for every channel: encode it once
        view = input_view(img, input_size).resize((settings.patch_size,) * 2, Image.Resampling.BICUBIC)
        view_bytes = encode(view, image)
    for c, side, rank, _i, value, pos in slots:
        name = PATCH_NAME.format(channel=c, side=side, rank=rank, ext=ext)
        heat_name = None
        if rf.covers_input:
            box = source_box(hw, input_size, (0, 0, input_size, input_size))
            files[name] = view_bytes
            heat = _heat(maps[i, c], side, *_dataset_range(ex, c, maps[i, c]))
            heat_name = HEAT_NAME.format(channel=c, side=side, rank=rank, ext=ext)
            files[heat_name] = encode(overlay_heat(view, heat, HEAT_COLOURS[side]), image)
        else:
            box = source_box(hw, input_size, rf.box(*pos))
            files[name] = encode(crop_marked(img, box, settings.patch_size), image)
        top, left, bottom, right = box
        records[c, side, rank] = ExampleRecord(
            channel=c, side=side, rank=rank, index=i, source=dataset.names[i], box=(left, top, right, bottom),
            value=value, position=pos, patch=name, heatmap=heat_name)
    return files, records


def _box_arrays(ex: Extremes, records: list[ExampleRecord]) -> dict[str, np.ndarray]:
    arrays = {f"{side}_box": np.full((*getattr(ex, f"{side}_index").shape, 4), -1, dtype=np.int64)
              for side in SIDES}
    for r in records:
        arrays[f"{r.side}_box"][r.channel, r.rank] = r.box
    return arrays
