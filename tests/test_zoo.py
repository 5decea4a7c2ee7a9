"""The model zoo in the style of timm's tests: a small member of every family researchers
bring, with its default layers (from the model's structure), layouts and receptive fields
checked against a brute-force gradient probe; and one-channel atlases of the models the field's
atlases are about, built from the checkpoints people have."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from atlasgen.config import DEMO, ModelConfig
from atlasgen.models import build_model, select_layers
from atlasgen.receptive import receptive_fields
from atlasgen.settings import StageSettings

from zoo import FACTORIES, brute_force_boxes

pytestmark = pytest.mark.slow
HAS_TIMM = importlib.util.find_spec("timm") is not None

# arch, input size, expected default layers (first, one inside, last, count), layout of the last
FAMILIES = [
    ("nets.py:vgg", 32, ("features.1", "features.9", "features.14", 6), "nchw"),  # convs read after their ReLU
    ("nets.py:vit", 32, ("conv_proj", "encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_2", 4), "tokens:1"),
    ("nets.py:swin", 32, ("features.0", "features.2", "features.3", 4), "nhwc"),
    ("nets.py:swin_v2", 32, ("features.0", "features.2", "features.3", 4), "nhwc"),
    ("resnet18", 64, ("conv1", "layer2", "layer4", 5), "nchw"),
    ("googlenet", 64, ("conv1", "inception4b", "inception5b", 12), "nchw"),
    ("inception_v3", 96, ("Conv2d_1a_3x3", "Mixed_6a", "Mixed_7c", 16), "nchw"),
    ("mobilenet_v3_small", 64, ("features.0", "features.6", "features.12", 13), "nchw"),  # SE blocks
    ("efficientnet_b0", 64, ("features.0", "features.4", "features.8", 9), "nchw"),  # stages, SE blocks
    ("regnet_y_400mf", 64, ("stem", "trunk_output.block2", "trunk_output.block4", 5), "nchw"),  # SE blocks
    ("densenet121", 64, ("features.relu0", "features.transition2", "features.denseblock4", 8), "nchw"),
    ("squeezenet1_1", 64, ("features.1", "features.9", "classifier", 10), "nchw"),
    ("shufflenet_v2_x0_5", 64, ("conv1", "stage3", "conv5", 5), "nchw"),  # channel shuffle: all-channel probe
    ("mnasnet0_5", 64, ("layers.2", "layers.10", "layers.16", 10), "nchw"),
    ("convnext_tiny", 64, ("features.0", "features.4", "features.7", 8), "nchw"),  # layer scale, LayerNorm2d
]
if HAS_TIMM:
    FAMILIES.append(("timm:efficientnet_b0", 64, ("conv_stem", "blocks.3", "conv_head", 9), "nchw"))


def model_config(arch: str, size: int, weights: str | None = None) -> ModelConfig:
    return ModelConfig(name="m", arch=arch, weights=weights, layers=None, channels=None, dataset=DEMO, input_size=size,
                       mean=None, std=None, stages=StageSettings(), index=0)


@pytest.fixture(autouse=True)
def factories(tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("arch, size, expected, last_layout", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_layers_and_receptive_fields(arch, size, expected, last_layout):
    loaded = build_model(model_config(arch, size))
    layers = select_layers(loaded)
    names = [layer.name for layer in layers]
    first, middle, last, count = expected
    assert (names[0], names[len(names) // 2], names[-1], len(names)) == (first, middle, last, count), names
    assert layers[-1].layout == last_layout
    for layer in layers:  # maps, whatever the module's own layout
        assert layer.channels > 1 and layer.height >= 1 and layer.width == layer.height
    checked = {layer.name: layer.layout for layer in (layers[0], layers[len(layers) // 2], layers[-1])}
    fields = receptive_fields(loaded.module, list(checked), size)
    for name, (top, left, bottom, right, row, col) in brute_force_boxes(loaded.module, checked, size).items():
        p_top, p_left, p_bottom, p_right = fields[name].box(row, col)
        predicted = (max(p_top, 0), max(p_left, 0), min(p_bottom, size), min(p_right, size))
        actual = (top, left, bottom, right)
        # Exact, except the last pixels of the input that an unpadded strided layer never reads.
        assert all(p == a or (p in (0, size) and abs(p - a) <= 3) for p, a in zip(predicted, actual)), (name, predicted, actual)
        assert fields[name].covers_input == (predicted == (0, 0, size, size) or fields[name].covers_input)


ATLAS = """
[site]
title = "zoo"
[build]
device = "cpu"
[visualize]
objectives = ["channel", "neuron"]
size = 40
steps = 2
[examples]
top_k = 2
bottom_k = 1
patch_size = 32
[[models]]
name = "m"
arch = "{arch}"
{weights}
{layers}
input_size = {size}
channels = "0:1"
dataset = "{images}"
"""

# The models the field's atlases are about, from the checkpoints people have; a fixed-size
# transformer; a channels-last one; timm. (arch, input size, checkpoint to write or None, layers)
# The large two keep three layers: the dataset examples of all their 5,000+ channels take time.
ATLASES = [
    ("googlenet", 64, "aux", ["conv1", "inception4c", "inception5b"]),
    # 80 px: Mixed_7c needs 75; the visualization's 20 px octave is upsampled
    ("inception_v3", 80, "aux", ["Conv2d_1a_3x3", "Mixed_6e", "Mixed_7c"]),
    ("nets.py:vit", 32, None, None),  # accepts only 32 px: visualized at 32, not 40
    ("nets.py:swin", 32, None, None),
]
if HAS_TIMM:
    ATLASES.append(("timm:resnet18", 64, None, None))


@pytest.mark.parametrize("arch, size, checkpoint, layers", ATLASES, ids=[a[0] for a in ATLASES])
def test_one_channel_atlas(tmp_path, arch, size, checkpoint, layers):
    import json

    import torchvision

    from atlasgen.build import BuildOptions, build
    from atlasgen.config import load_config
    from atlasgen.demo import write_demo_dataset

    images = write_demo_dataset(tmp_path / "images", count=6, seed=3)
    weights = ""
    if checkpoint == "aux":  # the default constructor, auxiliary heads and all, as a training run saves it
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, init_weights=False)
        torch.save({"epoch": 1, "model": model.state_dict()}, tmp_path / "trained.pth")
        weights = 'weights = "trained.pth"'
    selected = f"layers = {layers!r}".replace("'", '"') if layers else ""
    (tmp_path / "atlas.toml").write_text(ATLAS.format(arch=arch, weights=weights, layers=selected, size=size, images=images))
    summary = build(load_config(tmp_path / "atlas.toml"), BuildOptions(progress=False))
    site = tmp_path / "site" / "m"
    pages = sorted(p.parent.parent.name for p in site.glob("*/0/index.html"))
    assert summary.computed["featvis"] == len(pages) >= 3
    if layers:
        assert pages == sorted(layers)
    for page in pages:
        data = json.loads((site / page / "index.json").read_text())
        unit = (data["units"] if isinstance(data, dict) else data)[0]
        assert unit["channel"] == 0 and len(unit["examples"]["top"]) == 2
        channel_images = [p for p in (site / page).rglob("*.png") if "channel" in p.name]
        assert channel_images, page
        with Image.open(channel_images[0]) as image:  # a fixed-size model is visualized at its own size
            assert image.size == ((32, 32) if arch == "nets.py:vit" else (40, 40))
