"""Load and validate `atlas.toml` in one pass.

Every problem is collected with its key path (`models[1].visualize.steps`) and reported
together as one `ConfigError`; nothing here imports torch, so mistakes are reported
before any model loads."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlasgen.errors import ConfigError
from atlasgen.settings import OBJECTIVES, ImageSettings, Octave, StageSettings

DEMO = "demo"  # the built-in model and dataset


@dataclass(frozen=True)
class SiteConfig:
    title: str = "Feature atlas"
    output: Path = Path("site")
    cache: Path = Path(".atlas-cache")
    url: str | None = None
    authors: tuple[str, ...] = ()
    templates: Path | None = None
    notes: Path | None = None
    images: ImageSettings = field(default_factory=ImageSettings)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    arch: str  # "demo", a torchvision model name, or "path/file.py:function" / "package.module:function"
    weights: str | None  # torchvision weights name, a resolved file path, or None
    layers: tuple[str, ...] | None  # glob patterns over dotted module names; None = the model's feature blocks
    channels: tuple[int, int] | None  # [start, stop) of every layer, for previews
    dataset: str  # "demo" or a resolved folder path
    input_size: int | None  # None = from the weights' metadata
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    stages: StageSettings
    index: int  # position in [[models]], for error paths

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

    @property
    def root(self) -> Path:
        return self.path.parent


class _Problems:
    """Collects (key path, message) pairs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


# ---------------------------------------------------------------- value parsers
# A parser takes (value, path, problems) and returns the parsed value, or None after
# recording a problem.

Parser = Callable[[Any, str, _Problems], Any]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _string(value: Any, path: str, problems: _Problems) -> str | None:
    if isinstance(value, str):
        return value
    problems.add(path, f"expected a string, got {_type_name(value)} {value!r}")
    return None


def _nonempty_string(value: Any, path: str, problems: _Problems) -> str | None:
    text = _string(value, path, problems)
    if text is not None and not text.strip():
        problems.add(path, "must not be empty")
        return None
    return text


def _boolean(value: Any, path: str, problems: _Problems) -> bool | None:
    if isinstance(value, bool):
        return value
    problems.add(path, f"expected true or false, got {_type_name(value)} {value!r}")
    return None


def _bounded(integer: bool, low: float | None, high: float | None) -> Parser:
    expected = "an integer" if integer else "a number"
    allowed = (int,) if integer else (int, float)

    def parse(value: Any, path: str, problems: _Problems) -> Any:
        if isinstance(value, bool) or not isinstance(value, allowed):
            problems.add(path, f"expected {expected}, got {_type_name(value)} {value!r}")
            return None
        if low is not None and value < low:
            problems.add(path, f"must be at least {low}, got {value}")
            return None
        if high is not None and value > high:
            problems.add(path, f"must be at most {high}, got {value}")
            return None
        return value if integer else float(value)

    return parse


def _integer(low: int | None = None, high: int | None = None) -> Parser:
    return _bounded(True, low, high)


def _number(low: float | None = None, high: float | None = None) -> Parser:
    return _bounded(False, low, high)


def _choice(*choices: str) -> Parser:
    def parse(value: Any, path: str, problems: _Problems) -> str | None:
        text = _string(value, path, problems)
        if text is None:
            return None
        if text not in choices:
            problems.add(path, f"must be one of {', '.join(repr(c) for c in choices)}, got {text!r}{_hint(text, choices)}")
            return None
        return text

    return parse


def _list_of(item: Parser, length: int | None = None, nonempty: bool = False) -> Parser:
    def parse(value: Any, path: str, problems: _Problems) -> tuple | None:
        if not isinstance(value, list):
            problems.add(path, f"expected a list, got {_type_name(value)} {value!r}")
            return None
        if length is not None and len(value) != length:
            problems.add(path, f"expected a list of {length} values, got {len(value)}")
            return None
        if nonempty and not value:
            problems.add(path, "must not be empty")
            return None
        before = len(problems.items)
        parsed = tuple(item(v, f"{path}[{i}]", problems) for i, v in enumerate(value))
        return None if len(problems.items) > before else parsed

    return parse


