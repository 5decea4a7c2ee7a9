"""Ranking related channels: the most co-activated (Pearson r over the dataset) and the most
cross-activated ("this image also excites"). Numpy only, so assembling a site from cached
results never imports torch."""

from __future__ import annotations

import numpy as np


def _top_excluding(scores: np.ndarray, own: int, n: int) -> list[tuple[int, float]]:
    """Top n (index, score) by score descending, ties to the lower index, `own` left out."""
    order = np.argsort(-scores, kind="stable")[: n + 1]  # `own` is at most one of the first n + 1
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
