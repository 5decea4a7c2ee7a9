"""Load and validate `atlas.toml` in one pass.

Every problem is collected with its key path (`models[1].visualize.steps`) and reported
together as one `ConfigError`; nothing here imports torch, so mistakes are reported
before any model loads. Each table is parsed from its dataclass's declared fields
(`atlasgen.parsers.setting`), the same declarations `reference_markdown` documents in
docs/settings.md."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlasgen import preview, sources
from atlasgen.errors import ConfigError
from atlasgen.experiments import experiment_list, kinds
from atlasgen.folders import path_problems
from atlasgen.parsers import (
    Parser, Problems, apply_table, as_table, boolean, channel_range, device, integer, keys, list_of, named_tables,
    nonempty_string, number, section, setting, unknown_key, url, url_id,
)
from atlasgen.settings import ImageSettings, StageSettings, VisSettings

DEMO = "demo"  # the built-in model and dataset


def _resolve_path(text: str, root: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (root / path)


# `_site` resolves the keys parsed with this against the project folder, defaults included.
_PATH = Parser(nonempty_string.parse, "path", "not empty; relative to the folder of atlas.toml")


@dataclass(frozen=True)
class SiteConfig:
    """The site: its title, where it is written, how it is cited."""

    title: str = setting("Feature atlas", nonempty_string, "the atlas's title, on every page and in citations")
    output: Path = setting(Path("site"), _PATH, "folder the site is written to")
    cache: Path = setting(Path(".atlas-cache"), _PATH, "folder of computed results, reused across builds")
    url: str | None = setting(None, url, "public base URL, for citations, canonical links and the sitemap")
    authors: tuple[str, ...] = setting(
        (), list_of(nonempty_string), "authors for citations; a name in braces is a group, cited whole"
    )
    templates: Path | None = setting(None, _PATH, "folder of templates replacing the built-in ones of the same name")
    notes: Path | None = setting(
        None, _PATH, "folder of Markdown notes: `index.md`, `<model>.md`, `<model>/<layer>.md`, `<model>/<layer>/<channel>.md`"
    )
    raw_html_notes: bool = setting(
        False, boolean, "keep the notes' HTML as written (scripts included): only for notes you trust; "
        "otherwise notes are sanitized to what Markdown writes"
    )
    budget_mb: float = setting(
        1000, number(0), "largest site the build accepts, in MB (10^6 bytes; GitHub Pages publishes at most 1,000): "
        "above it the build ends with an error once the site is written, above 80% of it with a warning; 0 = no limit"
    )
    images: ImageSettings = section(ImageSettings, "image files of the site")


@dataclass(frozen=True)
class _Build:
    """How the build runs."""

    device: str = setting("auto", device, "auto = cuda, then mps, then cpu")
    preview: bool = setting(
        False, boolean, f"a quick build of every unit to check the site's shape: at most {preview.STEPS} optimization "
        f"steps at {preview.SIZE} px and {preview.MAX_IMAGES} dataset images (atlasgen/preview.py), cached apart from "
        "the real settings; every page says it is a preview"
    )


# ---------------------------------------------------------------- [[models]] keys


def _arch(value: Any, path: str, problems: Problems, root: Path) -> str | None:
    """Checked by the model source that claims it (`atlasgen.sources`), paths resolved."""
    text = nonempty_string(value, path, problems)
    if text is None:
        return None
    arch, problem = sources.for_arch(text).parse(text, root)
    if problem:
        problems.add(path, problem)
        return None
    return arch


_ARCH = Parser(_arch, "string", '"demo", a torchvision model name, "path/file.py:function" or "package.module:function"',
               rooted=True)


def _local(value: Any, path: str, problems: Problems, root: Path, named: Callable[[str], bool],
           exists: Callable[[Path], bool], missing: str) -> str | None:
    """`value` as written when `named` accepts it, else a path resolved against `root` that
    must pass `exists`; `missing` is formatted with the resolved path."""
    text = nonempty_string(value, path, problems)
    if text is None or named(text):
        return text
    resolved = _resolve_path(text, root)
    if not exists(resolved):
        problems.add(path, missing.format(path=str(resolved)))
        return None
    return str(resolved)


def _weights(value: Any, path: str, problems: Problems, root: Path) -> str | None:
    # A torchvision weights name such as DEFAULT or IMAGENET1K_V1, else a file.
    return _local(value, path, problems, root, lambda text: re.fullmatch(r"[A-Z][A-Z0-9_]*", text) is not None, Path.is_file,
                  "weights file {path!r} does not exist (or give a torchvision weights name such as 'DEFAULT')")


def _dataset(value: Any, path: str, problems: Problems, root: Path) -> str | None:
    return _local(value, path, problems, root, lambda text: text == DEMO, Path.is_dir,
                  "dataset folder {path!r} does not exist; give a folder of images or \"demo\"")


_WEIGHTS = Parser(_weights, "string", "a torchvision weights name (DEFAULT, IMAGENET1K_V1) or a state_dict/checkpoint file",
                  rooted=True)
_DATASET = Parser(_dataset, "string", '"demo" or a folder of images (searched recursively)', rooted=True)


def _model_key(parser: Parser, doc: str, absent: Any = None, missing: str = "") -> Any:
    """A [[models]] key. ModelConfig has no defaults (`_model` builds each whole), so the value
    taken when the key is absent is declared here; a `missing` message makes the key required."""
    return field(metadata={"parser": parser, "doc": doc, "absent": absent, "missing": missing})


@dataclass(frozen=True)
class ModelConfig:
    """One network of the atlas; its `visualize`, `examples` and `similarity` tables override
    the top-level ones key by key."""

    name: str = _model_key(
        url_id, "the model's id in URLs",
        missing="missing 'name' (the model's id in URLs, for example name = \"googlenet\")",
    )
    arch: str = _model_key(
        _ARCH, "the network",
        missing="missing 'arch' (\"demo\", a torchvision model name such as \"googlenet\", or \"file.py:function\")",
    )
    weights: str | None = _model_key(
        _WEIGHTS, "the network's weights; not set = the demo's shipped weights, else the model's own initialization"
    )
    layers: tuple[str, ...] | None = _model_key(
        list_of(nonempty_string, nonempty=True), "glob patterns over dotted module names; not set = the model's feature blocks"
    )
    channels: tuple[int, int] | None = _model_key(channel_range, "[start, stop) of every layer, for previews; not set = all")
    dataset: str = _model_key(_DATASET, "the images of the dataset examples", absent=DEMO)
    input_size: int | None = _model_key(integer(8, 4096), "input side, pixels; not set = from the weights' metadata")
    mean: tuple[float, float, float] | None = _model_key(
        list_of(number(), length=3), "per-channel normalization mean; not set = from the weights' metadata"
    )
    std: tuple[float, float, float] | None = _model_key(
        list_of(number(1e-6), length=3), "per-channel normalization std; not set = from the weights' metadata"
    )
    stages: StageSettings
    index: int  # position in [[models]], for error paths
    # Last, with a default, so code that makes a ModelConfig without experiments still can.
    experiments: tuple = field(default=(), metadata={
        "parser": experiment_list, "absent": (), "missing": "",
        "doc": "experiments on chosen units, each on a page of its own (`[[models.experiments]]`)"})

    @property
    def path(self) -> str:
        return f"models[{self.index}]"


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    models: tuple[ModelConfig, ...]
    device: str = "auto"
    digest: str = ""
    preview: bool = False  # [build] preview: the models' stage settings are already capped

    @property
    def root(self) -> Path:
        return self.path.parent


STAGE_KEYS = tuple(keys(StageSettings))
MODEL_KEYS = (*keys(ModelConfig), *STAGE_KEYS)
TOP_KEYS = ("site", "models", "build", *STAGE_KEYS)


# ---------------------------------------------------------------- tables


def _stage_settings(raw: dict, path: str, base: StageSettings, problems: Problems) -> StageSettings:
    prefix = f"{path}." if path else ""
    changes = {name: apply_table(raw[name], prefix + name, getattr(base, name), problems) for name in STAGE_KEYS if name in raw}
    stages = dataclasses.replace(base, **changes)
    vis = stages.visualize
    if "visualize" in raw and isinstance(raw["visualize"], dict) and "octaves" in raw["visualize"]:
        total = sum(o.share for o in vis.octaves)
        if abs(total - 1.0) > 1e-6:
            problems.add(f"{prefix}visualize.octaves", f"the octaves' shares must add up to 1, they add up to {total:g}")
        if vis.octaves[-1].scale != 1.0:
            problems.add(f"{prefix}visualize.octaves", "the last octave must have scale = 1.0 (the final image size)")
    occlusion = stages.occlusion
    if "occlusion" in raw and occlusion.stride > occlusion.square:
        problems.add(f"{prefix}occlusion.stride", f"{occlusion.stride:g} is larger than occlusion.square "
                     f"({occlusion.square:g}): parts of each patch would never be covered; make it at most the square")
    return stages


def _site(raw: Any, root: Path, problems: Problems) -> SiteConfig:
    site = apply_table(raw, "site", SiteConfig(), problems)
    changes: dict[str, Any] = {}
    for key, f in keys(SiteConfig).items():
        value = getattr(site, key)
        if f.metadata.get("parser") is _PATH and isinstance(value, (str, Path)):
            changes[key] = _resolve_path(str(value), root)
    site = dataclasses.replace(site, **changes)
    for key in ("templates", "notes"):
        folder = getattr(site, key)
        if folder is not None and not folder.is_dir():
            problems.add(f"site.{key}", f"folder {str(folder)!r} does not exist; create it or remove the key")
    for problem in path_problems(site.output, site.cache, root):
        problems.add("site.output", problem)
    return site


def _site_names(model: ModelConfig, problems: Problems) -> None:
    """A model or layer named like one of the site's own files would replace it, or need one
    name as both file and folder: refuse it now, not halfway through writing the site."""
    from atlasgen.render.pages import reserved_layer_names, reserved_names  # Jinja, never torch

    if model.name.lower() in reserved_names():
        problems.add(f"{model.path}.name", f"{model.name!r} is the name of one of the site's own files "
                     f"({', '.join(sorted(reserved_names()))}); choose another name")
    for i, pattern in enumerate(model.layers or ()):
        if pattern.lower() in reserved_layer_names():
            problems.add(f"{model.path}.layers[{i}]", f"a layer named {pattern!r} would replace a page file of the "
                         f"model's folder ({', '.join(sorted(reserved_layer_names()))}); select layers with other names")


def _model(raw: Any, index: int, root: Path, base: StageSettings, problems: Problems) -> ModelConfig | None:
    path = f"models[{index}]"
    table = as_table(raw, path, problems)
    if table is None:
        return None
    for key in table:
        if key not in MODEL_KEYS:
            problems.add(f"{path}.{key}", unknown_key(key, sorted(MODEL_KEYS)))
    before = len(problems.items)
    declared = keys(ModelConfig)
    for key, f in declared.items():
        if key not in table and f.metadata["missing"]:
            problems.add(path, f.metadata["missing"])
    values = {
        key: f.metadata["parser"](table[key], f"{path}.{key}", problems, root) if key in table else f.metadata["absent"]
        for key, f in declared.items()
    }
    stages = _stage_settings(table, path, base, problems)
    if len(problems.items) > before:
        return None
    return ModelConfig(**values, stages=stages, index=index)


def parse_config(data: dict, path: Path) -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    problems = Problems()
    root = path.parent
    for key in data:
        if key not in TOP_KEYS:
            problems.add(key, unknown_key(key, TOP_KEYS))
    site = _site(data.get("site", {}), root, problems)
    build = apply_table(data.get("build", {}), "build", _Build(), problems)
    base = _stage_settings(data, "", StageSettings(), problems)
    raw_models = data.get("models")
    models: list[ModelConfig] = []
    if raw_models is None:
        problems.add("models", "no models configured; add a [[models]] table, for example name = \"demo\", arch = \"demo\"")
    elif not isinstance(raw_models, list) or not raw_models:
        problems.add("models", "expected one or more [[models]] tables")
    else:
        for index, raw in enumerate(raw_models):
            model = _model(raw, index, root, base, problems)
            if model is not None:
                _site_names(model, problems)
                models.append(model)
        names = [m.name for m in models]
        for model in models:
            if names.count(model.name) > 1 and names.index(model.name) != models.index(model):
                problems.add(f"{model.path}.name", f"duplicate model name {model.name!r}; names must be unique")
    if problems.items:
        raise ConfigError(problems.items, source=str(path))
    if build.preview:
        models = [dataclasses.replace(model, stages=preview.preview_stages(model.stages)) for model in models]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Config(path=path, site=site, models=tuple(models), device=build.device, digest=digest, preview=build.preview)


def load_config(path: Path) -> Config:
    """Read and validate `atlas.toml`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", f"configuration file {str(path)!r} not found; run in a folder with atlas.toml or pass --config")], source=str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError([("", "not a UTF-8 text file")], source=str(path)) from None
    return parse_config(data, path.resolve())


