"""Scoped access to a model's insides: forward hooks that are always removed, eval mode
whose flags are always restored, and layer outputs in one layout. The one place atlasgen hooks
or switches a caller's model.

Layouts: every consumer of a layer's output (visualization, dataset pass, receptive fields)
works on (batch, channels, height, width) maps. Layers that produce channels-last blocks
(Swin) or token sequences (vision transformers, with or without class tokens in front) are
declared once per model with `declare_layouts`, and `forward_layers` hands out their outputs
already turned into maps."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

NCHW = "nchw"
NHWC = "nhwc"
TOKENS = "tokens"  # written "tokens:<prefix>": <prefix> class/distillation tokens, then a square grid
MAX_PREFIX_TOKENS = 8

_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, dict[str, str]] = weakref.WeakKeyDictionary()


def layout_of(shape: Sequence[int]) -> str | None:
    """The layout of a layer output of `shape` for a square input; None when it is not a map.

    4-d: the two equal sizes are the spatial ones (NCHW when ambiguous). 3-d (batch, tokens,
    channels): a square number of patch tokens after at most a few prefix tokens."""
    if len(shape) == 4:
        _, a, b, c = shape
        return NHWC if a == b and b != c else NCHW
    if len(shape) == 3:
        tokens = shape[1]
        for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
            side = math.isqrt(tokens - prefix)
            if side > 0 and side * side == tokens - prefix:
                return f"{TOKENS}:{prefix}"
    return None


def map_shape(shape: Sequence[int], layout: str) -> tuple[int, int, int]:
    """(channels, height, width) of a layer output of `shape` read in `layout`."""
    if layout == NCHW:
        return shape[1], shape[2], shape[3]
    if layout == NHWC:
        return shape[3], shape[1], shape[2]
    side = math.isqrt(shape[1] - prefix_tokens(layout))
    return shape[2], side, side


def prefix_tokens(layout: str) -> int:
    return int(layout.split(":")[1]) if layout.startswith(TOKENS) else 0


def as_map(output: torch.Tensor, layout: str) -> torch.Tensor:
    """A layer output as (batch, channels, height, width); prefix tokens are left out."""
    if not isinstance(output, torch.Tensor) or layout == NCHW or output.dim() != (3 if layout.startswith(TOKENS) else 4):
        return output
    if layout == NHWC:
        return output.permute(0, 3, 1, 2)
    prefix = prefix_tokens(layout)
    n, tokens, channels = output.shape
    side = math.isqrt(tokens - prefix)
    return output[:, prefix:].transpose(1, 2).reshape(n, channels, side, side)


def declare_layouts(model: nn.Module, layouts: Mapping[str, str]) -> None:
    """Remember how `model`'s named layers lay out their outputs (NCHW needs no declaration)."""
    _LAYOUTS.setdefault(model, {}).update({name: layout for name, layout in layouts.items() if layout != NCHW})


class _StopForward(Exception):
    pass


@contextmanager
def hooked(model: nn.Module, names: Sequence[str], hook: Callable[[str, object], None]) -> Iterator[None]:
    """Call `hook(name, output)` after each named module runs; hooks removed on exit, whatever happens."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise KeyError(f"no module named {missing[0]!r} in model")
    handles = [modules[name].register_forward_hook(lambda _m, _i, output, name=name: hook(name, output))
               for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_layers(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run `model(x)` until every module named in `layers` has run once; return their outputs
    as maps in their declared layouts (the rest of the network is never run)."""
    wanted = list(dict.fromkeys(layers))
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str, output: object) -> None:
        outputs.setdefault(name, output)  # type: ignore[arg-type]
        if len(outputs) == len(wanted):
            raise _StopForward

    with hooked(model, wanted, keep):
        try:
            model(x)
        except _StopForward:
            pass
    not_reached = [name for name in wanted if name not in outputs]
    if not_reached:
        raise RuntimeError(f"layer {not_reached[0]!r} was not reached by the forward pass")
    layouts = _LAYOUTS.get(model, {})
    return {name: as_map(output, layouts.get(name, NCHW)) for name, output in outputs.items()}


def output_shapes(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The shape of each named module's first output over a whole forward pass, in the order the
    pass reaches them (() for outputs that are not tensors); modules never reached are absent.
    A pass that fails in a fully connected head after some maps were produced keeps what it reached."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, output: object) -> None:
        if name not in shapes:
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

    started: list[nn.Module] = []
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(lambda m, _args: started.append(m)) for name in names]
    try:
        with hooked(model, names, record), torch.no_grad():
            model(x)
    except Exception:
        # A fully connected head sized for another input (VGG's classifier expects 7x7 maps)
        # does not stop the atlas from reading the maps before it; any other failure does.
        if not (started and isinstance(started[-1], nn.Linear) and any(len(s) >= 3 for s in shapes.values())):
            raise
    finally:
        for handle in handles:
            handle.remove()
    return shapes


@contextmanager
def eval_mode(model: nn.Module, frozen: bool = False) -> Iterator[None]:
    """Eval mode for the block (and, when `frozen`, no parameter gradients); the caller's
    training and requires_grad flags come back afterwards, module by module."""
    training = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()] if frozen else []
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in training:
            m.training = flag


@contextmanager
def input_resized(model: nn.Module, smallest: int, fixed: bool) -> Iterator[None]:
    """Feed the model inputs it accepts: images smaller than `smallest` (or, for a fixed-size
    model, of any other size) are resized to it on the way in, so a visualization's early,
    small octaves still reach every layer. Gradients flow through the resize."""

    def resize(_module: nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return None
        side = x.shape[-1]
        if side == smallest or (side > smallest and not fixed):
            return None
        resized = nn.functional.interpolate(x, size=(smallest, smallest), mode="bilinear", align_corners=False)
        return (resized, *args[1:])

    handle = model.register_forward_pre_hook(resize)
    try:
        yield
    finally:
        handle.remove()
