"""Hostile cases: folders of other people's work, links, nested folders, names of the site's
own files, tampered manifests, leftovers. Each asserts the message, the exit status, and
that every file of the surrounding folder that atlasgen does not own (the files listed in
the output's manifest are its own) is byte-identical before and after, with no file added
outside atlasgen's own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlasgen.atomic import _LEFTOVER, HOST
from atlasgen.cli import main
from atlasgen.demo import write_demo_dataset
from atlasgen.folders import MANIFEST_NAME

CONFIG = """
[site]
output = "{output}"
cache = "{cache}"
{site_extra}
[build]
device = "cpu"
[visualize]
objectives = ["channel"]
size = 16
steps = 2
[examples]
top_k = 1
bottom_k = 0
patch_size = 16
[[models]]
name = "{name}"
arch = "demo"
layers = {layers}
channels = "{channels}"
dataset = "{images}"
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, cache) with every entry the cases need already computed."""
    root = tmp_path_factory.mktemp("shared")
    images = write_demo_dataset(root / "images", count=8, seed=5)
    cache = root / "cache"
    for channels in ("0:1", "0:2"):
        project = root / f"warm{channels[-1]}"
        project.mkdir()
        (project / "atlas.toml").write_text(toml(images, cache, channels=channels))
        result = CliRunner().invoke(main, ["build", "-c", str(project / "atlas.toml"), "-q"])
        assert result.exit_code == 0, result.output
    return images, cache


def toml(images: Path, cache: Path | str, output: str = "site", name: str = "demo", layers: str = '["conv1"]',
         channels: str = "0:2", site_extra: str = "") -> str:
    return CONFIG.format(images=images, cache=cache, output=output, name=name, layers=layers, channels=channels,
                         site_extra=site_extra)


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file (a link: its target text) under `folder`, links not followed."""
    found = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(here) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def own_files(folder: Path, output: Path) -> set[str]:
    """Files atlasgen owns, relative to `folder`: those its manifest lists, and the manifest."""
    manifest = output / MANIFEST_NAME
    if not manifest.is_file() or manifest.is_symlink():
        return set()
    prefix = output.relative_to(folder).as_posix() + "/" if output != folder else ""
    listed = json.loads(manifest.read_text())["files"]
    return {prefix + rel for rel in listed} | {prefix + MANIFEST_NAME}


def _in_cache(rel: str) -> bool:
    """The cases' own cache folder (mycache) is atlasgen's, except a user's file put there."""
    return rel.startswith("project/mycache/") and not rel.endswith("my-notes.txt")


@dataclass
class Project:
    root: Path  # the surrounding folder: everything in it that atlasgen does not own must survive
    images: Path
    cache: Path

    def write(self, rel: str, text: str = "someone else's work\n") -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def config(self, **kwargs: str) -> None:
        kwargs.setdefault("cache", str(self.cache))
        self.write("atlas.toml", toml(self.images, **kwargs))

    def build(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["build", "-c", str(self.root / "atlas.toml"), *args])
        return result.exit_code, result.output


# --------------------------------------------------------------------------- the cases
# Each case prepares the project (anything it runs there first is part of the setup), and
# returns the arguments of the command under test and the folder the output is in.

Setup = Callable[[Project], tuple[list[str], str]]


def _project_files(p: Project) -> None:
    for rel in ("CITATION.cff", "index.html", "robots.txt", "assets/atlas.css", "README.md"):
        p.write(rel)


def output_dot(p: Project):
    _project_files(p)
    p.config()
    return ["build", "--output", str(p.root)], "."


def output_parent(p: Project):
    p.config()
    return ["build", "--output", str(p.root.parent)], "."


def site_output_dot(p: Project):
    _project_files(p)
    p.config(output=".")
    return ["build"], "."


def docs_folder(p: Project):
    for rel in ("docs/index.html", "docs/404.html", "docs/CITATION.cff", "docs/assets/atlas.css", "docs/demo/index.html"):
        p.write(rel)
    p.config(output="docs")
    return ["build"], "docs"


