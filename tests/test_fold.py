"""BatchNorm folding during visualization: folded only where it is exact, always restored."""

import pytest
import torch
from torch import nn

from atlasgen.featvis.fold import conv_bn_pairs, folded_batchnorm
from atlasgen.featvis.optimize import visualize_channels
from atlasgen.hooks import forward_layers
from atlasgen.settings import Preprocess, VisSettings


def _bn(n: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(n)
    with torch.no_grad():  # statistics far from the identity, so a wrong fold shows
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return bn


class Plain(nn.Module):
    """conv -> BN -> ReLU twice; the second conv has no bias."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), _bn(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 5, 3, padding=1, bias=False), _bn(5)
        self.out = nn.ReLU()

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.out(self.bn2(self.conv2(x)))


class InPlaceBetween(nn.Module):
    """conv -> in-place ReLU -> BN: the BatchNorm reads the ReLU's result, not the convolution's."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.out = nn.Conv2d(3, 4, 3), _bn(4), nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        y.relu_()
        return self.out(self.bn(y))


class SharedOutput(nn.Module):
    """The convolution's output feeds the BatchNorm and a residual sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.out = nn.Conv2d(3, 3, 3, padding=1), _bn(3), nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        return self.out(self.bn(y) + y)


def _eval(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return model.eval()


def _probe() -> torch.Tensor:
    return torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_plain_pairs_are_folded_exactly_and_restored():
    model = _eval(Plain())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    probe = _probe()
    with torch.no_grad():
        expected = forward_layers(model, probe, ["out"])["out"]
    with folded_batchnorm(model, "out", probe) as reference:
        assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.Identity)
        with torch.no_grad():
            folded = forward_layers(model, probe, ["out"])["out"]
        torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reference, expected)
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm2d)
    assert [id(p) for p in model.parameters()] == params
    assert model.conv2.bias is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_restored_after_an_error():
    model = _eval(Plain())
    with pytest.raises(RuntimeError, match="inside"):
        with folded_batchnorm(model, "out", _probe()):
            raise RuntimeError("inside")
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.weight.requires_grad


def test_only_modules_before_the_layer_are_folded():
    model = _eval(Plain())
    pairs, _ = conv_bn_pairs(model, "conv2", _probe())
    assert [p.bn for p in pairs] == [model.bn1]


def test_in_place_op_between_prevents_folding():
    model = _eval(InPlaceBetween())
    pairs, _ = conv_bn_pairs(model, "out", _probe())
    assert pairs == []


def test_fold_that_changes_the_output_is_undone():
    model = _eval(SharedOutput())
    probe = _probe()
    assert len(conv_bn_pairs(model, "out", probe)[0]) == 1  # the BatchNorm does read the conv's output...
    with torch.no_grad():
        expected = forward_layers(model, probe, ["out"])["out"]
    with folded_batchnorm(model, "out", probe):
        assert isinstance(model.bn, nn.BatchNorm2d)  # ...but the sum reads it too: not folded
        with torch.no_grad():
            torch.testing.assert_close(forward_layers(model, probe, ["out"])["out"], expected)


def test_training_mode_batchnorm_is_not_folded():
    model = _eval(Plain())
    model.bn1.train()
    pairs, _ = conv_bn_pairs(model, "out", _probe())
    assert [p.bn for p in pairs] == [model.bn2]


def test_visualization_leaves_the_model_as_it_was():
    model = _eval(Plain())
    model.bn2.train()  # a caller's mode comes back too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = VisSettings(objectives=("channel",), steps=3, size=16)
    result = visualize_channels(model, "out", [0, 4], settings, Preprocess(input_size=16), torch.device("cpu"))
    assert result.images["channel"].shape == (2, 16, 16, 3)
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.bn2.training and not model.bn1.training
    assert all(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