# ---------------------------------------------------------------- reference

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{f.name} = {_toml(getattr(value, f.name))}" for f in dataclasses.fields(value)) + "}"
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if "absent" in f.metadata:  # a [[models]] key
        if f.metadata["missing"]:
            return "required"
        value = f.metadata["absent"]
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return "required"
    return "not set" if value is None else f"`{_toml(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _document(lines: list[str], title: str, cls: type, extra: Sequence[tuple[str, str, str]] = ()) -> None:
    """Append `cls`'s table under `title`, then the tables nested in it; `extra`: more
    (key, allowed, doc) rows of sub-tables documented elsewhere."""
    lines += ["", f"## `{title}`", "", " ".join((cls.__doc__ or "").split()), "",
              "| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    nested: list[tuple[str, type]] = []
    base = title.strip("[]")
    for name, f in keys(cls).items():
        if "section" in f.metadata:
            nested.append((f"[{base}.{name}]", f.metadata["section"]))
            lines.append(f"| `{name}` | table | | see `[{base}.{name}]` | {_cell(f.metadata['doc'])} |")
            continue
        parser: Parser = f.metadata["parser"]
        allowed = parser.allowed
        if parser.table is not None:
            nested.append((f"{base}.{name}[]", parser.table))
            allowed = "; ".join(filter(None, [allowed, f"see `{base}.{name}[]`"]))
        lines.append(f"| `{name}` | {parser.kind} | {_cell(_default(f))} | {_cell(allowed)} | {_cell(f.metadata['doc'])} |")
    lines += [f"| `{name}` | table | | {_cell(allowed)} | {_cell(doc)} |" for name, allowed, doc in extra]
    for name, (_, kind) in sorted(named_tables(cls).items()):
        nested.append((f"[{base}.{name}]", kind))
    for child_title, child in nested:
        _document(lines, child_title, child)


def reference_markdown() -> str:
    """docs/settings.md: every table and key of atlas.toml, from the declarations."""
    with_options = sorted(named_tables(VisSettings))
    listed = ", ".join(f"`[visualize.{name}]`" for name in with_options) or "none of the registered objectives declares any yet"
    lines = [
        "# atlas.toml settings",
        "",
        "Generated from the declarations in `atlasgen/settings.py` and `atlasgen/config.py` by",
        "`atlasgen.config.reference_markdown()`; tests/test_config.py checks that it is current.",
        "Regenerate with `python -c \"import atlasgen.config as c; c.REFERENCE.write_text(c.reference_markdown())\"`.",
        "",
        "Paths are relative to the folder of atlas.toml. An objective that declares options reads them",
        "from `[visualize.<objective>]`, per model from `[models.visualize.<objective>]`: " + listed + ".",
    ]
    _document(lines, "[site]", SiteConfig)
    _document(lines, "[build]", _Build)
    for name, f in keys(StageSettings).items():
        _document(lines, f"[{name}]", f.metadata["section"])
    stages = [(name, f"keys of `[{name}]`", f"{f.metadata['doc']} of this model, over `[{name}]` key by key")
              for name, f in keys(StageSettings).items()]
    _document(lines, "[[models]]", ModelConfig, stages)
    lines += ["", "## `[[models.experiments]]`", "",
              "Each table turns on one experiment for chosen units of its model, shown on a page of its own; "
              "`kind` picks the experiment, and the other keys are those of its kind below."]
    for kind, cls in kinds().items():
        _document(lines, f"models.experiments (kind = \"{kind}\")", cls)
    return "\n".join(lines) + "\n"