def _pair(item: Parser) -> Parser:
    return _list_of(item, length=2)


def _device(value: Any, path: str, problems: _Problems) -> str | None:
    text = _string(value, path, problems)
    if text is None:
        return None
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        problems.add(path, f"must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N', got {text!r}")
        return None
    return text


def _url(value: Any, path: str, problems: _Problems) -> str | None:
    text = _string(value, path, problems)
    if text is None:
        return None
    if not re.match(r"https?://[^\s/]+", text):
        problems.add(path, f"must be an absolute http(s) URL such as 'https://user.github.io/atlas/', got {text!r}")
        return None
    return text.rstrip("/") + "/"


def _url_id(value: Any, path: str, problems: _Problems) -> str | None:
    text = _string(value, path, problems)
    if text is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        problems.add(path, f"{text!r} cannot be used in URLs: use letters, digits, '.', '_' and '-' (for example 'googlenet')")
        return None
    return text


def _channel_range(value: Any, path: str, problems: _Problems) -> tuple[int, int] | None:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d+)\s*", value)
        if match:
            start, stop = int(match.group(1) or 0), int(match.group(2))
            if start < stop:
                return start, stop
            problems.add(path, f"empty channel range {value!r}: the start must be below the stop")
            return None
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if 0 <= value[0] < value[1]:
            return value[0], value[1]
        problems.add(path, f"empty channel range {value!r}: the start must be below the stop")
        return None
    problems.add(path, f"expected a range such as \"0:16\" (channels 0 to 15), got {value!r}")
    return None


# ---------------------------------------------------------------- tables


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _table(value: Any, path: str, problems: _Problems) -> dict | None:
    if isinstance(value, dict):
        return value
    problems.add(path, f"expected a table, got {_type_name(value)} {value!r}")
    return None


def _apply_table(raw: Any, path: str, schema: dict[str, Parser], base: Any, problems: _Problems) -> Any:
    """Parse the keys of `raw` with `schema` and return `base` with them replaced.

    Unknown keys and bad values are recorded; good values still apply, so one pass finds
    every problem."""
    table = _table(raw, path, problems)
    if table is None:
        return base
    changes = {}
    for key, value in table.items():
        key_path = f"{path}.{key}" if path else key
        parser = schema.get(key)
        if parser is None:
            problems.add(key_path, f"unknown key{_hint(key, schema)} (known keys: {', '.join(sorted(schema))})")
            continue
        parsed = parser(value, key_path, problems)
        if parsed is not None:
            changes[key] = parsed
    return dataclasses.replace(base, **changes) if changes else base


def _octave(value: Any, path: str, problems: _Problems) -> Octave | None:
    schema: dict[str, Parser] = {
        "scale": _number(0.05, 1.0),
        "share": _number(0.0, 1.0),
        "lr": _pair(_number(0.0)),
        "blur": _pair(_number(0.0)),
    }
    table = _table(value, path, problems)
    if table is None:
        return None
    missing = [key for key in schema if key not in table]
    if missing:
        problems.add(path, f"an octave needs {', '.join(schema)}; missing {', '.join(missing)}")
        return None
    before = len(problems.items)
    octave = _apply_table(table, path, schema, Octave(1.0, 1.0, (0.05, 0.05), (0.0, 0.0)), problems)
    return None if len(problems.items) > before else octave


def _objectives(value: Any, path: str, problems: _Problems) -> tuple[str, ...] | None:
    parsed = _list_of(_choice(*OBJECTIVES), nonempty=True)(value, path, problems)
    return tuple(dict.fromkeys(parsed)) if parsed else None


VISUALIZE_SCHEMA: dict[str, Parser] = {
    "objectives": _objectives,
    "diversity": _integer(1, 64),
    "diversity_weight": _number(0.0),
    "size": _integer(16, 4096),
    "steps": _integer(1, 100_000),
    "octaves": _list_of(_octave, nonempty=True),
    "pad": _integer(0, 512),
    "jitter": _integer(0, 512),
    "scale": _pair(_number(0.1, 10.0)),
    "rotate": _number(0.0, 180.0),
    "decorrelate": _boolean,
    "fft": _boolean,
    "relu_redirect_steps": _integer(0),
    "seed": _integer(0),
    "batch_size": _integer(0),
}

