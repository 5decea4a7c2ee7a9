"""Feature visualization engine: tiny hand-built CNNs with known answers."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlasgen import objectives
from atlasgen.errors import AtlasError
from atlasgen.featvis import VisResult, pick_device, visualize_channels
from atlasgen.featvis.batch import ImageSpec, image_seed, pack_batches
from atlasgen.objectives.diversity import gram_similarity
from atlasgen.featvis.optimize import octave_plan
from atlasgen.featvis.memory import _glibc
from atlasgen.featvis.param import ClampInward, ImageParam
from atlasgen.featvis.redirect import RedirectedReLU, redirect_relu_gradients, redirected_gradient
from atlasgen.featvis.replay import LR, RATE, SIGMA, STRENGTH, StepReplay, octave_table
from atlasgen.featvis.transforms import TransformRanges, affine_matrices, align_to_image, random_view
from atlasgen.settings import Octave, Preprocess, VisSettings

CPU = torch.device("cpu")
# Identity-like preprocessing keeps the hand-set weights readable: input = 2 * image - 1.
CENTRED = Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
OCTAVES = (
    Octave(scale=0.5, share=0.5, lr=(0.4, 0.4), blur=(0.5, 0.25)),
    Octave(scale=1.0, share=0.5, lr=(0.4, 0.2), blur=(0.25, 0.0)),
)


def tiny_settings(**overrides) -> VisSettings:
    base = dict(
        objectives=("channel",), diversity=2, size=32, steps=48, octaves=OCTAVES,
        pad=0.0625, jitter=0.0625, scale=(0.95, 1.05), rotate=5.0, relu_redirect_steps=4, batch_size=0,
    )
    base.update(overrides)
    return VisSettings(**base)


def feature_net() -> nn.Module:
    """Channel 0: red; 1: green; 2: horizontal edges (intensity changing along y); 3: vertical."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])
        conv.weight[1, :, 1, 1] = torch.tensor([-1.0, 1.0, -1.0])
        edge = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
        conv.weight[2] = edge / 3
        conv.weight[3] = edge.T / 3
    # Leaky, so regions that start on the wrong side still get a gradient: this test is about
    # what the engine finds, not about ReLU dead zones (the dead-start test covers those).
    return nn.Sequential(OrderedDict(conv=conv, act=nn.LeakyReLU(0.1))).eval()


def random_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), pool=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 6, 3, padding=1), relu2=nn.ReLU(),
        )
    ).eval()


