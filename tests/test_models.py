"""Building models, loading weights in their usual wrappings, finding layers."""

import pytest
import torch

from atlasgen.config import load_config
from atlasgen.errors import AtlasError, ConfigError
from atlasgen.models import build_model, check_models, default_layer_names, module_shapes, select_layers

FACTORY = '''
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential()

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.act(self.stem(x)))).flatten(1))

def net():
    torch.manual_seed(0)
    return Net()

def broken():
    raise ValueError("no GPU in this lab")
'''


def config_for(tmp_path, model_toml):
    (tmp_path / "nets.py").write_text(FACTORY)
    path = tmp_path / "atlas.toml"
    path.write_text("[[models]]\n" + model_toml)
    return load_config(path)


def test_factory_model_layers(tmp_path):
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\ninput_size = 32\n')
    loaded = build_model(config.models[0])
    assert default_layer_names(loaded.module, module_shapes(loaded.module, 32)) == ["stem", "block"]
    layers = select_layers(loaded)
    assert [(l.name, l.channels, l.height) for l in layers] == [("stem", 4, 32), ("block", 6, 16)]
    assert not loaded.module.training
    assert all(not p.requires_grad for p in loaded.module.parameters())


def test_layer_globs_over_dotted_names(tmp_path):
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\ninput_size = 32\nlayers = ["block.*"]\n')
    layers = select_layers(build_model(config.models[0]))
    assert [l.name for l in layers] == ["block.0", "block.1"]


def test_layer_glob_that_matches_nothing(tmp_path):
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nlayers = ["stem", "conv9"]\n')
    with pytest.raises(ConfigError) as info:
        select_layers(build_model(config.models[0]))
    assert info.value.problems == [("models[0].layers[1]", "no layer matches 'conv9'; layers: stem, block (or any dotted module name; `atlasgen layers --all` lists them)")]


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "dataparallel"])
def test_weights_files_in_common_wrappings(tmp_path, wrap):
    source = build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\n').models[0]).module
    state = {k: v + 1.0 for k, v in source.state_dict().items()}
    if wrap == "checkpoint":
        saved = {"epoch": 3, "state_dict": state}
    elif wrap == "dataparallel":
        saved = {f"module.{k}": v for k, v in state.items()}
    else:
        saved = state
    torch.save(saved, tmp_path / "w.pt")
    loaded = build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nweights = "w.pt"\n').models[0])
    assert torch.equal(loaded.module.stem.weight, state["stem.weight"])
    assert loaded.weights_digest != build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\n').models[0]).weights_digest


def test_mismatched_checkpoint_names_keys(tmp_path):
    torch.save({"stem.weight": torch.zeros(4, 3, 3, 3), "head.weight": torch.zeros(1)}, tmp_path / "w.pt")
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nweights = "w.pt"\n')
    with pytest.raises(AtlasError, match=r"does not match the architecture: missing stem.bias, .*unexpected head.weight"):
        build_model(config.models[0])


def test_factory_that_raises_or_is_missing(tmp_path):
    with pytest.raises(AtlasError, match=r"models\[0\].arch: the factory broken\(\) raised ValueError: no GPU in this lab"):
        build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:broken"\n').models[0])
    with pytest.raises(AtlasError, match="has no function 'nope'"):
        build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:nope"\n').models[0])
    with pytest.raises(AtlasError, match="returned Sequential|not a torch.nn.Module|outputs a feature map"):
        select_layers(build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:make"\n').models[0]))


def test_unknown_torchvision_names(tmp_path):
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "a"\narch = "googlenett"\n[[models]]\nname = "b"\narch = "resnet18"\nweights = "IMAGENET_V9"\n')
    with pytest.raises(ConfigError) as info:
        check_models(load_config(path).models)
    (p0, m0), (p1, m1) = info.value.problems
    assert p0 == "models[0].arch" and "did you mean 'googlenet'" in m0
    assert p1 == "models[1].weights" and "IMAGENET1K_V1" in m1


def test_googlenet_default_layers_without_download(tmp_path):
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "g"\narch = "googlenet"\ninput_size = 64\n')
    loaded = build_model(load_config(path).models[0])
    names = [l.name for l in select_layers(loaded)]
    assert names[0] == "conv1" and names[-1] == "inception5b"
    assert "inception4c" in names and not any("pool" in n or n in ("fc", "dropout") for n in names)


def test_demo_model_layers(tmp_path):
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "demo"\narch = "demo"\n')
    loaded = build_model(load_config(path).models[0])
    layers = select_layers(loaded)
    assert [l.name for l in layers] == ["conv1", "conv2", "conv3", "conv4"]
    assert 100 <= sum(l.channels for l in layers) <= 300
