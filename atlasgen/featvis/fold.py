"""BatchNorm folded into the convolution that feeds it, for the length of a visualization.

In eval mode a BatchNorm is a fixed per-channel affine map, so convolution -> BatchNorm is one
convolution with scaled weights and a shifted bias. Folding removes the BatchNorm's forward and
backward passes from every optimization step (about a sixth of a GoogLeNet step on CPU).

Which BatchNorm reads which convolution is observed, not guessed from module names: a probe pass
records every convolution's output tensor and every BatchNorm's input tensor, and pairs them
when they are the same tensor. The folded model's output is then compared with the original's on
the probe; any difference (a convolution output that something else also reads, a subclass
that computes differently) undoes the fold. The caller's modules and parameters come back on exit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from atlasgen.featvis.device import backend_flags
from atlasgen.hooks import forward_layers

log = logging.getLogger(__name__)

# Largest difference of the folded layer output from the original, relative to its largest
# value, accepted as rounding (float32: folding changes the order of a few products).
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Pair:
    conv: nn.Conv2d
    parent: nn.Module  # the module holding the BatchNorm
    attribute: str  # the BatchNorm's name in its parent
    bn: nn.BatchNorm2d


def _foldable_conv(module: nn.Module) -> bool:
    return (type(module).forward is nn.Conv2d.forward and isinstance(module, nn.Conv2d)
            and not module._forward_pre_hooks and not torch.nn.utils.parametrize.is_parametrized(module))


def _foldable_bn(module: nn.Module) -> bool:
    return (type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm) and not module.training
            and module.running_mean is not None and not module._forward_hooks and not module._forward_pre_hooks)


def conv_bn_pairs(model: nn.Module, layer: str, probe: torch.Tensor) -> tuple[list[Pair], torch.Tensor]:
    """The (convolution, BatchNorm) pairs where the BatchNorm reads the convolution's output,
    among the modules that run up to `layer`; and the layer's output on `probe`."""
    modules = dict(model.named_modules())
    outputs: dict[int, tuple[str, torch.Tensor, int]] = {}  # id -> (conv name, tensor kept alive, version)
    calls: dict[str, int] = {}
    reads: dict[str, tuple[int, int]] = {}  # BatchNorm name -> id and version of its input

    def conv_hook(name: str):
        def hook(_module, _args, output):
            calls[name] = calls.get(name, 0) + 1
            outputs[id(output)] = (name, output, output._version)
        return hook

    def bn_hook(name: str):
        def hook(_module, args):
            calls[name] = calls.get(name, 0) + 1
            x = args[0] if args else None
            reads[name] = (id(x), x._version) if isinstance(x, torch.Tensor) else (-1, -1)
        return hook

    handles = []
    for name, module in modules.items():
        if _foldable_conv(module):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif _foldable_bn(module):
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    try:
        reference = forward_layers(model, probe, [layer])[layer]
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for bn_name, (read, version) in reads.items():
        conv_name, _, written = outputs.get(read, (None, None, None))
        # An in-place op between the two (a ReLU) means the BatchNorm reads something else.
        if conv_name is None or version != written or calls[conv_name] != 1 or calls[bn_name] != 1 or bn_name == layer:
            continue
        parent_name, _, attribute = bn_name.rpartition(".")
        pairs.append(Pair(modules[conv_name], modules[parent_name], attribute, modules[bn_name]))
    return pairs, reference


@contextmanager
def folded_batchnorm(model: nn.Module, layer: str, probe: torch.Tensor) -> Iterator[torch.Tensor]:
    """Within the block, every foldable BatchNorm before `layer` is folded into its convolution;
    the model is restored afterwards, also on errors. Yields the layer's output on `probe`."""
    with torch.no_grad(), _exact_float32():
        pairs, reference = conv_bn_pairs(model, layer, probe)
    saved = [(p.conv.weight, p.conv.bias) for p in pairs]
    try:
        for pair in pairs:
            _fold(pair)
        if pairs and not _same(model, layer, probe, reference):
            log.info("folding BatchNorm changed %s's output; visualizing without folding", layer)
            _restore(pairs, saved)
            pairs, saved = [], []
        log.debug("%d BatchNorm(s) folded before %s", len(pairs), layer)
        yield reference
    finally:
        _restore(pairs, saved)


def _fold(pair: Pair) -> None:
    conv, bn = pair.conv, pair.bn
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
    conv.weight, conv.bias = weight.requires_grad_(False), bias.requires_grad_(False)
    setattr(pair.parent, pair.attribute, nn.Identity())


def _restore(pairs: list[Pair], saved: list[tuple[nn.Parameter, nn.Parameter | None]]) -> None:
    for pair, (weight, bias) in zip(pairs, saved):
        pair.conv.weight, pair.conv.bias = weight, bias
        setattr(pair.parent, pair.attribute, pair.bn)


def _exact_float32():
    """No TF32 for the block: on by default for cuDNN's convolutions, it keeps 10 mantissa bits,
    and its rounding alone would exceed TOLERANCE and undo every fold on a GPU."""
    return backend_flags((torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False))


def _same(model: nn.Module, layer: str, probe: torch.Tensor, reference: torch.Tensor) -> bool:
    with torch.no_grad(), _exact_float32():
        folded = forward_layers(model, probe, [layer])[layer]
    scale = reference.abs().max().clamp_min(torch.finfo(reference.dtype).tiny)
    return folded.shape == reference.shape and bool(((folded - reference).abs().max() / scale) <= TOLERANCE)
