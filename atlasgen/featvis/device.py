"""Where and in what precision the optimization runs: the device, mixed precision, and cuDNN's
deterministic algorithms on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from atlasgen.errors import AtlasError


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; an explicit device must exist."""
    requested = requested.strip().lower()
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise AtlasError(f'unknown device {requested!r}: use "auto", "cpu", "cuda", "cuda:N" or "mps"') from None
    hint = 'use device = "auto" or device = "cpu"'
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AtlasError(f"device {requested!r} requested but CUDA is not available on this machine; {hint}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AtlasError(
                f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; {hint}"
            )
    elif device.type == "mps" and not mps_ok:
        raise AtlasError(f"device {requested!r} requested but MPS is not available on this machine; {hint}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise AtlasError(f'unsupported device {requested!r}: use "auto", "cpu", "cuda", "cuda:N" or "mps"')
    return device


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 convolutions natively (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slower."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_for(device: torch.device) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler | None]:
    """Mixed precision for the network only (the image parameters stay float32).

    CUDA: bf16 when supported (no scaler needed), else fp16 with a GradScaler. CPU: bf16 where
    the hardware runs it natively (measured ~1.6x faster than float32 for GoogLeNet on a 2-core
    AVX512-BF16 machine), else float32. MPS: float32.
    """
    if device.type == "cpu":
        return (torch.autocast("cpu", dtype=torch.bfloat16) if cpu_has_native_bf16() else contextlib.nullcontext()), None
    if device.type != "cuda":
        return contextlib.nullcontext(), None
    # No cast cache: a captured step (featvis/replay.py) must not keep casts made outside it, and
    # the frozen weights are not cached anyway (autocast caches only leaves that need a gradient).
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), None
    return torch.autocast("cuda", dtype=torch.float16, cache_enabled=False), torch.amp.GradScaler("cuda")


@contextlib.contextmanager
def backend_flags(*flags: tuple[object, str, object]) -> Iterator[None]:
    """Set each (namespace, attribute, value) of torch.backends for the block, then put back what
    was there: only the named flags change, whatever else the caller set stays."""
    saved = [(space, name, getattr(space, name)) for space, name, _ in flags]
    try:
        for space, name, value in flags:
            setattr(space, name, value)
        yield
    finally:
        for space, name, value in saved:
            setattr(space, name, value)


def repeatable(device: torch.device) -> contextlib.AbstractContextManager:
    """cuDNN's deterministic algorithms for the block: its default choice may add with atomics,
    and the optimization amplifies any rounding difference into a visibly different image."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return backend_flags((cudnn, "benchmark", False), (cudnn, "deterministic", True))
