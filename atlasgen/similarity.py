"""Channel similarity: co-activation over the dataset (Pearson r from running sums) and
cross-activation of feature visualizations ("this image also excites")."""

from __future__ import annotations

import numpy as np
import torch

# Rows (positions) converted to float64 at a time: bounds the pass's extra memory (~32 MB at 1024 channels).
CHUNK_ELEMENTS = 1 << 22
# Variance below this fraction of a channel's mean square counts as zero (constant channel).
ZERO_VARIANCE = 1e-12


class CoActivation:
    """Running sums over every position of every image; memory is channels², never images.

    Values are shifted by the first batch's per-channel mean before summing, which keeps
    the float64 sums of squares free of cancellation when a channel's mean is far larger
    than its spread (covariance does not depend on the shift).
    """

    def __init__(self, channels: int):
        self.channels = channels
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sum_sq = torch.zeros(channels, channels, dtype=torch.float64)  # X^T X

    def update(self, act: torch.Tensor) -> None:
        """Add a batch of activations (B, C, H, W) or (B, C)."""
        if act.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {act.shape[1]}")
        act = act.detach()
        per_image = max(1, act[0].numel()) if act.shape[0] else 1
        step = max(1, CHUNK_ELEMENTS // per_image)
        for start in range(0, act.shape[0], step):
            self._add(act[start:start + step].movedim(1, -1).reshape(-1, self.channels))

    def _add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        if self.shift is None:
            self.shift = x.mean(dim=0)
            self.sum = self.sum.to(x.device)
            self.sum_sq = self.sum_sq.to(x.device)
        x = x - self.shift
        self.sum += x.sum(dim=0)
        self.sum_sq += x.T @ x
        self.count += x.shape[0]

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean of the shifted values, covariance), population (ddof 0)."""
        if self.count == 0:
            raise ValueError("no activations were added")
        n = self.count
        mean = (self.sum / n).cpu().numpy()
        cov = (self.sum_sq / n).cpu().numpy() - np.outer(mean, mean)
        return mean, cov

    def mean(self) -> np.ndarray:
        """float64 (C,) mean over all positions and images."""
        mean, _ = self._moments()
        return mean + self.shift.cpu().numpy()

    def variance(self) -> np.ndarray:
        """float64 (C,) population variance, zero for constant channels."""
        mean, cov = self._moments()
        var = np.clip(np.diag(cov).copy(), 0.0, None)
        mean_square = var + (mean + self.shift.cpu().numpy()) ** 2
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


def _top_excluding(scores: np.ndarray, own: int, n: int) -> list[tuple[int, float]]:
    """Top n (index, score) by score descending, ties to the lower index, `own` left out."""
    order = np.argsort(-scores, kind="stable")
    return [(int(j), float(scores[j])) for j in order if j != own][:n]


def top_similar(corr: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
    """For each channel, its n most correlated other channels (highest r first)."""
    return [_top_excluding(corr[c], c, n) for c in range(corr.shape[0])]


def cross_activation(layer_response: np.ndarray, channels: list[int], mean: np.ndarray,
                     std: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
    """How strongly channel `channels[i]`'s optimized image excites the layer's other channels.

    `layer_response[i]` is the spatial mean of every channel on that image; each channel
    is put on its own dataset scale (z-score with the dataset `mean` and `std`) so that
    channels with large activations do not dominate. Channels with zero spread score 0.
    """
    response = np.asarray(layer_response, dtype=np.float64)
    if response.shape[0] != len(channels):
        raise ValueError(f"{response.shape[0]} responses for {len(channels)} channels")
    std = np.asarray(std, dtype=np.float64)
    safe_std = np.where(std > 0, std, 1.0)
    z = np.where(std > 0, (response - np.asarray(mean, dtype=np.float64)) / safe_std, 0.0)
    return [_top_excluding(z[i], channel, n) for i, channel in enumerate(channels)]
