"""The pages explain their numbers: a legend on layer and unit pages, like-with-like
percentages, flat visualizations flagged with a reason, weakest examples that are ties at
zero replaced by a sentence, similar channels outside the atlas marked."""

from __future__ import annotations

import dataclasses
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sitefixture import make_site_data

from atlasgen.assemble import _derive
from atlasgen.render import render_site
from atlasgen.sitedata import UnitData
from atlasgen.stillness import still_reason


def _flat(path: Path) -> Path:
    Image.fromarray(np.full((32, 32, 3), 127, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("numbers")
    site = make_site_data(tmp / "cache")
    conv1 = site.models[0].layers[0]
    still = conv1.units[1]
    still.images["channel"] = _flat(tmp / "flat.png")
    still.activation["channel"] = 0.0
    _derive(still)
    for ex in conv1.units[2].bottom:  # a ReLU layer: every weakest example is exactly 0
        ex.value = 0.0
    for unit in conv1.units:
        unit.bottom = [dataclasses.replace(ex, value=abs(ex.value)) for ex in unit.bottom]
    conv1.nonnegative = True
    out = tmp / "site"
    render_site(site, out)
    return out


def read(path: Path) -> str:
    return unescape(path.read_text("utf-8"))


def test_layer_and_unit_pages_carry_a_legend_of_their_numbers(site_dir: Path) -> None:
    layer = read(site_dir / "demo/conv1/index.html")
    unit = read(site_dir / "demo/conv1/2/index.html")
    for page in (layer, unit):
        assert 'id="legend"' in page and 'href="#legend"' in page
        assert "(max \u2212 mean) / std" in page
    for term in ("score (this image also excites)", "z-score", "r (fire together)", "best image mean"):
        assert term in unit.replace("<i>", "").replace("</i>", "")
    assert "not in atlas" in layer and "Similar" in layer


def test_selectivity_is_max_minus_mean_over_std() -> None:
    unit = UnitData(channel=0, dataset_max=5.0, dataset_mean=1.0, dataset_std=2.0)
    _derive(unit)
    assert unit.selectivity == pytest.approx(2.0)


def test_a_flat_visualization_is_flagged_with_its_reason(site_dir: Path) -> None:
    unit = read(site_dir / "demo/conv1/1/index.html")
    assert "did not move" in unit and "nearly uniform grey" in unit
    card = read(site_dir / "demo/conv1/index.html").split('id="unit-1"', 1)[1].split("</article>", 1)[0]
    assert "did not move" in card
    other = read(site_dir / "demo/conv1/0/index.html")
    assert "did not move</span> the" not in other  # a textured image is not flagged


def test_still_tells_grey_from_texture_and_from_a_uniform_colour(tmp_path: Path) -> None:
    assert still_reason(_flat(tmp_path / "grey.png")) is not None
    rng = np.random.default_rng(0)
    faint = np.clip(127.5 + rng.normal(0, 5, (32, 32, 3)), 0, 255).astype(np.uint8)  # a blank-looking result
    Image.fromarray(faint).save(tmp_path / "faint.png")
    assert still_reason(tmp_path / "faint.png") is not None
    noisy = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noise.png")
    assert still_reason(tmp_path / "noise.png") is None
    magenta = np.zeros((32, 32, 3), dtype=np.uint8)
    magenta[..., 0] = magenta[..., 2] = 255  # a colour channel's answer: uniform, but far from grey
    Image.fromarray(magenta).save(tmp_path / "magenta.png")
    assert still_reason(tmp_path / "magenta.png") is None


def test_weakest_examples_that_tie_at_zero_are_explained_not_shown(site_dir: Path) -> None:
    ties = read(site_dir / "demo/conv1/2/index.html")
    weakest = ties.split('id="bottom-heading"', 1)[1].split("</section>", 1)[0]
    assert "cannot go below zero" in weakest and "ties at zero" in weakest
    assert "<img" not in weakest
    shown = read(site_dir / "demo/conv1/0/index.html").split('id="bottom-heading"', 1)[1].split("</section>", 1)[0]
    assert "<img" in shown and "cannot go below zero" in shown
