"""Escaping of text for Markdown, HTML and YAML front matter: the one implementation.

Every piece of text from a registry, a parameter file or a data value that reaches a page passes
through these functions. They live here, in the report layer, so that the notebooks' Markdown
(:mod:`sveval.report.narrative`) and the site (:mod:`sveval.publish.text`, which re-exports them)
escape alike. Quarto shortcodes (``{{< ... >}}``) are neutralised by escaping their braces and
angle brackets, so user text can never include a file or run a shortcode.
"""

from __future__ import annotations

import html
from typing import Any

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#{}$~"})


def _one_line(text: Any) -> str:
    return " ".join(("" if text is None else str(text)).split())


def md_escape(text: Any) -> str:
    """Escape text for inline Markdown (Pandoc and CommonMark agree on backslash escapes).

    Raw HTML (``<script>``) becomes literal text, emphasis, links, tables, headings, math, Quarto
    shortcodes (``{{< include ... >}}``) and attribute braces lose their meaning.
    """
    return _one_line(text).translate(_MD_SPECIAL)


def md_link(text: Any, href: str | None) -> str:
    """A Markdown link whose text is escaped (the target is a page name sveval made)."""
    if not href:
        return md_escape(text)
    safe = "".join(ch for ch in str(href) if ch not in "()<> \n\t")
    return f"[{md_escape(text)}]({safe})"


def html_escape(text: Any) -> str:
    """Escape text for HTML (element content and quoted attributes)."""
    return html.escape("" if text is None else str(text), quote=True)


def front_matter_text(text: Any) -> str:
    """A YAML front-matter value: Quarto reads titles and descriptions as Markdown, so the text is
    Markdown-escaped (YAML quoting is then left to ``yaml.safe_dump``)."""
    return md_escape(text)


def escape_tables_in_notebooks() -> None:
    """Make pandas' Styler escape cell text as HTML (its default leaves it raw), so tables that
    notebooks display with ``.style`` (area names, registry titles, check details) cannot carry
    live markup. Called when :mod:`sveval.report` is imported, which every notebook does."""
    import pandas as pd

    pd.set_option("styler.format.escape", "html")
