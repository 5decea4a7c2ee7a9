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

class ChannelsLast(nn.Module):
    """8 channels on an 8x8 map at 32 px, handed out as (N, H, W, C): one shape cannot tell."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.cube = nn.Identity()

    def forward(self, x):
        return self.cube(self.conv(x).permute(0, 2, 3, 1)).mean(dim=(1, 2))

def channels_last():
    torch.manual_seed(0)
    return ChannelsLast()
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


# ---------------------------------------------------------------- checkpoints as people have them


def saved_net(tmp_path, transform) -> tuple[dict, str]:
    """A state_dict of the factory's net (shifted so it differs from the initialization), saved
    in the form `transform` gives it; returns the state and the weights file's name."""
    source = build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\n').models[0]).module
    state = {k: v + 1.0 for k, v in source.state_dict().items()}
    torch.save(transform(state), tmp_path / "w.pt")
    return state, "w.pt"


@pytest.mark.parametrize("form", [
    lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},  # torch.compile
    lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()},  # DDP around torch.compile
    lambda s: {"epoch": 9, "optimizer": {"lr": 0.1}, "model_ema": s},  # timm training checkpoint
    lambda s: {"model_state_dict": {f"model.{k}": v for k, v in s.items()}},  # Lightning-style prefix
], ids=["compile", "ddp-compile", "ema", "lightning"])
def test_checkpoint_forms_load(tmp_path, form):
    state, name = saved_net(tmp_path, form)
    loaded = build_model(config_for(tmp_path, f'name = "n"\narch = "nets.py:net"\nweights = "{name}"\n').models[0])
    assert torch.equal(loaded.module.stem.weight, state["stem.weight"])


def test_whole_pickled_torchvision_model_loads_without_running_code(tmp_path):
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.squeezenet1_1()
    torch.save(model, tmp_path / "whole.pt")
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "s"\narch = "squeezenet1_1"\nweights = "whole.pt"\n')
    loaded = build_model(load_config(path).models[0])
    assert torch.equal(loaded.module.features[0].weight, model.features[0].weight)


def test_whole_pickle_of_a_users_class_is_refused_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "nets.py").write_text(FACTORY)
    import importlib

    nets = importlib.import_module("nets")
    torch.save(nets.net(), tmp_path / "whole.pt")
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nweights = "whole.pt"\n')
    with pytest.raises(AtlasError, match=r"models\[0\].weights: whole.pt is a pickled object that names classes outside "
                                         r"torch and torchvision \(nets.Net\).*torch.save\(model.state_dict\(\), path\)"):
        build_model(config.models[0])


def test_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    source = build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\n').models[0]).module
    state = {k: (v + 2.0).contiguous() for k, v in source.state_dict().items()}
    safetensors.save_file(state, str(tmp_path / "w.safetensors"))
    loaded = build_model(config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nweights = "w.safetensors"\n').models[0])
    assert torch.equal(loaded.module.stem.weight, state["stem.weight"])


def test_another_architectures_weights_name_the_key_path_and_shapes(tmp_path):
    import torchvision

    torch.save(torchvision.models.squeezenet1_0().state_dict(), tmp_path / "sq10.pt")
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "s"\narch = "squeezenet1_1"\nweights = "sq10.pt"\n')
    with pytest.raises(AtlasError, match=r"^models\[0\].weights: sq10.pt does not match the architecture: missing .*; shape differs "
                                         r"features.0.weight \(96, 3, 7, 7\) vs \(64, 3, 3, 3\)"):
        build_model(load_config(path).models[0])


@pytest.mark.slow
@pytest.mark.parametrize("arch, aux", [("googlenet", "aux1"), ("inception_v3", "AuxLogits")])
def test_default_constructor_checkpoints_with_auxiliary_heads_load(tmp_path, arch, aux):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, init_weights=False)  # aux heads, as trained
    state = model.state_dict()
    assert any(key.startswith(aux + ".") for key in state)
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "trained.pth")
    path = tmp_path / "atlas.toml"
    path.write_text(f'[[models]]\nname = "m"\narch = "{arch}"\nweights = "trained.pth"\n')
    loaded = build_model(load_config(path).models[0])
    first = next(iter(loaded.module.state_dict()))
    assert torch.equal(loaded.module.state_dict()[first], state[first])
    assert not any(name.startswith(aux) for name, _ in loaded.module.named_modules())


def test_a_model_without_weights_is_the_same_on_every_build(tmp_path):
    """Random initialization is seeded: the same digest, so the cache is reused."""
    path = tmp_path / "atlas.toml"
    path.write_text('[[models]]\nname = "s"\narch = "squeezenet1_1"\n')
    torch.manual_seed(123)
    first = build_model(load_config(path).models[0])
    second = build_model(load_config(path).models[0])
    assert first.weights_digest == second.weights_digest
    # ... and the caller's generator is left where it was
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_model(load_config(path).models[0])
    assert torch.equal(torch.rand(1), expected)


def test_a_channels_last_cube_is_read_by_a_second_input_size(tmp_path):
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:channels_last"\ninput_size = 32\nlayers = ["conv", "cube"]\n')
    layers = {layer.name: layer for layer in select_layers(build_model(config.models[0]))}
    assert (layers["conv"].layout, layers["cube"].layout) == ("nchw", "nhwc")
    assert (layers["cube"].channels, layers["cube"].height) == (8, 8)


@pytest.mark.parametrize("content", [b"not a checkpoint at all" * 10, None], ids=["garbage", "plain-pickle"])
def test_a_file_that_is_no_checkpoint_gets_a_sentence(tmp_path, content):
    import pickle

    if content is None:
        (tmp_path / "w.pt").write_bytes(pickle.dumps({"a": 1}))
    else:
        (tmp_path / "w.pt").write_bytes(content)
    config = config_for(tmp_path, 'name = "n"\narch = "nets.py:net"\nweights = "w.pt"\n')
    with pytest.raises(AtlasError, match=r"^models\[0\].weights: cannot read .*w.pt as PyTorch weights: it is not a file written by torch.save; give"):
        build_model(config.models[0])
