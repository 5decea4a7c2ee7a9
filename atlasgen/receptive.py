"""Exact receptive fields of any layer, branching models included.

Method: run the model up to the layers under a `TorchFunctionMode` that turns it into a
*positive linear map with the same geometry* (convolutions with positive constant
weights and no bias, max pooling as average pooling with the same window, activations,
normalization and dropout as identity), in float64, and backpropagate from single units
to the input. Every path from an input pixel to the unit then contributes a positive
amount, so nothing cancels and the support of the gradient (> 0) is exactly the unit's
field, whatever the topology (concatenated branches, residual adds, ceil-mode pools).

Two operations are read by what they do to geometry: a squeeze-and-excitation gate (a
per-channel scale computed from the whole map) counts as a gate of ones, and attention as every
position seeing every other one, so a transformer's units see the whole input after its first
attention block.

Channels never change geometry, so by default every convolution also collapses its
input channels to one ("geometry mode"): the probe then costs almost nothing even for
ResNet-50 at several times its input size. Models whose forward depends on channel
counts (channel shuffle, reshapes into heads) fail in that mode and are probed again
with all channels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from atlasgen.hooks import forward_layers

log = logging.getLogger(__name__)

# Probe sizes tried, as multiples of the model's input size, until every edge of a
# layer's field has been seen away from the input border.
PROBE_SCALES = (1, 2, 4)


@dataclass(frozen=True)
class ReceptiveField:
    size: tuple[int, int]  # (h, w) of one unit's field in input pixels, unclipped
    stride: tuple[int, int]  # input pixels between neighbouring units
    offset: tuple[int, int]  # (top, left) of unit (0, 0)'s field; may be negative
    covers_input: bool  # a central unit's field does not fit inside the input (clipped at the border)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (row, col)'s field, exclusive end, unclipped."""
        top = self.offset[0] + row * self.stride[0]
        left = self.offset[1] + col * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]


# --- the positive linear twin of a network -------------------------------------------

_IDENTITY_FUNCS = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
    F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.Tensor.sigmoid,
    F.tanh, torch.tanh, torch.Tensor.tanh, F.softplus, F.prelu, F.rrelu,
    F.batch_norm, F.instance_norm, F.layer_norm, F.group_norm, F.local_response_norm,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
}
_CONV_FUNCS = {F.conv1d: F.conv1d, F.conv2d: F.conv2d, F.conv3d: F.conv3d}
_CONV_T_FUNCS = {F.conv_transpose1d: F.conv_transpose1d, F.conv_transpose2d: F.conv_transpose2d,
                 F.conv_transpose3d: F.conv_transpose3d}
_MAX_POOLS = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_ADAPTIVE_MAX_POOLS = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                       F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                       F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


_MULTIPLY = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_,
             torch.Tensor.__imul__}


def _is_constant(t) -> bool:
    return isinstance(t, torch.Tensor) and (isinstance(t, nn.Parameter) or not t.requires_grad)


