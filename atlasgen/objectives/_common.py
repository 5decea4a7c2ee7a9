"""Tensor helpers the objectives share (tensor methods only: no torch import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def own_channel_mean(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(n,) spatial mean of each image's own channel."""
    return acts[rows, channels].flatten(1).mean(dim=1)


def channel_mean_score(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor, _settings=None) -> torch.Tensor:
    """(n,) the same mean, computed as the layer table of spatial means that the pages report."""
    return acts.mean(dim=(2, 3))[rows, channels]


def unit_value(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """(n,) the unit at (row, col) of each image's own channel."""
    return acts[rows, channels, row, col]
