"""Model sources: where a model comes from, one module each in this package, registered by
the `arch` strings it claims ("demo", torchvision names, "file.py:function" factories, ...).

A source checks an `arch` when the configuration is read (without importing torch), checks
the model before anything is built, builds it with its declared preprocessing and weights
digest, and names the files a saved plan must watch. Configuration, `atlasgen layers` and
the build all go through this registry; a new source (timm, say) is one new module here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atlasgen.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from atlasgen.config import ModelConfig
    from atlasgen.settings import Preprocess


@dataclass
class Built:
    module: nn.Module
    preprocess: Preprocess | None  # what the weights declare; None = ImageNet's at 224
    digest: str  # content digest of the weights ("" = digest the state_dict)
    label: str  # what the pages say about the weights when no weights file is given


@dataclass(frozen=True)
class Source:
    name: str
    order: int  # sources are asked in this order; the first that claims an arch builds it
    claims: Callable[[str], bool]
    build: Callable[[ModelConfig], Built]
    # (arch as written, config folder) -> (arch with paths resolved, problem or None); no torch
    parse: Callable[[str, Path], tuple[str, str | None]] = lambda arch, _root: (arch, None)
    # (model) -> problems [(key path, message)] found before building; may import torchvision
    check: Callable[[ModelConfig], list[tuple[str, str]]] = lambda _model: []
    # files the model is made from, for a saved plan's key; None = unknown (an installed module)
    key_files: Callable[[ModelConfig], list[str] | None] = lambda _model: []
    weights_names: bool = False  # accepts named weights (DEFAULT, IMAGENET1K_V1) besides files


_REGISTRY: Registry[Source] = Registry("model source")
register = _REGISTRY.register


def seeded_construction(construct: Callable[[], nn.Module]) -> nn.Module:
    """`construct()` with torch's random generator seeded (and the caller's left as it was), so a
    model without weights gets the same random initialization, and the same digest and cache
    keys, on every build."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return construct()


def for_arch(arch: str) -> Source:
    """The source that builds `arch` (the torchvision source claims whatever is left)."""
    return next(source for source in _REGISTRY.ordered() if source.claims(arch))


_REGISTRY.discover(__name__, __path__)
