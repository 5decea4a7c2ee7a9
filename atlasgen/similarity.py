"""Channel similarity: co-activation over the dataset (Pearson r from running sums) and
cross-activation of feature visualizations ("this image also excites")."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from atlasgen.related import cross_activation, top_similar  # noqa: F401  (part of this stage's API)

# Centred values copied into one reused buffer at a time (16 MB in float32). Smaller chunks keep
# the copy in cache; a fresh buffer per chunk would cost more in page faults than the copy itself.
CHUNK_ELEMENTS = 1 << 22
# Diagonal blocks of X^T X at most this wide are multiplied whole; larger spans are halved, and
# only the blocks on or above the diagonal are multiplied (the matrix is symmetric): 56% of the
# full product's work for 1024 channels.
BLOCK_CHANNELS = 128
# Variance below this fraction of a channel's mean square counts as zero (constant channel).
ZERO_VARIANCE = 1e-12


def triangle_blocks(start: int, stop: int) -> list[tuple[int, int, int, int]]:
    """(row start, row stop, column start, column stop) blocks covering the upper triangle of
    a symmetric (C, C) matrix once each: a diagonal block, then halves recursively, so the
    off-diagonal blocks are as large as possible. Split points are multiples of 16 when they can be."""
    width = stop - start
    if width <= BLOCK_CHANNELS:
        return [(start, stop, start, stop)]
    half = width // 2
    aligned = (half + 15) // 16 * 16
    mid = start + (aligned if aligned < width else half)
    return triangle_blocks(start, mid) + [(start, mid, mid, stop)] + triangle_blocks(mid, stop)


class Scratch:
    """One growing buffer that successive chunks (of any layer) are copied into."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self._buffer
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != device:
            buffer = self._buffer = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)


def _onednn_products(rows: torch.Tensor) -> bool:
    """Whether rows @ rows.T can go to oneDNN in strict float32.

    oneDNN's float32 matmul uses AVX-512 wherever the CPU has it; MKL's sgemm, torch's default,
    falls back to AVX2 on AMD CPUs and runs at half the speed there. Skipped when the user
    allows reduced-precision float32 matmuls (oneDNN may then round inputs to bfloat16)."""
    precision = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "none")
    return (rows.device.type == "cpu" and rows.dtype == torch.float32 and precision in ("none", "ieee")
            and _onednn_matmul_is_exact())


