"""The offline search index: a script assigning one global, with every page of the atlas in
reading order and each note as plain text."""

from __future__ import annotations

import json
from pathlib import Path

from atlasgen.render import render_site
from atlasgen.render.search import NOTE_CHARS, note_text
from sitefixture import make_site_data


def _index(site: Path) -> dict:
    text = (site / "assets" / "search-index.js").read_text()
    head, _, data = text.partition("window.ATLAS_SEARCH = ")
    assert head.startswith("/*") and data.endswith(";\n")
    return json.loads(data[:-2])


def test_every_page_is_indexed_with_its_note_as_text(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    (notes / "demo").mkdir(parents=True)
    (notes / "demo" / "conv1.md").write_text("Edges *and* `<b>colour</b>`\n\n- blobs\n")
    site = make_site_data(tmp_path / "cache")
    render_site(site, tmp_path / "site", notes=notes)
    entries = _index(tmp_path / "site")["entries"]
    units = sum(len(layer.units) for model in site.models for layer in model.layers)
    layers = sum(len(model.layers) for model in site.models)
    assert [e[0] for e in entries].count("unit") == units and [e[0] for e in entries].count("layer") == layers
    for kind, url, *_ in entries:
        assert (tmp_path / "site" / url).is_file(), url
    conv1 = next(e for e in entries if e[0] == "layer" and e[3] == "conv1")
    assert conv1[8] == "Edges and <b>colour</b> blobs"  # code shown as the reader sees it, never as markup
    dead = next(e for e in entries if e[0] == "unit" and e[3] == "conv2" and e[4] == 3)
    assert dead[7] == 1


def test_note_text_collapses_and_caps() -> None:
    assert note_text("<p>a</p><p>b&amp;c</p>") == "a b&c"
    assert len(note_text("<p>" + "word " * 1000 + "</p>")) == NOTE_CHARS
    assert note_text("") == ""
