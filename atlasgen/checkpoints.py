"""Weights files as people have them: a bare state_dict, a training checkpoint wrapping one,
a whole pickled model, a safetensors file; keys prefixed by DataParallel (`module.`) or
`torch.compile` (`_orig_mod.`); auxiliary training heads the inference model leaves out.

Each form is tried in turn and the one that fits the architecture best is loaded; a file
that fits none is refused with its first differing keys and the forms that were tried."""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)

# Keys under which training scripts keep the weights (timm, Lightning, DeiT, torchvision references).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "ema", "net", "weights", "module")
# Prefixes that wrappers add in front of every key: DataParallel/DDP, torch.compile, Lightning's `model.`.
PREFIXES = ("module.", "_orig_mod.", "model.")
# Heads used only in training (GoogLeNet's aux1/aux2, InceptionV3's AuxLogits); inference leaves them out.
AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")
# Whole pickled models may hold instances of these packages' classes and nothing else.
SAFE_PICKLE_PACKAGES = ("torch.", "torchvision.", "collections.", "builtins.")


@dataclass
class Reading:
    """How a file was read: the state_dict found and the steps that led to it."""

    state: dict[str, torch.Tensor]
    steps: list[str] = field(default_factory=list)


def load_weights_file(module: nn.Module, file: Path, path: str) -> None:
    """Load `file` into `module` (strictly, after the forms above are undone)."""
    reading = _read(file, path)
    reading = _fit(module, reading)
    own = module.state_dict()
    problems = _mismatches(own, reading.state)
    if problems:
        how = f" (read as: {', '.join(reading.steps)})" if reading.steps else ""
        raise AtlasError(f"{path}.weights: {file.name} does not match the architecture: {problems}{how}. "
                         "Check that `arch` is the architecture the file was trained with")
    module.load_state_dict(reading.state, strict=True)
    if reading.steps:
        log.info("%s: read as %s", file.name, ", ".join(reading.steps))


def _read(file: Path, path: str) -> Reading:
    if file.suffix == ".safetensors":
        return Reading(_read_safetensors(file, path), ["a safetensors file"])
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols is not the user's to act on
            warnings.simplefilter("ignore")
            data = torch.load(file, map_location="cpu", weights_only=True)
        steps: list[str] = []
    except pickle.UnpicklingError as exc:
        data, steps = _read_pickled_model(file, path, exc), ["a whole pickled model"]
    except Exception as exc:
        raise AtlasError(f"{path}.weights: cannot read {file} as PyTorch weights: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc
    found = _find_state_dict(data, steps)
    if found is None:
        raise AtlasError(f"{path}.weights: {file.name} holds no weights (expected a state_dict, a checkpoint with one of "
                         f"{', '.join(repr(k) for k in WRAPPER_KEYS)}, or a whole model saved with torch.save(model))")
    return Reading(found, steps)


def _read_safetensors(file: Path, path: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise AtlasError(f"{path}.weights: {file.name} is a safetensors file; install the reader with "
                         "`pip install safetensors`") from None
    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:
        raise AtlasError(f"{path}.weights: cannot read {file} as safetensors: {_first_line(exc)}") from exc


def _read_pickled_model(file: Path, path: str, refused: Exception) -> object:
    """A `torch.save(model)` file, unpickled without running code: allowed only when every class
    it names comes from torch, torchvision or the standard containers (torch's `weights_only`
    loader then builds the objects itself). A model made of the user's own classes is refused
    with the two ways out, rather than unpickled with `weights_only=False` behind their back."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(file))
    except Exception:  # not a torch.save zip file at all
        raise AtlasError(f"{path}.weights: cannot read {file} as PyTorch weights: it is not a file written by "
                         "torch.save; give a file written by torch.save, or a .safetensors file") from refused
    foreign = [name for name in needed if not name.startswith(SAFE_PICKLE_PACKAGES)]
    if foreign:
        raise AtlasError(
            f"{path}.weights: {file.name} is a pickled object that names classes outside torch and torchvision "
            f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); loading it would run code from the file "
            "(torch's weights_only=False). Save the weights alone with torch.save(model.state_dict(), path) and point "
            "weights at that file")
    classes = [_resolve(name) for name in needed]
    with torch.serialization.safe_globals([c for c in classes if c is not None]):
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AtlasError(f"{path}.weights: cannot unpickle {file.name} safely ({_first_line(exc)}); save the weights "
                             "alone with torch.save(model.state_dict(), path)") from exc


def _resolve(qualified: str) -> object | None:
    import importlib

    module_name, _, name = qualified.rpartition(".")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(obj, name, None)


def _find_state_dict(data: object, steps: list[str]) -> dict[str, torch.Tensor] | None:
    if isinstance(data, nn.Module):
        return data.state_dict()
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    if isinstance(data, dict):
        for key in WRAPPER_KEYS:
            found = _find_state_dict(data.get(key), steps)
            if found is not None:
                steps.append(f"the weights under {key!r}")
                return found
    return None


def _fit(module: nn.Module, reading: Reading) -> Reading:
    """Undo prefixes that every key has and the model's own keys do not, then drop auxiliary
    heads the model does not have."""
    own = set(module.state_dict())
    state, steps = reading.state, list(reading.steps)
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state and all(key.startswith(prefix) for key in state) and not all(key.startswith(prefix) for key in own):
                state = {key[len(prefix):]: value for key, value in state.items()}
                changed = True
                steps.append(f"prefix {prefix!r} removed")
    aux = [key for key in state if key.startswith(AUX_HEADS) and key not in own]
    if aux:
        state = {key: value for key, value in state.items() if key not in aux}
        heads = sorted({key.split(".")[0] for key in aux})
        steps.append(f"training-only heads {', '.join(heads)} left out")
    return Reading(state, steps)


def _mismatches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """The first missing, unexpected and differently shaped keys, or "" when the file fits."""
    # torch fills in a BatchNorm's step counter that old checkpoints lack
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
              for key in own if key in state and state[key].shape != own[key].shape]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)):
        if keys:
            parts.append(f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
