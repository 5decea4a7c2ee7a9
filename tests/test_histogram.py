"""The histogram stage: exact streaming histograms of every channel's per-image activation, and their SVG."""

from pathlib import Path

import numpy as np
import torch

from atlasgen.data import ImageFolder
from atlasgen.hooks import forward_layers
from atlasgen.render import render_site
from atlasgen.settings import ExamplesSettings, Preprocess
from atlasgen.stages.histogram import BINS_PER_SIDE, HistogramAccumulator, bars
from atlasgen.stream import stream_dataset
from sitefixture import make_site_data
from tests.toymodels import PlainNet, seeded, write_dataset

CPU = torch.device("cpu")


def brute_force(values: np.ndarray, exponent: int) -> np.ndarray:
    """Counts of each bin [m w, (m + 1) w), m in [-B, B), of every value, one at a time."""
    width = 2.0 ** exponent
    counts = np.zeros(2 * BINS_PER_SIDE, dtype=np.int64)
    for v in values.astype(np.float64):
        counts[int(np.floor(v / width)) + BINS_PER_SIDE] += 1
    return counts


def feed(batches: list[torch.Tensor]) -> HistogramAccumulator:
    acc = HistogramAccumulator()
    for batch in batches:
        acc.update(batch, torch.arange(batch.shape[0]))
    return acc


def test_streaming_histogram_equals_brute_force_whatever_the_batches():
    rng = np.random.default_rng(0)
    # channel 0 grows 1000x over the stream (bins must merge), 1 is ReLU-like and silent on half the
    # images, 2 is tiny and signed, 3 is all zeros
    scales = [np.geomspace(0.01, 10, 6), np.full(6, 3.0), np.full(6, 1e-6), np.zeros(6)]
    data = np.stack([[rng.standard_normal((4, 5)) * s for s in channel] for channel in scales], axis=1)  # (6, 4, 4, 5)
    data[:, 1] = np.maximum(data[:, 1], 0)
    data[::2, 1] = 0
    acts = torch.from_numpy(data.astype(np.float32))
    forward = feed(list(acts.split(1)))
    backward = feed(list(acts.flip(0).split(4)))
    for acc in (forward, backward):
        result = acc.arrays()
        for c in range(4):
            values = data[:, c].astype(np.float32).max(axis=(1, 2))  # each image's max over positions
            assert (result["counts"][c] == brute_force(values, int(result["exponent"][c]))).all(), c
            assert result["zeros"][c] == (values == 0).sum() and result["positive"][c] == (values > 0).sum()
            if values.any():  # the narrowest power-of-two width that holds every value
                assert np.abs(values).max() < BINS_PER_SIDE * 2.0 ** result["exponent"][c] <= 2 * np.abs(values).max()
        assert result["total"] == 6
    assert all((forward.arrays()[k] == backward.arrays()[k]).all() for k in ("counts", "exponent", "zeros", "positive"))


def test_histogram_in_the_dataset_pass_counts_every_image(tmp_path: Path):
    write_dataset(tmp_path / "images", count=10, size=16)
    dataset = ImageFolder(tmp_path / "images", Preprocess(input_size=16))
    model = seeded(PlainNet())
    acc = HistogramAccumulator()
    stream_dataset(model, {"conv2": [acc]}, dataset, ExamplesSettings(batch_size=3, workers=0), CPU)
    with torch.no_grad():
        readable = [t for t, _ in (dataset[i] for i in range(len(dataset))) if t is not None]  # one file is broken
        every = forward_layers(model, torch.stack(readable), ["conv2"])["conv2"]
    result = acc.arrays()
    assert result["total"] == every.shape[0]
    for c in range(every.shape[1]):
        values = every[:, c].amax(dim=(1, 2)).numpy()
        assert (result["counts"][c] == brute_force(values, int(result["exponent"][c]))).all()


def test_bars_leave_out_exact_zeros_and_empty_ends():
    counts = np.zeros(2 * BINS_PER_SIDE, dtype=np.int64)
    counts[BINS_PER_SIDE] = 50  # 40 exact zeros and 10 small positives
    counts[BINS_PER_SIDE + 3] = 20
    drawn = bars(counts, exponent=-2, zeros=40)
    assert [(b["low"], b["high"], b["count"]) for b in drawn] == [
        (0.0, 0.25, 10), (0.25, 0.5, 0), (0.5, 0.75, 0), (0.75, 1.0, 20)]
    assert [b["height"] for b in drawn] == [0.5, 0.0, 0.0, 1.0]
    assert bars(counts, exponent=0, zeros=50)[0]["low"] == 3.0
    assert bars(np.zeros(2 * BINS_PER_SIDE), 0, 0) == []


def test_unit_page_draws_the_histogram(tmp_path: Path):
    site = make_site_data(tmp_path / "cache")
    site.unit_sections = ["partials/histogram.html"]
    unit = site.models[0].layers[0].units[0]
    counts = np.zeros(2 * BINS_PER_SIDE, dtype=np.int64)
    counts[BINS_PER_SIDE + 1: BINS_PER_SIDE + 6] = [5, 9, 3, 0, 1]
    unit.extras["histogram"] = {"bars": bars(counts, 0, 0), "total": 18, "zero_share": 0.0, "positive_share": 1.0}
    render_site(site, tmp_path / "site")
    layer = site.models[0].layers[0]
    page = (tmp_path / "site" / site.models[0].name / layer.name / str(unit.channel) / "index.html").read_text()
    assert page.count("<rect ") == 5 and "Activation distribution" in page and "100.0% of images" in page
    assert page.index("Activation distribution") < page.index("Related channels")
    other = layer.units[1]
    other_page = (tmp_path / "site" / site.models[0].name / layer.name / str(other.channel) / "index.html").read_text()
    assert "Activation distribution" not in other_page  # no data, no section
