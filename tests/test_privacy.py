"""A site never publishes a path of the build machine: built in a folder with a distinctive
name, from a weights file and a model factory given by path, no file of the site (pages,
index.json, CITATION.cff, sitemap, assets) contains that folder's name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config
from atlasgen.demo import write_demo_dataset
from atlasgen.published import public_arch, public_weights

MARK = "zq-private-folder-7731"

CONFIG = """
[site]
title = "privacy"
url = "https://example.org/atlas/"
[build]
device = "cpu"
[visualize]
objectives = ["channel", "neuron"]
size = 32
steps = 4
[examples]
top_k = 2
bottom_k = 1
patch_size = 32
[[models]]
name = "weighted"
arch = "demo"
weights = "{weights}"
layers = ["conv1"]
channels = "0:2"
dataset = "images"
[[models]]
name = "factory"
arch = "factory.py:make"
layers = ["conv1"]
channels = "0:2"
dataset = "images"
"""

FACTORY = """
from atlasgen.demo.net import build_demo_model

def make():
    return build_demo_model(pretrained=True)
"""


def test_public_names_drop_the_folders() -> None:
    digest = "ab" * 32
    assert public_weights("/home/ada/private/r18.pt", digest) == "r18.pt (sha256 abababababab)"
    assert public_weights("IMAGENET1K_V1", None) == "IMAGENET1K_V1"
    assert public_arch("/home/ada/models/net.py:make") == "net.py:make"
    assert public_arch("resnet18") == "resnet18" and public_arch("pkg.module:make") == "pkg.module:make"


@pytest.mark.slow
def test_no_page_or_data_file_names_the_build_folder(tmp_path: Path) -> None:
    project = tmp_path / MARK
    project.mkdir()
    write_demo_dataset(project / "images", count=12, seed=3)
    weights = project / "weights" / "r18.pt"
    weights.parent.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "atlasgen" / "demo" / "weights.pt", weights)
    (project / "factory.py").write_text(FACTORY)
    config = project / "atlas.toml"
    config.write_text(CONFIG.format(weights=weights))  # an absolute path, as users write them
    build(load_config(config), BuildOptions(progress=False))
    site = project / "site"
    files = [p for p in site.rglob("*") if p.is_file()]
    assert any(p.name == "index.json" for p in files) and (site / "weighted/index.html").is_file()
    leaks = [str(p.relative_to(site)) for p in files if MARK.encode() in p.read_bytes() or str(tmp_path).encode() in p.read_bytes()]
    assert leaks == []
    model_page = (site / "weighted/index.html").read_text()
    assert "r18.pt (sha256 " in model_page
    assert "factory.py:make" in (site / "factory/index.html").read_text()
