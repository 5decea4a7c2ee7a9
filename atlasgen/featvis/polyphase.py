"""The image gradient of a strided convolution on few channels, as one stride-1 convolution.

Every optimization step ends by taking the gradient to the image through the network's first
convolution (GoogLeNet's and ResNet's 7x7 stride-2 stem, a ViT's patch embedding). On CPU,
oneDNN computes that transposed convolution with 3 output channels at a third of its forward
rate: the stem's backward pass was a fifth of a GoogLeNet inception3a step at 128 px.

Split the image into its stride x stride phases (even/odd rows and columns for stride 2): each
phase of the input gradient is a stride-1 convolution of the output gradient with a sub-kernel
of the weights. All phases at once are one convolution with 3 x stride^2 output channels,
followed by a pixel shuffle that interleaves the phases back into an image. Same products, added
in another order: about 2x faster for a 7x7 stride-2 stem, 4-7x for a ViT's patch embedding
(`benchmarks/polyphase_stems.py`).

Used on CPU only, where it was measured; cuDNN has its own kernels for this case.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Convolutions reading at most this many channels are rewritten: an image's 3 (or 1, or 4).
MAX_IN_CHANNELS = 4
# Smaller windows are left to autograd, whose gradient is no slower there: 3x3 stride-2 stems
# gained 1.02-1.05x at 224 px and lost at 299 px (0.66-0.75x); 4x4 and larger gained 1.4-8.5x
# (benchmarks/polyphase_stems.py).
MIN_KERNEL_AREA = 16


@dataclass(frozen=True)
class Geometry:
    """One spatial dimension of a convolution: stride, padding, kernel size; and the taps of
    the polyphase kernel with the index of the weight each (phase, tap) uses (`kernel` = a zero)."""

    stride: int
    padding: int
    kernel: int

    @property
    def first_offset(self) -> int:
        """Smallest d with a weight: output position i + d feeds input phase position i."""
        return -((self.kernel - 1 - self.padding) // self.stride)

    @property
    def taps(self) -> int:
        return (self.stride - 1 + self.padding) // self.stride - self.first_offset + 1

    @functools.cached_property
    def weight_index(self) -> torch.Tensor:
        """(stride, taps) index into the weight padded by one zero at `kernel` (built once: the
        backward pass of every step reads it)."""
        index = torch.full((self.stride, self.taps), self.kernel, dtype=torch.long)
        for phase in range(self.stride):
            for tap in range(self.taps):
                k = phase + self.padding - self.stride * (tap + self.first_offset)
                if 0 <= k < self.kernel:
                    index[phase, tap] = k
        return index

    def pads(self, out_size: int, in_size: int) -> tuple[int, int]:
        """Zero padding (negative: cropping) of the output gradient before the stride-1 convolution."""
        rows = math.ceil(in_size / self.stride)
        left = -self.first_offset
        return left, rows + self.taps - 1 - out_size - left


class _PolyphaseConv(torch.autograd.Function):
    """conv2d forward; the input's gradient by the polyphase convolution; no weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        # What the backward pass needs, taken now: the block may have ended by then.
        ctx.weight, ctx.geometry, ctx.in_size, ctx.dtype = conv.weight, conv.polyphase, x.shape[-2:], x.dtype
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (gh, gw), (h, w) = ctx.geometry, ctx.in_size
        kernel = polyphase_kernel(ctx.weight, gh, gw).to(grad.dtype)
        padded = F.pad(grad, (*gw.pads(grad.shape[-1], w), *gh.pads(grad.shape[-2], h)))
        phases = F.conv2d(padded, kernel.contiguous(memory_format=_format(grad)))
        n, _, rows, cols = phases.shape
        image = phases.view(n, -1, gh.stride, gw.stride, rows, cols).permute(0, 1, 4, 2, 5, 3)
        image = image.reshape(n, -1, rows * gh.stride, cols * gw.stride)[:, :, :h, :w]
        return image.to(ctx.dtype).contiguous(memory_format=_format(grad)), None


def polyphase_kernel(weight: torch.Tensor, gh: Geometry, gw: Geometry) -> torch.Tensor:
    """(in_channels x sh x sw, out_channels, taps_h, taps_w): for each input channel and phase,
    the weights that reach it, flipped into a stride-1 correlation over the output gradient."""
    padded = F.pad(weight, (0, 1, 0, 1))  # index `kernel` reads a zero
    rows, cols = gh.weight_index.to(weight.device), gw.weight_index.to(weight.device)
    taps = padded[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # (O, C, sh, th, sw, tw)
    out_channels, in_channels = weight.shape[:2]
    return taps.permute(1, 2, 4, 0, 3, 5).reshape(in_channels * gh.stride * gw.stride, out_channels, gh.taps, gw.taps)


def _format(t: torch.Tensor) -> torch.memory_format:
    """The layout of `t`, to give the gradient the layout of what it came from."""
    channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def geometry(conv: nn.Conv2d) -> tuple[Geometry, Geometry]:
    return tuple(Geometry(s, p, k) for s, p, k in zip(conv.stride, conv.padding, conv.kernel_size))


def eligible(module: nn.Module) -> bool:
    """A plain strided convolution with a window of 16 pixels or more reading an image-like
    input, with frozen weights."""
    return (type(module) is nn.Conv2d and module.groups == 1 and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and max(module.stride) > 1 and module.in_channels <= MAX_IN_CHANNELS
            and module.kernel_size[0] * module.kernel_size[1] >= MIN_KERNEL_AREA
            and not module.weight.requires_grad)


def _forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled() or not x.requires_grad:
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    return _PolyphaseConv.apply(x, conv)


@contextmanager
def polyphase_convolutions(model: nn.Module, device: torch.device) -> Iterator[int]:
    """Within the block, every eligible convolution of `model` takes its input gradient by the
    polyphase convolution (on CPU; elsewhere nothing changes). Yields how many were rewritten."""
    convs = [m for m in model.modules() if eligible(m)] if device.type == "cpu" else []
    for conv in convs:
        conv.polyphase = geometry(conv)
        conv.forward = _forward.__get__(conv)  # an instance attribute: the class stays untouched
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward, conv.polyphase
