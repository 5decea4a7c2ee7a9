"""`atlasgen new`: a commented atlas.toml to start from, for a given model and dataset.

The file is written from the settings' declarations (`setting(...)` fields), so every key,
default and description it shows is the one `atlas.toml` is checked against: the keys a user
must choose are set, every other key is listed commented out with its default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePath

from atlasgen.config import DEMO, ModelConfig, SiteConfig, _Build, _toml
from atlasgen.errors import AtlasError
from atlasgen.parsers import keys
from atlasgen.settings import StageSettings

_SET_IN_MODELS = ("name", "arch", "weights", "dataset")


def _doc_line(name: str, f: dataclasses.Field) -> str:
    if "absent" in f.metadata:
        value = f.metadata["absent"]
    else:
        value = f.default if f.default is not dataclasses.MISSING else None
    shown = f"{name} = {_toml(value)}" if value not in (None, ()) else f"{name} = ..."
    return f"# {shown:<34} # {f.metadata['doc']}"


def _table(title: str, cls: type, lines: list[str], set_keys: dict[str, str] | None = None, commented: bool = False) -> None:
    set_keys = set_keys or {}
    head = f"[{title}]" if not title.startswith("[") else title
    lines += ["", f"# {head}" if commented else head]
    nested = []
    for name, f in keys(cls).items():
        if "section" in f.metadata:
            nested.append((f"{title.strip('[]')}.{name}", f.metadata["section"]))
        elif name in set_keys:
            lines.append(f"{name} = {set_keys[name]}")
        elif "parser" in f.metadata:
            lines.append(_doc_line(name, f))
    for child, kind in nested:
        _table(child, kind, lines, commented=True)


def model_name(arch: str) -> str:
    """A URL-safe id for the model: the torchvision name, or the factory's function name."""
    base = arch.rpartition(":")[2] if ":" in arch else PurePath(arch).stem or arch
    return re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-") or "model"


def config_text(arch: str, dataset: str, weights: str | None = None) -> str:
    lines = [
        "# atlas.toml: what `atlasgen build` makes. Written by `atlasgen new`; every setting is listed with",
        "# its default (commented out) and explained in docs/settings.md. Paths are relative to this file.",
        "# Check the layers the model offers with `atlasgen layers`, then build with `atlasgen build`.",
    ]
    _table("site", SiteConfig, lines, {"title": _toml(f"Feature atlas of {arch}")})
    _table("build", _Build, lines)
    for name, f in keys(StageSettings).items():
        _table(name, f.metadata["section"], lines)
    chosen = {"name": _toml(model_name(arch)), "arch": _toml(arch), "dataset": _toml(dataset)}
    if weights is not None:
        chosen["weights"] = _toml(weights)
    lines += ["", "[[models]]"] + [f"{key} = {value}" for key, value in chosen.items()]
    for name, f in keys(ModelConfig).items():
        if name not in _SET_IN_MODELS and "parser" in f.metadata:
            lines.append(_doc_line(name, f))
    return "\n".join(lines) + "\n"


def write_new_config(path: Path, arch: str = DEMO, dataset: str = DEMO, weights: str | None = None) -> Path:
    """Write a commented atlas.toml at `path`; never over an existing file."""
    if path.exists():
        raise AtlasError(f"{path} already exists; atlasgen new never overwrites a file: edit it, or choose another folder")
    if dataset != DEMO and not (path.parent / dataset).is_dir():
        raise AtlasError(f"--dataset {dataset!r} is not a folder (relative to {path.parent}); give a folder of images, or \"demo\"")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as handle:  # "x": a file that appeared meanwhile is not overwritten
        handle.write(config_text(arch, dataset, weights))
    return path
