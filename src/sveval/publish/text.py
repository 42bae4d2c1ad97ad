"""Text that leaves for a page: one template environment and one set of escaping helpers.

Every piece of text from a registry, a parameter file or the data that reaches HTML, Markdown or
YAML front matter passes through these functions (and nowhere else), so escaping is decided once.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from typing import Any

import jinja2
import yaml

FALLBACK_BANNER = (
    "Preview rendered by sveval's fallback renderer; run `quarto render reports` for the Quarto site"
)


# ------------------------------------------------------------------------------------------------
# Escaping (implemented once in sveval.report.escape so the notebooks' Markdown uses it too)
# ------------------------------------------------------------------------------------------------
from sveval.report.escape import front_matter_text, html_escape, md_escape, md_link  # noqa: E402

__all__ = ["FALLBACK_BANNER", "env", "front_matter", "front_matter_text", "html_escape", "md_escape",
           "md_link", "template_text"]


def _yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=4096).strip()


#: front-matter keys whose values Quarto renders as Markdown (escaped by :func:`front_matter`)
TEXT_KEYS = ("title", "subtitle", "description", "author", "abstract")


def front_matter(data: Mapping[str, Any]) -> str:
    """YAML front matter (without the ``---`` fences) with its text values escaped: Quarto reads
    ``title``, ``description`` ... as Markdown, so registry and parameter-file text in them is
    Markdown-escaped (raw HTML and shortcodes neutralised); YAML quoting is ``yaml.safe_dump``'s."""
    out = dict(data)
    for k in TEXT_KEYS:
        if isinstance(out.get(k), str):
            out[k] = front_matter_text(out[k])
    return _yaml(out)


def env() -> jinja2.Environment:
    """The one template environment: HTML templates autoescaped, Markdown/YAML ones escaped by the helpers above."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sveval", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def template_text(name: str) -> str:
    """The text of a packaged file in ``sveval/templates``."""
    return importlib.resources.files("sveval").joinpath("templates", name).read_text(encoding="utf-8")


def tidy(text: str) -> str:
    """Collapse runs of blank lines left by template blocks; end with one newline."""
    lines, blank = [], 0
    for line in text.splitlines():
        blank = blank + 1 if not line.strip() else 0
        if blank <= 1:
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"
