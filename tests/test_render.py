"""Render stage: pages, links, machine-readable twin, citations, notes, overrides, rebuilds."""

from __future__ import annotations

import json
import logging
import re
from html import unescape
from pathlib import Path

import pytest

from atlasgen.errors import AtlasError
from atlasgen.render import RenderReport, render_site
from atlasgen.render.formats import (
    author_last_first,
    author_plain,
    bibtex_authors,
    bibtex_escape,
    citation_cff,
    format_number,
    format_ratio,
    stable_float,
)
from atlasgen.render.urls import relative_url
from atlasgen.render.writer import MANIFEST_NAME, site_size_warnings
from atlasgen.sitedata import SiteData
from sitefixture import make_site_data, site_link_problems

URL = "https://example.org/atlas/"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def built(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteData, Path, RenderReport]:
    site = make_site_data(cache)
    out = tmp_path_factory.mktemp("site") / "site"
    return site, out, render_site(site, out)


@pytest.fixture(scope="module")
def built_with_url(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site-url") / "site"
    render_site(make_site_data(cache, url=URL), out)
    return out


def read(path: Path) -> str:
    return path.read_text("utf-8")


# --------------------------------------------------------------------------- pages and links


def test_unit_pages_say_when_the_patch_is_the_whole_image(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    whole = read(out / "demo/layer3.0.conv/0/index.html")  # its field covers the input
    assert "each patch is the whole image as the model sees it" in whole and "cropped to the receptive field" not in whole
    cropped = read(out / "demo/conv1/0/index.html")
    assert "cropped to the receptive field around the strongest position" in cropped
    assert "patch is the whole image" not in cropped


def test_every_page_type_exists(built: tuple[SiteData, Path, RenderReport]) -> None:
    site, out, report = built
    expected = ["index.html", "404.html", ".nojekyll", "CITATION.cff", "robots.txt", "assets/atlas.css", "assets/atlas.js"]
    for model in site.models:
        expected.append(f"{model.name}/index.html")
        for layer in model.layers:
            expected += [f"{model.name}/{layer.name}/index.html", f"{model.name}/{layer.name}/index.json"]
            expected += [f"{model.name}/{layer.name}/{u.channel}/index.html" for u in layer.units]
    missing = [rel for rel in expected if not (out / rel).is_file()]
    assert missing == []
    units = sum(len(layer.units) for m in site.models for layer in m.layers)
    layers = sum(len(m.layers) for m in site.models)
    assert report.pages == 1 + len(site.models) + layers + units
    assert not (out / "sitemap.xml").exists()  # only with a public URL


def test_all_links_are_relative_and_resolve(built: tuple[SiteData, Path, RenderReport], built_with_url: Path) -> None:
    _, out, _ = built
    assert site_link_problems(out) == []
    # with a public URL only canonical links are absolute
    assert site_link_problems(built_with_url) == []
    canonical = re.findall(r'<link rel="canonical" href="([^"]+)">', read(built_with_url / "demo/conv2/5/index.html"))
    assert canonical == [URL + "demo/conv2/5/"]


def test_page_links_end_in_index_html(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    html = read(out / "demo" / "conv2" / "1" / "index.html")
    hrefs = re.findall(r'<a [^>]*href="([^"]+)"', html)
    pages = [h for h in hrefs if not h.startswith("#") and not h.endswith((".cff", ".json"))]
    assert pages and all(re.search(r"index\.html(#[\w-]+)?$", h) for h in pages), pages


def test_report_counts_the_output(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, report = built
    files = [p for p in out.rglob("*") if p.is_file()]
    assert report.files == len(files)
    assert report.bytes == sum(p.stat().st_size for p in files)
    assert report.warnings == []


def test_folder_and_size_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlasgen.render.writer as render

    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for i in range(6):
        (crowded / f"{i}.txt").write_text("x" * 10)
    monkeypatch.setattr(render, "FOLDER_ENTRY_WARNING", 5)
    files, total, warnings = site_size_warnings(tmp_path)
    assert (files, total) == (6, 60)
    assert any("crowded has 6 entries" in w for w in warnings)


def test_size_budget() -> None:
    from atlasgen.render.writer import over_budget

    assert over_budget(799_000_000, 1000) == (False, None)
    near, message = over_budget(801_000_000, 1000)
    assert not near and "801.0 MB, near site.budget_mb = 1,000" in message
    over, message = over_budget(1_000_000_001, 1000)
    assert over and "over site.budget_mb" in message and 'visualizations = "jpeg"' in message
    assert over_budget(10**12, 0) == (False, None)  # 0: no limit


# --------------------------------------------------------------------------- layer page


def test_layer_page_has_anchors_controls_and_navigation(built: tuple[SiteData, Path, RenderReport]) -> None:
    site, out, _ = built
    layer = site.models[0].layers[1]  # conv2: channels 0 1 2 3 5 7
    html = read(out / "demo" / "conv2" / "index.html")
    for unit in layer.units:
        assert f'id="unit-{unit.channel}"' in html
    assert 'id="channel-filter"' in html and 'id="sort-by"' in html
    assert 'rel="prev" href="../conv1/index.html"' in html
    assert 'rel="next" href="../layer3.0.conv/index.html"' in html
    assert 'href="../../index.html"' in html  # breadcrumbs to the atlas
    # similar channels not rendered (4, 6) are not links
    assert 'href="#unit-4"' not in html and 'href="#unit-6"' not in html
    assert 'href="#unit-1"' in html


def test_dead_channel_is_labelled(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    layer_html = read(out / "demo" / "conv2" / "index.html")
    card = layer_html.split('id="unit-3"', 1)[1].split("</article>", 1)[0]
    assert "dead" in card and "never activated" in card
    assert "<img" not in card  # no unexplained grey square
    unit_html = read(out / "demo" / "conv2" / "3" / "index.html")
    assert "Dead channel." in unit_html


def test_unit_page_content(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    html = read(out / "demo" / "conv1" / "2" / "index.html")
    for name in ("channel", "negative", "neuron", "diversity-0", "top-0", "top-0-heat", "bottom-1"):
        assert f'src="{name}.webp"' in html
    assert 'loading="lazy"' in html
    assert all(re.search(r'\bwidth="\d+" height="\d+"', tag) for tag in re.findall(r"<img [^>]+>", html))
    assert all(re.search(r'alt="[^"]{10,}"', tag) for tag in re.findall(r"<img [^>]+>", html))
    assert "class0/img010.png" in html  # source image name of an example
    # like with like: the channel image's spatial mean against the best dataset image's spatial mean
    # (9.25 / 2.0), the neuron image's centre unit against the dataset's single-position max (4.33 / 4.74)
    text = unescape(html)
    assert "9.25" in text and "4.6\u00d7 the best dataset image's mean" in text
    assert "91% of the dataset's single-position max" in text
    assert 'href="../3/index.html"' in html and 'rel="prev" href="../1/index.html"' in html
    assert "r +0.90" in html  # co-activation score
    assert "This image also excites" in html


def test_images_are_copied_with_their_content(built: tuple[SiteData, Path, RenderReport]) -> None:
    site, out, _ = built
    unit = site.models[0].layers[0].units[0]
    assert (out / "demo/conv1/0/channel.webp").read_bytes() == unit.images["channel"].read_bytes()
    assert (out / "demo/conv1/0/top-1-heat.webp").read_bytes() == unit.top[1].heatmap.read_bytes()


# --------------------------------------------------------------------------- index.json


def test_index_json_fields(built: tuple[SiteData, Path, RenderReport]) -> None:
    site, out, _ = built
    doc = json.loads(read(out / "demo" / "conv1" / "index.json"))
    assert doc["layer"] == "conv1" and doc["shape"] == [6, 32, 32]
    unit = doc["units"][2]
    assert unit["channel"] == 2
    for key in ("images", "activation", "dataset_max", "dead", "examples", "similar", "cross"):
        assert key in unit
    assert (out / "demo" / "conv1" / unit["images"]["channel"]).is_file()
    top = unit["examples"]["top"][0]
    source = site.models[0].layers[0].units[2].top[0]
    assert top["source"] == source.source
    assert top["box"] == dict(zip(("left", "top", "right", "bottom"), source.box))
    assert top["position"] == {"row": source.position[0], "col": source.position[1]}
    assert top["value"] == pytest.approx(source.value, rel=1e-5)
    assert (out / "demo" / "conv1" / top["patch"]).is_file()
    assert unit["similar"][0] == {"channel": 0, "score": 0.9}
    assert len(unit["examples"]["bottom"]) == 2


def test_index_json_is_byte_identical_across_builds(cache: Path, tmp_path: Path) -> None:
    render_site(make_site_data(cache), tmp_path / "a")
    render_site(make_site_data(cache), tmp_path / "b")
    for rel in ("demo/conv1/index.json", "demo/layer3.0.conv/index.json", "tiny/layer1/index.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_stable_float_rounds_and_drops_nan() -> None:
    assert stable_float(0.1 + 0.2) == 0.3
    assert stable_float(float("nan")) is None
    assert stable_float(None) is None


# --------------------------------------------------------------------------- citations


def test_citation_meta_and_canonical_only_with_url(built: tuple[SiteData, Path, RenderReport], built_with_url: Path) -> None:
    _, out, _ = built
    plain = read(out / "demo/conv1/2/index.html")
    assert "citation_title" not in plain and 'rel="canonical"' not in plain
    assert "Set <code>url</code>" in plain  # hint to configure the public URL
    assert "(no public URL configured; in the atlas: demo/conv1/2/index.html)" in plain
    assert "(no public URL configured)" in read(out / "index.html")

    html = read(built_with_url / "demo/conv1/2/index.html")
    assert f'<link rel="canonical" href="{URL}demo/conv1/2/">' in html
    assert '<meta name="citation_title" content="demo conv1, channel 2">' in html
    assert re.findall(r'<meta name="citation_author" content="([^"]+)">', html) == ["Lovelace, Ada", "Turing, Alan M."]
    assert '<meta name="citation_publication_date" content="2024/05/17">' in html
    assert f'<meta name="citation_public_url" content="{URL}demo/conv1/2/">' in html
    assert "Set <code>url</code>" not in html
    assert (built_with_url / "sitemap.xml").is_file()
    assert f"<loc>{URL}demo/conv1/2/</loc>" in read(built_with_url / "sitemap.xml")


def test_bibtex_block(built_with_url: Path) -> None:
    html = read(built_with_url / "demo/layer3.0.conv/4/index.html")
    bib = re.search(r'<pre class="bibtex"><code>(.*?)</code></pre>', html, re.S).group(1)
    bib = re.sub(r"<[^>]+>", "", bib)
    assert bib.startswith("@misc{demo-layer3.0.conv-4,")
    assert "title        = {demo layer3.0.conv, channel 4}" in bib
    assert "author       = {Ada Lovelace and Alan M. Turing}" in bib
    assert f"howpublished = {{\\url{{{URL}demo/layer3.0.conv/4/}}}}" in bib
    assert "year         = {2024}" in bib
    # the version and config digest trace a cited image to what made it
    assert re.search(r"note         = \{Accessed: 2024-05-17; made with atlasgen [0-9][^,]*, config [0-9a-f]{12}\}", bib), bib
    assert bib.count("{") == bib.count("}")


def test_citation_cff(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    cff = read(out / "CITATION.cff")
    assert cff.startswith("cff-version: 1.2.0\n")
    assert 'title: "Demo feature atlas"' in cff
    assert '  - family-names: "Lovelace"\n    given-names: "Ada"' in cff
    assert 'date-released: "2024-05-17"' in cff


def test_404_is_self_contained(built_with_url: Path) -> None:
    html = read(built_with_url / "404.html")
    assert "<style>" in html and "--accent" in html
    assert not re.search(r'(href|src)="(?!https?:|data:)', html)
    assert f'href="{URL}"' in html


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Ada Lovelace", "Lovelace, Ada"), ("Turing, Alan", "Turing, Alan"), ("Plato", "Plato")],
)
def test_author_last_first(name: str, expected: str) -> None:
    assert author_last_first(name) == expected


def test_group_author_in_braces_is_cited_whole(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache", authors=["{atlasgen  contributors}", "Ada Lovelace", "{R&D}"])
    cff = citation_cff(site)
    assert '  - name: "atlasgen contributors"\n  - family-names: "Lovelace"\n    given-names: "Ada"' in cff
    assert "given-names: \"atlasgen\"" not in cff
    assert bibtex_authors(site.authors) == r"{atlasgen contributors} and Ada Lovelace and {R\&D}"
    assert bibtex_authors([]) == "Anonymous"
    assert author_last_first("{atlasgen contributors}") == author_plain(" {atlasgen contributors} ") == "atlasgen contributors"
    assert author_plain("{}") == "{}" and author_plain("{ }") == "{ }"  # not a group: nothing inside


def test_group_author_shows_without_braces(tmp_path: Path) -> None:
    site = make_site_data(tmp_path / "cache", url=URL, authors=["{atlasgen contributors}"])
    out = tmp_path / "site"
    render_site(site, out)
    for page in (out / "index.html", out / "demo/conv1/2/index.html"):
        html = read(page)
        assert "{atlasgen" not in re.sub(r'<pre class="bibtex">.*?</pre>', "", html, flags=re.S)
        assert '<meta name="citation_author" content="atlasgen contributors">' in html
    assert "author       = {{atlasgen contributors}}" in read(out / "demo/conv1/2/index.html")


def test_bibtex_escape() -> None:
    assert bibtex_escape("50% of {x} & y_1") == r"50\% of \{x\} \& y\_1"


# --------------------------------------------------------------------------- escaping, notes, overrides


def test_html_is_escaped(cache: Path, tmp_path: Path) -> None:
    site = make_site_data(cache, title='<script>alert("x")</script> & co', authors=["<b>Eve</b>"])
    render_site(site, tmp_path / "site")
    for rel in ("index.html", "demo/index.html", "demo/conv1/0/index.html", "404.html"):
        html = read(tmp_path / "site" / rel)
        assert "<script>alert" not in html, rel
        assert "&lt;script&gt;alert(" in html, rel
        assert "<b>Eve</b>" not in html, rel


def test_notes_render_and_unit_links_resolve(cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notes = tmp_path / "notes"
    (notes / "demo" / "conv1").mkdir(parents=True)
    (notes / "index.md").write_text("Atlas intro with **bold**; see [a curve detector](unit:demo/conv1/2).\n")
    (notes / "demo.md").write_text("# Demo\n\nThe [second layer](unit:demo/conv2).\n")
    (notes / "demo" / "conv1.md").write_text("Layer note: [channel 4](unit:demo/conv1/4) and [gone](unit:demo/conv1/99).\n")
    (notes / "demo" / "conv1" / "2.md").write_text("Unit note, compare [tiny](unit:tiny/layer1/1).\n")
    (notes / "demo" / "nosuchlayer.md").write_text("orphan\n")
    out = tmp_path / "site"
    with caplog.at_level(logging.WARNING, logger="atlasgen.render"):
        report = render_site(make_site_data(cache), out, notes=notes)

    assert "<strong>bold</strong>" in read(out / "index.html")
    assert 'href="demo/conv1/2/index.html"' in read(out / "index.html")
    assert 'href="conv2/index.html"' in read(out / "demo/index.html")
    layer_html = read(out / "demo/conv1/index.html")
    assert 'href="4/index.html"' in layer_html and "Layer note" in layer_html
    assert 'href="../../../tiny/layer1/1/index.html"' in read(out / "demo/conv1/2/index.html")
    assert "unit:" not in layer_html
    assert any("unknown unit 'demo/conv1/99'" in w for w in report.warnings)
    assert any("nosuchlayer.md matches no page" in w for w in report.warnings)
    assert "unknown unit" in caplog.text
    assert site_link_problems(out) == []


def test_user_template_overrides_builtin(cache: Path, tmp_path: Path) -> None:
    user = tmp_path / "templates" / "partials"
    user.mkdir(parents=True)
    (user / "dead.html").write_text('<p class="custom-dead">Silent unit</p>\n')
    (tmp_path / "templates" / "atlas.css").write_text("body { color: rebeccapurple; }\n")
    out = tmp_path / "site"
    render_site(make_site_data(cache), out, templates=tmp_path / "templates")
    assert '<p class="custom-dead">Silent unit</p>' in read(out / "demo/conv2/3/index.html")
    assert read(out / "assets/atlas.css") == "body { color: rebeccapurple; }\n"
    assert "Channel objective" in read(out / "demo/conv1/0/index.html")  # the rest is built in


def test_a_user_page_without_the_image_macro_can_include_the_built_in_partials(cache: Path, tmp_path: Path) -> None:
    # The partials use the page's `img` when it has one (imported once per page), else import it.
    user = tmp_path / "templates"
    user.mkdir()
    (user / "unit.html").write_text(
        '{% extends "base.html" %}{% block content %}'
        '{% for ex in unit.top %}{% include "partials/example.html" %}{% endfor %}'
        '{% set items = unit.similar %}{% set score_label = "r" %}{% include "partials/related.html" %}'
        "{% endblock %}\n"
    )
    out = tmp_path / "site"
    site = make_site_data(cache)
    render_site(site, out, templates=user)
    page = read(out / "demo/conv1/0/index.html")
    built_in = tmp_path / "built-in"
    render_site(site, built_in)
    expected = read(built_in / "demo/conv1/0/index.html")
    first = '<figure class="example'
    assert page.count(first) == len(site.models[0].layers[0].units[0].top) > 0
    assert page[page.index(first):page.index("</figure>") + 9] == expected[expected.index(first):expected.index("</figure>", expected.index(first)) + 9]
    assert 'src="top-0.webp"' in page and '<ol class="related">' in page


# --------------------------------------------------------------------------- rebuilds


def test_rebuild_keeps_identical_images_and_removes_stale(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    user_file = out / "CNAME"
    out.mkdir()
    user_file.write_text("atlas.example.org\n")
    site = make_site_data(cache)
    render_site(site, out, adopt=True)  # CNAME is someone else's: the folder is adopted
    image = out / "demo/conv1/0/channel.webp"
    page = out / "demo/conv2/0/index.html"  # its layer does not change
    inode, mtime = image.stat().st_ino, page.stat().st_mtime_ns
    # a copy (or reflink), never a hard link: optimizing the site's image must not change the cache
    assert image.stat().st_ino != site.models[0].layers[0].units[0].images["channel"].stat().st_ino

    site.models[0].layers[0].units = [u for u in site.models[0].layers[0].units if u.channel != 5]
    report = render_site(site, out)  # the manifest makes the folder atlasgen's now

    assert image.stat().st_ino == inode
    assert page.stat().st_mtime_ns == mtime  # unchanged page not rewritten
    assert not (out / "demo/conv1/5").exists()  # stale channel folder removed
    assert user_file.read_text() == "atlas.example.org\n"  # never remove what atlasgen did not write
    manifest = json.loads(read(out / MANIFEST_NAME))
    assert "demo/conv1/5/index.html" not in manifest["files"]
    assert report.files == sum(1 for p in out.rglob("*") if p.is_file())
    assert site_link_problems(out) == []


def test_rebuild_replaces_changed_image(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    site = make_site_data(cache)
    render_site(site, out)
    unit = site.models[1].layers[0].units[0]
    unit.images["channel"] = unit.images["negative"]
    render_site(site, out)
    assert (out / "tiny/layer1/0/channel.webp").read_bytes() == unit.images["negative"].read_bytes()


def test_copy_falls_back_when_reflinks_fail(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clone(*args: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr("fcntl.ioctl", no_clone)
    site = make_site_data(cache)
    render_site(site, tmp_path / "site")
    copied = tmp_path / "site/demo/conv1/1/channel.webp"
    source = site.models[0].layers[0].units[1].images["channel"]
    assert copied.read_bytes() == source.read_bytes()
    copied.write_bytes(b"optimized in place")  # what oxipng or cwebp would do
    assert source.read_bytes() != b"optimized in place"


def test_unsafe_names_are_rejected(cache: Path, tmp_path: Path) -> None:
    site = make_site_data(cache)
    site.models[0].layers[0].name = "../escape"
    with pytest.raises(AtlasError, match="cannot be used in the site's URLs"):
        render_site(site, tmp_path / "site")
    assert not (tmp_path / "escape").exists()


# --------------------------------------------------------------------------- helpers


def test_relative_url() -> None:
    assert relative_url("demo/conv1/index.html", "demo/conv1/3") == "../index.html"
    assert relative_url("index.html", "") == "index.html"
    assert relative_url("demo/conv1/index.html#unit-3", "demo/conv1") == "#unit-3"
    assert relative_url("demo/conv1/index.html#unit-3", "demo/conv1/3") == "../index.html#unit-3"
    assert relative_url("#unit-3", "demo") == "#unit-3"


def test_format_ratio() -> None:
    assert format_ratio(7.25, 4.0) == "1.8\u00d7 the dataset's single-position max"
    assert format_ratio(2.0, 4.0, "the best dataset image's mean") == "50% of the best dataset image's mean"
    assert format_ratio(0.0261, 9.73) == "0.27% of the dataset's single-position max"
    assert format_ratio(-3.5, 4.0) == ""  # a negative objective is not compared with the max
    assert format_ratio(1.0, 0.0) == ""


def test_format_number() -> None:
    assert format_number(12.3456) == "12.3"
    assert format_number(0.0) == "0"
    assert format_number(12345.6) == "12,346"
    assert format_number(None) == "n/a"


def test_tampered_manifest_never_removes_outside_files(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    render_site(make_site_data(cache), out)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    manifest = json.loads(read(out / MANIFEST_NAME))
    manifest["files"].update({"../precious.txt": {}, str(outside): {}})
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    render_site(make_site_data(cache), out)
    assert outside.read_text() == "keep me"


def test_site_works_offline_without_fetch_or_modules(built: tuple[SiteData, Path, RenderReport]) -> None:
    _, out, _ = built
    js = read(out / "assets/atlas.js")
    css = read(out / "assets/atlas.css")
    assert "fetch(" not in js and "XMLHttpRequest" not in js and "import(" not in js
    assert "@import" not in css and "@font-face" not in css and "url(" not in css
    for page in out.rglob("*.html"):
        html = read(page)
        assert 'type="module"' not in html, page
        assert not re.search(r'<(script|img|link)[^>]+(src|href)="(https?:)?//', html.replace('rel="canonical"', "")), page


# --------------------------------------------------------------------------- browser checks


@pytest.mark.slow
def test_browser_checks_pass_on_fixture_site(cache: Path, tmp_path: Path) -> None:
    """Chromium (file:// and http), axe-core, vnu and the link check on a rendered fixture."""
    import shutil
    import subprocess

    script = Path(__file__).resolve().parent.parent / ".ci" / "site-checks.sh"
    if shutil.which("bash") is None or shutil.which("node") is None:
        pytest.skip("BROWSER CHECKS SKIPPED: bash or node is not installed")
    site = tmp_path / "site"
    render_site(make_site_data(cache, url=URL), site)
    run = subprocess.run(
        ["bash", str(script), str(site), str(tmp_path / "artifacts")],
        capture_output=True, text=True, timeout=900,
    )
    output = run.stdout + run.stderr
    if run.returncode == 0 and "BROWSER CHECKS SKIPPED" in output:
        pytest.skip(next(line for line in output.splitlines() if "BROWSER CHECKS SKIPPED" in line))
    assert run.returncode == 0, output[-4000:]
    assert "site checks passed" in output
    assert (tmp_path / "artifacts" / "layer-light.png").stat().st_size > 1000


def test_writer_refuses_a_link_that_appears_after_the_folder_was_checked(tmp_path: Path) -> None:
    from atlasgen.render.writer import SiteWriter

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "site"
    out.mkdir()
    (out / "demo").symlink_to(elsewhere, target_is_directory=True)
    writer = SiteWriter(out, {"demo/index.html": {}})
    writer.write_text("index.html", "atlas")
    writer.write_text("demo/index.html", "model")
    with pytest.raises(AtlasError, match="demo/index.html .* leads through a symbolic link; nothing was written"):
        writer.commit("atlasgen test")
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["demo"]
