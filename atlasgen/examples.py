"""Dataset examples: one streaming pass over the dataset for all layers at once, then
receptive-field patches (or heat maps) of the chosen examples.

The pass keeps, per layer and channel, the top-k images by the channel's max over
positions and the bottom-k by its min, as small running tensors merged batch by batch,
plus running moments and co-activation sums: memory never grows with the dataset.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from atlasgen.images import EXTENSIONS, encode as encode_bytes
from atlasgen.data import ImageFolder, collate_skipping, input_view, source_box
from atlasgen.errors import AtlasError
from atlasgen.hooks import forward_layers
from atlasgen.receptive import ReceptiveField
from atlasgen.settings import ExamplesSettings, ImageSettings
from atlasgen.similarity import CoActivation, Scratch

log = logging.getLogger(__name__)


@dataclass
class LayerExamples:
    layer: str
    top_index: np.ndarray  # int64 (C, k) dataset indices, best first
    top_value: np.ndarray  # float32 (C, k)
    top_pos: np.ndarray  # int64 (C, k, 2) (row, col) in the feature map
    bottom_index: np.ndarray  # int64 (C, k) lowest first
    bottom_value: np.ndarray  # float32 (C, k)
    bottom_pos: np.ndarray  # int64 (C, k, 2)
    mean: np.ndarray  # float64 (C,) mean activation over images and positions
    std: np.ndarray  # float64 (C,) population std over images and positions
    max: np.ndarray  # float32 (C,) max over everything
    correlation: np.ndarray  # float32 (C, C) Pearson r between channels over all positions of all images
    images_seen: int
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


class _LayerAccumulator:
    def __init__(self, layer: str, settings: ExamplesSettings, scratch: Scratch | None = None):
        self.layer = layer
        self.scratch = scratch
        self.top = _RunningExtremes(settings.top_k, largest=True)
        self.bottom = _RunningExtremes(settings.bottom_k, largest=False)
        self.coactivation: CoActivation | None = None
        self.map_width = 1

    def update(self, act: torch.Tensor, indices: torch.Tensor) -> None:
        if act.dim() == 2:  # (B, C) from a fully connected layer: one position
            act = act[:, :, None, None]
        if act.dim() != 4:
            raise AtlasError(f"layer {self.layer!r} outputs a {act.dim()}-d tensor; "
                             "choose layers whose output is (batch, channels, height, width)")
        act = act.float()
        if self.coactivation is None:
            self.coactivation = CoActivation(act.shape[1], scratch=self.scratch)
            self.map_width = act.shape[3]
        flat = act.flatten(2)
        self.top.update(flat, indices)
        self.bottom.update(flat, indices)
        self.coactivation.update(act)

    def result(self, images_seen: int, skipped: list[str]) -> LayerExamples:
        co = self.coactivation
        channels = co.channels
        top_index, top_value, top_pos = self.top.arrays(channels, self.map_width)
        bottom_index, bottom_value, bottom_pos = self.bottom.arrays(channels, self.map_width)
        return LayerExamples(
            layer=self.layer, top_index=top_index, top_value=top_value, top_pos=top_pos,
            bottom_index=bottom_index, bottom_value=bottom_value, bottom_pos=bottom_pos,
            mean=co.mean(), std=co.std(),
            max=top_value[:, 0].copy() if top_value.shape[1] else np.full(channels, np.nan, dtype=np.float32),
            correlation=co.correlation().astype(np.float32), images_seen=images_seen, skipped=list(skipped))


# --- the pass ------------------------------------------------------------------------


def resolve_workers(workers: int) -> int:
    """-1 = automatic: min(4, cpu count - 1), or 0 (load in the main process) on one core."""
    if workers >= 0:
        return workers
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode, restoring each module's training flag afterwards."""
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in was_training.items():
            module.training = training


def _loader(dataset: ImageFolder, settings: ExamplesSettings, device: torch.device) -> torch.utils.data.DataLoader:
    subset: torch.utils.data.Dataset = dataset
    if 0 < settings.max_images < len(dataset):
        subset = torch.utils.data.Subset(dataset, range(settings.max_images))
    return torch.utils.data.DataLoader(
        subset, batch_size=settings.batch_size, shuffle=False, num_workers=resolve_workers(settings.workers),
        collate_fn=collate_skipping, pin_memory=device.type == "cuda")


# The fold is about a fifth of the forward pass's work: a quarter of torch's threads keeps it ahead of
# the forward pass while the two thread teams together stay near the core count (on 2 cores, one
# or two fold threads measured the same; on many cores, a full second team would oversubscribe them).
FOLD_THREAD_SHARE = 4


