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
# Markdown helpers
# ------------------------------------------------------------------------------------------------
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#"})


def md_escape(text: Any) -> str:
    """Escape text for inline Markdown (Pandoc and CommonMark agree on backslash escapes)."""
    return " ".join(str(text).split()).translate(_MD_SPECIAL)


def md_link(text: str, href: str | None) -> str:
    return f"[{md_escape(text)}]({href})" if href else md_escape(text)


def _yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=4096).strip()


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


