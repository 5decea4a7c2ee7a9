"""Notes on pages: Markdown files from a notes folder, or `note_html` from the data.

A note may link to any page of the atlas as `unit:model/layer/channel` (or
`unit:model/layer`, `unit:model`, `unit:` for the atlas); such links become page-relative
links, and a link to a page the atlas does not have becomes a warning, not a broken link.
"""

from __future__ import annotations

import re
from pathlib import Path

import markdown
from markupsafe import Markup

from atlasgen.errors import AtlasError

from .urls import page_url, relative_url

_UNIT_LINK = re.compile(r'(href|src)="unit:([^"#]*)(#[^"]*)?"')


def load_notes(notes: Path | None) -> dict[str, str]:
    """Markdown notes by the site-root-relative folder of the page they belong to."""
    found: dict[str, str] = {}
    if notes is None:
        return found
    if not notes.is_dir():
        raise AtlasError(f"notes folder {notes} does not exist")
    for path in sorted(notes.rglob("*.md")):
        rel = path.relative_to(notes).as_posix()[: -len(".md")]
        key = "" if rel == "index" else rel
        found[key] = path.read_text("utf-8")
    return found


def render_markdown(text: str) -> str:
    return markdown.markdown(text, extensions=["extra", "sane_lists"], output_format="html")


def rewrite_unit_links(html: str, page_dir: str, pages: set[str], warnings: list[str], where: str) -> str:
    """`unit:model/layer/channel` (or `unit:model/layer`, `unit:model`) -> a page-relative link."""

    def replace(match: re.Match[str]) -> str:
        attr, target, fragment = match.group(1), match.group(2).strip("/"), match.group(3) or ""
        if target not in pages:
            warnings.append(f"{where}: link to unknown unit {target!r}")
            return f'{attr}="{relative_url(page_url(""), page_dir)}" data-unresolved="{target}"'
        return f'{attr}="{relative_url(page_url(target), page_dir)}{fragment}"'

    return _UNIT_LINK.sub(replace, html)


class NoteBook:
    """Notes for pages: a Markdown file from the notes folder wins over `note_html` from the data.

    `pages` is the folder of every page of the atlas: what a note may belong to or link to.
    """

    def __init__(self, notes: dict[str, str], pages: set[str], warnings: list[str]) -> None:
        self.notes = notes
        self.pages = pages
        self.warnings = warnings
        for key in sorted(set(notes) - pages):
            warnings.append(f"note {key or 'index'}.md matches no page of the atlas")

    def for_page(self, page_dir: str, fallback_html: str) -> Markup:
        where = f"note {page_dir or 'index'}"
        if page_dir in self.notes:
            html = render_markdown(self.notes[page_dir])
        elif fallback_html:
            html = fallback_html
        else:
            return Markup("")
        return Markup(rewrite_unit_links(html, page_dir, self.pages, self.warnings, where))
