"""diversity: `visualize.diversity` images of one channel, each maximizing the channel while
a penalty on the cosine similarity of their layer Gram matrices (Lucid's `diversity`) pushes
them apart, so they show different facets of the feature. Its score is the mean of the
images' spatial means."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import channel_mean_score, own_channel_mean

if TYPE_CHECKING:
    import torch

_MAGNITUDE_EPS = 1e-30


def gram_similarity(group_acts: torch.Tensor) -> torch.Tensor:
    """(D,) mean cosine similarity of each image's channel Gram matrix to the others' in the group."""
    import torch.nn.functional as F

    d = group_acts.shape[0]
    flat = group_acts.flatten(2)  # (D, C, hw)
    grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
    cosine = grams @ grams.T
    return (cosine.sum(dim=1) - cosine.diagonal()) / max(d - 1, 1)


def diversity_value(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor, settings) -> torch.Tensor:
    import torch

    value = own_channel_mean(acts, rows, channels)
    if settings.diversity_weight <= 0:
        return value
    penalties = []
    # A channel's images are consecutive and never split across batches (grouped=True).
    for group, group_channels in zip(rows.view(-1, settings.diversity), channels.view(-1, settings.diversity)):
        group_acts = acts[group]
        # Scale-free weighting: the similarity term is measured in units of the group's current
        # activation, so one weight works for any model's activation scale.
        own = own_channel_mean(group_acts, torch.arange(len(group), device=group.device), group_channels)
        magnitude = own.abs().mean().detach() + _MAGNITUDE_EPS
        penalties.append(settings.diversity_weight * magnitude * gram_similarity(group_acts))
    return value - torch.cat(penalties)


register(Objective(
    name="diversity",
    label="Diversity",
    order=40,
    loss=diversity_value,
    score=channel_mean_score,
    images=lambda settings: settings.diversity,
    grouped=True,
))