def home_like(p: Project):
    for rel in ("home/.bashrc", "home/Documents/thesis.tex", "home/index.html", "home/notes.txt", "home/photos/a.jpg",
                "home/.ssh/config", "home/music/b.mp3"):
        p.write(rel)
    p.config()
    return ["build", "--output", str(p.root / "home")], "home"


def pages_branch_checkout(p: Project):
    p.write("gh-pages/.git/HEAD", "ref: refs/heads/gh-pages\n")
    p.config(output="gh-pages")
    return ["build"], "gh-pages"


def output_is_a_link_to_foreign(p: Project):
    p.write("theirs/index.html")
    (p.root / "site").symlink_to(p.root / "theirs", target_is_directory=True)
    p.config()
    return ["build"], "site"


def link_inside_owned_site(p: Project):
    p.config()
    assert p.build()[0] == 0
    p.write("theme-assets/atlas.css", "theirs\n")
    import shutil
    shutil.rmtree(p.root / "site" / "assets")
    (p.root / "site" / "assets").symlink_to(Path("..") / "theme-assets", target_is_directory=True)
    return ["build"], "site"


def file_link_inside_owned_site(p: Project):
    p.config()
    assert p.build()[0] == 0
    p.write("outside.html", "<p>outside</p>\n")
    (p.root / "site" / "404.html").unlink()
    (p.root / "site" / "404.html").symlink_to(p.root / "outside.html")
    return ["build"], "site"


def manifest_is_a_link(p: Project):
    p.write("elsewhere/x.json", json.dumps({"files": ["index.html"]}))
    p.write("site/index.html")
    (p.root / "site" / MANIFEST_NAME).symlink_to(p.root / "elsewhere" / "x.json")
    p.config()
    return ["build"], "site"


def output_equals_cache(p: Project):
    p.config(output="shared", cache="shared")
    return ["build"], "shared"


def cache_inside_output(p: Project):
    p.config(output="site", cache="site/.atlas-cache")
    return ["build"], "site"


def output_inside_cache(p: Project):
    p.config(output="cache/site", cache="cache")
    return ["build"], "cache"


def cli_output_equals_cache(p: Project):
    p.config()
    return ["build", "--output", str(p.cache)], "."


def cli_output_inside_cache(p: Project):
    p.config()
    return ["build", "-o", str(p.cache / "site")], "."


def output_is_a_file(p: Project):
    p.write("site", "a file\n")
    p.config()
    return ["build"], "."


def model_named(name: str) -> Setup:
    def setup(p: Project):
        p.config(name=name)
        return ["build"], "site"

    setup.__name__ = f"model_named_{name}"
    return setup


def layer_named_index(p: Project):
    p.config(layers='["index.html"]')
    return ["build"], "site"


def cache_kind_is_a_link(p: Project):
    p.write("elsewhere/keep.txt")
    (p.root / "mycache").mkdir()
    (p.root / "mycache" / "featvis").symlink_to(p.root / "elsewhere", target_is_directory=True)
    p.config(cache="mycache")
    return ["build"], "site"


def clean_through_cache_link(p: Project):
    p.write("elsewhere/ab/" + "a" * 64 + "/meta.json", "{}")
    (p.root / "mycache").mkdir()
    (p.root / "mycache" / "featvis").symlink_to(p.root / "elsewhere", target_is_directory=True)
    p.config(cache="mycache")
    return ["clean"], "site"


def cache_is_a_file(p: Project):
    p.write("mycache", "a file\n")
    p.config(cache="mycache")
    return ["build"], "site"


def adopt_would_replace(p: Project):
    p.write("docs/index.html")
    p.write("docs/CNAME", "atlas.example.org\n")
    p.config(output="docs")
    return ["build", "--adopt"], "docs"


def adopt_beside(p: Project):
    p.write("docs/CNAME", "atlas.example.org\n")
    p.write("docs/README.md")
    p.config(output="docs")
    return ["build", "--adopt"], "docs"


def dry_run_foreign(p: Project):
    p.write("docs/index.html")
    p.config(output="docs")
    return ["build", "--dry-run"], "docs"