def _depends_on_input(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and not isinstance(t, nn.Parameter)


def _geometric_factors(a, b) -> tuple:
    """The operands of a product, made positive and geometric. A map multiplied by a per-channel gate computed from the whole map (squeeze-and-excitation:
    (N, C, 1, 1) times (N, C, H, W)) is treated as the map alone: the gate rescales what a unit
    sees, it does not widen it. Without this, every unit after the first SE block would "see"
    the whole image through the global pooling, and its patches would be the whole image. (A
    gate of ones, not the twin's gate: multiplying the twin's map by its own mean at every
    block squares its values until they overflow.)"""
    # A learned scale (ConvNeXt's layer_scale) may be negative: its size, not its sign, keeps positivity.
    if _is_constant(a) and _depends_on_input(b):
        return a.abs(), b
    if _is_constant(b) and _depends_on_input(a):
        return a, b.abs()
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == b.dim() == 4:
        if a.shape[-2:] == (1, 1) and b.shape[-2:] != (1, 1):
            return torch.ones_like(a), b
        if b.shape[-2:] == (1, 1) and a.shape[-2:] != (1, 1):
            return a, torch.ones_like(b)
    return a, b


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class _PositiveGeometry(TorchFunctionMode):
    """Replaces the ops that could cancel or gate by positive linear ops of the same geometry."""

    def __init__(self, collapse_channels: bool):
        super().__init__()
        self.collapse = collapse_channels

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _IDENTITY_FUNCS:
            return args[0] if args else kwargs["input"]
        if func in _CONV_FUNCS:
            return self._conv(func, args, kwargs, transposed=False)
        if func in _CONV_T_FUNCS:
            return self._conv(func, args, kwargs, transposed=True)
        if func in _MAX_POOLS:
            return self._max_pool(func, args, kwargs)
        if func in _ADAPTIVE_MAX_POOLS:
            return _ADAPTIVE_MAX_POOLS[func](args[0], _arg(args, kwargs, 1, "output_size"))
        if func is F.linear:
            return self._linear(args, kwargs)
        if func in _MULTIPLY and len(args) == 2:
            return func(*_geometric_factors(*args), **kwargs)
        if func is F.multi_head_attention_forward:  # (L, N, E) query, key, value
            query, value = args[0], args[2]
            return value.mean(dim=0, keepdim=True).expand(query.shape[0], *value.shape[1:]), None
        if func is F.scaled_dot_product_attention:  # (..., L, E) query, key, value
            query, value = args[0], args[2]
            return value.mean(dim=-2, keepdim=True).expand(*query.shape[:-1], value.shape[-1])
        return func(*args, **kwargs)

    def _conv(self, func, args, kwargs, transposed: bool):
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        stride = _arg(args, kwargs, 3, "stride", 1)
        padding = _arg(args, kwargs, 4, "padding", 0)
        if transposed:
            output_padding = _arg(args, kwargs, 5, "output_padding", 0)
            groups = _arg(args, kwargs, 6, "groups", 1)
            dilation = _arg(args, kwargs, 7, "dilation", 1)
        else:
            dilation = _arg(args, kwargs, 5, "dilation", 1)
            groups = _arg(args, kwargs, 6, "groups", 1)
        kernel = tuple(weight.shape[2:])
        if self.collapse:
            x = x.sum(dim=1, keepdim=True)
            w = torch.full((1, 1, *kernel), 1.0 / max(1, torch.Size(kernel).numel()), dtype=x.dtype, device=x.device)
            groups = 1
        else:
            w = torch.full(weight.shape, 1.0 / weight[0].numel(), dtype=x.dtype, device=x.device)
        if transposed:
            return func(x, w, None, stride, padding, output_padding, groups, dilation)
        return func(x, w, None, stride, padding, dilation, groups)

    def _max_pool(self, func, args, kwargs):
        x = args[0]
        kernel = _arg(args, kwargs, 1, "kernel_size")
        stride = _arg(args, kwargs, 2, "stride") or kernel
        padding = _arg(args, kwargs, 3, "padding", 0)
        dilation = _arg(args, kwargs, 4, "dilation", 1)
        ceil_mode = _arg(args, kwargs, 5, "ceil_mode", False)
        if _arg(args, kwargs, 6, "return_indices", False):
            raise NotImplementedError("max pooling with return_indices")
        if any(d != 1 for d in _as_tuple(dilation, 1)):
            raise NotImplementedError("dilated max pooling")
        # count_include_pad keeps the divisor constant, so padded borders stay positive and geometric.
        return _MAX_POOLS[func](x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)

    def _linear(self, args, kwargs):
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        if not _depends_on_input(x):  # a table computed from buffers (Swin v2's position-bias MLP)
            bias = _arg(args, kwargs, 2, "bias")
            return F.linear(x.to(weight.dtype), weight, bias)
        # Geometry mode keeps one feature (ConvNeXt's and Swin's MLPs would otherwise bring
        # every channel back at each block); a model that needs the true count fails and is
        # probed again with all channels.
        out_features = 1 if self.collapse else weight.shape[0]
        mean = x.mean(dim=-1, keepdim=True)
        return mean.expand(*x.shape[:-1], out_features)


def _as_tuple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * max(1, n)


# --- probing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """Support boxes of a few units of one layer at one input size."""

    input_size: int
    map_size: tuple[int, int]
    units: tuple[tuple[int, int], ...]  # (row, col) per probed unit
    supports: tuple[tuple[int, int, int, int], ...]  # (top, left, bottom, right) per unit, clipped to input


def _probe_units(height: int, width: int) -> list[tuple[int, int]]:
    """Centre first, then its neighbour and the four corners' closest units (distinct)."""
    rows = [height // 2, min(height // 2 + 1, height - 1), 0, min(1, height - 1), height - 1, max(height - 2, 0)]
    cols = [width // 2, min(width // 2 + 1, width - 1), 0, min(1, width - 1), width - 1, max(width - 2, 0)]
    return list(dict.fromkeys(zip(rows, cols)))


def support_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a 2-D mask's true cells; all zeros when there are none."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return 0, 0, 0, 0
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _run_probes(model: nn.Module, layers: Sequence[str], input_size: int, device: torch.device,
                collapse: bool) -> dict[str, _Probe]:
    # One sample per probed unit: samples are independent (normalization is identity), so a
    # single backward pass per layer gives every unit's support at once.
    max_units = 6
    x = torch.ones(max_units, 3, input_size, input_size, dtype=torch.float64, device=device, requires_grad=True)
    with torch.enable_grad(), _PositiveGeometry(collapse):
        outputs = forward_layers(model, x, layers)
    probes = {}
    for i, name in enumerate(layers):
        out = outputs[name]
        if out.dim() == 2:  # (B, C): a single unit seeing everything
            out = out[:, :, None, None]
        if out.dim() != 4:
            raise NotImplementedError(f"layer output of {out.dim()} dimensions")
        height, width = out.shape[-2:]
        units = _probe_units(height, width)
        target = sum(out[b, :, r, c].sum() for b, (r, c) in enumerate(units))
        (grad,) = torch.autograd.grad(target, x, retain_graph=i < len(layers) - 1)
        mask = grad.amax(dim=1) > 0  # the map is positive: no cancellation, no negative gradient
        supports = tuple(support_box(mask[b]) for b in range(len(units)))
        probes[name] = _Probe(input_size, (height, width), tuple(units), supports)
    return probes


def _solve_axis(probe: _Probe, axis: int) -> tuple[int | None, int | None, int | None]:
    """(stride, offset, size) along one axis from edges not touching the input border; None if unseen."""
    n = probe.input_size
    index = [u[axis] for u in probe.units]
    start = [s[axis] for s in probe.supports]
    end = [s[axis + 2] for s in probe.supports]
    stride = None
    if probe.map_size[axis] == 1:
        stride = n  # a single unit: no neighbour; any value keeps box() right for unit 0
    for edges, free in ((start, [s > 0 for s in start]), (end, [e < n for e in end])):
        for a in range(len(index)):
            for b in range(len(index)):
                if stride is None and index[b] > index[a] and free[a] and free[b]:
                    stride = (edges[b] - edges[a]) // (index[b] - index[a])
    # Neighbours that see the same pixels (windowed attention) have no field that moves with them.
    if stride is None or stride <= 0:
        return None, None, None
    offsets = {start[a] - index[a] * stride for a in range(len(index)) if start[a] > 0}
    ends = {end[a] - index[a] * stride for a in range(len(index)) if end[a] < n}
    if len(offsets) > 1 or len(ends) > 1:  # border units of ceil-mode pools see less
        log.debug("receptive field differs at the border (offsets %s, ends %s); using the centre's",
                  sorted(offsets), sorted(ends))
    offset = start[0] - index[0] * stride if start[0] > 0 else (min(offsets) if offsets else None)
    end0 = end[0] - index[0] * stride if end[0] < n else (max(ends) if ends else None)
    if offset is None or end0 is None:
        return stride, None, None
    return stride, offset, end0 - offset


def _centre_clipped(probe: _Probe) -> bool:
    top, left, bottom, right = probe.supports[0]
    n = probe.input_size
    return top == 0 or left == 0 or bottom == n or right == n


def _field_from_probes(probes: list[_Probe], covers_input: bool) -> ReceptiveField | None:
    for probe in probes:
        rows, cols = _solve_axis(probe, 0), _solve_axis(probe, 1)
        if None not in rows and None not in cols:
            return ReceptiveField(size=(rows[2], cols[2]), stride=(rows[0], cols[0]),
                                  offset=(rows[1], cols[1]), covers_input=covers_input)
    return None


def _clipped_field(probe: _Probe) -> ReceptiveField:
    """Fallback when the field never fits in any probe: what the centre unit sees at the input size."""
    top, left, bottom, right = probe.supports[0]
    rows, cols = _solve_axis(probe, 0), _solve_axis(probe, 1)
    # No two units' edges were seen inside the input: the stride is the input's size over the map's.
    stride = (rows[0] or max(1, round(probe.input_size / probe.map_size[0])),
              cols[0] or max(1, round(probe.input_size / probe.map_size[1])))
    centre = probe.units[0]
    offset = (top - centre[0] * stride[0], left - centre[1] * stride[1])
    return ReceptiveField(size=(bottom - top, right - left), stride=stride, offset=offset, covers_input=True)


def receptive_fields(model: nn.Module, layers: Sequence[str], input_size: int,
                     device: torch.device | None = None) -> dict[str, ReceptiveField]:
    """Exact receptive field of every named layer for square inputs of `input_size` pixels.

    `covers_input` is judged at `input_size`; the unclipped `size` and `offset` come from
    the smallest probe (1x, 2x, 4x the input size) where every edge of the field is seen
    inside the input. Fields that never fit (global pooling, fully connected layers, models
    that only accept their own input size) keep the extent seen at `input_size`.
    `device` defaults to the device of the model's parameters.
    """
    layers = list(dict.fromkeys(layers))
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return _probe_all(model, layers, input_size, device)
    finally:
        for module, training in was_training.items():
            module.training = training


def _probe_all(model: nn.Module, layers: list[str], input_size: int,
               device: torch.device) -> dict[str, ReceptiveField]:
    collapse = True
    try:
        base = _run_probes(model, layers, input_size, device, collapse=True)
    except Exception as exc:  # noqa: BLE001 - any model code may trip over one channel
        log.info("geometry-only probe failed (%s: %s); probing with every channel", type(exc).__name__, exc)
        collapse = False
        base = _run_probes(model, layers, input_size, device, collapse=False)
    probes = {name: [base[name]] for name in layers}
    # Probing every channel at 2x and 4x the input takes minutes and gigabytes for a transformer:
    # fields that do not fit at the input size are then reported as covering it.
    scales = PROBE_SCALES if collapse else PROBE_SCALES[:1]
    fields: dict[str, ReceptiveField] = {}
    # A single unit seeing the whole input (global pooling, fully connected) sees all of any larger input too.
    unbounded = {name for name in layers if base[name].map_size == (1, 1) and _centre_clipped(base[name])}
    for scale in scales:
        if scale > 1:
            pending = [name for name in layers if name not in fields and name not in unbounded]
            if not pending:
                break
            try:
                larger = _run_probes(model, pending, input_size * scale, device, collapse=collapse)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                log.info("model does not accept %d px inputs (%s); fields larger than the input stay clipped",
                         input_size * scale, exc)
                break
            for name in pending:
                probes[name].append(larger[name])
        for name in layers:
            if name not in fields:
                field = _field_from_probes(probes[name][-1:], _centre_clipped(base[name]))
                if field is not None:
                    fields[name] = field
    for name in layers:
        if name not in fields:
            fields[name] = _clipped_field(base[name])
    return fields
