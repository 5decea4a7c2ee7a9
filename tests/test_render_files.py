"""The files a render writes, at the cost a whole atlas can afford: image sizes read from the
headers, digests the cache already knows not read again, weakest examples that no page shows
not copied, and a rebuild with nothing changed that rewrites nothing."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from atlasgen.render import render_site
from atlasgen.render.imagesize import header_size, image_size
from atlasgen.render.urls import _relpath
from atlasgen.render.writer import MANIFEST_NAME
from sitefixture import make_site_data


@pytest.mark.parametrize("fmt, options", [
    ("WEBP", {"quality": 80}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80, "exif": b"Exif\x00\x00" + b"\x00" * 20}),
    ("PNG", {}), ("JPEG", {"quality": 90}), ("JPEG", {"progressive": True}), ("GIF", {}),
])
@pytest.mark.parametrize("size", [(1, 1), (37, 13), (64, 64), (300, 17)])
def test_image_sizes_from_headers_match_pillow(tmp_path: Path, fmt: str, options: dict, size: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA" if fmt == "WEBP" and "exif" in options else "RGB", size, (200, 30, 90)).save(buffer, format=fmt, **options)
    assert header_size(buffer.getvalue()) == size
    path = tmp_path / "image"
    path.write_bytes(buffer.getvalue())
    assert image_size(path) == size


def test_an_unknown_format_goes_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "image.tiff"
    Image.new("RGB", (21, 8)).save(path)
    assert header_size(path.read_bytes()) is None
    assert image_size(path) == (21, 8)


def test_relative_links_match_posixpath() -> None:
    import posixpath

    cases = [("a/b/index.html", "a/b"), ("a/index.html", "a/b/c"), ("x/y.webp", ""), ("index.html", "a"), ("a/b", "a/b"),
             ("a/./b", "a"), ("../a", "b"), ("a//b", "a"), ("/abs", "a")]
    for path, start in cases:
        assert _relpath(path, start) == posixpath.relpath(path, start or "."), (path, start)


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())["files"]


def test_known_digests_are_not_read_again_and_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlasgen.render.writer as writer

    site = make_site_data(tmp_path / "cache")
    images = {str(p) for m in site.models for lv in m.layers for u in lv.units for p in u.images.values()}
    site.file_digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in images}
    hashed: list[Path] = []
    real = writer.file_digest
    monkeypatch.setattr(writer, "file_digest", lambda path: hashed.append(Path(path)) or real(path))
    out = tmp_path / "site"
    render_site(site, out)
    render_site(site, out)  # the rebuild compares digests: the known ones are not read either
    assert hashed and not {str(p) for p in hashed} & images  # the others are
    for rel, record in _manifest(out).items():
        assert record["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel


def test_a_rebuild_reads_no_header_of_an_unchanged_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlasgen.render.writer as writer

    site = make_site_data(tmp_path / "cache")
    unit = site.models[0].layers[0].units[0]
    images = {str(p) for m in site.models for lv in m.layers for u in lv.units for p in u.images.values()}
    site.file_digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in images}
    out = tmp_path / "site"
    render_site(site, out)
    page = (out / "demo/conv1/0/index.html").read_text()
    record = _manifest(out)["demo/conv1/0/channel.webp"]
    assert (record["width"], record["height"]) == image_size(unit.images["channel"])
    read: list[str] = []
    real = writer.image_size
    monkeypatch.setattr(writer, "image_size", lambda path: read.append(str(path)) or real(path))
    render_site(site, out)
    assert read and not set(read) & images  # images without a known digest are still read
    assert (out / "demo/conv1/0/index.html").read_text() == page
    changed = unit.images["channel"]  # new bytes, another size: read again
    Image.new("RGB", (5, 3)).save(changed, format="WEBP")
    site.file_digests[str(changed)] = hashlib.sha256(changed.read_bytes()).hexdigest()
    render_site(site, out)
    assert str(changed) in read and 'width="5" height="3"' in (out / "demo/conv1/0/index.html").read_text()


def test_a_rebuild_with_nothing_changed_rewrites_nothing(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache")
    out = tmp_path / "site"
    render_site(site, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    render_site(site, out)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    assert after == before


def test_a_changed_copy_is_replaced_on_the_next_build(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache")
    out = tmp_path / "site"
    render_site(site, out)
    target = out / "demo/conv1/0/channel.webp"
    original = target.read_bytes()
    target.write_bytes(b"edited")
    render_site(site, out)
    assert target.read_bytes() == original


def test_weakest_examples_tied_at_zero_are_not_copied(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache")
    unit = site.models[0].layers[0].units[0]
    for ex in unit.bottom:
        ex.value = 0.0
    other = site.models[0].layers[0].units[1]
    out = tmp_path / "site"
    render_site(site, out)
    here = out / "demo/conv1/0"
    assert not list(here.glob("bottom-*")) and list(here.glob("top-*"))
    assert list((out / "demo/conv1/1").glob("bottom-*")) and other.bottom[0].value != 0
    assert "ties at zero" in (here / "index.html").read_text()
    twin = json.loads((out / "demo/conv1/index.json").read_text())
    bottoms = next(u for u in twin["units"] if u["channel"] == 0)["examples"]["bottom"]
    assert len(bottoms) == len(unit.bottom) and all(b["patch"] is None for b in bottoms)


BUILD = """
[build]
device = "cpu"
[visualize]
size = 16
steps = 2
objectives = ["channel"]
[examples]
top_k = 2
bottom_k = 1
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1"]
channels = "0:2"
dataset = "images"
"""


@pytest.mark.slow
def test_a_rebuild_takes_every_image_digest_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlasgen.render.writer as writer
    from atlasgen.build import BuildOptions, build
    from atlasgen.config import load_config
    from atlasgen.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "images", count=6, seed=4)
    (tmp_path / "atlas.toml").write_text(BUILD)
    build(load_config(tmp_path / "atlas.toml"), BuildOptions(progress=False))
    page = tmp_path / "site" / "demo" / "conv1" / "0" / "index.html"
    page.write_text("edited")  # so the rebuild writes something and compares digests

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was read for its digest")

    monkeypatch.setattr(writer, "file_digest", no_hashing)
    build(load_config(tmp_path / "atlas.toml"), BuildOptions(progress=False))
    assert "edited" not in page.read_text()
    assert len(list((tmp_path / "site" / "demo" / "conv1" / "0").glob("top-*"))) == 2


def test_the_output_folder_may_itself_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real-site"
    real.mkdir()
    (tmp_path / "site").symlink_to(real, target_is_directory=True)
    render_site(make_site_data(tmp_path / "cache"), tmp_path / "site")
    assert (real / "demo" / "conv1" / "0" / "index.html").is_file()


def test_full_collections_are_deferred_while_rendering_and_resume_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import atlasgen.render as render

    before = gc.get_threshold()
    seen = []
    real = render._render_site
    monkeypatch.setattr(render, "_render_site", lambda *args: seen.append(gc.get_threshold()) or real(*args))
    render_site(make_site_data(tmp_path / "cache"), tmp_path / "site")
    assert seen[0][:2] == before[:2] and seen[0][2] > before[2]
    assert gc.get_threshold() == before
