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
from sitefixture import make_site_data, site_link_problems


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


# --------------------------------------------------------------------------- files created in place


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def test_a_cold_render_creates_its_files_in_place_without_renaming_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    site = make_site_data(tmp_path / "cache")
    renames: list[str] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append(os.fspath(dst)) or real(src, dst))
    render_site(site, tmp_path / "site")
    files = _files(tmp_path / "site")
    assert len(files) > 50 and {Path(r).name for r in renames} == {MANIFEST_NAME}  # the manifest alone is renamed
    renames.clear()
    render_site(site, tmp_path / "site")  # nothing changed: nothing written
    assert {Path(r).name for r in renames} <= {MANIFEST_NAME} and _files(tmp_path / "site") == files


def test_a_file_that_appears_after_the_check_is_replaced_not_written_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlasgen.render.writer import SiteWriter

    outside = tmp_path / "outside.webp"
    outside.write_bytes(b"not atlasgen's")
    real = SiteWriter.check

    def check_then_link(self: SiteWriter) -> None:  # a link made between the check and the write
        real(self)
        (self.output / "demo/conv1/0").mkdir(parents=True)
        (self.output / "demo/conv1/0/channel.webp").symlink_to(outside)
        (self.output / "demo/conv1/0/index.html").symlink_to(outside)

    monkeypatch.setattr(SiteWriter, "check", check_then_link)
    site = make_site_data(tmp_path / "cache")
    render_site(site, tmp_path / "site")
    assert outside.read_bytes() == b"not atlasgen's"
    for name in ("channel.webp", "index.html"):
        path = tmp_path / "site/demo/conv1/0" / name
        assert not path.is_symlink() and path.is_file()
    assert (tmp_path / "site/demo/conv1/0/channel.webp").read_bytes() == site.models[0].layers[0].units[0].images["channel"].read_bytes()


def test_a_full_disk_while_creating_a_file_leaves_no_part_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from atlasgen.errors import AtlasError

    writes = []
    real = os.write

    def fill_up(fd: int, data: bytes) -> int:
        writes.append(fd)
        if len(writes) == 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", fill_up)
    with pytest.raises(AtlasError, match="no space left"):
        render_site(make_site_data(tmp_path / "cache"), tmp_path / "site")
    monkeypatch.undo()
    clean = tmp_path / "clean"
    render_site(make_site_data(tmp_path / "cache"), clean)
    written = _files(tmp_path / "site")
    assert 0 < len(written) < len(_files(clean))
    assert all(written[rel] == data for rel, data in _files(clean).items() if rel in written)  # no short file left


KILLED = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import atlasgen.render.writer as writer
from atlasgen.render import render_site
from sitefixture import make_site_data

real, count = writer._write_all, [0]
def half_then_die(fd, data):
    count[0] += 1
    if count[0] == 30:  # killed halfway through the 30th file
        os.write(fd, data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd, data)
writer._write_all = half_then_die
render_site(make_site_data(Path({cache!r})), Path({out!r}))
"""


def test_a_build_killed_while_creating_files_is_repaired_by_the_next(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "site"
    script = KILLED.format(tests=str(Path(__file__).parent), cache=str(tmp_path / "cache"), out=str(out))
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == -9
    render_site(make_site_data(tmp_path / "cache"), tmp_path / "clean")
    clean = _files(tmp_path / "clean")
    left = _files(out)
    cut = [rel for rel, data in left.items() if data != clean[rel]]
    assert len(cut) == 1 and len(left[cut[0]]) < len(clean[cut[0]])  # the file it was filling, cut short
    render_site(make_site_data(tmp_path / "cache"), out)
    assert _files(out) == clean


# --------------------------------------------------------------------------- example images shown by several pages


def _with_digests(site) -> None:  # noqa: ANN001
    """What assembly hands the render: the cache's verified digest of every image."""
    paths = [p for m in site.models for lv in m.layers for u in lv.units
             for p in [*u.images.values(), *(x for ex in (*u.top, *u.bottom) for x in (ex.patch, ex.heatmap))] if p is not None]
    site.file_digests = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _img_sources(page: Path) -> dict[str, str]:
    """alt -> the file each <img> of the page shows, relative to the site."""
    import re

    found = {}
    for tag in re.findall(r"<img [^>]*>", page.read_text()):
        src, alt = re.search(r'src="([^"]+)"', tag).group(1), re.search(r'alt="([^"]*)"', tag).group(1)
        found[alt] = (page.parent / src).resolve()
    return found


def test_an_example_image_several_pages_show_is_published_once_for_its_layer(tmp_path: Path) -> None:
    import shutil

    site = make_site_data(tmp_path / "cache")
    units = site.models[0].layers[0].units
    twin_copy = tmp_path / "cache" / "elsewhere.webp"  # another cache entry with the same bytes
    shutil.copyfile(units[0].top[0].patch, twin_copy)
    own = units[1].top[0].patch
    units[1].top[0].patch = twin_copy
    _with_digests(site)
    out = tmp_path / "site"
    report = render_site(site, out)

    digest = site.file_digests[str(twin_copy)]
    shared = out / "demo/conv1/examples" / digest[0] / f"{digest[:32]}.webp"
    assert shared.read_bytes() == twin_copy.read_bytes()
    pages = [_img_sources(out / f"demo/conv1/{u.channel}/index.html") for u in units[:2]]
    shows = [[alt for alt, file in page.items() if file == shared.resolve()] for page in pages]
    assert [len(s) for s in shows] == [1, 1] and "channel 0" in shows[0][0] and "channel 1" in shows[1][0]  # alt of its own
    assert not (out / "demo/conv1/0/top-0.webp").exists() and not (out / "demo/conv1/1/top-0.webp").exists()
    assert (out / "demo/conv1/2/top-0.webp").is_file()  # shown once: beside its page, as before
    twin = json.loads((out / "demo/conv1/index.json").read_text())
    tops = {u["channel"]: u["examples"]["top"][0]["patch"] for u in twin["units"]}
    assert (out / "demo/conv1" / tops[0]).resolve() == (out / "demo/conv1" / tops[1]).resolve() == shared.resolve()
    assert site_link_problems(out) == [] and report.files == sum(1 for p in out.rglob("*") if p.is_file())

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    render_site(site, out)  # nothing changed: nothing rewritten, the same pages
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME} == before

    units[1].top[0].patch = own  # shown once again: back beside its page, the shared file removed
    _with_digests(site)
    render_site(site, out)
    assert not (out / "demo/conv1/examples").exists()
    assert (out / "demo/conv1/0/top-0.webp").is_file() and (out / "demo/conv1/1/top-0.webp").read_bytes() == own.read_bytes()
    assert site_link_problems(out) == []


def test_without_known_digests_every_example_stays_beside_its_page(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache")
    units = site.models[0].layers[0].units
    units[1].top[0].patch = units[0].top[0].patch  # the same file, but the render is not told its digest
    render_site(site, tmp_path / "site")
    assert (tmp_path / "site/demo/conv1/0/top-0.webp").read_bytes() == (tmp_path / "site/demo/conv1/1/top-0.webp").read_bytes()
    assert not (tmp_path / "site/demo/conv1/examples").exists()
