"""Hostile text from registries and parameter files never reaches a page as live markup."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from sveval.publish.render import markdown_to_html
from sveval.publish.text import front_matter, md_escape, md_link
from sveval.report.narrative import overview

HOSTILE = [
    "<script>alert(1)</script>",
    "{{< include /etc/passwd >}}",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1)) *x* _y_ `z` | a | # h $m$ ~~s~~",
    "title: '\n---\nexecute: true",
]


def _safe_html(html: str) -> None:
    low = html.lower()
    assert "<script" not in low and "<img" not in low and "{{<" not in html
    assert 'href="javascript' not in low


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_escape(text):
    _safe_html(markdown_to_html(md_escape(text)))
    _safe_html(markdown_to_html(md_link(text, "page.html")))


@pytest.mark.parametrize("text", HOSTILE)
def test_front_matter(text):
    fm = front_matter({"title": text, "description": text, "execute": {"enabled": False}})
    data = yaml.safe_load(fm)
    assert set(data) == {"title", "description", "execute"} and data["execute"] == {"enabled": False}
    for v in (data["title"], data["description"]):
        assert "{{<" not in v and "\n" not in v
        _safe_html(markdown_to_html(v))  # Quarto reads front-matter titles as Markdown


def test_registry_text_in_notebook_overview():
    """Every registry field that narrative.overview puts into the notebooks' Markdown."""
    bad = " ".join(HOSTILE)
    ctx = SimpleNamespace(
        spec=SimpleNamespace(design="did"),
        measure=SimpleNamespace(name=bad, description=bad),
        intervention=SimpleNamespace(title=bad, description=bad, priority=bad),
        area_label=bad, start="2015-04", end="2026-03", pre_months=1, post_months=1,
        intervention_start="2024-01", comparison=["X"],
        catalog=SimpleNamespace(areas_label=lambda codes: bad),
    )
    _safe_html(markdown_to_html(overview(ctx)))


def test_tables_displayed_in_notebooks_are_escaped():
    import sveval.report  # noqa: F401  (sets pandas' Styler to escape HTML)

    html = pd.DataFrame({"Area": HOSTILE}).style.hide(axis="index").to_html()
    _safe_html(html)