@functools.cache
def _onednn_matmul_is_exact() -> bool:
    """The private op exists in this torch, takes these arguments and keeps float32 precision."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    x = torch.tensor([[1 + 2**-10, 0.0], [0.0, 3.0]])  # 1 + 2^-10 is not a bfloat16; its square is a float32
    try:
        product = torch.ops.mkldnn._linear_pointwise(x, x, None, "none", [], "")
    except (RuntimeError, TypeError):
        return False
    return torch.equal(product, torch.tensor([[1 + 2**-9 + 2**-20, 0.0], [0.0, 9.0]]))


def add_products(out: torch.Tensor, rows: torch.Tensor, blocks: list[tuple[int, int, int, int]]) -> None:
    """out[block] += rows[block rows] @ rows[block columns].T for each block; `rows` contiguous."""
    if _onednn_products(rows):
        for a0, a1, b0, b1 in blocks:  # row slices of a contiguous tensor stay contiguous, as oneDNN needs
            out[a0:a1, b0:b1] += torch.ops.mkldnn._linear_pointwise(rows[a0:a1], rows[b0:b1], None, "none", [], "")
    else:
        for a0, a1, b0, b1 in blocks:
            out[a0:a1, b0:b1].addmm_(rows[a0:a1], rows[b0:b1].T)


class CoActivation:
    """Running sums over every position of every image; memory is channels², never images.

    Values are shifted by the first image's per-channel mean before summing, so the sums
    hold centred values: no cancellation when a channel's mean is far larger than its
    spread (covariance does not depend on the shift). A batch's X^T X is multiplied and
    summed in `product_dtype`, then added to float64 running sums. float32 (the default) is
    about 4 times faster than float64 on CPUs and, on centred values, accurate to about 1e-6
    relative; pass torch.float64 for products in double precision. Accumulators of one pass
    can share a `scratch` buffer for their centred copies.
    """

    def __init__(self, channels: int, product_dtype: torch.dtype = torch.float32, scratch: Scratch | None = None):
        self.channels = channels
        self.product_dtype = product_dtype
        self.count = 0
        self.shift: torch.Tensor | None = None  # (C,) in product_dtype
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sum_sq = torch.zeros(channels, channels, dtype=torch.float64)  # upper block triangle of X^T X
        self._blocks = triangle_blocks(0, channels)
        self._scratch = scratch if scratch is not None else Scratch()
        self._cached: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, act: torch.Tensor) -> None:
        """Add a batch of activations (B, C, H, W) or (B, C)."""
        if act.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {act.shape[1]}")
        act = act.detach()
        if act.dim() == 2:
            act = act[:, :, None, None]
        if act.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = act[:1].to(torch.float64).mean(dim=(0, 2, 3)).to(self.product_dtype)  # first image suffices
            self.sum = self.sum.to(act.device)
            self.sum_sq = self.sum_sq.to(act.device)
        # A batch's chunks accumulate in product_dtype (few, centred terms), then join the float64 sums once.
        batch_sum = torch.zeros(self.channels, dtype=self.product_dtype, device=act.device)
        batch_sq = torch.zeros(self.channels, self.channels, dtype=self.product_dtype, device=act.device)
        step = max(1, CHUNK_ELEMENTS // act[0].numel())
        for start in range(0, act.shape[0], step):
            self._add(act[start:start + step], batch_sum, batch_sq)
        self.sum += batch_sum.to(torch.float64)
        self.sum_sq += batch_sq.to(torch.float64)
        self._cached = None

    def _add(self, act: torch.Tensor, batch_sum: torch.Tensor, batch_sq: torch.Tensor) -> None:
        batch, channels, height, width = act.shape
        # One pass: centre and lay out channel-major, so each channel's values are one contiguous row.
        rows = self._scratch.take((channels, batch, height, width), self.product_dtype, act.device)
        torch.sub(act.transpose(0, 1).to(self.product_dtype), self.shift.view(-1, 1, 1, 1), out=rows)
        rows = rows.view(channels, -1)
        batch_sum += rows.sum(dim=1)
        add_products(batch_sq, rows, self._blocks)
        self.count += rows.shape[1]

    def _gram(self) -> torch.Tensor:
        """The full symmetric X^T X from its upper block triangle."""
        full = self.sum_sq.clone()
        for a0, a1, b0, b1 in self._blocks:
            if a0 != b0:
                full[b0:b1, a0:a1] = self.sum_sq[a0:a1, b0:b1].T
        return full

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean of the shifted values, covariance), population (ddof 0); cached until the next update."""
        if self.count == 0:
            raise ValueError("no activations were added")
        if self._cached is None:
            n = self.count
            mean = (self.sum / n).cpu().numpy()
            self._cached = mean, (self._gram() / n).cpu().numpy() - np.outer(mean, mean)
        return self._cached

    def mean(self) -> np.ndarray:
        """float64 (C,) mean over all positions and images."""
        mean, _ = self._moments()
        return mean + self.shift.double().cpu().numpy()

    def variance(self) -> np.ndarray:
        """float64 (C,) population variance, zero for constant channels."""
        mean, cov = self._moments()
        var = np.clip(np.diag(cov).copy(), 0.0, None)
        mean_square = var + (mean + self.shift.double().cpu().numpy()) ** 2
        var[var <= ZERO_VARIANCE * mean_square] = 0.0
        return var

    def std(self) -> np.ndarray:
        return np.sqrt(self.variance())

    def correlation(self) -> np.ndarray:
        """(C, C) Pearson r; a zero-variance channel has r = 0 with others and 1 with itself."""
        _, cov = self._moments()
        std = np.sqrt(self.variance())
        live = std > 0
        corr = np.zeros_like(cov)
        corr[np.ix_(live, live)] = cov[np.ix_(live, live)] / np.outer(std[live], std[live])
        np.clip(corr, -1.0, 1.0, out=corr)
        np.fill_diagonal(corr, 1.0)
        return corr


class SizedOnFirstBatch:
    """`CoActivation` as a dataset-pass accumulator: sized by the first batch it sees."""

    def __init__(self, scratch: Scratch | None = None) -> None:
        self.scratch = scratch
        self.stats: CoActivation | None = None

    def update(self, act: torch.Tensor, _indices: torch.Tensor) -> None:
        if self.stats is None:
            self.stats = CoActivation(act.shape[1], scratch=self.scratch)
        self.stats.update(act)
