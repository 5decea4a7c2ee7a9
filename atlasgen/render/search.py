"""The atlas's offline search index: every model, layer and unit page with what a reader may
look it up by (names, channel and branch numbers, dead, the text of its notes).

It is a script that assigns a global (`window.ATLAS_SEARCH`), not a JSON file: pages opened
from `file://` may load a script but may not `fetch()` a file. Pages load it only when the
reader starts a search (`atlas.js`), so it costs nothing to open a page. Note text is plain
text here, and the script shows every string with `textContent`: nothing in the index is
ever parsed as HTML.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from .views import ModelView

SEARCH_FILE = "assets/search-index.js"
NOTE_CHARS = 2000  # of each note's text; notes are prose, not the place for data
_SPACES = re.compile(r"\s+")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.parts.append(" ")  # block and line breaks separate words


def note_text(html: str) -> str:
    """The words of a rendered (sanitized) note, whitespace collapsed, at most NOTE_CHARS."""
    if not html:
        return ""
    parser = _Text()
    parser.feed(str(html))
    parser.close()
    return _SPACES.sub(" ", "".join(parser.parts)).strip()[:NOTE_CHARS]


def search_index(models: list[ModelView]) -> str:
    """The index script. Entries are arrays, in the atlas's reading order:
    [kind, page URL (site-root-relative), model, layer, channel, branch label, unit in branch, dead, note text]."""
    entries: list[list] = []
    for m in models:
        entries.append(["model", m.url, m.name, "", -1, "", -1, 0, note_text(m.note)])
        for lv in m.layers:
            entries.append(["layer", lv.url, m.name, lv.name, -1, "", -1, 0, note_text(lv.note)])
            for u in lv.units:
                branch = u.branch.info.label if u.branch else ""
                unit_in_branch = u.branch_unit if u.branch_unit is not None else -1
                entries.append(["unit", u.url, m.name, lv.name, u.channel, branch, unit_in_branch, int(u.data.dead), note_text(u.note)])
    data = json.dumps({"entries": entries}, ensure_ascii=True, separators=(",", ":"))
    return f"/* atlasgen search index: loaded by assets/atlas.js when a search starts */\nwindow.ATLAS_SEARCH = {data};\n"
