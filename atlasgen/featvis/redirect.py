"""Lucid's redirected ReLU gradient, for channels that start dead.

A channel behind a ReLU can be zero everywhere on the initial image: its gradient is then zero
and plain optimization never moves (grey images: lucid #68, lucent #34). While the context
manager is active, every ReLU lets a gradient through where it would *raise* a negative
pre-activation, but only for the images of the batch whose ordinary ReLU gradient is all zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


class RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return redirected_gradient(x, grad, shortcuts=grad.device.type == "cpu")


def redirected_gradient(x: torch.Tensor, grad: torch.Tensor, shortcuts: bool) -> torch.Tensor:
    """The plain ReLU gradient for images it reaches, the redirected one for the others.
    `shortcuts` skips work when no image (or every image) is dead, which asks the device; on a
    GPU that is a host synchronization per ReLU per step, so there every image takes the
    `torch.where` instead. Both give the same gradient."""
    relu_grad = torch.ops.aten.threshold_backward(grad, x, 0)  # plain ReLU's gradient, one fused pass
    # An image's gradient norm is 0: one reduction over the image's dimensions (reshaping
    # channels-last gradients to rows would copy them, 20x slower on CPU). Its squares underflow
    # only where every |gradient| is below about 1e-22: such an image counts as dead.
    dims = tuple(range(1, x.dim()))
    dead = torch.linalg.vector_norm(relu_grad, dim=dims) == 0 if dims else (relu_grad == 0).reshape(1)
    if shortcuts and not bool(dead.any()):  # the common case once the images are alive: plain ReLU
        return relu_grad
    # Gradient descent moves x by -grad: grad > 0 would push a negative x further down.
    redirected = grad.masked_fill((x < 0) & (grad > 0), 0)
    if shortcuts and bool(dead.all()):
        return redirected
    return torch.where(dead.reshape((-1,) + (1,) * (x.dim() - 1)), redirected, relu_grad)


def redirected_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for `F.relu`; `inplace` is ignored (callers use the returned tensor)."""
    return RedirectedReLU.apply(x)


@contextmanager
def redirect_relu_gradients(active: bool = True) -> Iterator[None]:
    """Swap `F.relu`, `torch.relu` and `Tensor.relu` for the redirected version while active.

    `nn.ReLU` modules and torchvision's `F.relu(x, inplace=True)` both look `F.relu` up at call
    time, so this covers them. Not thread-safe: it patches module attributes for its duration.
    """
    if not active:
        yield
        return
    saved = (F.relu, torch.relu, torch.Tensor.relu)
    F.relu = redirected_relu
    torch.relu = redirected_relu
    torch.Tensor.relu = redirected_relu
    try:
        yield
    finally:
        F.relu, torch.relu, torch.Tensor.relu = saved
