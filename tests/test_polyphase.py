"""The polyphase input gradient of strided image convolutions: the same gradient, only where safe."""

import pytest
import torch
from torch import nn

from atlasgen.featvis.polyphase import eligible, polyphase_convolutions

CPU = torch.device("cpu")

GEOMETRIES = [  # kernel, stride, padding, in channels, input height, width
    (7, 2, 3, 3, 32, 32),  # GoogLeNet's and ResNet's stem
    (7, 2, 3, 3, 19, 14),  # odd sizes: the last rows reach no window
    (16, 16, 0, 3, 48, 32),  # a ViT patch embedding
    (5, 2, 2, 1, 17, 16),  # grey input
    (4, 3, 0, 3, 29, 31),  # stride not dividing the kernel
    ((5, 4), (2, 3), (2, 1), 3, 20, 21),  # rectangular everything
    (11, 4, 2, 4, 35, 35),  # AlexNet-like, RGBA
]


@pytest.mark.parametrize("kernel, stride, padding, channels, h, w", GEOMETRIES)
def test_gradient_matches_autograd(kernel, stride, padding, channels, h, w):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 8, kernel, stride, padding).double().requires_grad_(False)
    x = torch.randn(2, channels, h, w, dtype=torch.double, requires_grad=True)
    grad_out = torch.randn_like(conv(x))
    expected, = torch.autograd.grad(conv(x), x, grad_out)
    with polyphase_convolutions(conv, CPU) as rewritten:
        out = conv(x)
        got, = torch.autograd.grad(out, x, grad_out)
    assert rewritten == 1
    assert torch.equal(out, conv(x))  # the forward pass is untouched
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_channels_last_bf16_autocast_gives_a_float32_gradient_close_to_autograd():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 16, 7, 2, 3).requires_grad_(False)
    x = torch.randn(4, 3, 40, 40).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grad_out = torch.randn_like(conv(x))
        expected, = torch.autograd.grad(conv(x), x, grad_out)
        with polyphase_convolutions(conv, CPU):
            got, = torch.autograd.grad(conv(x), x, grad_out)
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected.float(), rtol=0.02, atol=0.02 * expected.abs().max().item())


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 8, 3, 1, 1),  # stride 1: oneDNN's own backward is fine
    nn.Conv2d(3, 32, 3, 2, 1),  # EfficientNet's and InceptionV3's 3x3 stride-2 stems: no faster
    nn.Conv2d(16, 8, 5, 2, 1),  # a feature map, not an image
    nn.Conv2d(4, 8, 5, 2, 1, groups=2),
    nn.Conv2d(3, 8, 5, 2, 2, dilation=2),
    nn.Conv2d(3, 8, 5, 2, 1, padding_mode="reflect"),
])
def test_other_convolutions_are_left_alone(conv):
    conv.requires_grad_(False)
    assert not eligible(conv)


def test_trainable_weights_keep_autograd():
    """The rewrite computes no weight gradient, so a convolution still being trained keeps its own."""
    assert not eligible(nn.Conv2d(3, 8, 7, 2, 3))


def test_restored_afterwards_also_on_errors_and_untouched_off_cpu():
    model = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.ReLU(), nn.Conv2d(8, 8, 5, 2, 1)).requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with polyphase_convolutions(model, CPU) as rewritten:
            assert rewritten == 1 and "forward" in vars(model[0]) and "forward" not in vars(model[2])
            raise RuntimeError("boom")
    assert "forward" not in vars(model[0]) and not hasattr(model[0], "polyphase")
    with polyphase_convolutions(model, torch.device("cuda")) as rewritten:
        assert rewritten == 0 and "forward" not in vars(model[0])


def test_no_grad_forward_takes_the_plain_path():
    conv = nn.Conv2d(3, 8, 7, 2, 3).requires_grad_(False)
    x = torch.randn(1, 3, 16, 16)
    with polyphase_convolutions(conv, CPU), torch.no_grad():
        assert conv(x).grad_fn is None
        assert torch.equal(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, 2, 3))


def test_backward_after_the_block_ended_uses_what_the_forward_pass_saw():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, 7, 2, 3).double().requires_grad_(False)
    x = torch.randn(1, 3, 20, 20, dtype=torch.double, requires_grad=True)
    expected, = torch.autograd.grad(conv(x).sum(), x)
    with polyphase_convolutions(conv, CPU):
        out = conv(x)
    got, = torch.autograd.grad(out.sum(), x)
    assert out.grad_fn.name() == "_PolyphaseConvBackward"
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
