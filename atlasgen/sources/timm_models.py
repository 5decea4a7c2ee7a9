"""timm models by name (`arch = "timm:convnext_tiny"`), with the input size, mean and std of
timm's pretrained configuration. Weights: a file, or `weights = "DEFAULT"` for timm's
pretrained weights from its local cache (atlasgen never downloads). timm is an optional
extra: `pip install 'atlasgen[timm]'`."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from atlasgen.errors import AtlasError
from atlasgen.sources import Built, Source, register, seeded_construction

PREFIX = "timm:"
INSTALL = "pip install 'atlasgen[timm]'"


def _name(arch: str) -> str:
    return arch[len(PREFIX):]


def _parse(arch: str, _root: Path) -> tuple[str, str | None]:
    if not _name(arch).strip():
        return arch, 'give the timm model after "timm:", for example arch = "timm:resnet18"'
    return arch, None


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _check(config) -> list[tuple[str, str]]:
    timm = _timm()
    if timm is None:
        return [(f"{config.path}.arch", f"{config.arch!r} needs timm, which is not installed: {INSTALL}")]
    name = _name(config.arch)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else ""
        return [(f"{config.path}.arch", f"timm has no model named {name!r}{hint}")]
    if config.weights is not None and not os.path.isfile(config.weights) and config.weights != "DEFAULT":
        return [(f"{config.path}.weights", f"timm models take a weights file or \"DEFAULT\" (timm's pretrained weights from "
                                            f"its cache), not {config.weights!r}")]
    return []


def _build(config) -> Built:
    from atlasgen.settings import Preprocess

    timm = _timm()
    if timm is None:
        raise AtlasError(f"{config.path}.arch: {config.arch!r} needs timm, which is not installed: {INSTALL}")
    name = _name(config.arch)
    pretrained = config.weights == "DEFAULT"
    if pretrained:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read timm's cache; never download
    try:
        module = seeded_construction(lambda: timm.create_model(name, pretrained=pretrained))
    except Exception as exc:
        if not pretrained:
            raise AtlasError(f"{config.path}.arch: timm could not build {name!r}: {type(exc).__name__}: {exc}") from exc
        raise AtlasError(
            f"{config.path}.weights: timm's pretrained weights for {name!r} are not in its local cache ({type(exc).__name__}). "
            "Download them where there is network access (timm.create_model(name, pretrained=True)), or save them to a "
            'file and set weights = "path/to/file.pth"'
        ) from exc
    cfg = getattr(module, "pretrained_cfg", None) or {}
    preprocess = None
    if "input_size" in cfg and "mean" in cfg and "std" in cfg:
        preprocess = Preprocess(input_size=int(cfg["input_size"][-1]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    # The digest is left to the state_dict's bytes: timm's cache has no stable file to digest.
    label = f"timm pretrained ({cfg.get('hf_hub_id') or cfg.get('tag') or name})" if pretrained else "random initialization"
    return Built(module, preprocess, "", label)


register(Source(
    name="timm",
    order=15,  # before "file.py:function" factories, which claim any arch with a colon
    claims=lambda arch: arch.startswith(PREFIX),
    build=_build,
    parse=_parse,
    check=_check,
    weights_names=True,
))