def edited_stale_file_kept(p: Project):
    p.config()
    assert p.build()[0] == 0
    p.write("site/demo/conv1/1/index.html", "my edits\n")  # atlasgen wrote it; the next build drops channel 1
    p.config(channels="0:1")
    return ["build"], "site"


def user_file_in_owned_site(p: Project):
    p.config()
    assert p.build()[0] == 0
    p.write("site/demo/conv1/1/my-comment.txt")
    p.write("site/CNAME", "atlas.example.org\n")
    p.config(channels="0:1")  # channel 1's folder goes, the user's file in it stays
    return ["build"], "site"


def user_file_where_a_page_goes(p: Project):
    p.config(channels="0:1")
    assert p.build()[0] == 0
    p.write("site/demo/conv1/1/index.html", "mine\n")
    p.config(channels="0:2")
    return ["build"], "site"


def tampered_manifest(p: Project):
    p.config()
    assert p.build()[0] == 0
    precious = p.write("precious.txt", "keep me\n")
    manifest = json.loads((p.root / "site" / MANIFEST_NAME).read_text())
    manifest["files"].update({"../precious.txt": {}, str(precious): {}, "../atlas.toml": {}})
    (p.root / "site" / MANIFEST_NAME).write_text(json.dumps(manifest))
    p.config(channels="0:1")
    return ["build"], "site"


def dead_temp_in_site(p: Project):
    p.config()
    assert p.build()[0] == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    p.write(f"site/.index.html.tmp-{dead.pid}@{HOST}-0123abcd", "half a page")
    p.write("site/.notes.tmp-mine", "a user's file that only looks like a temporary\n")
    return ["build"], "site"


def dead_temp_in_cache(p: Project):
    p.config(cache="mycache")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    p.write(f"mycache/featvis/ab/.abababab.tmp-{dead.pid}@{HOST}-0123abcd/arrays.npz", "partial")
    p.write("mycache/my-notes.txt")
    return ["build"], "site"


def hostile_notes(p: Project):
    p.write("notes/index.md", "<script>alert(1)</script><img src=x onerror=alert(2)> [x](javascript:alert(3))\n")
    p.config(site_extra='notes = "notes"')
    return ["build"], "site"


def notes_folder_is_the_output(p: Project):
    p.write("site/index.md", "A note.\n")
    p.config(site_extra='notes = "site"')
    return ["build"], "site"


