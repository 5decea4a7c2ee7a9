"""`[site.images] visualizations = "jpeg"`: the site shows full-colour JPEG copies of the
lossless visualizations, switching format or quality re-encodes without optimizing again, and
a unit's copies are made on the rank that optimized it."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config
from atlasgen.demo import write_demo_dataset
from atlasgen.plan import make_task, shard

CONFIG = """
[site.images]
visualizations = "{fmt}"
quality = {quality}
[build]
device = "cpu"
[visualize]
objectives = ["channel", "diversity"]
diversity = 2
size = 32
steps = 8
[examples]
top_k = 2
bottom_k = 0
[[models]]
name = "demo"
arch = "demo"
layers = ["conv3"]
channels = "0:2"
dataset = "images"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "images", count=12, seed=3)


def _build(tmp_path: Path, fmt: str, quality: int = 85):
    (tmp_path / "atlas.toml").write_text(CONFIG.format(fmt=fmt, quality=quality))
    return build(load_config(tmp_path / "atlas.toml"), BuildOptions(progress=False))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
def test_jpeg_copies_replace_the_pngs_on_the_site_and_switching_only_re_encodes(tmp_path, images):
    (tmp_path / "images").symlink_to(images, target_is_directory=True)
    first = _build(tmp_path, "jpeg")
    assert first.computed["featvis"] == 2 and first.computed["featvis_files"] == 2
    unit = tmp_path / "site/demo/conv3/0"
    shown = sorted(p.name for p in unit.iterdir() if p.name.startswith(("channel", "diversity")))
    assert shown == ["channel.jpg", "diversity-0.jpg", "diversity-1.jpg"]
    page = (unit / "index.html").read_text()
    assert 'src="channel.jpg"' in page and "numbers are those of the lossless images" in page
    with Image.open(unit / "channel.jpg") as jpeg:
        assert jpeg.format == "JPEG" and JpegImagePlugin.get_sampling(jpeg) == 0  # 4:4:4, full colour
    at_85 = (unit / "channel.jpg").stat().st_size

    # The copy is of the cached lossless image, close to it pixel by pixel.
    entries = [e for e in (tmp_path / ".atlas-cache/featvis").glob("*/*") if e.is_dir()]
    lossless = [_pixels(e / "channel.png") for e in entries]
    copy = _pixels(unit / "channel.jpg")
    nearest, other = sorted(float(np.abs(copy - png).mean()) for png in lossless)
    assert nearest < 8 and nearest < other / 3, (nearest, other)  # levels of 255: JPEG's loss, not another image

    # Back to PNG: nothing computed, the copies leave the site, the lossless files come back.
    second = _build(tmp_path, "png")
    assert sum(second.computed.values()) == 0
    assert (unit / "channel.png").is_file() and not (unit / "channel.jpg").exists()
    with Image.open(unit / "channel.png") as png:
        assert any(np.array_equal(np.asarray(png.convert("RGB"), dtype=np.float32), p) for p in lossless)
    assert "numbers are those of the lossless images" not in (unit / "index.html").read_text()

    # Another quality: only the copies (and the patches, which share the setting) are redone.
    third = _build(tmp_path, "jpeg", quality=60)
    assert third.computed.get("featvis", 0) == 0 and third.computed["featvis_files"] == 2
    assert (unit / "channel.jpg").stat().st_size < at_85


def test_a_units_tasks_of_each_kind_fall_on_the_same_rank():
    tasks = [make_task(kind, 1, "m", layer, c, {"c": c, "layer": layer})
             for kind in ("featvis", "featvis_files") for layer in ("a", "b") for c in range(7)]
    tasks.append(make_task("receptive", 1, "m", "", None, {}))
    for world in (2, 3):
        shares = [shard(tasks, rank, world) for rank in range(world)]
        assert sorted(t.key for share in shares for t in share) == sorted(t.key for t in tasks)  # each once
        for share in shares:
            units = {kind: {(t.layer, t.channel) for t in share if t.kind == kind} for kind in ("featvis", "featvis_files")}
            assert units["featvis"] == units["featvis_files"]
        sizes = [sum(t.kind == "featvis" for t in share) for share in shares]
        assert max(sizes) - min(sizes) <= 1
