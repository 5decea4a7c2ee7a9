"""In Chromium, from file://: a layer that concatenates branches offers them as sub-navigation
(links and #branch- anchors filter the grid), the layer page filters by dead and by co-activation
with a channel, unit pages give both numbers, and the atlas-wide search finds units by layer and
number, branch number and note text, showing a hostile note only as text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from atlasgen.render import render_site
from atlasgen.sitedata import BranchInfo
from sitefixture import make_site_data

BROWSER = Path(__file__).resolve().parent / "browser"
NOTE = 'Looks like zebra stripes. Code: `<img src=x onerror="window.__pwned=1">`\n'


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("node") is None or not (BROWSER / "node_modules" / "playwright-core").is_dir():
        pytest.skip("BROWSER CHECK SKIPPED: node or tests/browser/node_modules (npm ci) is missing")
    root = tmp_path_factory.mktemp("search")
    site = make_site_data(root / "cache")
    conv2 = site.models[0].layers[1]  # channels 0 1 2 3 5 7 of 8; 3 is dead
    conv2.branches = [BranchInfo("branch1", "1x1", "1x1 conv", 0, 3), BranchInfo("branch2", "3x3", "1x1 conv, 3x3 conv", 3, 6),
                      BranchInfo("branch3", "pool", "3x3 max pool, 1x1 conv", 6, 8)]
    notes = root / "notes"
    (notes / "demo" / "conv2").mkdir(parents=True)
    (notes / "demo" / "conv2" / "5.md").write_text(NOTE)
    render_site(site, root / "site", notes=notes)
    artifacts = os.environ.get("ATLAS_ARTIFACTS")
    run = subprocess.run(["node", "check-branches-search.js", str(root / "site"), *([artifacts] if artifacts else [])],
                         cwd=BROWSER, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.slow


def test_no_script_error_and_no_dialog(seen: dict) -> None:
    assert seen["errors"] == [] and seen["dialogs"] == []


def test_branch_links_and_anchors_filter_the_layer(seen: dict) -> None:
    assert seen["branches"] == ["1x1 channels 0–2 3 units", "3x3 channels 3–5 3 units, 2 shown", "pool channels 6–7 2 units, 1 shown"]
    assert seen["initial"] == [0, 1, 2, 3, 5, 7]
    assert seen["afterBranchClick"] == [3, 5] and seen["current"] == ["3x3"] and seen["filterText"] == "3-5"
    assert seen["fromHash"] == [7]


def test_dead_and_coactivation_filters(seen: dict) -> None:
    assert seen["deadOnly"] == [3]
    # channel 5's similar list in the fixture: the first four other channels (0 1 2 3), plus those listing 5
    assert seen["coactiveOrder"][0] == 5 and set(seen["coactive"]) >= {0, 1, 2, 3, 5}
    assert "channel 5 and the channels it co-activates with" in seen["coactiveStatus"]
    assert seen["cleared"] == [0, 1, 2, 3, 5, 7]


def test_unit_page_gives_both_numbers(seen: dict) -> None:
    assert "channel 5 of conv2 = 3x3 branch, unit 2 of 3" in seen["unitBranch"]


def test_search_by_number_branch_and_note(seen: dict) -> None:
    assert seen["byNumber"][0]["title"] == "demo / conv2 / channel 7"
    assert seen["byNumber"][0]["href"] == "../../../demo/conv2/7/index.html"  # from demo/conv2/5/
    assert seen["byBranch"][0]["title"] == "demo / conv2 / channel 5" and "3x3 branch, unit 2" in seen["byBranch"][0]["detail"]
    assert [r["title"] for r in seen["byNote"]] == ["demo / conv2 / channel 5"] and "zebra" in seen["byNote"][0]["detail"]
    assert seen["nothing"] == [] and seen["nothingStatus"] == "nothing found"
    assert seen["followed"].endswith("/demo/conv2/5/index.html")


def test_a_hostile_note_is_shown_as_text(seen: dict) -> None:
    hit = seen["hostile"]
    assert len(hit) == 1 and '<img src=x onerror="window.__pwned=1">' in hit[0]["detail"] and hit[0]["images"] == 0
    assert seen["pwned"] == 0
