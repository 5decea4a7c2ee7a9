"""The neuron_at objective: a chosen unit (or row) of the channel's map, as fractions."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from atlasgen.config import load_config
from atlasgen.errors import ConfigError
from atlasgen.featvis import visualize_channels
from atlasgen.objectives.neuron_at import NeuronAt, cell
from atlasgen.settings import Octave, Preprocess, VisSettings
from atlasgen.stages.featvis import key_settings

CPU = torch.device("cpu")
CENTRED = Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
OCTAVES = (Octave(scale=0.5, share=0.5, lr=(0.4, 0.4), blur=(0.5, 0.25)),
           Octave(scale=1.0, share=0.5, lr=(0.4, 0.2), blur=(0.25, 0.0)))


def red_net() -> nn.Module:
    """One channel: how red each pixel is (a 1x1 convolution), so unit (i, j) sees pixel (i, j)."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
        conv.bias.zero_()
    return nn.Sequential(OrderedDict(conv=conv, act=nn.LeakyReLU(0.1))).eval()


def settings_at(row, col) -> VisSettings:
    return VisSettings(objectives=("neuron_at",), size=16, steps=40, octaves=OCTAVES, pad=0.0, jitter=0.0625, scale=(1.0, 1.0),
                       rotate=0.0, relu_redirect_steps=0, options=(("neuron_at", NeuronAt(row=row, col=col)),))


def final_map(result) -> torch.Tensor:
    images = torch.from_numpy(result.images["neuron_at"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return red_net()(images * 2 - 1)[0, 0]


def test_cells_of_fractions():
    assert [cell(f, 4) for f in (0.0, 0.24, 0.25, 0.5, 0.99, 1.0)] == [0, 0, 1, 2, 3, 3]
    assert cell(0.5, 7) == 7 // 2  # the centre, like the neuron objective


def test_the_chosen_unit_is_the_one_that_lights_up():
    top_left = visualize_channels(red_net(), "act", [0], settings_at(0.0, 0.0), CENTRED, CPU)
    bottom_right = visualize_channels(red_net(), "act", [0], settings_at(1.0, 1.0), CENTRED, CPU)
    a, b = final_map(top_left), final_map(bottom_right)
    assert a[0, 0] > 0.5 and b[-1, -1] > 0.5
    assert a[0, 0] > b[0, 0] + 0.3 and b[-1, -1] > a[-1, -1] + 0.3
    # the reported score is that unit's value on the stored image
    assert top_left.activation["neuron_at"][0] == pytest.approx(float(a[0, 0]), abs=1e-5)


def test_a_whole_row():
    result = visualize_channels(red_net(), "act", [0], settings_at(0.5, "all"), CENTRED, CPU)
    acts = final_map(result)
    assert result.activation["neuron_at"][0] == pytest.approx(float(acts[8].mean()), abs=1e-5)
    assert float(acts[8].mean()) > float(acts[0].mean()) + 0.3  # the middle row, not the top one


def test_options_in_atlas_toml(tmp_path):
    base = '[[models]]\nname = "demo"\narch = "demo"\n[visualize]\nobjectives = ["channel", "neuron_at"]\n'
    path = tmp_path / "atlas.toml"
    path.write_text(base + '[visualize.neuron_at]\nrow = 0.25\ncol = "all"\n')
    vis = load_config(path).models[0].stages.visualize
    assert vis.options_for("neuron_at") == NeuronAt(row=0.25, col="all")
    path.write_text(base)
    assert load_config(path).models[0].stages.visualize.options_for("neuron_at") == NeuronAt(0.5, 0.5)
    path.write_text(base + '[visualize.neuron_at]\nrow = 2\ncol = "middle"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        ("visualize.neuron_at.row", "must be at most 1.0, got 2"),
        ("visualize.neuron_at.col", 'expected a fraction from 0.0 to 1.0 or "all", got \'middle\''),
    ]


def test_options_enter_the_key_only_when_the_objective_is_chosen():
    assert "options" not in key_settings(VisSettings())  # keys of atlases without neuron_at are unchanged
    chosen = VisSettings(objectives=("channel", "neuron_at"))
    moved = VisSettings(objectives=("channel", "neuron_at"), options=(("neuron_at", NeuronAt(row=0.0)),))
    assert key_settings(chosen)["options"] == {"neuron_at": {"row": 0.5, "col": 0.5}}
    assert key_settings(chosen) != key_settings(moved)