def dead_net() -> nn.Module:
    """Channel 0 sums red over 3x3 with bias -3: dead on a grey start, alive on a red image."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
        conv.bias.copy_(torch.tensor([-3.0, 0.0]))
    return nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU())).eval()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def mean_rgb(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).astype(np.float64).mean(axis=0)


def test_colour_and_orientation_channels_show_their_feature():
    result = visualize_channels(feature_net(), "act", [0, 1, 2, 3], tiny_settings(), CENTRED, CPU)
    red, green = mean_rgb(result.images["channel"][0]), mean_rgb(result.images["channel"][1])
    assert red[0] > red[1] + 40 and red[0] > red[2] + 40
    assert green[1] > green[0] + 40 and green[1] > green[2] + 40

    def gradients(image: np.ndarray) -> tuple[float, float]:
        grey = image.astype(np.float64).mean(axis=2)
        return np.abs(np.diff(grey, axis=0)).mean(), np.abs(np.diff(grey, axis=1)).mean()

    along_y, along_x = gradients(result.images["channel"][2])
    assert along_y > 1.5 * along_x  # horizontal stripes: intensity changes going down
    along_y, along_x = gradients(result.images["channel"][3])
    assert along_x > 1.5 * along_y
    assert (result.activation["channel"] > 0).all()


def test_same_channel_alone_or_in_a_batch_gives_the_same_image():
    # neuron reads its activations through each image's own view (follows_view); negative
    # steps at its own learning rate over the last octave (lr_end)
    kinds = ("channel", "negative", "neuron", "diversity")
    settings = tiny_settings(objectives=kinds, steps=12, size=24)
    alone = visualize_channels(random_net(), "relu2", [3], settings, CENTRED, CPU)
    crowd = visualize_channels(random_net(), "relu2", [0, 1, 2, 3, 4, 5], settings, CENTRED, CPU)
    split = visualize_channels(random_net(), "relu2", [5, 3, 1], tiny_settings(
        objectives=kinds, steps=12, size=24, batch_size=3), CENTRED, CPU)
    for objective in kinds:
        assert psnr(alone.images[objective][0], crowd.images[objective][3]) > 40
        assert psnr(alone.images[objective][0], split.images[objective][1]) > 40
    # Different channels really do differ, so the comparison above is not vacuous.
    assert psnr(crowd.images["channel"][0], crowd.images["channel"][3]) < 30


@contextmanager
def negative_ending_at(end: float):
    """The negative objective, registered with another learning-rate end for the block."""
    original = objectives.get("negative")
    del objectives._REGISTRY["negative"]
    objectives.register(dataclasses.replace(original, lr_end=end))
    try:
        yield
    finally:
        del objectives._REGISTRY["negative"]
        objectives.register(original)


def test_an_objectives_own_learning_rate_end_applies_to_its_images_alone():
    end = objectives.get("negative").lr_end
    assert end < 1.0
    settings = tiny_settings(objectives=("channel", "negative"), steps=16, size=24)
    last = settings.octaves[-1]
    lowered = dataclasses.replace(settings, octaves=settings.octaves[:-1] + (
        dataclasses.replace(last, lr=(last.lr[0], last.lr[1] * end)),))
    own = visualize_channels(random_net(), "conv2", [3], settings, CENTRED, CPU)
    with negative_ending_at(1.0):
        shared = visualize_channels(random_net(), "conv2", [3], settings, CENTRED, CPU)
        everyone_lowered = visualize_channels(random_net(), "conv2", [3], lowered, CENTRED, CPU)
    # The negative image steps at its own end, as if the whole schedule ended there ...
    assert psnr(own.images["negative"][0], everyone_lowered.images["negative"][0]) > 45
    assert psnr(own.images["negative"][0], shared.images["negative"][0]) < 40  # (which differs)
    # ... and the channel image in its batch at the shared end, exactly as without it.
    assert np.array_equal(own.images["channel"][0], shared.images["channel"][0])
    assert psnr(own.images["channel"][0], everyone_lowered.images["channel"][0]) < 40


def test_same_seed_reproduces_and_another_seed_differs():
    settings = tiny_settings(steps=8, size=24)
    first = visualize_channels(random_net(), "relu2", [0, 2], settings, CENTRED, CPU)
    second = visualize_channels(random_net(), "relu2", [0, 2], settings, CENTRED, CPU)
    other = visualize_channels(random_net(), "relu2", [0, 2], tiny_settings(steps=8, size=24, seed=1), CENTRED, CPU)
    assert np.array_equal(first.images["channel"], second.images["channel"])
    assert np.array_equal(first.activation["channel"], second.activation["channel"])
    assert not np.array_equal(first.images["channel"], other.images["channel"])


def test_dead_channel_comes_alive_only_with_redirected_relu():
    with_redirect = visualize_channels(dead_net(), "act", [0], tiny_settings(relu_redirect_steps=8), CENTRED, CPU)
    without = visualize_channels(dead_net(), "act", [0], tiny_settings(relu_redirect_steps=0), CENTRED, CPU)
    assert with_redirect.activation["channel"][0] > 0.5
    image = with_redirect.images["channel"][0]
    assert image.std() > 20 and np.percentile(image[..., 0], 90) > 200  # not grey: red where it fires
    assert without.activation["channel"][0] == 0
    assert np.abs(without.images["channel"][0].astype(int) - 128).max() <= 3  # still the grey start


def test_a_unit_that_dies_at_a_resize_is_revived_by_that_octaves_redirect(monkeypatch):
    """A channel alive on the small image can be dead on the resized one: each octave's first
    steps redirect the gradients of images that get none, not only the first octave's."""
    import atlasgen.featvis.optimize as optimize

    original = optimize._resized

    def resized_to_grey(param, size, pixels=False):
        new = original(param, size, pixels)
        new.set_image(torch.full((param.params.shape[0], 3, size, size), 0.5))  # where dead_net is dead
        return new

    monkeypatch.setattr(optimize, "_resized", resized_to_grey)
    settings = tiny_settings(steps=24, relu_redirect_steps=4)
    assert len(octave_plan(settings)) == 2
    revived = visualize_channels(dead_net(), "act", [0], settings, CENTRED, CPU)
    assert revived.activation["channel"][0] > 0.5
    first_octave_only = visualize_channels(dead_net(), "act", [0], tiny_settings(steps=24, relu_redirect_steps=0), CENTRED, CPU)
    assert first_octave_only.activation["channel"][0] == 0


