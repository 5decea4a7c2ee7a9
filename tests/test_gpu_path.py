"""The GPU path's mechanisms, exercised on the CPU through the same code: a batch that runs out
of GPU memory is split without changing any image, and ranks sharing one GPU share its memory."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from atlasgen import distributed
from atlasgen.errors import AtlasError
from atlasgen.featvis import optimize, visualize_channels
from atlasgen.settings import Octave, Preprocess, VisSettings

CPU = torch.device("cpu")
CENTRED = Preprocess(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU())).eval()


def settings(**overrides) -> VisSettings:
    base = dict(objectives=("channel", "diversity"), diversity=2, size=24, steps=6, batch_size=8,
                octaves=(Octave(scale=1.0, share=1.0, lr=(0.2, 0.1), blur=(0.2, 0.0)),))
    return VisSettings(**{**base, **overrides})


def fails_above(limit: int, calls: list[int]):
    """optimize_batch as on a GPU that runs out of memory above `limit` images."""
    real = optimize.optimize_batch

    def fake(model, layer, specs, *args, **kwargs):
        calls.append(len(specs))
        if len(specs) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, layer, specs, *args, **kwargs)

    return fake


def test_out_of_memory_halves_the_batch_and_changes_no_image(monkeypatch, caplog):
    whole = visualize_channels(small_net(), "relu1", [0, 1, 2, 3], settings(), CENTRED, CPU)
    calls: list[int] = []
    monkeypatch.setattr(optimize, "optimize_batch", fails_above(3, calls))
    with caplog.at_level(logging.WARNING):
        split = visualize_channels(small_net(), "relu1", [0, 1, 2, 3], settings(), CENTRED, CPU)
    # 12 images (a channel image and a diversity pair per channel, never split) packed 7 + 5;
    # both fail and are re-packed in batches of at most 3, which run every image once.
    assert calls[:1] == [7] and sum(c for c in calls if c <= 3) == 12
    assert "out of GPU memory with 7 images in a batch; trying 3" in caplog.text
    for name in ("channel", "diversity"):
        assert np.array_equal(whole.images[name], split.images[name])


def test_a_set_that_never_fits_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(optimize, "optimize_batch", fails_above(1, []))
    with pytest.raises(AtlasError, match="do not fit in the GPU's free memory.*visualize.size"):
        visualize_channels(small_net(), "relu1", [0], settings(), CENTRED, CPU)


@pytest.mark.parametrize(("local", "gpus", "share"), [("2", 1, 2), ("2", 2, 1), ("3", 2, 2), ("", 1, 1), ("1", 0, 1)])
def test_ranks_on_one_gpu_split_its_memory(monkeypatch, local, gpus, share):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert distributed.processes_per_gpu() == share


def test_a_gpu_call_fills_whole_batches():
    from atlasgen.featvis.batch import image_specs, pack_batches
    from atlasgen.featvis.optimize import MAX_AUTO_BATCH
    from atlasgen.stages.featvis import CHUNK, channels_per_call

    defaults = VisSettings()  # 7 images per channel: channel, negative, neuron, 4 diverse
    assert channels_per_call(defaults, CPU) == CHUNK
    count = channels_per_call(defaults, torch.device("cuda"))
    batches = pack_batches(image_specs(range(count), defaults), MAX_AUTO_BATCH)
    assert len(batches) == 4 and all(MAX_AUTO_BATCH - 7 < len(b) <= MAX_AUTO_BATCH for b in batches)


def test_filler_rows_of_a_fixed_size_batch_change_no_image(monkeypatch):
    """On CUDA every batch runs at the full batch size (optimize.batch_rows), the rest filler;
    the filler must not reach the real images. The CPU runs the same code when asked to."""
    plain = visualize_channels(small_net(), "relu1", [0, 1, 2], settings(), CENTRED, CPU)
    rows: list[int | None] = []
    real = optimize.optimize_batch

    def recorded(*args, **kwargs):
        rows.append(kwargs.get("rows"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optimize, "batch_rows", lambda device, batch_size: batch_size)
    monkeypatch.setattr(optimize, "optimize_batch", recorded)
    padded = visualize_channels(small_net(), "relu1", [0, 1, 2], settings(), CENTRED, CPU)
    assert rows == [8, 8]  # 9 images in two batches of at most 8, each run as 8
    for name in ("channel", "diversity"):
        assert np.array_equal(plain.images[name], padded.images[name])
        assert np.array_equal(plain.activation[name], padded.activation[name])
