"""The blur follows the unit's field: none for a unit that sees a few pixels, whose optimum is
a pixel pattern that blur would keep it from reaching."""

from collections import OrderedDict

import torch
from torch import nn

from atlasgen.featvis.field import FULL_BLUR_FIELD, NO_BLUR_FIELD, blur_scale, field_side
from atlasgen.featvis.optimize import visualize_channels
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


def test_first_layer_neuron_reaches_its_exact_optimum():
    # One convolution on the input: the centre unit is affine in the image, so its exact maximum
    # over [0, 1] images is value(0) + sum(max(gradient, 0)).
    net = _net(("conv", nn.Conv2d(3, 4, 3, padding=1)))
    size, channels = 24, [0, 1, 2, 3]
    x = torch.rand(1, 3, size, size, requires_grad=True)
    normalize = lambda img: (img - 0.5) / 0.5  # noqa: E731 - CENTRED's preprocessing
    optima = []
    for c in channels:
        (grad,) = torch.autograd.grad(net(normalize(x))[0, c, size // 2, size // 2], x)
        with torch.no_grad():
            base = net(normalize(torch.zeros(1, 3, size, size)))[0, c, size // 2, size // 2]
        optima.append(float(base + grad.clamp_min(0).sum()))
    settings = VisSettings(objectives=("neuron",), size=size, steps=128)
    result = visualize_channels(net, "conv", channels, settings, CENTRED, torch.device("cpu"))
    reached = [a / o for a, o in zip(result.activation["neuron"], optima)]
    assert min(reached) >= 0.9, reached
