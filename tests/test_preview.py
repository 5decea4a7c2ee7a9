"""`[build] preview = true`: the costly settings capped for every model, every page marked, and
cache entries kept apart from the real build's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atlasgen import preview
from atlasgen.build import BuildOptions, build
from atlasgen.cache import Cache
from atlasgen.config import load_config
from test_build import images, make_project  # noqa: F401  (images is a fixture)

BANNER = "Preview build:"


def test_preview_caps_the_costly_settings_of_every_model(tmp_path):
    path = tmp_path / "atlas.toml"
    path.write_text("""
[build]
preview = true
[visualize]
steps = 512
size = 224
[examples]
top_k = 7
[[models]]
name = "a"
arch = "demo"
[[models]]
name = "b"
arch = "demo"
visualize = {size = 32, steps = 8}
examples = {max_images = 20}
""")
    config = load_config(path)
    a, b = (model.stages for model in config.models)
    assert config.preview
    assert (a.visualize.steps, a.visualize.size, a.visualize.relu_redirect_steps, a.examples.max_images) == (
        preview.STEPS, preview.SIZE, preview.RELU_REDIRECT_STEPS, preview.MAX_IMAGES)
    assert a.examples.top_k == 7  # what is not costly stays as configured
    assert (b.visualize.steps, b.visualize.size, b.examples.max_images) == (8, 32, 20)  # already below the caps
    path.write_text(path.read_text().replace("preview = true", "preview = false"))
    real = load_config(path)
    assert not real.preview and real.models[0].stages.visualize.steps == 512 and real.models[0].stages.examples.max_images == 0


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("index.html"))


def _inputs(cache: Path, kind: str) -> list[dict]:
    entries = Cache(cache)
    return [json.loads(entries.get(kind, meta.parent.name).meta["inputs"])
            for meta in (cache / kind).glob("*/*/meta.json")]


@pytest.mark.slow
def test_a_preview_build_marks_its_pages_and_keeps_its_cache_apart(tmp_path, images):  # noqa: F811
    config_path = make_project(tmp_path, images, steps=20)
    config_path.write_text(config_path.read_text().replace("[build]\n", "[build]\npreview = true\n"))
    site, cache = tmp_path / "site", tmp_path / ".atlas-cache"

    first = build(load_config(config_path), BuildOptions(progress=False))
    assert first.computed["featvis"] == 6
    pages = _pages(site)
    assert len(pages) == 1 + 1 + 2 + 6  # atlas, model, 2 layers, 6 units
    assert all(BANNER in page.read_text() for page in [*pages, site / "404.html"])
    assert "preview build" in (site / "CITATION.cff").read_text()
    assert {i["visualize"]["steps"] for i in _inputs(cache, "featvis")} == {preview.STEPS}
    assert {i["visualize"]["size"] for i in _inputs(cache, "featvis")} == {32}  # below the cap: kept
    assert {i["examples"]["max_images"] for i in _inputs(cache, "dataset")} == {preview.MAX_IMAGES}
    preview_version = re.search(r"^version: (.+)$", (site / "CITATION.cff").read_text(), re.M)[1]

    config_path.write_text(config_path.read_text().replace("preview = true", "preview = false"))
    real = build(load_config(config_path), BuildOptions(progress=False))
    # Everything the capped settings change is computed again; receptive fields do not depend on them.
    assert real.computed == {"featvis": 6, "dataset": 2, "similarity": 2, "histogram": 2, "image_mean": 2}
    assert real.cached == {"receptive": 1, "filters": 1}
    assert not any(BANNER in page.read_text() for page in [*_pages(site), site / "404.html"])
    cff = (site / "CITATION.cff").read_text()
    assert "preview" not in cff and preview_version not in cff
    assert {i["visualize"]["steps"] for i in _inputs(cache, "featvis")} == {preview.STEPS, 20}

    config_path.write_text(config_path.read_text().replace("preview = false", "preview = true"))
    again = build(load_config(config_path), BuildOptions(progress=False))
    assert sum(again.computed.values()) == 0  # the preview's entries are still there, beside the real ones
    assert all(BANNER in page.read_text() for page in _pages(site))
