"""The blur follows the unit's field: none for a unit that sees a few pixels, whose optimum is
a pixel pattern that blur would keep it from reaching."""

from collections import OrderedDict

import torch
from torch import nn

from atlasgen.demo.net import DEMO_MEAN, DEMO_STD, build_demo_model
from atlasgen.featvis.field import FULL_BLUR_FIELD, NO_BLUR_FIELD, blur_scale, field_side, pixel_scale
from atlasgen.featvis.optimize import visualize_channels
from atlasgen.hooks import forward_layers
from atlasgen.settings import Preprocess, VisSettings

CENTRED = Preprocess(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class GlobalMix(nn.Module):
    """Adds the image-wide mean to every position, as attention lets every position read all."""

    def forward(self, x):
        return x + x.mean(dim=(2, 3), keepdim=True)


def _net(*modules: tuple[str, nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(modules)).eval()


def test_field_side_matches_the_convolutions():
    probe = torch.rand(1, 3, 24, 24)
    net = _net(("a", nn.Conv2d(3, 4, 3, padding=1)), ("b", nn.Conv2d(4, 4, 3, padding=1)),
               ("c", nn.Conv2d(4, 4, 3, stride=2, padding=1)), ("g", GlobalMix()))
    assert field_side(net, "a", probe) == 3
    assert field_side(net, "b", probe) == 5
    assert field_side(net, "c", probe) == 7
    assert field_side(net, "g", probe) == 24


def test_blur_scale_fades_in_with_the_field():
    assert blur_scale(3) == 0.0 and blur_scale(NO_BLUR_FIELD) == 0.0
    assert 0.0 < blur_scale((NO_BLUR_FIELD + FULL_BLUR_FIELD) // 2) < 1.0
    assert blur_scale(FULL_BLUR_FIELD) == 1.0 and blur_scale(200) == 1.0
    # the units without blur are those whose last octave runs without random views
    assert pixel_scale(3) and pixel_scale(NO_BLUR_FIELD) and not pixel_scale(NO_BLUR_FIELD + 1)


def _exact_optima(first, size: int, channels: list[int], value, preprocess: Preprocess = CENTRED) -> list[float]:
    """A first convolution (and batch norm) `first` is affine in the image, so the exact maximum
    over [0, 1] images of an affine read-out `value(acts, channel)` is value(0) + sum(max(gradient, 0))."""
    x = torch.rand(1, 3, size, size, requires_grad=True)
    mean, std = torch.tensor(preprocess.mean).view(1, 3, 1, 1), torch.tensor(preprocess.std).view(1, 3, 1, 1)
    optima = []
    for c in channels:
        (grad,) = torch.autograd.grad(value(first((x - mean) / std), c), x)
        with torch.no_grad():
            base = value(first((torch.zeros(1, 3, size, size) - mean) / std), c)
        optima.append(float(base + grad.clamp_min(0).sum()))
    return optima


def test_first_layer_neuron_reaches_its_exact_optimum():
    net = _net(("conv", nn.Conv2d(3, 4, 3, padding=1)))
    size, channels = 24, [0, 1, 2, 3]
    optima = _exact_optima(net, size, channels, lambda acts, c: acts[0, c, size // 2, size // 2])
    settings = VisSettings(objectives=("neuron",), size=size, steps=128)
    result = visualize_channels(net, "conv", channels, settings, CENTRED, torch.device("cpu"))
    reached = [a / o for a, o in zip(result.activation["neuron"], optima)]
    assert min(reached) >= 0.9, reached


def test_first_layer_channel_reaches_its_exact_optimum():
    # The demo's conv1 (convolution and batch norm: affine in the image) at 32 px. A channel's
    # spatial mean peaks on a flat colour (the sign of each colour's weight sum) with the
    # zero-padded border's own pattern. Under a sigmoid squash, patches that saturated early stayed
    # at the wrong colour (7 of 16 channels under 0.9 of the optimum, the worst 0.61); the clamp's
    # gradient pulls them back (all 16 from 0.915, in float32 and in bf16).
    model = build_demo_model()
    size, channels = 32, list(range(16))
    preprocess = Preprocess(input_size=size, mean=DEMO_MEAN, std=DEMO_STD)
    conv1 = lambda x: forward_layers(model, x, ["conv1"])["conv1"]  # noqa: E731
    optima = _exact_optima(conv1, size, channels, lambda acts, c: acts[0, c].mean(), preprocess)
    assert min(optima) > 0.5  # a ratio to a maximum near 0 would say little
    settings = VisSettings(objectives=("channel",), size=size)  # the default steps
    result = visualize_channels(model, "conv1", channels, settings, preprocess, torch.device("cpu"))
    reached = [a / o for a, o in zip(result.activation["channel"], optima)]
    assert min(reached) >= 0.9, reached
