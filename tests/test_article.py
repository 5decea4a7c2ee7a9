"""The experiments of the feature-maps article, each by its defining property on a tiny
hand-built network: the recipe's distances and loop, spatial neuron maps, combined objectives,
cross-activation during optimization, and the [[models.experiments]] tables."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atlasgen.config import load_config, parse_config
from atlasgen.errors import ConfigError
from atlasgen.featvis import visualize_channels
from atlasgen.featvis.article import Part, Target, gaussian_blur, octave_sides, optimize_targets, target_losses
from atlasgen.featvis.batch import ImageSpec
from atlasgen.featvis.record import LayerMeans
from atlasgen.objectives.article import ARTICLE_OCTAVES, NAME, Recipe, RecipeOctave, distance
from atlasgen.plan import KeyBasis, LayerInfo
from atlasgen.settings import ImageSettings, Octave, Preprocess, VisSettings
from atlasgen.stages import get as stage
from atlasgen.stages.featvis import key_settings
from atlasgen.stages.cross_activation import chart

CPU = torch.device("cpu")
PLAIN = Preprocess(input_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def pixel_net() -> nn.Module:
    """One layer of 1x1 convolutions, so unit (i, j) of every channel sees pixel (i, j) only:
    channel 0 = red - green - blue, channel 1 = green, channel 2 = blue."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
        conv.weight[1, 1, 0, 0] = 1.0
        conv.weight[2, 2, 0, 0] = 1.0
        conv.bias.zero_()
    return nn.Sequential(OrderedDict(conv=conv)).eval()


def two_layer_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(OrderedDict(a=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(), b=nn.Conv2d(4, 5, 3, padding=1))).eval()


def still_recipe(steps: int, metric: str = "l1") -> Recipe:
    """One octave at the input size, no blur: only the gradient moves pixels."""
    return Recipe(metric=metric, octaves=(RecipeOctave(scale=1.0, steps=steps, lr=(0.4, 0.4), blur=(0.0, 0.0)),))


# ------------------------------------------------------------------ the recipe


def test_the_presets_numbers_are_the_articles():
    recipe = Recipe()
    assert octave_sides(recipe, 299) == [299, 340, 380]
    assert [(o.steps, o.lr, o.blur) for o in recipe.octaves] == [
        (100, (0.4, 0.3), (2.4, 0.8)), (100, (0.3, 0.2), (1.5, 0.4)), (100, (0.2, 0.1), (1.1, 0.3))]
    assert recipe.blur_kernel == 3 and recipe.metric == "l1"
    assert octave_sides(recipe, 64) == [64, 73, 81]  # other models: the same factors of their own input size


def test_distances_are_the_articles_formulas():
    z = torch.tensor([[1.0, 2.0, 4.0]])
    assert distance(z, "l1", 10.0).item() == pytest.approx(9 + 8 + 6)
    assert distance(z, "l2", 10.0).item() == pytest.approx((81 + 64 + 36) ** 0.5)
    assert distance(z, "linf", 10.0).item() == pytest.approx(9)


def test_l_infinity_gradient_touches_only_the_arg_max_unit():
    model = pixel_net()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    acts = {"conv": model(x)}
    loss = target_losses(acts, [Target((Part("conv", 0),), "t")], still_recipe(1, "linf"))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    farthest = int((Recipe().constant - acts["conv"][0, 0]).abs().flatten().argmax())  # the lowest unit
    moved = grad[0].abs().sum(dim=0).flatten().nonzero().flatten().tolist()
    assert moved == [farthest]
    # L1 and L2 reach every unit of the map.
    for metric in ("l1", "l2"):
        x.grad = None
        loss = target_losses({"conv": model(x)}, [Target((Part("conv", 0),), "t")], still_recipe(1, metric))
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert int((grad[0].abs().sum(dim=0) > 0).sum()) == 64


