"""Notes on pages: Markdown files from a notes folder, or `note_html` from the data.

A note may link to any page of the atlas as `unit:model/layer/channel` (or
`unit:model/layer`, `unit:model`, `unit:` for the atlas); such links become page-relative
links, and a link to a page the atlas does not have becomes a warning, not a broken link.

Notes come from collaborators, and the site is published: their HTML is sanitized with nh3
(the Ammonia sanitizer) down to what Markdown itself writes (headings, lists, tables, code,
images, footnotes, abbreviations, links to http(s), mailto, relative and `unit:` targets),
so no script, event handler, style sheet or `javascript:` link of a note reaches the site.
`site.raw_html_notes = true` keeps a trusted note's HTML as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import markdown
import nh3
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


# What the Markdown extensions in `render_markdown` write; anything else is dropped.
_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "blockquote", "div", "span",
    "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption",
    "pre", "code", "kbd", "samp", "em", "strong", "b", "i", "u", "s", "del", "ins", "mark", "small", "sub", "sup",
    "abbr", "a", "img", "figure", "figcaption",
}
_ATTRIBUTES = {
    "*": {"id", "class", "title", "lang"},
    "a": {"href", "data-unresolved"},
    "img": {"src", "alt", "width", "height", "data-unresolved"},
    "th": {"style", "colspan", "rowspan"},
    "td": {"style", "colspan", "rowspan"},
    "ol": {"start"},
}
_SCHEMES = {"http", "https", "mailto"}  # relative links pass; `unit:` ones are rewritten to relative before


def sanitize(html: str) -> str:
    """`html` reduced to the Markdown vocabulary: no script, handler, style sheet or unsafe link."""
    return nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_SCHEMES,
                     filter_style_properties={"text-align"}, link_rel="noopener noreferrer",
                     clean_content_tags={"script", "style"})


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

    def __init__(self, notes: dict[str, str], pages: set[str], warnings: list[str], raw_html: bool = False) -> None:
        self.notes = notes
        self.pages = pages
        self.warnings = warnings
        self.raw_html = raw_html
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
        html = rewrite_unit_links(html, page_dir, self.pages, self.warnings, where)
        return Markup(html if self.raw_html else sanitize(html))
