"""The dataset pass: one streaming pass over the dataset for every layer at once, folding each
batch's layer outputs into the accumulators of every stage that reads the dataset (examples,
similarity, histogram, ...). Memory never grows with the dataset: accumulators keep running
statistics, and at most two batches of layer outputs are alive at a time."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch
from torch import nn

from atlasgen import threads
from atlasgen.data import ImageFolder, collate_skipping
from atlasgen.errors import AtlasError
from atlasgen.hooks import eval_mode, forward_layers
from atlasgen.settings import ExamplesSettings

log = logging.getLogger(__name__)

# The fold is about a fifth of the forward pass's work: a quarter of torch's threads keeps it ahead of
# the forward pass while the two thread teams together stay near the core count (on 2 cores, one
# or two fold threads measured the same; on many cores, a full second team would oversubscribe them).
FOLD_THREAD_SHARE = 4


class Accumulator(Protocol):
    def update(self, act: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold in float32 activations (B, C, H, W) of the images `indices` (B,), ascending."""


def resolve_workers(workers: int) -> int:
    """-1 = automatic: min(4, cpu count - 1), or 0 (load in the main process) on one core."""
    if workers >= 0:
        return workers
    return max(0, min(4, threads.cores() - 1))


def loader(dataset: ImageFolder, settings: ExamplesSettings, device: torch.device) -> torch.utils.data.DataLoader:
    subset: torch.utils.data.Dataset = dataset
    if 0 < settings.max_images < len(dataset):
        subset = torch.utils.data.Subset(dataset, range(settings.max_images))
    return torch.utils.data.DataLoader(
        subset, batch_size=settings.batch_size, shuffle=False, num_workers=resolve_workers(settings.workers),
        collate_fn=collate_skipping, pin_memory=device.type == "cuda")


def as_feature_map(layer: str, act: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32; a fully connected layer's (B, C) is one position."""
    if act.dim() == 2:
        act = act[:, :, None, None]
    if act.dim() != 4:
        raise AtlasError(f"layer {layer!r} outputs a {act.dim()}-d tensor; "
                         "choose layers whose output is (batch, channels, height, width)")
    return act.float()


class _Folder:
    """Folds each batch's layer outputs into the accumulators on one background thread, so the
    fold overlaps the next batch's forward pass (on CPU the forward leaves cores idle between
    and inside operators). A batch is folded only after its forward pass has finished, so no
    later in-place operation can change what is folded; one batch is folded at a time, in order."""

    def __init__(self, accumulators: Mapping[str, Sequence[Accumulator]]):
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
            for name, accumulators in self.accumulators.items():
                act = as_feature_map(name, outputs.pop(name))  # each output is freed once folded
                for accumulator in accumulators:
                    accumulator.update(act, indices)

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


def stream_dataset(model: nn.Module, accumulators: Mapping[str, Sequence[Accumulator]], dataset: ImageFolder,
                   settings: ExamplesSettings, device: torch.device,
                   progress: Callable[[int], None] | None = None) -> tuple[int, list[str]]:
    """One pass over `dataset`, feeding every layer's output to its accumulators.

    The model must already be on `device`. `progress(n)` is called after each batch with the
    number of images it covered (unreadable ones included). Returns (images seen, unreadable
    files); unreadable files are skipped with one warning."""
    layers = list(accumulators)
    skipped: list[int] = []
    seen = 0
    with eval_mode(model), torch.inference_mode(), _Folder(accumulators) as folder:
        for images, indices, failed in loader(dataset, settings, device):
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
    return seen, skipped_names
