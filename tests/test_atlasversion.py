"""The atlas's citable version names its content: the same atlas built into another folder with
another cache has the same version; a setting that changes the content gives another."""

from pathlib import Path

import pytest
import torch

from atlasgen.atlasversion import atlas_version, portable_arch
from atlasgen.build import prepare
from atlasgen.cache import Cache
from atlasgen.config import load_config
from atlasgen.demo import write_demo_dataset

CONFIG = """
[site]
title = "version test"
output = "{output}"
cache = "{cache}"
[build]
device = "cpu"
[visualize]
size = {size}
steps = 8
[examples]
top_k = 2
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1", "conv3"]
channels = "0:2"
dataset = "{images}"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "images", count=6, seed=3)


def version(folder: Path, images: Path, output: str, cache: str, size: int = 32) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "atlas.toml"
    path.write_text(CONFIG.format(output=output, cache=cache, images=images, size=size))
    config = load_config(path)
    return atlas_version(prepare(config, config.models, Cache(config.site.cache), torch.device("cpu")))


def test_version_ignores_output_and_cache_paths_but_not_content(tmp_path, images):
    first = version(tmp_path / "a", images, "site", ".atlas-cache")
    assert len(first) == 64
    assert version(tmp_path / "b", images, "published/atlas", str(tmp_path / "elsewhere-cache")) == first
    assert version(tmp_path / "c", images, "site", ".atlas-cache", size=48) != first


def test_factory_arch_is_named_by_file_contents_not_path(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "net.py").write_text("def build():\n    return None\n")
    one, two = (portable_arch(f"{tmp_path / n / 'net.py'}:build") for n in ("one", "two"))
    assert one == two and str(tmp_path) not in one
    (tmp_path / "two" / "net.py").write_text("def build():\n    return 1\n")
    assert portable_arch(f"{tmp_path / 'two' / 'net.py'}:build") != one
    assert portable_arch("resnet18") == "resnet18"