EXAMPLES_SCHEMA: dict[str, Parser] = {
    "top_k": _integer(1, 1000),
    "bottom_k": _integer(0, 1000),
    "patch_size": _integer(8, 1024),
    "batch_size": _integer(1),
    "workers": _integer(-1),
    "max_images": _integer(0),
}

SIMILARITY_SCHEMA: dict[str, Parser] = {"top_n": _integer(0, 1000)}

IMAGES_SCHEMA: dict[str, Parser] = {"format": _choice("webp", "jpeg", "png"), "quality": _integer(1, 100)}

BUILD_SCHEMA: dict[str, Parser] = {"device": _device}

STAGE_SCHEMAS = {"visualize": VISUALIZE_SCHEMA, "examples": EXAMPLES_SCHEMA, "similarity": SIMILARITY_SCHEMA}

TOP_SCHEMA = {"site": None, "models": None, "build": None, "visualize": None, "examples": None, "similarity": None}


def _stage_settings(raw: dict, path: str, base: StageSettings, problems: _Problems) -> StageSettings:
    prefix = f"{path}." if path else ""
    changes = {}
    for name, schema in STAGE_SCHEMAS.items():
        if name in raw:
            changes[name] = _apply_table(raw[name], prefix + name, schema, getattr(base, name), problems)
    stages = dataclasses.replace(base, **changes)
    vis = stages.visualize
    if "visualize" in raw and isinstance(raw["visualize"], dict) and "octaves" in raw["visualize"]:
        total = sum(o.share for o in vis.octaves)
        if abs(total - 1.0) > 1e-6:
            problems.add(f"{prefix}visualize.octaves", f"the octaves' shares must add up to 1, they add up to {total:g}")
        if vis.octaves[-1].scale != 1.0:
            problems.add(f"{prefix}visualize.octaves", "the last octave must have scale = 1.0 (the final image size)")
    return stages