def test_recipe_raises_the_channel_and_is_batch_independent():
    model, recipe = pixel_net(), dataclasses.replace(Recipe(), octaves=tuple(
        dataclasses.replace(o, steps=10) for o in ARTICLE_OCTAVES))
    red, green = Target((Part("conv", 0),), "red"), Target((Part("conv", 1),), "green")
    start = optimize_targets(model, [red], dataclasses.replace(recipe, octaves=(
        dataclasses.replace(ARTICLE_OCTAVES[0], steps=0),)), PLAIN, CPU)
    alone = optimize_targets(model, [red], recipe, PLAIN, CPU)
    together = optimize_targets(model, [green, red], recipe, PLAIN, CPU)
    assert alone.shape == (1, 3, 10, 10)  # 8 px -> 9 -> 10
    assert torch.allclose(alone[0], together[1])
    with torch.no_grad():
        reds = [float(model(img[None])[0, 0].mean()) for img in (start[0], alone[0])]
    assert reds[1] > reds[0] + 0.5  # red minus green minus blue: from about -0.5 towards +1


def test_blur_is_a_normalized_small_kernel():
    image = torch.zeros(1, 3, 9, 9)
    image[..., 4, 4] = 1.0
    blurred = gaussian_blur(image, 3, 2.4)
    assert blurred.sum().item() == pytest.approx(3.0)
    assert int((blurred[0, 0] > 0).sum()) == 9  # a 3x3 kernel spreads one pixel to its 8 neighbours only


# ------------------------------------------------------------------ neuron maps and combined


def test_first_neuron_map_of_a_1x1_conv_channel_changes_only_its_receptive_field():
    model = pixel_net()
    first = Target((Part("conv", 0, units=1, grid=(8, 8)),), "first-1")
    start = optimize_targets(model, [first], still_recipe(0), PLAIN, CPU)
    end = optimize_targets(model, [first], still_recipe(5), PLAIN, CPU)
    changed = (end - start).abs().sum(dim=1)[0]
    assert changed[0, 0] > 0.1
    changed[0, 0] = 0
    assert float(changed.abs().max()) == 0.0
    # The first three neurons in reading order: the top row's first three pixels.
    same_start = "first-1"  # the seed's name: the same initial noise as `start`
    three = optimize_targets(model, [Target((Part("conv", 0, units=3, grid=(8, 8)),), same_start)], still_recipe(5),
                             PLAIN, CPU)
    moved = ((three - start).abs().sum(dim=1)[0] > 0).nonzero().tolist()
    assert moved == [[0, 0], [0, 1], [0, 2]]


def test_combined_objective_is_the_sum_of_its_parts():
    model = two_layer_net()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    from atlasgen.hooks import forward_layers

    acts = forward_layers(model, x, ["a", "b"])
    parts = (Part("a", 1), Part("b", 3))
    recipe = still_recipe(1, "l2")
    combined = target_losses(acts, [Target(parts, "ab")], recipe)
    single = [target_losses(acts, [Target((p,), "p")], recipe) for p in parts]
    assert combined.item() == pytest.approx(sum(s.item() for s in single), rel=1e-6)
    (together,) = torch.autograd.grad(combined.sum(), x, retain_graph=True)
    apart = sum(torch.autograd.grad(s.sum(), x, retain_graph=True)[0] for s in single)
    assert torch.allclose(together, apart, atol=1e-6)


# ------------------------------------------------------------------ cross-activation


def test_cross_activation_has_one_series_per_channel_and_the_targets_rises():
    model = pixel_net()
    settings = VisSettings(objectives=("channel",), size=8, steps=12, relu_redirect_steps=0, fft=False, batch_size=4,
                           octaves=(Octave(scale=1.0, share=1.0, lr=(0.2, 0.1), blur=(0.0, 0.0)),))
    recorder = LayerMeans()
    visualize_channels(model, "conv", [1, 2], settings, PLAIN, CPU, record=recorder)
    for channel in (1, 2):
        series = recorder.series(ImageSpec(channel, "channel"))
        assert series.shape == (12, 3)  # every step, every channel of the layer
        assert series[-1, channel] > series[0, channel] + 0.05
    plotted = chart(recorder.series(ImageSpec(1, "channel")), 1, top=1)
    assert [line["channel"] for line in plotted["lines"]][0] == 1 and len(plotted["lines"]) == 2
    assert all(0 <= y <= 1 for line in plotted["lines"] for _, y in line["points"])


