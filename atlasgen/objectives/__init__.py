"""Feature-visualization objectives: one module each in this package, registered by name.

An objective says what an image should do to the target layer: its loss term (the value
each image should maximize), how many images it renders per channel, and the score reported
for the final image. Settings, validation, the optimizer and the page labels all read this
registry; nothing else lists objective names. A new objective is a new module here that
calls `register`: the package imports every module in it.

Importing this package never imports torch (the site can be rendered from the cache
without it): objective modules receive tensors and use their methods, importing torch
only inside functions when they must."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atlasgen.registry import Registry

if TYPE_CHECKING:
    import torch

    from atlasgen.settings import VisSettings

# (acts (B, C, h, w) float32, rows (n,) int64, channels (n,) int64, settings) -> (n,) values
Term = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", "VisSettings"], "torch.Tensor"]


@dataclass(frozen=True)
class Objective:
    name: str  # as written in `visualize.objectives`, and the stem of its image files
    label: str  # shown on the unit page under its image
    order: int  # position on the page, and in the default list (lower first)
    loss: Term  # what each of its images maximizes, on the transformed image's activations
    score: Term  # the number reported for a final image (no transforms)
    images: Callable[[VisSettings], int] = lambda settings: 1  # images per channel
    grouped: bool = False  # a channel's images are optimized in one batch (they interact)
    options: type | None = None  # settings dataclass read from [visualize.<name>], or None
    # The loss reads each image's own channel in the image's coordinates: the optimizer passes
    # it that channel alone (rows 0..n-1, channel 0), resampled to undo each image's random
    # view, so a unit it picks stays on the content it optimizes (transforms.align_to_image).
    follows_view: bool = False
    # Where its images' learning rate ends, as a multiple of the last octave's configured end
    # (the last octave's linear decay runs from its start to that). The rest of the schedule is
    # shared; each image steps at its own objective's rate in a shared batch, so an image is the
    # same alone or among others (`atlasgen.featvis.optimize._scale_steps`).
    lr_end: float = 1.0
    # Optimized by its own loop (a recipe of its own, `atlasgen.featvis.article`) and cached by
    # its own stage, not in the shared batches of `atlasgen.featvis.optimize`.
    own_loop: bool = False


_REGISTRY: Registry[Objective] = Registry("objective")
register = _REGISTRY.register
get = _REGISTRY.get


def names() -> tuple[str, ...]:
    """Every registered objective, in page order."""
    return tuple(o.name for o in _REGISTRY.ordered())


def all_objectives() -> list[Objective]:
    return _REGISTRY.ordered()


def batch_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `names` the shared batch loop optimizes (not an own-loop recipe)."""
    return tuple(name for name in names if not get(name).own_loop)


def grouped_names() -> frozenset[str]:
    """The objectives whose images of a channel form one set (stored as `<name>-<i>.png`)."""
    return frozenset(o.name for o in _REGISTRY.ordered() if o.grouped)


_REGISTRY.discover(__name__, __path__)
