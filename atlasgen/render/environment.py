"""The one Jinja environment the site is rendered with: where templates are found, and
the filters and globals they may use."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import jinja2

from .formats import (
    author_last_first,
    author_plain,
    bibtex_authors,
    bibtex_escape,
    bibtex_key,
    format_dims,
    format_number,
    objective_ratio,
    format_score,
    objective_labels,
)
from .urls import relative_url, unit_anchor


def builtin_templates() -> Path:
    """The shipped templates: the `atlasgen.templates` package, or `templates/` in a checkout."""
    try:
        path = Path(str(importlib.resources.files("atlasgen.templates")))
        if (path / "base.html").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "templates"  # atlasgen/render/ -> the checkout


@jinja2.pass_context
def _rel_filter(ctx: jinja2.runtime.Context, target: str) -> str:
    """`url | rel`: a site-root-relative URL as seen from the page being rendered."""
    return relative_url(target, ctx.get("page_dir", ""))


def make_environment(user_templates: Path | None = None) -> jinja2.Environment:
    """The one Jinja environment: user folder first, autoescaping, atlas filters."""
    search = [str(user_templates)] if user_templates else []
    search.append(str(builtin_templates()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # compiled once per render: no stat of every template at every include
    )
    env.filters.update(
        rel=_rel_filter,
        num=format_number,
        score=format_score,
        dims=format_dims,
        bibtex=bibtex_escape,
        bibtex_authors=bibtex_authors,
        last_first=author_last_first,
        plain_author=author_plain,
    )
    env.globals.update(ratio=objective_ratio, anchor=unit_anchor, labels=objective_labels(), bibkey=bibtex_key)
    return env
