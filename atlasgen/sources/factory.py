"""The user's own model: `arch = "path/to/file.py:function"` or `"package.module:function"`,
a function that takes no arguments and returns a `torch.nn.Module`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from atlasgen.errors import AtlasError
from atlasgen.sources import Built, Source, register


def _parse(arch: str, root: Path) -> tuple[str, str | None]:
    target, _, function = arch.rpartition(":")
    if not target or not function.isidentifier():
        return arch, f"a model factory is written 'path/to/file.py:function' or 'package.module:function', got {arch!r}"
    if not target.endswith(".py"):
        return arch, None
    file = Path(target).expanduser()
    file = file if file.is_absolute() else root / file
    if not file.is_file():
        return arch, f"factory file {str(file)!r} does not exist"
    return f"{file}:{function}", None


def _import(target: str, path: str):
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"atlasgen_user_{Path(target).stem}", target)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise AtlasError(f"{path}.arch: importing {target} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise AtlasError(f"{path}.arch: cannot import module {target!r}: {type(exc).__name__}: {exc}") from exc


def _build(config) -> Built:
    from torch import nn

    target, _, function = config.arch.rpartition(":")
    factory = getattr(_import(target, config.path), function, None)
    if not callable(factory):
        raise AtlasError(f"{config.path}.arch: {target} has no function {function!r}")
    try:
        model = factory()
    except Exception as exc:
        raise AtlasError(f"{config.path}.arch: the factory {function}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise AtlasError(f"{config.path}.arch: the factory {function}() returned {type(model).__name__}, not a torch.nn.Module")
    return Built(model, None, "", "the factory's own weights")


def _key_files(config) -> list[str] | None:
    target = config.arch.rpartition(":")[0]
    return [target] if target.endswith(".py") else None  # an installed module cannot be stat'ed cheaply


register(Source(
    name="factory",
    order=20,
    claims=lambda arch: ":" in arch,
    build=_build,
    parse=_parse,
    key_files=_key_files,
))