# ------------------------------------------------------------------ settings and keys


def _config(tmp_path: Path, text: str):
    path = tmp_path / "atlas.toml"
    path.write_text(text)
    return load_config(path)


BASE = """
[visualize]
objectives = ["channel", "feature-maps-article"]
[[models]]
name = "demo"
arch = "demo"
"""


def test_preset_is_an_objective_whose_keys_override_the_articles_numbers(tmp_path):
    config = _config(tmp_path, BASE + '[models.visualize.feature-maps-article]\nmetric = "linf"\nconstant = 50\n')
    recipe = config.models[0].stages.visualize.options_for(NAME)
    assert (recipe.metric, recipe.constant, recipe.octaves) == ("linf", 50.0, ARTICLE_OCTAVES)
    with pytest.raises(ConfigError, match=r"models\[0\]\.visualize\.feature-maps-article\.blur_kernel: .*odd"):
        _config(tmp_path, BASE + "[models.visualize.feature-maps-article]\nblur_kernel = 4\n")


def _basis(config, layers=(LayerInfo("conv3", 64, 16, 16), LayerInfo("conv4", 128, 8, 8))) -> KeyBasis:
    return KeyBasis(config.models[0], "w", Preprocess(64), "data", ImageSettings(), tuple(layers))


def test_preset_has_its_own_keys(tmp_path):
    plain = _config(tmp_path, BASE.replace(', "feature-maps-article"', ""))
    with_recipe = _config(tmp_path, BASE)
    changed = _config(tmp_path, BASE + "[visualize.feature-maps-article]\nconstant = 50\n")
    featvis, article = stage("featvis"), stage("article")
    assert [t.key for t in featvis.tasks(_basis(plain))] == [t.key for t in featvis.tasks(_basis(with_recipe))]
    assert article.tasks(_basis(plain)) == []
    keys, other = [t.key for t in article.tasks(_basis(with_recipe))], [t.key for t in article.tasks(_basis(changed))]
    assert len(keys) == 64 + 128 and not set(keys) & set(other)
    assert "feature-maps-article" not in key_settings(with_recipe.models[0].stages.visualize)["objectives"]


def test_preview_caps_the_recipe_steps(tmp_path):
    config = _config(tmp_path, "[build]\npreview = true\n" + BASE)
    recipe = config.models[0].stages.visualize.options_for(NAME)
    assert [o.steps for o in recipe.octaves] == [5, 5, 5] and recipe.octaves[2].scale == ARTICLE_OCTAVES[2].scale


EXPERIMENTS = BASE + """
[[models.experiments]]
kind = "neuron-maps"
layer = "conv4"
channel = 7
neurons = 3
[[models.experiments]]
kind = "combined"
name = "pair"
units = [{layer = "conv3", channel = 1}, {layer = "conv4", channel = 2}]
[[models.experiments]]
kind = "metric-invariance"
layer = "conv3"
channels = [0, 5]
[[models.experiments]]
kind = "cross-activation"
layer = "conv3"
channels = [5]
"""


def test_experiments_plan_one_task_each(tmp_path):
    basis = _basis(_config(tmp_path, EXPERIMENTS))
    planned = {name: stage(name).tasks(basis) for name in ("neuron-maps", "combined", "metric-invariance", "cross-activation")}
    assert {name: len(tasks) for name, tasks in planned.items()} == {
        "neuron-maps": 1, "combined": 1, "metric-invariance": 1, "cross-activation": 1}
    assert planned["neuron-maps"][0].channel == 7 and planned["combined"][0].layer == "conv3"


@pytest.mark.parametrize("table, where, says", [
    ('kind = "neuron-map"\nlayer = "conv4"\nchannel = 1', r"experiments\[0\]\.kind", "did you mean 'neuron-maps'"),
    ('kind = "neuron-maps"\nchannel = 1', r"experiments\[0\]", "missing layer"),
    ('kind = "neuron-maps"\nlayer = "conv4"\nchannel = 1\nneuron = 2', r"experiments\[0\]\.neuron", "did you mean 'neurons'"),
    ('kind = "combined"\nname = "a b"\nunits = [{layer = "conv3", channel = 1}]', r"experiments\[0\]\.name", "URLs"),
    ('kind = "combined"\nname = "ab"\nunits = [{layer = "conv3"}]', r"experiments\[0\]\.units\[0\]", "missing channel"),
])
def test_bad_experiment_tables_name_their_key(tmp_path, table, where, says):
    with pytest.raises(ConfigError, match=rf"models\[0\]\.{where}: .*{says}"):
        _config(tmp_path, BASE + "[[models.experiments]]\n" + table + "\n")