class TwoBranches(nn.Module):
    """Channel 0 is dead on a grey start (red above a threshold). Channel 1 is alive there through
    a green branch, and has a second, blue branch that is dead there."""

    def __init__(self):
        super().__init__()
        self.red, self.green, self.blue = (nn.Conv2d(3, 1, 3, padding=1) for _ in range(3))
        with torch.no_grad():
            for conv, colour, weight, bias in ((self.red, 0, 1.0, -3.0), (self.green, 1, 0.1, 1.0), (self.blue, 2, 1.0, -3.0)):
                conv.weight.zero_()
                conv.weight[0, colour] = weight
                conv.bias.fill_(bias)
        self.act = nn.Identity()

    def forward(self, x):
        red, green, blue = (F.relu(conv(x)) for conv in (self.red, self.green, self.blue))
        return self.act(torch.cat([red, green + blue], dim=1))


def test_a_dead_image_in_the_batch_does_not_change_a_live_ones():
    """Redirected gradients are decided image by image: the live channel's image, whose blue
    branch is dead, is the same alone as beside the dead channel."""
    settings = tiny_settings(steps=12, size=16, relu_redirect_steps=6)
    alone = visualize_channels(TwoBranches().eval(), "act", [1], settings, CENTRED, CPU)
    beside_dead = visualize_channels(TwoBranches().eval(), "act", [0, 1], settings, CENTRED, CPU)
    assert beside_dead.activation["channel"][0] > 0  # the dead one came alive
    assert np.array_equal(alone.images["channel"][0], beside_dead.images["channel"][1])


@pytest.mark.parametrize("dead_rows", [[], [1], [0, 1, 2]])
def test_redirected_gradient_is_the_same_with_and_without_the_cpus_shortcuts(dead_rows):
    """A GPU takes the branch-free path (no host synchronization per ReLU); it must agree."""
    torch.manual_seed(0)
    x, grad = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    x[dead_rows] = -x[dead_rows].abs() - 0.1  # those images' ReLU passes nothing
    with_shortcuts = redirected_gradient(x, grad, shortcuts=True)
    assert torch.equal(with_shortcuts, redirected_gradient(x, grad, shortcuts=False))
    live = [r for r in range(3) if r not in dead_rows]
    x_ = x.clone().requires_grad_(True)
    plain, = torch.autograd.grad(torch.relu(x_), x_, grad)
    assert torch.equal(with_shortcuts[live], plain[live])
    assert all((with_shortcuts[r] != 0).any() for r in dead_rows)  # redirected: a gradient after all