class _Folder:
    """Folds each batch's layer outputs into the accumulators on one background thread, so the
    fold overlaps the next batch's forward pass (on CPU the forward leaves cores idle between
    and inside operators). A batch is folded only after its forward pass has finished, so no
    later in-place operation can change what is folded; one batch is folded at a time, in order."""

    def __init__(self, accumulators: dict[str, _LayerAccumulator]):
        self.accumulators = accumulators
        self._threads = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasgen-fold",
                                            initializer=_set_thread_count,
                                            initargs=(max(1, self._threads // FOLD_THREAD_SHARE),))
        self._pending: Future | None = None

    def submit(self, outputs: dict[str, torch.Tensor], indices: torch.Tensor) -> None:
        self.wait()  # at most one batch of outputs waits: memory stays two batches, whatever the dataset
        self._pending = self._executor.submit(self._fold, outputs, indices)

    def wait(self) -> None:
        """Block until the submitted batch is folded; re-raises the fold's error here."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _fold(self, outputs: dict[str, torch.Tensor], indices: torch.Tensor) -> None:
        with torch.inference_mode():  # grad mode is per thread
            for name, accumulator in self.accumulators.items():
                accumulator.update(outputs.pop(name), indices)  # each output is freed once folded

    def __enter__(self) -> _Folder:
        return self

    def __exit__(self, *_exc) -> None:
        # torch.set_num_threads in a thread also sets the count that threads started later get: restore it.
        self._executor.submit(_set_thread_count, self._threads).result()
        self._executor.shutdown(wait=True)


def _set_thread_count(count: int) -> None:
    """torch.set_num_threads for the calling thread only. With OpenMP (torch's usual backend) the
    count is per thread; other backends have one process-wide pool, which is left alone."""
    if _openmp_backend():
        torch.set_num_threads(count)


@functools.cache
def _openmp_backend() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def dataset_pass(model: nn.Module, layers: Sequence[str], dataset: ImageFolder, settings: ExamplesSettings,
                 device: torch.device, progress: Callable[[int], None] | None = None) -> dict[str, LayerExamples]:
    """One pass over `dataset` for every layer: extremes, moments, max and co-activation.

    The model must already be on `device`. `progress(n)` is called after each batch with
    the number of images it covered (unreadable ones included). Unreadable files are
    skipped with one warning and listed in every result's `skipped`.
    """
    layers = list(dict.fromkeys(layers))
    scratch = Scratch()  # one buffer for every layer's centred copies
    accumulators = {name: _LayerAccumulator(name, settings, scratch) for name in layers}
    skipped: list[int] = []
    seen = 0
    with eval_mode(model), torch.inference_mode(), _Folder(accumulators) as folder:
        for images, indices, failed in _loader(dataset, settings, device):
            skipped += failed
            if images is not None:
                folder.submit(forward_layers(model, images.to(device, non_blocking=True), layers), indices)
                seen += len(indices)
            del images  # free before the next batch arrives
            if progress is not None:
                progress(len(indices) + len(failed))
        folder.wait()
    skipped_names = [dataset.names[i] for i in sorted(skipped)]
    if skipped_names:
        log.warning("skipped %d unreadable image%s: %s", len(skipped_names), "s" * (len(skipped_names) != 1),
                    ", ".join(skipped_names))
    if seen == 0:
        raise AtlasError(f"no readable images in dataset folder {str(dataset.folder)!r}; "
                         "check that the files are valid images")
    return {name: acc.result(seen, skipped_names) for name, acc in accumulators.items()}


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
    kind: str  # "top" or "bottom"
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
    examples: list[ExampleRecord]  # ordered by channel, kind (top first), rank
    arrays: dict[str, np.ndarray]  # "top_box", "bottom_box": int64 (C, k, 4) (left, top, right, bottom), -1 if not drawn
    names: dict[str, str]  # "patch" (and "heatmap" when the field covers the input): format strings
    #                        with {channel}, {side} and {rank} giving the keys of `files`

    def of(self, channel: int, kind: str) -> list[ExampleRecord]:
        return [e for e in self.examples if e.channel == channel and e.kind == kind]


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


def _example_slots(ex: LayerExamples, channels: Sequence[int]) -> list[tuple[int, str, int, int, float, tuple[int, int]]]:
    """(channel, kind, rank, dataset index, value, position) of every example to draw."""
    slots = []
    for c in channels:
        for kind, index, value, pos in (("top", ex.top_index, ex.top_value, ex.top_pos),
                                        ("bottom", ex.bottom_index, ex.bottom_value, ex.bottom_pos)):
            for rank in range(index.shape[1]):
                slots.append((c, kind, rank, int(index[c, rank]), float(value[c, rank]),
                              (int(pos[c, rank, 0]), int(pos[c, rank, 1]))))
    return slots


def _activation_maps(model: nn.Module, layer: str, dataset: ImageFolder, indices: list[int],
                     needed: dict[int, set[int]], batch_size: int, device: torch.device) -> dict[tuple[int, int], np.ndarray]:
    """(dataset index, channel) -> the channel's (H, W) map, for the channels each image needs."""
    maps: dict[tuple[int, int], np.ndarray] = {}
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            tensors = [dataset[i][0] for i in chunk]
            if any(t is None for t in tensors):
                bad = [dataset.names[i] for i, t in zip(chunk, tensors) if t is None]
                raise AtlasError(f"dataset image {bad[0]!r} can no longer be read; rebuild so the dataset pass "
                                 "sees the current files")
            act = forward_layers(model, torch.stack(tensors).to(device), [layer])[layer].float()
            if act.dim() == 2:
                act = act[:, :, None, None]
            for row, i in enumerate(chunk):
                for c in needed[i]:
                    maps[i, c] = act[row, c].cpu().numpy()
    return maps


def _dataset_range(ex: LayerExamples, channel: int, amap: np.ndarray) -> tuple[float, float]:
    """(max, min) of the channel over the dataset; the map's own where a side was not kept."""
    high = float(ex.top_value[channel, 0]) if ex.top_value.shape[1] else float(amap.max())
    low = float(ex.bottom_value[channel, 0]) if ex.bottom_value.shape[1] else float(amap.min())
    return high, low


def _heat(amap: np.ndarray, kind: str, high: float, low: float) -> np.ndarray:
    """Where a top example is high (or a bottom example low), on the channel's dataset range."""
    span = high - low
    if span <= 0:
        return np.zeros_like(amap)
    return (amap - low) / span if kind == "top" else (high - amap) / span


def extract_patches(model: nn.Module, ex: LayerExamples, rf: ReceptiveField, dataset: ImageFolder,
                    settings: ExamplesSettings, image: ImageSettings, device: torch.device,
                    channels: Sequence[int] | None = None) -> PatchSet:
    """Draw the top and bottom examples of `channels` (default all) of one layer.

    Fields inside the input: the field's box mapped to source pixels is cropped from the
    source image (part outside the image marked with a checkerboard) and resized to
    `settings.patch_size`; files "<channel>/<kind>-<rank>.<ext>". Fields covering the
    input (`rf.covers_input`): the patch is the whole image as the model sees it, and a
    second file "<channel>/<kind>-<rank>-heat.<ext>" overlays the channel's activation;
    this re-runs `model` (already on `device`) on the distinct example images only.
    """
    channels = list(range(ex.top_index.shape[0])) if channels is None else list(channels)
    slots = _example_slots(ex, channels)
    ext = _EXTENSIONS.get(image.format.lower(), image.format)
    input_size = dataset.preprocess.input_size
    maps: dict[tuple[int, int], np.ndarray] = {}
    if rf.covers_input:
        needed: dict[int, set[int]] = defaultdict(set)
        for c, _kind, _rank, i, _value, _pos in slots:
            needed[i].add(c)
        maps = _activation_maps(model, ex.layer, dataset, sorted(needed), needed, settings.batch_size, device)
    by_image: dict[int, list] = defaultdict(list)
    for slot in slots:
        by_image[slot[3]].append(slot)
    files: dict[str, bytes] = {}
    records: dict[tuple[int, str, int], ExampleRecord] = {}
    for i in sorted(by_image):  # each source image decoded once
        img = dataset.load_source(i)
        hw = (img.height, img.width)
        view, view_bytes = None, b""
        if rf.covers_input:  # the same whole-image patch for every channel: encode it once
            view = input_view(img, input_size).resize((settings.patch_size,) * 2, Image.Resampling.BICUBIC)
            view_bytes = encode(view, image)
        for c, kind, rank, _i, value, pos in by_image[i]:
            name = PATCH_NAME.format(channel=c, side=kind, rank=rank, ext=ext)
            heat_name = None
            if rf.covers_input:
                box = source_box(hw, input_size, (0, 0, input_size, input_size))
                files[name] = view_bytes
                heat = _heat(maps[i, c], kind, *_dataset_range(ex, c, maps[i, c]))
                heat_name = HEAT_NAME.format(channel=c, side=kind, rank=rank, ext=ext)
                files[heat_name] = encode(overlay_heat(view, heat, HEAT_COLOURS[kind]), image)
            else:
                box = source_box(hw, input_size, rf.box(*pos))
                files[name] = encode(crop_marked(img, box, settings.patch_size), image)
            top, left, bottom, right = box
            records[c, kind, rank] = ExampleRecord(
                channel=c, kind=kind, rank=rank, index=i, source=dataset.names[i], box=(left, top, right, bottom),
                value=value, position=pos, patch=name, heatmap=heat_name)
    ordered = [records[c, kind, rank] for c, kind, rank, *_ in slots]
    names = {"patch": PATCH_NAME.replace("{ext}", ext)}
    if rf.covers_input:
        names["heatmap"] = HEAT_NAME.replace("{ext}", ext)
    return PatchSet(files=files, examples=ordered, arrays=_box_arrays(ex, ordered), names=names)


def _box_arrays(ex: LayerExamples, records: list[ExampleRecord]) -> dict[str, np.ndarray]:
    arrays = {f"{kind}_box": np.full((*getattr(ex, f"{kind}_index").shape, 4), -1, dtype=np.int64)
              for kind in ("top", "bottom")}
    for r in records:
        arrays[f"{r.kind}_box"][r.channel, r.rank] = r.box
    return arrays
