"""Hostile notes run no script on the published site: rendered into a site, opened in
Chromium, hovered and clicked, they set no flag and open no dialog. The same notes with
`raw_html` (trusted notes) do run, which shows the check can fail."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from atlasgen.render import render_site
from atlasgen.render.notes import render_markdown, sanitize

from sitefixture import make_site_data

BROWSER = Path(__file__).resolve().parent / "browser"
PWN = "window.__pwned=(window.__pwned||0)+1;alert(1)"
HOSTILE = {
    "index.md": f"# Atlas\n\n<script>{PWN}</script>\n\n<img src=x onerror=\"{PWN}\">\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    "demo.md": f'<svg onload="{PWN}"><circle r="4"/></svg>\n\n[click me](javascript:{PWN})\n\n'
               f'<a href="JaVaScRiPt:{PWN}">case</a> <a href="  javascript:{PWN}">spaces</a>\n',
    "demo/conv1.md": f'<iframe srcdoc="<script>parent.{PWN}</script>"></iframe>\n\n'
                     f'<p onmouseover="{PWN}" onclick="{PWN}">hover me</p>\n\n<details open ontoggle="{PWN}">x</details>\n\n'
                     f'<object data="javascript:{PWN}"></object><embed src="javascript:{PWN}">\n',
    "demo/conv1/0.md": f'<style>body{{background:url("javascript:{PWN}")}}</style>\n\n'
                       f'<form action="javascript:{PWN}"><button>send</button></form>\n\n'
                       f'<meta http-equiv="refresh" content="0;url=javascript:{PWN}">\n\n'
                       f'<a href="data:text/html,<script>{PWN}</script>">data</a> '
                       f'<img src="x" style="x:expression({PWN})"> [a unit](unit:demo/conv1/1) [web](https://example.org/)\n',
}
PAGES = ["index.html", "demo/index.html", "demo/conv1/index.html", "demo/conv1/0/index.html"]


def _open_in_chromium(site: Path) -> dict:
    if shutil.which("node") is None or not (BROWSER / "node_modules" / "playwright-core").is_dir():
        pytest.skip("BROWSER CHECK SKIPPED: node or tests/browser/node_modules (npm ci) is missing")
    run = subprocess.run(["node", "check-notes.js", str(site), *PAGES], cwd=BROWSER, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _notes(folder: Path) -> Path:
    for rel, text in HOSTILE.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


@pytest.mark.slow
def test_hostile_notes_run_no_script_in_chromium(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    safe = tmp_path / "site"
    render_site(make_site_data(tmp_path / "cache"), safe, notes=notes)
    result = _open_in_chromium(safe)
    assert result["dialogs"] == []
    assert result["pwned"] == {page: 0 for page in PAGES}
    assert "hover me" in result["notes"]["demo/conv1/index.html"]  # the harmless text stays
    for page in PAGES:
        html = (safe / page).read_text()
        assert "<script>" not in html.split('<div class="note-body">')[1].split("</section>")[0]

    trusted = tmp_path / "trusted"
    render_site(make_site_data(tmp_path / "cache"), trusted, notes=notes, raw_html=True)
    ran = _open_in_chromium(trusted)
    assert ran["dialogs"] and sum(ran["pwned"].values()) >= 3  # the opt-in keeps scripts: the check can fail


def test_sanitized_notes_keep_the_markdown_vocabulary() -> None:
    text = ("## Heading {: #h2 }\n\n1. one\n2. two\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n```\ncode <b>\n```\n\n"
            "![alt](img.png \"title\") [rel](../x/index.html) [web](https://example.org/) [mail](mailto:a@b.org)\n\n"
            "Text[^1] with *HTML*.\n\n*[HTML]: Hyper Text\n\n[^1]: A footnote.\n")
    html = sanitize(render_markdown(text))
    for kept in ('<h2 id="h2">', "<ol>", '<th style="text-align:left">', "<pre><code>code &lt;b&gt;", 'src="img.png"',
                 'href="../x/index.html"', 'href="https://example.org/"', 'href="mailto:a@b.org"',
                 '<abbr title="Hyper Text">', 'class="footnote"', 'href="#fn:1"'):
        assert kept in html, kept
