"""Capture intermediate activations with forward hooks, stopping the forward pass
as soon as every requested layer has produced its output (the rest of the network
is never run)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _StopForward(Exception):
    pass


def forward_layers(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run `model(x)` until every module named in `layers` has run once; return their outputs.

    Hooks are always removed, even when the forward pass raises.
    """
    modules = dict(model.named_modules())
    wanted = list(dict.fromkeys(layers))
    missing = [name for name in wanted if name not in modules]
    if missing:
        raise KeyError(f"no module named {missing[0]!r} in model")
    outputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            if name not in outputs:
                outputs[name] = output
            if len(outputs) == len(wanted):
                raise _StopForward

        return hook

    handles = [modules[name].register_forward_hook(make_hook(name)) for name in wanted]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    not_reached = [name for name in wanted if name not in outputs]
    if not_reached:
        raise RuntimeError(f"layer {not_reached[0]!r} was not reached by the forward pass")
    return outputs