def _resolve_path(text: str, root: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (root / path)


def _site(raw: Any, root: Path, problems: _Problems) -> SiteConfig:
    schema: dict[str, Parser] = {
        "title": _nonempty_string,
        "output": _nonempty_string,
        "cache": _nonempty_string,
        "url": _url,
        "authors": _list_of(_nonempty_string),
        "templates": _nonempty_string,
        "notes": _nonempty_string,
        "images": lambda v, p, pr: _apply_table(v, p, IMAGES_SCHEMA, ImageSettings(), pr),
    }
    site = _apply_table(raw, "site", schema, SiteConfig(), problems)
    changes: dict[str, Any] = {}
    for key in ("output", "cache", "templates", "notes"):
        value = getattr(site, key)
        if isinstance(value, (str, Path)):
            changes[key] = _resolve_path(str(value), root)
    site = dataclasses.replace(site, **changes)
    for key in ("templates", "notes"):
        folder = getattr(site, key)
        if folder is not None and not folder.is_dir():
            problems.add(f"site.{key}", f"folder {str(folder)!r} does not exist; create it or remove the key")
    if site.output.resolve() == root.resolve() or site.output.resolve() in root.resolve().parents:
        problems.add("site.output", f"{str(site.output)!r} would put the site over the project itself; use a subfolder such as 'site'")
    return site


def _arch(value: Any, path: str, problems: _Problems, root: Path) -> str | None:
    text = _nonempty_string(value, path, problems)
    if text is None:
        return None
    if ":" in text:
        target, _, function = text.rpartition(":")
        if not target or not function.isidentifier():
            problems.add(path, f"a model factory is written 'path/to/file.py:function' or 'package.module:function', got {text!r}")
            return None
        if target.endswith(".py"):
            file = _resolve_path(target, root)
            if not file.is_file():
                problems.add(path, f"factory file {str(file)!r} does not exist")
                return None
            return f"{file}:{function}"
    return text


def _weights(value: Any, path: str, problems: _Problems, root: Path) -> str | None:
    text = _nonempty_string(value, path, problems)
    if text is None:
        return None
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", text):  # a torchvision weights name such as DEFAULT or IMAGENET1K_V1
        return text
    file = _resolve_path(text, root)
    if not file.is_file():
        problems.add(path, f"weights file {str(file)!r} does not exist (or give a torchvision weights name such as 'DEFAULT')")
        return None
    return str(file)


def _dataset(value: Any, path: str, problems: _Problems, root: Path) -> str | None:
    text = _nonempty_string(value, path, problems)
    if text is None:
        return None
    if text == DEMO:
        return DEMO
    folder = _resolve_path(text, root)
    if not folder.is_dir():
        problems.add(path, f"dataset folder {str(folder)!r} does not exist; give a folder of images or \"demo\"")
        return None
    return str(folder)


MODEL_KEYS = {"name", "arch", "weights", "layers", "channels", "dataset", "input_size", "mean", "std", *STAGE_SCHEMAS}


def _model(raw: Any, index: int, root: Path, base: StageSettings, problems: _Problems) -> ModelConfig | None:
    path = f"models[{index}]"
    table = _table(raw, path, problems)
    if table is None:
        return None
    for key in table:
        if key not in MODEL_KEYS:
            problems.add(f"{path}.{key}", f"unknown key{_hint(key, MODEL_KEYS)} (known keys: {', '.join(sorted(MODEL_KEYS))})")
    before = len(problems.items)
    if "name" not in table:
        problems.add(path, "missing 'name' (the model's id in URLs, for example name = \"googlenet\")")
    if "arch" not in table:
        problems.add(path, "missing 'arch' (\"demo\", a torchvision model name such as \"googlenet\", or \"file.py:function\")")
    name = _url_id(table["name"], f"{path}.name", problems) if "name" in table else None
    arch = _arch(table["arch"], f"{path}.arch", problems, root) if "arch" in table else None
    weights = _weights(table["weights"], f"{path}.weights", problems, root) if "weights" in table else None
    layers = _list_of(_nonempty_string, nonempty=True)(table["layers"], f"{path}.layers", problems) if "layers" in table else None
    channels = _channel_range(table["channels"], f"{path}.channels", problems) if "channels" in table else None
    dataset = _dataset(table.get("dataset", DEMO), f"{path}.dataset", problems, root)
    input_size = _integer(8, 4096)(table["input_size"], f"{path}.input_size", problems) if "input_size" in table else None
    mean = _list_of(_number(), length=3)(table["mean"], f"{path}.mean", problems) if "mean" in table else None
    std = _list_of(_number(1e-6), length=3)(table["std"], f"{path}.std", problems) if "std" in table else None
    stages = _stage_settings(table, path, base, problems)
    if len(problems.items) > before or name is None or arch is None or dataset is None:
        return None
    return ModelConfig(
        name=name, arch=arch, weights=weights, layers=layers, channels=channels, dataset=dataset,
        input_size=input_size, mean=mean, std=std, stages=stages, index=index,
    )


def parse_config(data: dict, path: Path) -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    problems = _Problems()
    root = path.parent
    for key in data:
        if key not in TOP_SCHEMA:
            problems.add(key, f"unknown key{_hint(key, TOP_SCHEMA)} (known keys: {', '.join(TOP_SCHEMA)})")
    site = _site(data.get("site", {}), root, problems)
    build = _apply_table(data.get("build", {}), "build", BUILD_SCHEMA, _Build(), problems)
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
                models.append(model)
        names = [m.name for m in models]
        for model in models:
            if names.count(model.name) > 1 and names.index(model.name) != models.index(model):
                problems.add(f"{model.path}.name", f"duplicate model name {model.name!r}; names must be unique")
    if problems.items:
        raise ConfigError(problems.items, source=str(path))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Config(path=path, site=site, models=tuple(models), device=build.device, digest=digest)


@dataclass(frozen=True)
class _Build:
    device: str = "auto"


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
