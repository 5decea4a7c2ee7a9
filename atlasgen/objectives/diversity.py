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
    """(..., D) mean cosine similarity of each image's channel Gram matrix to the others' in its
    group; `group_acts` is (..., D, C, H, W), one group of D images per leading index."""
    d = group_acts.shape[-4]
    flat = group_acts.flatten(-2)  # (..., D, C, hw)
    c, hw = flat.shape[-2:]
    if d * hw < c:
        # Deep layers (many channels, few positions): <F_i F_i^T, F_j F_j^T> = ||F_i^T F_j||^2,
        # so every pair's inner product comes from hw x hw products instead of C x C Gram
        # matrices (GoogLeNet inception4c at 64 px: 16 x 16 against 512 x 512 per image).
        pairs = flat.transpose(-1, -2).unsqueeze(-3) @ flat.unsqueeze(-4)  # (..., D, D, hw, hw)
        inner = pairs.pow(2).sum(dim=(-1, -2))
    else:
        grams = (flat @ flat.transpose(-1, -2)).flatten(-2)  # (..., D, C * C)
        inner = grams @ grams.transpose(-1, -2)
    # Each Gram matrix's norm, at least 1e-10 (a dead image's is 0); clamped before the root,
    # whose gradient at 0 is infinite.
    norms = inner.diagonal(dim1=-2, dim2=-1).clamp_min(1e-20).sqrt()
    cosine = inner / (norms[..., :, None] * norms[..., None, :])
    return (cosine.sum(dim=-1) - cosine.diagonal(dim1=-2, dim2=-1)) / max(d - 1, 1)


def diversity_value(acts: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor, settings) -> torch.Tensor:
    import torch

    value = own_channel_mean(acts, rows, channels)
    if settings.diversity_weight <= 0:
        return value
    # Every group at once (G groups of D images): a loop over groups launched a dozen GPU kernels
    # per group per step, and with 73 groups in a batch the launches, not the GPU, set the pace.
    d = settings.diversity
    own = value.view(-1, d)
    magnitude = own.abs().mean(dim=1, keepdim=True).detach() + _MAGNITUDE_EPS
    groups = rows.view(-1, d)
    # As many groups as the batch could hold, the rest repeats of the first: cuBLAS picks its
    # batched product's algorithm (and rounding) by the number of groups, which would make a
    # channel's images differ alone and in a batch on a GPU (whose batches have a fixed size).
    slots = max(acts.shape[0] // d, groups.shape[0])
    padded = torch.cat([groups, groups[:1].expand(slots - groups.shape[0], d)])
    similarity = gram_similarity(acts[padded])[: groups.shape[0]]  # from (slots, D, C, H, W)
    return value - (settings.diversity_weight * magnitude * similarity).flatten()


register(Objective(
    name="diversity",
    label="Diversity",
    order=40,
    loss=diversity_value,
    score=channel_mean_score,
    images=lambda settings: settings.diversity,
    grouped=True,
))
