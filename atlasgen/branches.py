"""Branches of a layer that concatenates them: Distill's appendix splits GoogLeNet's inception
layers by branch (4b: 1x1 0:160, 3x3 160:384, 5x5 384:448, pool 448:512); this finds the same
split in any model, from what its forward pass does rather than from its name.

A layer is a concatenation of branches when its output's channels, in order, are exactly the
outputs of some of its direct children, in the order they ran: one forward pass of a random
input records every direct child's output, and the layer's output is compared slice by slice
(`torch.equal`, so a coincidence would need equal values everywhere). Children whose outputs
are intermediate (an inception branch's 1x1 reduction is inside its `Sequential`; InceptionV3
concatenates sub-branch outputs of children called in between) are skipped; the channels of
the output must all be accounted for, by at least two children. Anything else, a layer whose
forward adds, re-orders or processes after the concatenation, has no branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from atlasgen.hooks import hooked


@dataclass(frozen=True)
class Branch:
    name: str  # the child module's name within the layer ("branch2")
    label: str  # short, unique within the layer: the last kernel ("3x3"), "pool", or the name
    ops: str  # what the branch does, in order ("1x1 conv, 3x3 conv")
    start: int  # its first channel in the layer
    stop: int  # one past its last channel


def concat_branches(model: nn.Module, layers: Sequence[str], input_size: int,
                    device: torch.device | None = None) -> dict[str, list[Branch]]:
    """{layer: its branches in channel order} for every named layer that concatenates its
    children's outputs along channels; layers that do not are absent."""
    modules = dict(model.named_modules())
    children = {layer: [(f"{layer}.{child}", child) for child, _ in modules[layer].named_children()] for layer in layers}
    watched = list(dict.fromkeys([*layers, *(full for pairs in children.values() for full, _ in pairs)]))
    outputs: dict[str, list[tuple[int, torch.Tensor]]] = {}  # name -> (call number, output) per call
    calls = iter(range(1 << 62))

    def keep(name: str, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            outputs.setdefault(name, []).append((next(calls), output.detach()))

    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = {m: m.training for m in model.modules()}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, input_size, input_size, generator=generator).to(device)
    model.eval()
    try:
        with hooked(model, watched, keep), torch.no_grad():
            try:
                model(x)
            except Exception:  # a head sized for another input: the maps before it were recorded
                if not all(layer in outputs for layer in layers):
                    raise
    finally:
        for module, training in was_training.items():
            module.training = training

    found = {}
    for layer in layers:
        if len(outputs.get(layer, [])) != 1:  # not run, or run twice: no one split to show
            continue
        ran = sorted((call, child, out) for full, child in children[layer] for call, out in outputs.get(full, []))
        spans = _split(outputs[layer][0][1], [(child, out) for _, child, out in ran])
        if spans:
            found[layer] = _label([(child, modules[f"{layer}.{child}"], start, stop) for child, start, stop in spans])
    return found


def _split(output: torch.Tensor, ran: list[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """[(child, start, stop)] when children's outputs, in the order they ran, make up `output`."""
    spans, at = [], 0
    channels = output.shape[1]
    for child, out in ran:
        width = out.shape[1]
        if (out.shape[0] == output.shape[0] and out.shape[2:] == output.shape[2:] and at + width <= channels
                and torch.equal(output[:, at:at + width], out)):
            spans.append((child, at, at + width))
            at += width
    return spans if at == channels and len(spans) >= 2 else []


def _ops(module: nn.Module) -> list[str]:
    ops = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            ops.append(f"{m.kernel_size[0]}x{m.kernel_size[1]} conv")
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
            ops.append(f"{k[0]}x{k[1]} {'max' if isinstance(m, nn.MaxPool2d) else 'average'} pool")
    return ops


def _label(spans: list[tuple[str, nn.Module, int, int]]) -> list[Branch]:
    """Distill's names where they fit: a branch with a pool is "pool", else its last kernel."""
    short = []
    for child, module, _, _ in spans:
        ops = _ops(module)
        if any("pool" in op for op in ops):
            short.append("pool")
        elif ops:
            short.append(ops[-1].removesuffix(" conv"))
        else:
            short.append(child)
    return [Branch(name=child, label=label if short.count(label) == 1 else f"{label} ({child})",
                   ops=", ".join(_ops(module)) or type(module).__name__, start=start, stop=stop)
            for (child, module, start, stop), label in zip(spans, short)]