# (setup, exit status, fragments of the message, files that must exist afterwards, files that must not)
CASES: list[tuple[Setup, int, list[str], list[str], list[str]]] = [
    (output_dot, 1, ["--output:", "would put the site over the project itself"], [], []),
    (output_parent, 1, ["--output:", "would put the site over the project itself"], [], []),
    (site_output_dot, 1, ["site.output:", "would put the site over the project itself"], [], []),
    (docs_folder, 1, ["site.output", "docs' already holds files atlasgen did not write (404.html, CITATION.cff, assets/,",
                      "nothing was written", "--adopt"], [], []),
    (home_like, 1, ["--output", "home' already holds files atlasgen did not write (.bashrc, .ssh/, Documents/, index.html,",
                    "and 2 more", "Choose an empty or new folder"], [], []),
    (pages_branch_checkout, 1, ["already holds files atlasgen did not write (.git/)"], [], []),
    (output_is_a_link_to_foreign, 1, ["already holds files atlasgen did not write (index.html)"], [], []),
    (link_inside_owned_site, 1, ["holds symbolic links (assets -> ../theme-assets)", "does not write through links"], [], []),
    (file_link_inside_owned_site, 1, ["holds symbolic links (404.html -> ", "outside.html)"], [], []),
    (manifest_is_a_link, 1, ["holds files atlasgen did not write (.atlasgen-files.json, index.html)"], [], []),
    (output_equals_cache, 1, ["site.output:", "the output folder and the cache are the same folder"], [], []),
    (cache_inside_output, 1, ["site.output:", "the cache", "lies inside the output folder", "separate folders"], [], []),
    (output_inside_cache, 1, ["site.output:", "the output folder", "lies inside the cache"], [], []),
    (cli_output_equals_cache, 1, ["--output:", "are the same folder"], [], []),
    (cli_output_inside_cache, 1, ["--output:", "lies inside the cache"], [], []),
    (output_is_a_file, 1, ["site.output", "is a file, not a folder"], [], []),
    *[(model_named(name), 1, [f"models[0].name: {name!r} is the name of one of the site's own files", "choose another name"], [], [])
      for name in ("index.html", "404.html", "robots.txt", "assets", "sitemap.xml", "CITATION.cff", "Index.HTML")],
    (layer_named_index, 1, ["models[0].layers[0]: a layer named 'index.html' would replace a page file"], [], []),
    (cache_kind_is_a_link, 1, ["site.cache", "holds symbolic links (featvis -> ", "remove them"], [], []),
    (clean_through_cache_link, 1, ["site.cache", "holds symbolic links (featvis -> "], [], []),
    (cache_is_a_file, 1, ["site.cache", "is a file, not a folder"], [], []),
    (adopt_would_replace, 1, ["docs already holds index.html, which atlasgen did not write and would have to replace",
                              "nothing was written"], [], ["docs/demo"]),
    (adopt_beside, 0, [], ["docs/demo/conv1/0/index.html", "docs/CNAME"], []),
    (dry_run_foreign, 1, ["already holds files atlasgen did not write (index.html)"], [], []),
    (edited_stale_file_kept, 0, ["keeping", "it changed since atlasgen wrote it"], ["site/demo/conv1/1/index.html"],
     ["site/demo/conv1/1/channel.*"]),
    (user_file_in_owned_site, 0, ["removed"], ["site/demo/conv1/1/my-comment.txt", "site/CNAME"], ["site/demo/conv1/1/index.html"]),
    (user_file_where_a_page_goes, 1, ["site already holds demo/conv1/1/index.html, which atlasgen did not write"], [], []),
    (tampered_manifest, 0, ["not removing ../precious.txt: outside the output folder"], ["precious.txt"], []),
    (dead_temp_in_site, 0, [], ["site/.notes.tmp-mine"], ["site/.index.html.tmp-*"]),
    (dead_temp_in_cache, 0, ["removed 1 temporary files left in the cache"], ["mycache/my-notes.txt"], ["mycache/featvis/ab/.*"]),
    (hostile_notes, 0, [], ["site/index.html"], []),
    (notes_folder_is_the_output, 1, ["already holds files atlasgen did not write (index.md)"], [], []),
]


@pytest.mark.parametrize("setup,status,messages,present,absent", CASES, ids=[case[0].__name__ for case in CASES])
def test_hostile_case(tmp_path: Path, shared: tuple[Path, Path], setup: Setup, status: int, messages: list[str],
                      present: list[str], absent: list[str]) -> None:
    root = tmp_path / "project"
    root.mkdir()
    p = Project(root, *shared)
    args, output = setup(p)
    before = snapshot(tmp_path)
    owned_before = own_files(tmp_path, root / output)
    config = ["-c", str(root / "atlas.toml")]
    result = CliRunner().invoke(main, [*args[:1], *config, "-v" if status == 0 else "-q", *args[1:]])
    assert result.exit_code == status, result.output
    for fragment in messages:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert "Traceback" not in result.output

    after = snapshot(tmp_path)
    # A successful build may change what atlasgen owned before or owns now, its leftovers and its cache.
    own = set()
    if status == 0:
        own = owned_before | own_files(tmp_path, root / output)
        own |= {rel for rel in {*before, *after} if _LEFTOVER.fullmatch(Path(rel).name) or _in_cache(rel)}
    changed = sorted(rel for rel in before if rel not in own and after.get(rel) != before[rel])
    added = sorted(rel for rel in after if rel not in before and rel not in own)
    assert changed == [], "files atlasgen does not own changed or vanished"
    assert added == [], "files added outside atlasgen's own"
    for rel in present:
        assert (root / rel).exists(), rel
    for pattern in absent:
        assert not list(root.glob(pattern)), pattern
    assert not [rel for rel in after if ".tmp-" in rel and "mine" not in rel]
    if setup is hostile_notes:
        assert "<script>" not in (root / "site/index.html").read_text().split('class="note-body"')[1]
