"""End to end on the built-in example: every evaluation, tracking, returns and the site.

This is what the README's first command does (``sveval pipeline``), on a throw-away copy of the
project. It checks the published site in headless Chromium (screenshots saved as test artefacts)
and scans everything published for disclosure failures and planted record-level data.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_project

from sveval.cli import main
from sveval.pipeline.disclosure import load_rules, scan_published

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(tmp_path_factory, example_data):
    root = make_project(tmp_path_factory.mktemp("e2e") / "project", example_data)
    rc = main(["--root", str(root), "pipeline", "--no-quarto"])
    return root, rc


def _records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "reports" / "evaluations").glob("*.json"))}


def test_pipeline_succeeds_and_every_evaluation_completes(published):
    root, rc = published
    specs = sorted((root / "parameters" / "evaluations").glob("*.yaml"))
    records = _records(root)
    assert set(records) == {p.stem for p in specs}
    failed = {k: r.get("error") for k, r in records.items() if r["status"] != "completed"}
    assert not failed
    assert rc == 0
    designs = {r["design"] for r in records.values()}
    assert {"its", "did", "synth"} <= designs
    for r in records.values():
        assert r["evidence"]["level"] in (1, 2, 3, 4, 5)
        assert r["effects"] and r["provenance"]["data_sha256"]


def test_index_links_a_page_per_evaluation_with_figure_and_table(published):
    root, _ = published
    site = root / "reports" / "_site"
    index = (site / "index.html").read_text()
    for eid, rec in _records(root).items():
        page = site / "evaluations" / f"{eid}.html"
        assert page.exists(), page
        assert f"evaluations/{eid}.html" in index
        body = page.read_text()
        assert "<img" in body and "<table" in body, f"{eid}: no figure or table"
        assert html.escape(rec["title"], quote=False) in body or rec["title"] in html.unescape(body)
    assert (site / "methods.html").exists()
    assert any((site / "tracking").glob("*.html"))


def test_site_in_headless_chromium(published, artifacts_dir, tmp_path):
    from test_browser import _chromium, check_site_in_browser

    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    root, _ = published
    titles = [r["title"] for r in _records(root).values()]
    shots = check_site_in_browser(root / "reports" / "_site", titles, exe, tmp_path / "profile", artifacts_dir,
                                  prefix="example-")
    for png in shots.values():
        assert png.stat().st_size > 10_000


def test_returns_written_and_checked(published):
    root, _ = published
    from openpyxl import load_workbook

    books = list((root / "outputs" / "returns").rglob("*.xlsx"))
    assert books
    wb = load_workbook(books[0], read_only=True)
    assert len(wb.sheetnames) >= 4


def test_nothing_published_leaks(published):
    """No unsuppressed hospital counts, no recoverable cells, no planted record-level data."""
    root, _ = published
    data = root / "data" / "example"
    extract = sorted((data / "force_extract").glob("*.csv*"))[0]
    raw = pd.read_csv(extract, nrows=400)
    personal = [c for c in ("victim_name", "offender_name", "victim_dob", "crime_ref") if c in raw.columns]
    assert personal, "the example should plant personal fields to scan for"
    values = sorted({str(v) for c in personal for v in raw[c].dropna().head(100)})
    published_paths = [root / "reports" / "_site", root / "reports" / "evaluations", root / "outputs" / "returns"]
    findings = scan_published(published_paths, planted_fields=personal, rules=load_rules(root / "parameters"),
                              planted_values=values)
    assert findings == []


def test_rerun_is_cached_and_site_republishes(published, capsys):
    root, _ = published
    rc = main(["--root", str(root), "run", "--all"])
    out = capsys.readouterr().out
    assert rc == 0 and "cached" in out and "running" not in out
    shutil.rmtree(root / "reports" / "_site")
    assert main(["--root", str(root), "publish", "--no-quarto"]) == 0
    assert (root / "reports" / "_site" / "index.html").exists()


def test_published_notebooks_print_no_warnings(published):
    """No stderr in the published notebooks: a warning printed there (a library's UserWarning, a
    deprecation) is noise to a reader and usually a sign of an empty or mis-drawn chart."""
    import nbformat

    root, _ = published
    found = []
    for nb_path in sorted((root / "reports").glob("*/*.ipynb")):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            for out in cell.get("outputs", []):
                if out.get("name") == "stderr":
                    found.append(f"{nb_path.name}: {out['text'][:200]}")
    assert not found, "\n".join(found)
