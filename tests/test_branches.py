"""Branches of concatenating layers, found in the forward pass: GoogLeNet's inception layers split
as Distill's appendix splits them, a tiny hand-built model, and layers that are not a
concatenation of their children (nothing found)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atlasgen.branches import concat_branches
from toymodels import BranchNet, seeded


def _spans(found, layer):
    return [(b.name, b.start, b.stop) for b in found[layer]]


def test_googlenet_inception4b_splits_like_distill() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    found = concat_branches(model, ["conv3", "inception4b", "inception5b"], 224)
    assert _spans(found, "inception4b") == [("branch1", 0, 160), ("branch2", 160, 384), ("branch3", 384, 448), ("branch4", 448, 512)]
    labels = [b.label for b in found["inception4b"]]
    # torchvision's third branch is a 3x3 (Distill's is a 5x5): the labels say what the model has
    assert labels == ["1x1", "3x3 (branch2)", "3x3 (branch3)", "pool"]
    assert found["inception4b"][3].ops == "3x3 max pool, 1x1 conv"
    assert found["inception5b"][-1].stop == 1024
    assert "conv3" not in found  # a plain conv (+ BN + ReLU) is not a concatenation


def test_a_tiny_concat_model_and_what_is_not_one() -> None:
    model = seeded(BranchNet())
    found = concat_branches(model, ["stem", "mix", "res", "down"], 16)
    assert set(found) == {"mix"}  # the residual block adds, the convs have no children
    assert _spans(found, "mix") == [("b1", 0, 2), ("b3", 2, 5), ("b5", 5, 7), ("bp", 7, 9)]  # the pool child's output is not part of it
    assert [b.label for b in found["mix"]] == ["1x1 (b1)", "3x3", "5x5", "1x1 (bp)"]
    assert model.training is False


class Reordered(nn.Module):
    """Concatenates its children's outputs, but not in the order they ran, then processes the result."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        return torch.cat([b, a], dim=1)


class Processed(Reordered):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)) + 1


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_only_a_concatenation_in_call_order_counts() -> None:
    assert concat_branches(Wrapper(Processed()), ["inner"], 8) == {}
    found = concat_branches(Wrapper(Reordered()), ["inner"], 8)
    # b ran second but comes first: in call order a's output is not at channel 0, so the split is not claimed
    assert found == {}


def test_training_mode_comes_back() -> None:
    model = BranchNet().train()
    concat_branches(model, ["mix"], 16)
    assert all(m.training for m in model.modules())


NETS = '''
import torch
from torch import nn

class Mix(nn.Module):
    def __init__(self):
        super().__init__()
        self.one = nn.Conv2d(3, 2, 1)
        self.three = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 3, padding=1))

    def forward(self, x):
        return torch.cat([self.one(x), self.three(x)], 1)

def mixed():
    return nn.Sequential(Mix(), nn.Conv2d(5, 4, 3))
'''
CONFIG = """
[build]
device = "cpu"
[visualize]
size = 16
steps = 2
objectives = ["channel"]
[examples]
top_k = 2
bottom_k = 0
[[models]]
name = "m"
arch = "nets.py:mixed"
layers = ["0", "1"]
dataset = "images"
"""


@pytest.mark.slow
def test_a_build_shows_branches_on_the_layer_and_unit_pages(tmp_path) -> None:
    import json

    from atlasgen.build import BuildOptions, build
    from atlasgen.config import load_config
    from atlasgen.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "images", count=6, seed=2)
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "atlas.toml").write_text(CONFIG)
    build(load_config(tmp_path / "atlas.toml"), BuildOptions(progress=False))
    site = tmp_path / "site" / "m"
    twin = json.loads((site / "0" / "index.json").read_text())
    assert [(b["name"], b["label"], b["start"], b["stop"]) for b in twin["branches"]] == [("one", "1x1", 0, 2), ("three", "3x3", 2, 5)]
    assert twin["units"][3]["branch"] == {"name": "three", "unit": 1}
    layer = (site / "0" / "index.html").read_text()
    assert 'id="branch-three"' in layer and 'data-range="2-4"' in layer
    unit = (site / "0" / "3" / "index.html").read_text()
    assert "channel 3 of 0 = " in unit and "branch, unit 1 of 3" in unit
    plain = (site / "1" / "index.html").read_text()
    assert "branch-list" not in plain and json.loads((site / "1" / "index.json").read_text())["branches"] == []
