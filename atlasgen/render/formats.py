"""How values read on the site: numbers, objective labels, and the citation files.

Everything here is a pure function of its arguments (the Jinja filters and the text of
CITATION.cff, robots.txt and sitemap.xml), so the same data always gives the same bytes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterable
from xml.sax.saxutils import escape as xml_escape

from atlasgen import objectives
from atlasgen.sitedata import SiteData

from .urls import public_url

# --------------------------------------------------------------------------- numbers


def format_number(value: float | None) -> str:
    """Activations: 3 significant digits, no exponent for everyday magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) < 0.001:
        return f"{value:.2e}"
    return f"{value:.3g}"


def format_score(value: float | None) -> str:
    """Correlations and other scores in [-1, 1]: signed, two decimals."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.2f}".replace("-", "\u2212")


# The dataset number each objective's score is compared with, like for like: an objective that
# maximizes a spatial mean against the best dataset image's spatial mean, one that maximizes a
# single position against the dataset's single-position maximum. Objectives not listed (negative,
# neuron_at's rows, others) get no comparison rather than a misleading one.
YARDSTICKS = {"channel": "best_mean", "diversity": "best_mean", "neuron": "max", "feature-maps-article": "best_mean"}
YARDSTICK_WORDS = {"best_mean": "the best dataset image's mean", "max": "the dataset's single-position max"}


def format_ratio(activation: float | None, reference: float | None, words: str = YARDSTICK_WORDS["max"]) -> str:
    """How an optimized image's activation compares with a dataset reference, named by `words`."""
    # a negative objective drives the channel down: a dataset maximum is no yardstick for it
    if activation is None or reference is None or reference <= 0 or not math.isfinite(activation) or activation < 0:
        return ""
    ratio = activation / reference
    if ratio >= 1:
        return f"{ratio:.1f}\u00d7 {words}"
    percent = 100 * ratio
    return f"{percent:.0f}% of {words}" if percent >= 10 else f"{percent:.2g}% of {words}"


def objective_ratio(objective: str, unit) -> str:
    """An objective's score on `unit` (a UnitData) against its like-for-like dataset number."""
    yardstick = YARDSTICKS.get(objective)
    if yardstick is None or objective not in unit.activation:
        return ""
    reference = unit.dataset_best_mean if yardstick == "best_mean" else unit.dataset_max
    return format_ratio(unit.activation[objective], reference, YARDSTICK_WORDS[yardstick])


def format_dims(values: Iterable[int], sep: str = "\u00d7") -> str:
    return sep.join(str(v) for v in values)


def stable_float(value: float | None) -> float | None:
    """Round to 6 significant digits so JSON is stable across platforms; NaN/inf -> null."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


# --------------------------------------------------------------------------- objective labels


def objective_labels() -> dict[str, str]:
    """Objective name -> the label under its image, from the objective registry."""
    return {o.name: o.label for o in objectives.all_objectives()}


def objective_label(name: str) -> str:
    try:
        return objectives.get(name).label
    except KeyError:  # an objective this atlasgen does not register still gets a label
        return f"{name} objective"


def objective_order(names: Iterable[str]) -> list[str]:
    """Registered objectives in the registry's page order, then any others alphabetically."""
    present = set(names)
    known = [name for name in objectives.names() if name in present]
    return known + sorted(present - set(known))


# --------------------------------------------------------------------------- citations


def bibtex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially inside a BibTeX field."""
    out = []
    for ch in text:
        if ch in "{}&%$#_":
            out.append("\\" + ch)
        elif ch == "~":
            out.append("\\textasciitilde{}")
        elif ch == "^":
            out.append("\\textasciicircum{}")
        elif ch == "\\":
            out.append("\\textbackslash{}")
        else:
            out.append(ch)
    return "".join(out)


def is_group_author(name: str) -> bool:
    """A name written in braces, as in BibTeX ("{atlasgen contributors}"), names a group, not a person."""
    name = name.strip()
    return len(name) > 2 and name[0] == "{" and name[-1] == "}" and bool(name[1:-1].strip())


def author_plain(name: str) -> str:
    """The name as readers see it: a group's braces removed."""
    name = " ".join(name.split())
    return name[1:-1].strip() if is_group_author(name) else name


def author_last_first(name: str) -> str:
    """'Ada Lovelace' -> 'Lovelace, Ada' (Highwire's preferred form); names with a comma and groups stay."""
    if is_group_author(name):
        return author_plain(name)
    name = " ".join(name.split())
    if "," in name or " " not in name:
        return name
    first, last = name.rsplit(" ", 1)
    return f"{last}, {first}"


def bibtex_authors(names: Iterable[str]) -> str:
    """The author field: people as written, groups in braces so BibTeX does not split them."""
    parts = [("{" + bibtex_escape(author_plain(n)) + "}") if is_group_author(n) else bibtex_escape(author_plain(n))
             for n in names]
    return " and ".join(parts) or "Anonymous"


def bibtex_key(*parts: str | int) -> str:
    key = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9:._-]+", "-", key).strip("-") or "atlas"


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


PREVIEW_MESSAGE = "This is a preview build (build.preview in atlas.toml), not the real atlas: cite the real build."


def citation_cff(site: SiteData) -> str:
    lines = [
        "cff-version: 1.2.0",
        'message: "' + (PREVIEW_MESSAGE if site.preview else "If you use this atlas, please cite it as below.") + '"',
        "type: dataset",
        f"title: {_yaml_str(site.title + (' (preview build)' if site.preview else ''))}",
        "authors:",
    ]
    for author in site.authors or ["Unknown"]:
        name = author_last_first(author)
        if is_group_author(author):
            lines.append(f"  - name: {_yaml_str(name)}")
        elif ", " in name:
            family, given = name.split(", ", 1)
            lines += [f"  - family-names: {_yaml_str(family)}", f"    given-names: {_yaml_str(given)}"]
        else:
            lines.append(f"  - name: {_yaml_str(name)}")
    lines.append(f"date-released: {_yaml_str(site.built)}")
    if site.url:
        lines.append(f"url: {_yaml_str(site.url)}")
    lines.append(f"version: {_yaml_str(site.config_digest[:12])}")
    lines.append(f"keywords: [feature visualization, interpretability, {_yaml_str('atlasgen ' + site.version)}]")
    return "\n".join(lines) + "\n"


def sitemap_xml(site: SiteData, folders: Iterable[str]) -> str:
    entries = []
    for folder in sorted(folders):
        loc = public_url(site, folder)
        entries.append(f"  <url><loc>{xml_escape(loc or '')}</loc><lastmod>{xml_escape(site.built)}</lastmod></url>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n' + "\n".join(entries) + "\n</urlset>\n"
    )


def robots_txt(site: SiteData) -> str:
    text = "User-agent: *\nAllow: /\n"
    if site.url:
        text += f"Sitemap: {public_url(site, '')}sitemap.xml\n"
    return text