@pytest.mark.parametrize("table, where, says", [
    ('kind = "neuron-maps"\nlayer = "conv9"\nchannel = 1', r"experiments\[0\]\.layer", "not one of the atlas's layers"),
    ('kind = "neuron-maps"\nlayer = "conv4"\nchannel = 128', r"experiments\[0\]\.channel", "channels 0 to 127"),
    ('kind = "neuron-maps"\nlayer = "conv4"\nchannel = 1\nneurons = 65', r"experiments\[0\]\.neurons", "has 64 neurons"),
    ('kind = "combined"\nname = "ab"\nunits = [{layer = "conv3", channel = 1}, {layer = "conv5", channel = 1}]',
     r"experiments\[0\]\.units\[1\]\.layer", "conv5"),
    ('kind = "cross-activation"\nlayer = "conv3"\nchannels = [1, 99]', r"experiments\[0\]\.channels\[1\]", "got 99"),
])
def test_experiments_naming_missing_units_fail_when_planned(tmp_path, table, where, says):
    config = _config(tmp_path, BASE + "[[models.experiments]]\n" + table + "\n")
    kind = config.models[0].experiments[0].kind
    with pytest.raises(ConfigError, match=rf"models\[0\]\.{where}: .*{says}"):
        stage(kind).tasks(_basis(config))


def test_experiments_must_be_tables():
    with pytest.raises(ConfigError, match=r"models\[0\]\.experiments: expected \[\[models.experiments\]\]"):
        parse_config({"models": [{"name": "demo", "arch": "demo", "experiments": 3}]}, Path("/tmp/atlas.toml"))


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_demo_build_renders_every_experiment_page(tmp_path):
    from PIL import Image

    from atlasgen.build import BuildOptions, build
    from atlasgen.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "images", count=16, seed=7)
    octaves = ", ".join(f"{{scale = {o.scale}, steps = 3, lr = {list(o.lr)}, blur = {list(o.blur)}}}" for o in ARTICLE_OCTAVES)
    text = EXPERIMENTS.replace('name = "demo"\narch = "demo"\n', 'name = "demo"\narch = "demo"\nlayers = ["conv3", "conv4"]\n'
                               'channels = "0:8"\ndataset = "images"\n')
    text = text.replace("[visualize]\n", "[build]\ndevice = \"cpu\"\n[visualize]\nsize = 32\nsteps = 4\n")
    text += f"[models.visualize.feature-maps-article]\noctaves = [{octaves}]\n"
    config = _config(tmp_path, text)
    summary = build(config, BuildOptions(progress=False))
    assert {k: summary.computed[k] for k in ("article", "neuron-maps", "combined", "metric-invariance", "cross-activation")} == {
        "article": 16, "neuron-maps": 1, "combined": 1, "metric-invariance": 1, "cross-activation": 1}
    site = tmp_path / "site" / "demo"
    pages = {"conv4/7/neuron-maps": 3, "conv3/combined-pair": 3, "conv3/metric-invariance": 6}
    for folder, count in pages.items():
        html = (site / folder / "index.html").read_text()
        assert "Cite this page" in html and html.count("<figure") == count, folder
        pngs = sorted((site / folder).glob("*.png"))
        assert len(pngs) == count
        assert all(np.asarray(Image.open(png)).std() > 1.0 for png in pngs), folder  # not flat grey
    unit = (site / "conv4" / "7" / "index.html").read_text()
    assert "neuron-maps/index.html" in unit and "feature-maps-article.png" in unit
    assert "<polyline" in (site / "conv3" / "5" / "index.html").read_text()
    assert "metric-invariance/index.html" in (site / "conv3" / "index.html").read_text()
