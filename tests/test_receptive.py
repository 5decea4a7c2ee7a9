import pytest
import torch
from torch import nn

from atlasgen.receptive import ReceptiveField, receptive_fields
from tests.toymodels import BranchNet, DetectorNet, PlainNet, seeded


def geometry(rf: ReceptiveField) -> tuple:
    return rf.size[0], rf.stride[0], rf.offset[0]


def test_plain_stack_matches_hand_computation():
    rfs = receptive_fields(seeded(PlainNet()), ["conv1", "pool", "conv2", "relu2"], 32)
    assert {k: geometry(v) for k, v in rfs.items()} == {
        "conv1": (3, 1, -1), "pool": (4, 2, -1), "conv2": (8, 2, -3), "relu2": (8, 2, -3)}
    assert all(rf.size[0] == rf.size[1] and not rf.covers_input for rf in rfs.values())


def test_branching_model_takes_the_union_of_branches_and_skips():
    rfs = receptive_fields(seeded(BranchNet()), ["stem", "mix", "mix.b1", "mix.bp", "res", "down"], 32)
    assert {k: geometry(v) for k, v in rfs.items()} == {
        "stem": (3, 1, -1), "mix": (7, 1, -3), "mix.b1": (3, 1, -1), "mix.bp": (5, 1, -2),
        "res": (9, 1, -4), "down": (11, 2, -5)}


def test_box_of_a_unit():
    rf = ReceptiveField(size=(8, 6), stride=(2, 4), offset=(-3, -1), covers_input=False)
    assert rf.box(0, 0) == (-3, -1, 5, 5)
    assert rf.box(2, 3) == (1, 11, 9, 17)


def test_field_contains_the_real_gradient_support():
    # With real weights and ReLUs the gradient may vanish in places, but never outside the field.
    model, size = seeded(BranchNet(), seed=3), 24
    rf = receptive_fields(model, ["down"], size)["down"]
    x = torch.randn(1, 3, size, size, requires_grad=True)
    out = model(x)
    for row, col in [(0, 0), (5, 6), (11, 11)]:
        (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x, retain_graph=True)
        rows = torch.nonzero(grad[0].abs().sum(0).sum(1)).flatten()
        cols = torch.nonzero(grad[0].abs().sum(0).sum(0)).flatten()
        top, left, bottom, right = rf.box(row, col)
        assert rows.min() >= max(top, 0) and rows.max() < min(bottom, size)
        assert cols.min() >= max(left, 0) and cols.max() < min(right, size)
        # the 3x3 convs touch the field's edge wherever the field is inside the input
        assert rows.max() == min(bottom, size) - 1


def test_non_square_kernels_strides_and_dilation():
    model = nn.Sequential(nn.Conv2d(3, 2, (3, 5), stride=(1, 2), padding=(1, 2)),
                          nn.Conv2d(2, 2, 3, dilation=2, padding=2))
    rf = receptive_fields(model, ["0", "1"], 40)
    assert rf["0"] == ReceptiveField(size=(3, 5), stride=(1, 2), offset=(-1, -2), covers_input=False)
    # dilation 2 at stride (1, 2): kernel spans 5 units = 4 * stride more pixels
    assert rf["1"] == ReceptiveField(size=(7, 13), stride=(1, 2), offset=(-3, -6), covers_input=False)


def test_field_larger_than_input_is_marked_and_still_exact():
    # conv2 of PlainNet sees 8 px: at an 8 px input the centre unit's field is clipped.
    rf = receptive_fields(seeded(PlainNet()), ["conv1", "conv2"], 8)
    assert rf["conv2"] == ReceptiveField(size=(8, 8), stride=(2, 2), offset=(-3, -3), covers_input=True)
    assert not rf["conv1"].covers_input


def test_deep_stack_resolved_with_a_larger_probe():
    # 6 stacked 5x5 convs: a 25 px field, probed at 12 px; needs the 2x / 4x probes.
    model = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 2, 2, 5, padding=2) for i in range(6)])
    rf = receptive_fields(model, ["5"], 12)["5"]
    assert rf == ReceptiveField(size=(25, 25), stride=(1, 1), offset=(-12, -12), covers_input=True)


class Shuffle(nn.Module):
    """Channel shuffle (ShuffleNet): its reshape needs the real channel count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


def test_channel_dependent_model_falls_back_to_every_channel():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Shuffle(), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert geometry(receptive_fields(model, ["2"], 16)["2"]) == (5, 1, -2)


def test_global_pool_and_linear_cover_the_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    rf = receptive_fields(model, ["1", "3"], 16)
    assert rf["1"].covers_input and rf["3"].covers_input
    assert rf["3"].size == (16, 16) and rf["3"].box(0, 0) == (0, 0, 16, 16)


def test_model_state_is_restored():
    model = seeded(DetectorNet()).train()
    weight = model.detect.weight.detach().clone()
    receptive_fields(model, ["relu"], 16)
    assert model.training and torch.equal(model.detect.weight, weight)
    assert not model._forward_hooks and not model.detect._forward_hooks


@pytest.mark.slow
def test_googlenet_fields_match_the_published_recurrence():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    layers = ["conv1", "maxpool1", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
              "inception4a", "inception4c", "inception4d", "inception4e", "maxpool4", "inception5b"]
    rfs = receptive_fields(model, layers, 224)
    assert {k: geometry(v) for k, v in rfs.items()} == {
        "conv1": (7, 2, -3), "maxpool1": (11, 4, -3), "conv3": (19, 4, -7), "maxpool2": (27, 8, -7),
        "inception3a": (43, 8, -15), "inception3b": (59, 8, -23), "maxpool3": (75, 16, -23),
        "inception4a": (107, 16, -39), "inception4c": (171, 16, -71), "inception4d": (203, 16, -87),
        "inception4e": (235, 16, -103), "maxpool4": (251, 32, -103), "inception5b": (379, 32, -167)}
    # 14x14 map, centre unit 7: 4c spans [41, 212) inside 224 px; 4d spans [25, 228): clipped
    assert not rfs["inception4c"].covers_input and rfs["inception4d"].covers_input


@pytest.mark.slow
def test_resnet50_fields_match_the_published_recurrence():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    rfs = receptive_fields(model, ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"], 224)
    assert {k: geometry(v) for k, v in rfs.items()} == {
        "conv1": (7, 2, -3), "maxpool": (11, 4, -5), "layer1": (35, 4, -17), "layer2": (91, 8, -45),
        "layer3": (267, 16, -133), "layer4": (427, 32, -213)}
    assert [rfs[k].covers_input for k in ("layer2", "layer3", "layer4")] == [False, True, True]
