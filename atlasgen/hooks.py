"""Scoped access to a model's insides: forward hooks that are always removed, and eval mode
whose flags are always restored. The one place atlasgen hooks or switches a caller's model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


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
    (the rest of the network is never run)."""
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
    return outputs


def output_shapes(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The shape of each named module's first output over a whole forward pass, in the order the
    pass reaches them (() for outputs that are not tensors); modules never reached are absent."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, output: object) -> None:
        if name not in shapes:
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

    with hooked(model, names, record), torch.no_grad():
        model(x)
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