def test_redirected_relu_gradient_rules():
    x = torch.tensor([[-1.0, -1.0, 2.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    grad = torch.tensor([[-1.0, 1.0, 5.0], [-1.0, 1.0, -2.0]])
    RedirectedReLU.apply(x).backward(grad)
    # Row 0 has an ordinary gradient (x=2): plain ReLU. Row 1 is dead: pass what raises x.
    assert x.grad.tolist() == [[0.0, 0.0, 5.0], [-1.0, 0.0, -2.0]]
    original = F.relu
    with redirect_relu_gradients():
        assert F.relu is not original and nn.ReLU()(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
    assert F.relu is original


def test_objectives_have_documented_shapes_and_signs():
    settings = tiny_settings(objectives=("channel", "negative", "neuron", "diversity"), steps=12, size=24, diversity=3)
    result = visualize_channels(feature_net(), "act", [0, 2], settings, CENTRED, CPU)
    assert isinstance(result, VisResult) and result.channels == [0, 2]
    for objective in ("channel", "negative", "neuron"):
        assert result.images[objective].shape == (2, 24, 24, 3) and result.images[objective].dtype == np.uint8
    assert result.images["diversity"].shape == (2, 3, 24, 24, 3)
    for objective in settings.objectives:
        assert result.activation[objective].shape == (2,) and result.activation[objective].dtype == np.float32
    assert result.layer_response.shape == (2, 4) and result.layer_response.dtype == np.float32
    assert np.allclose(result.layer_response[[0, 1], [0, 2]], result.activation["channel"], rtol=1e-5)
    assert (result.activation["negative"] < result.activation["channel"]).all()
    only_neuron = visualize_channels(feature_net(), "act", [1], tiny_settings(objectives=("neuron",), steps=4), CENTRED, CPU)
    assert set(only_neuron.images) == {"neuron"} and only_neuron.layer_response.shape == (1, 4)


def test_diversity_term_pushes_images_apart():
    def mean_similarity(weight: float) -> float:
        settings = tiny_settings(objectives=("diversity",), diversity=3, diversity_weight=weight, steps=16, size=24)
        images = visualize_channels(random_net(1), "relu2", [2], settings, CENTRED, CPU).images["diversity"][0]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            acts = random_net(1)(2 * x - 1)
        return float(gram_similarity(acts).mean())

    assert mean_similarity(5.0) < mean_similarity(0.0)


def test_pick_device_explains_unavailable_devices():
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(AtlasError, match='"auto" or device = "cpu"'):
        pick_device("cuda:99")
    with pytest.raises(AtlasError, match="unknown device"):
        pick_device("tpu-please")
    if not torch.backends.mps.is_available():
        with pytest.raises(AtlasError, match="MPS is not available"):
            pick_device("mps")


def test_model_state_and_hooks_are_left_as_found():
    model = random_net()
    model.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    visualize_channels(model, "relu2", [1], tiny_settings(steps=4, size=16), CENTRED, CPU)
    assert [p.requires_grad for p in model.parameters()] == flags == [False, True, True, True]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and F.relu.__module__ == "torch.nn.functional"


def test_unknown_layer_or_channel_is_a_user_error():
    with pytest.raises(AtlasError, match="no layer 'nope'"):
        visualize_channels(random_net(), "nope", [0], tiny_settings(), CENTRED, CPU)
    with pytest.raises(AtlasError, match="has 6 channels"):
        visualize_channels(random_net(), "relu2", [6], tiny_settings(steps=2, size=16), CENTRED, CPU)


def test_parameterization_inverts_exactly():
    generator = torch.Generator().manual_seed(0)
    for fft, decorrelate in [(True, True), (True, False), (False, True)]:
        param = ImageParam(torch.randn((2,) + ImageParam.shape_for(20, fft), generator=generator) * 0.1, 20, fft, decorrelate)
        image = param.image().detach()
        copy = ImageParam(torch.zeros_like(param.params), 20, fft, decorrelate)
        copy.set_image(image)
        assert torch.allclose(copy.image(), image, atol=1e-5)


def test_saturated_pixels_are_pulled_back_not_pushed_further():
    # Pre-squash values below, inside and above [0, 1]; descent moves them by -grad.
    x = torch.tensor([-1.0, 0.5, 2.0, -1.0, 2.0], requires_grad=True)
    ClampInward.apply(x).backward(torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0]))
    # back in from below, inside, back in from above, further out below, further out above
    assert x.grad.tolist() == [-1.0, 1.0, 1.0, 0.0, 0.0]
    assert ClampInward.apply(x).tolist() == [0.0, 0.5, 1.0, 0.0, 1.0]


def test_identity_transform_keeps_the_image_and_shifts_move_it():
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    centre = torch.full((2, 4), 0.5)  # shift 0, middle of the scale range, angle 0
    still = TransformRanges(pad=0.0, jitter=0.0, scale=(1.0, 1.0), rotate=0.0)
    assert torch.allclose(random_view(image, affine_matrices(centre, still)), image, atol=1e-5)
    # pad 1/16 and jitter 2/16 of a 16 px side: a full shift moves the image one pixel
    shift = affine_matrices(torch.tensor([[1.0, 0.5, 0.5, 0.5]] * 2), TransformRanges(1 / 16, 2 / 16, (1.0, 1.0), 0.0))
    shifted = random_view(image, shift)
    assert torch.allclose(shifted[..., :, :-1], image[..., :, 1:], atol=1e-5)  # one pixel left
    padded = random_view(image, affine_matrices(centre, TransformRanges(pad=0.25, jitter=0.0, scale=(1.0, 1.0), rotate=0.0)))
    assert torch.allclose(padded[..., 0, 0], torch.full((2, 3), 0.5))  # grey border


def test_align_to_image_undoes_each_view():
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    smooth = (torch.sin(x / 4) + torch.cos(y / 5))[None, None].repeat(4, 1, 1, 1)  # bilinear-friendly
    draws = torch.rand(4, 4, generator=torch.Generator().manual_seed(1))
    theta = affine_matrices(draws, TransformRanges(pad=0.1, jitter=0.15, scale=(0.9, 1.1), rotate=10.0))
    viewed = random_view(smooth, theta)[:, 0]
    assert not torch.allclose(viewed, smooth[:, 0], atol=0.1)
    aligned = align_to_image(viewed, theta)  # the nearest unit: within half a pixel
    assert torch.allclose(aligned[:, 6:18, 6:18], smooth[:, 0, 6:18, 6:18], atol=0.2)
    assert (aligned[:, 6:18, 6:18] - smooth[:, 0, 6:18, 6:18]).abs().mean() < 0.05
    # A shift by whole pixels is undone exactly: 4/24 jitter, drawn at its extreme, is 2 px.
    noise = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    two_px = affine_matrices(torch.tensor([[1.0, 0.0, 0.5, 0.5]]), TransformRanges(2 / 24, 4 / 24, (1.0, 1.0), 0.0))
    back = align_to_image(random_view(noise, two_px)[:, 0], two_px)
    assert torch.allclose(back[:, 2:-2, 2:-2], noise[:, 0, 2:-2, 2:-2], atol=1e-5)
    still = affine_matrices(torch.full((4, 4), 0.5), TransformRanges(0.0, 0.0, (1.0, 1.0), 0.0))
    assert torch.allclose(align_to_image(smooth[:, 0], still), smooth[:, 0], atol=1e-5)


def test_neuron_follows_the_jitter_to_its_exact_optimum():
    """A linear first layer's centre unit under strong jitter (a quarter of the side): the exact
    optimum over [0, 1] images is its weights' sign pattern (value(0) + sum of the positive
    gradient). A centre unit that stays put while the content jitters reached 0.66 of it."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 2, 3, padding=1)
    model = nn.Sequential(OrderedDict(conv=conv)).eval()
    settings = tiny_settings(objectives=("neuron",), size=24, steps=96, pad=0.1, jitter=0.25)
    result = visualize_channels(model, "conv", [0, 1], settings, CENTRED, CPU)
    x = torch.zeros(1, 3, 24, 24, requires_grad=True)
    for i, channel in enumerate([0, 1]):
        value = conv(x * 2 - 1)[0, channel, 12, 12]
        (grad,) = torch.autograd.grad(value, x)
        optimum = value.item() + grad.clamp_min(0).sum().item()
        assert result.activation["neuron"][i] >= 0.8 * optimum


def test_a_first_layers_edge_filter_reaches_its_exact_optimum_border_lines_and_all():
    """A linear 3x3 layer whose weights nearly cancel inside the image: the exact optimum of its
    mean sets each colour of each pixel by its gradient's sign, a flat colour inside and a
    one-pixel line of other colours along borders. Its last octave optimizes RGB pixels; as a
    1/f spectrum in decorrelated colours it reached 0.82 of the attainable range."""
    edge = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0] = torch.stack([edge * 0.3 + 0.01, -edge * 0.3 + 0.01, edge * 0.3 - 0.01])
    model = nn.Sequential(OrderedDict(conv=conv)).eval()
    result = visualize_channels(model, "conv", [0], tiny_settings(size=32), CENTRED, CPU)
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    value = conv(x * 2 - 1)[0, 0].mean()
    (grad,) = torch.autograd.grad(value, x)
    best, worst = (value.item() + grad.clamp(**bound).sum().item() for bound in ({"min": 0}, {"max": 0}))
    assert (result.activation["channel"][0] - worst) / (best - worst) >= 0.99


def test_octave_plan_and_batches():
    plan = octave_plan(tiny_settings(steps=25, size=32))
    assert [o.size for o in plan] == [16, 32] and sum(o.steps for o in plan) == 25
    specs = [ImageSpec(c, o, i) for c in range(3) for o, n in (("channel", 1), ("diversity", 3)) for i in range(n)]
    batches = pack_batches(specs, 5)
    assert sum(map(len, batches)) == len(specs) and all(len(b) <= 5 for b in batches)
    for batch in batches:  # diversity groups whole
        for c in {s.channel for s in batch if s.objective == "diversity"}:
            assert sum(s.channel == c and s.objective == "diversity" for s in batch) == 3
    assert image_seed(0, specs[0]) == image_seed(0, ImageSpec(0, "channel", 0)) != image_seed(1, specs[0])


def test_progress_counts_image_steps():
    calls: list[int] = []
    settings = tiny_settings(steps=4, size=16, batch_size=1)
    visualize_channels(random_net(), "relu2", [0, 1], settings, CENTRED, CPU, progress=calls.append)
    assert calls == [1] * 8  # 4 steps x 2 batches of one image
    calls.clear()
    visualize_channels(random_net(), "relu2", [0, 1], tiny_settings(steps=4, size=16, batch_size=2), CENTRED, CPU, progress=calls.append)
    assert calls == [2] * 4  # 4 steps x 1 batch of two images


def test_view_strength_scales_every_range_and_zero_is_the_identity():
    draws = torch.rand(6, 4, generator=torch.Generator().manual_seed(3))
    ranges = TransformRanges(pad=0.1, jitter=0.15, scale=(0.9, 1.1), rotate=10.0)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(6, 2, 3)
    assert torch.equal(affine_matrices(draws, ranges, torch.tensor(0.0)), identity)
    halved = TransformRanges(pad=0.05, jitter=0.075, scale=(0.95, 1.05), rotate=5.0)
    assert torch.allclose(affine_matrices(draws, ranges, torch.tensor(0.5)), affine_matrices(draws, halved), atol=1e-6)
    assert not torch.allclose(affine_matrices(draws, ranges), affine_matrices(draws, halved), atol=1e-3)


def test_octave_table_runs_each_schedule_linearly():
    table = octave_table((0.4, 0.2), (0.5, 0.0), 5, last=True, still=False, blur_scale=2.0, device=torch.device("cpu"))
    assert torch.allclose(table[:, LR], torch.tensor([0.4, 0.35, 0.3, 0.25, 0.2]))
    assert torch.allclose(table[:, STRENGTH], torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))  # fades to the identity
    assert torch.allclose(table[:, SIGMA], torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))  # blur 0.5 -> 0, times 2
    # The per-image rate factor: 0 at the start, 1 at the end, where an image's rate is its own end.
    assert table[0, RATE] == 0 and torch.isclose(table[-1, RATE], torch.tensor(1.0))
    earlier = octave_table((0.4, 0.4), (0.5, 0.5), 3, last=False, still=True, blur_scale=1.0, device=torch.device("cpu"))
    assert torch.equal(earlier[:, STRENGTH], torch.ones(3))  # full views before the last octave
    still = octave_table((0.4, 0.2), (0.0, 0.0), 3, last=True, still=True, blur_scale=1.0, device=torch.device("cpu"))
    assert torch.equal(still[:, STRENGTH], torch.zeros(3))


def test_step_replay_on_cpu_runs_the_step_eagerly_with_fresh_gradients():
    p = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=1.0)
    x = torch.zeros(3)

    def step() -> torch.Tensor:
        (p * x).sum().backward()
        optimizer.step()
        return p.detach()

    run = StepReplay(step, [optimizer], capture=False)
    for value in (1.0, 2.0):
        x.fill_(value)
        run()
    # Gradients cleared before every step: -1 then -2; accumulated ones would give -1 then -3.
    assert torch.equal(p.detach(), torch.full((3,), -3.0))
    assert run.graph is None


def test_diversity_over_padded_groups_is_the_diversity_of_the_real_groups():
    """diversity_value computes as many groups as the batch could hold (a fixed shape for the
    GPU's batched products); the repeats change neither the values nor the gradient."""
    from atlasgen.objectives.diversity import diversity_value

    settings = tiny_settings(objectives=("diversity",), diversity=2, diversity_weight=1.0)
    acts = torch.rand(12, 5, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    rows, channels = torch.tensor([1, 2, 7, 8]), torch.tensor([0, 0, 3, 3])
    value = diversity_value(acts, rows, channels, settings)
    (grad,) = torch.autograd.grad(value.sum(), acts)
    own = acts[rows, channels].flatten(1).mean(dim=1)
    magnitude = own.view(-1, 2).abs().mean(dim=1, keepdim=True).detach()
    direct = own - (magnitude * gram_similarity(acts[rows.view(-1, 2)])).flatten()
    (direct_grad,) = torch.autograd.grad(direct.sum(), acts)
    assert torch.allclose(value, direct) and torch.allclose(grad, direct_grad)
    assert grad[[0, 3, 4, 5, 6, 9, 10, 11]].abs().sum() == 0  # rows of no group get no gradient


_FAULTS_SCRIPT = """
import resource, torch
from atlasgen.featvis.memory import retained_heap

def faults_of_a_64_mb_temporary():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)  # allocated, touched, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_64_mb_temporary()
outside = faults_of_a_64_mb_temporary()
with retained_heap():
    faults_of_a_64_mb_temporary()  # grows the heap once
    # the least of three: now and then the block lands beside the reused one
    inside = min(faults_of_a_64_mb_temporary() for _ in range(3))
print(outside, inside, faults_of_a_64_mb_temporary())
"""


@pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt")
def test_retained_heap_reuses_freed_memory_and_restores_the_defaults():
    # In a fresh process: a long test session's heap is fragmented by the earlier tests.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True)
    outside, inside, after = map(int, run.stdout.split())
    assert outside > 8000 and after > 8000  # 16,384 pages of 4 KiB, returned to the kernel each time
    assert inside < outside / 10  # the freed block is reused


@pytest.mark.parametrize(("channels", "side"), [(64, 2), (8, 6)])  # 4 x 4 positions < 64 channels; 36 x 4 > 8
def test_gram_similarity_is_the_cosine_of_the_gram_matrices(channels, side):
    """Both ways of computing it (pairs of position products for deep layers, Gram matrices
    otherwise) against the definition, values and gradients, a dead image included."""
    import torch.nn.functional as F

    acts = torch.rand(3, 4, channels, side, side, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.3
    acts[1, 2] = 0  # a dead image: similarity 0, no NaN
    acts.requires_grad_(True)
    flat = acts.flatten(-2)
    grams = F.normalize((flat @ flat.transpose(-1, -2)).flatten(-2), dim=-1, eps=1e-10)
    cosine = grams @ grams.transpose(-1, -2)
    direct = (cosine.sum(dim=-1) - cosine.diagonal(dim1=-2, dim2=-1)) / 3
    value = gram_similarity(acts)
    weights = torch.rand(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (grad,) = torch.autograd.grad((value * weights).sum(), acts)
    (direct_grad,) = torch.autograd.grad((direct * weights).sum(), acts)
    assert torch.allclose(value, direct) and torch.allclose(grad, direct_grad)
    assert torch.isfinite(grad).all() and value[1, 2] == 0
