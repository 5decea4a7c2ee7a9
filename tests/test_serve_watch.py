"""`atlasgen serve` rebuilds on changes: a changed note re-renders its page, computing nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config
from atlasgen.demo import write_demo_dataset
from atlasgen.serve import watcher_for

pytestmark = pytest.mark.slow

CONFIG = """
[site]
title = "watched"
notes = "notes"
[build]
device = "cpu"
[visualize]
objectives = ["channel"]
size = 32
steps = 4
[examples]
top_k = 2
bottom_k = 1
patch_size = 32
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1"]
channels = "0:2"
dataset = "images"
"""


def _wait_for(predicate, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_changed_note_re_renders_its_page_and_computes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_demo_dataset(tmp_path / "images", count=8, seed=5)
    (tmp_path / "notes" / "demo").mkdir(parents=True)
    note = tmp_path / "notes" / "demo" / "conv1.md"
    note.write_text("First thoughts on conv1.\n")
    config_path = tmp_path / "atlas.toml"
    config_path.write_text(CONFIG)
    build(load_config(config_path), BuildOptions(progress=False))
    page = tmp_path / "site" / "demo" / "conv1" / "index.html"
    assert "First thoughts" in page.read_text()

    watcher = watcher_for(config_path, tmp_path / "site", interval=0.1)
    watcher.start()
    try:
        caplog.set_level(logging.INFO, logger="atlasgen")
        note.write_text("Second thoughts: edges at 45 degrees.\n")
        assert _wait_for(lambda: "Second thoughts" in page.read_text()), "the note's page was not re-rendered"
        assert _wait_for(lambda: watcher.rebuilds >= 1)
    finally:
        watcher.stop()
        watcher.join(10)
    assert "0 units computed" in caplog.text
    assert "First thoughts" not in page.read_text()
