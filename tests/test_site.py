"""Tests of the published site (sveval.publish.site): Quarto project sources and the fallback render.

A fake ``reports/`` folder is built from small notebooks executed here with nbclient (one of them
failing, as papermill leaves a failed run) and result JSON files shaped like sveval's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from sveval.errors import DisclosureError, PublishError
from sveval.publish.site import (
    FALLBACK_BANNER,
    disclosure_control,
    existing_front_matter,
    markdown_table,
    publish,
    with_front_matter,
)

CODE_MARKER = "SECRET_CODE_MARKER_42"
REPO = Path(__file__).resolve().parents[1]

EVALUATIONS = {
    "nte-its": {
        "title": "Night-time economy patrols: interrupted time series",
        "design": "its",
        "measure_name": "Night-time economy violence",
        "area_name": "County Durham and Darlington",
        "effects": [("average_post_effect", "rate_ratio", 0.82, 0.71, 0.95)],
        "evidence": {"level": 2, "label": "Level 2: comparison without evidence of comparable trends",
                     "short": "limited", "reason": "A single series without a comparison group."},
        "value_for_money": {"benefit_gbp": 575_000.0, "benefit_ci_low": 126_000.0, "benefit_ci_high": 980_000.0,
                            "cost_gbp": 240_000.0, "net_gbp": 335_000.0, "bcr": 2.4, "bcr_ci_low": 0.53,
                            "bcr_ci_high": 4.08, "price_year": "2025/26",
                            "caveats": ["The whole cost is set against this measure alone."]},
    },
    "youth-did": {
        "title": "Youth navigators | difference-in-differences",
        "design": "did",
        "measure_name": "First-time entrants 10-17",
        "area_name": "County Durham",
        "effects": [("att", "rate_ratio", 0.95, 0.80, 1.13)],
        "power": {"mde": 0.35, "target_power": 0.8, "underpowered": True},
    },
    "knife-synth": {
        "title": "DA knife programme: synthetic control",
        "design": "synth",
        "measure_name": "Domestic-abuse knife violence",
        "area_name": "Darlington",
        "failed": "ValueError: no data for measure 'da_knife' in E06000005",
    },
}


def _record(eid: str, spec: dict) -> dict:
    base = {
        "id": eid, "title": spec["title"], "description": f"Evaluation {eid} for the tests.",
        "design": spec["design"], "method": "Negative binomial GLM, estimated dispersion",
        "measure": eid.split("-")[0], "measure_name": spec["measure_name"], "measure_source": "force_extract",
        "better_if": "lower", "area": ["E06000047"], "area_name": spec["area_name"],
        "comparison": ["E06000001", "E06000002"], "intervention": eid, "intervention_title": spec["title"].split(":")[0],
        "priority": 2, "intervention_start": "2023-04", "period": {"start": "2018-04", "end": "2025-03"},
    }
    if "failed" in spec:
        return {**base, "status": "failed", "error": spec["failed"], "effects": [], "prevented": None,
                "warnings": [f"Evaluation failed: {spec['failed']}"],
                "provenance": {"sveval_version": "0.1.0", "generated_at": "2026-01-01T00:00:00Z"}}
    effects = [
        {"name": n, "scale": s, "estimate": e, "ci_low": lo, "ci_high": hi, "p_value": 0.01,
         "better_if": "lower", "description": "", "ci_level": 0.95, "significant": not (lo <= 1 <= hi)}
        for n, s, e, lo, hi in spec["effects"]
    ]
    rec = {
        **base, "status": "completed", "effects": effects,
        "prevented": {"estimate": 41.0, "ci_low": 9.0, "ci_high": 70.0, "period_start": "2023-04",
                      "period_end": "2025-03", "months": 24, "unit": "offences"},
        "diagnostics": [{"name": "autocorrelation", "description": "Residual autocorrelation (Ljung-Box)",
                         "statistic": 8.1, "p_value": 0.42, "passed": True, "detail": "", "data": {}}],
        "power": spec.get("power"), "warnings": [], "n_obs": 84, "details": {},
        # observed counts: must never reach a page
        "series": {"period": ["2023-04"], "observed": [987654], "counterfactual": [1000.5]},
        "provenance": {"parameter_file": f"parameters/evaluations/{eid}.yaml", "data_source": "example",
                       "data_sha256": "ab" * 32, "sveval_version": "0.1.0", "git_commit": "f" * 40,
                       "generated_at": "2026-01-01T00:00:00Z"},
    }
    for key in ("evidence", "value_for_money"):
        if key in spec:
            rec[key] = spec[key]
    return rec


def _notebook(title: str, fail: str | None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [
        nbformat.v4.new_markdown_cell(f"## Summary\n\nThe evaluation of {title}."),
        nbformat.v4.new_code_cell(
            f"{CODE_MARKER} = 1\nfrom IPython.display import HTML, display\n"
            "display(HTML('<table class=\"dataframe\"><tr><th>Effect</th></tr><tr><td>-18.0%</td></tr></table>'))\n"
            "print('Model fitted on 84 months')"
        ),
    ]
    if fail:
        ename, evalue = fail.split(": ", 1)
        cells.append(nbformat.v4.new_code_cell(f"raise {ename}({evalue!r})"))
    cells.append(nbformat.v4.new_markdown_cell("## Caveats\n\nSee [methods](../methods.qmd)."))
    nb.cells = cells
    return nb


@pytest.fixture(scope="module")
def executed_notebooks(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    """The fake evaluations' notebooks and a tracking notebook, executed once (nbclient)."""
    out = {}
    for eid, spec in EVALUATIONS.items():
        nb = _notebook(spec["title"], spec.get("failed"))
        NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
        out[eid] = nb
    track = nbformat.v4.new_notebook()
    track.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    track.cells = [nbformat.v4.new_markdown_cell("# Knife crime tracking\n\nRates per 100,000 against the baseline."),
                   nbformat.v4.new_code_cell(f"{CODE_MARKER} = 2\nprint('rolling 12 months')")]
    NotebookClient(track, timeout=60, kernel_name="python3").execute()
    out["tracking:knife-crime"] = track
    return out


def build_fake_reports(root: Path, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    """A ``reports/`` folder with executed notebooks, result JSON (one failed) and a tracking page."""
    reports = root / "reports"
    (reports / "evaluations").mkdir(parents=True)
    (reports / "tracking").mkdir()
    for eid, spec in EVALUATIONS.items():
        (reports / "evaluations" / f"{eid}.json").write_text(json.dumps(_record(eid, spec), indent=2))
        nbformat.write(copy.deepcopy(notebooks[eid]), str(reports / "evaluations" / f"{eid}.ipynb"))
    nbformat.write(copy.deepcopy(notebooks["tracking:knife-crime"]), str(reports / "tracking" / "knife-crime.ipynb"))
    return reports


@pytest.fixture
def reports(tmp_path, executed_notebooks) -> Path:
    return build_fake_reports(tmp_path, executed_notebooks)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---", 2)[1])


# ------------------------------------------------------------------------------------------------
def test_publish_fallback_renders_every_page(reports):
    report = publish(reports, quarto=None)
    site = reports / "_site"
    assert report.renderer == "fallback"
    assert report.site_dir == site
    assert report.evaluations == 3 and report.failed == 1
    outputs = {p.output for p in report.pages}
    assert outputs == {
        "index.html", "methods.html", "data.html", "evaluations.html", "evaluations/nte-its.html",
        "evaluations/youth-did.html", "evaluations/knife-synth.html", "tracking/knife-crime.html",
    }
    index = _parse(site / "index.html")
    for out in outputs - {"index.html"}:
        assert out in index.hrefs, f"index does not link {out}"
    for page in report.pages:
        html_path = site / page.output
        parsed = _parse(html_path)
        html = html_path.read_text(encoding="utf-8")
        assert parsed.title.startswith(page.title.replace("|", "|")), (page.output, parsed.title)
        assert "Preview rendered by sveval&#39;s fallback renderer" in html or \
            "Preview rendered by sveval's fallback renderer" in html
        assert "<code>quarto render reports</code>" in html
        assert CODE_MARKER not in html, f"code shown on {page.output}"
        # every relative link resolves to a file of the site
        for href in parsed.hrefs:
            if re.match(r"^[a-z]+:|^#", href):
                continue
            target = (html_path.parent / href.split("#")[0]).resolve()
            assert target.exists(), f"{page.output}: broken link {href}"
    assert any("fallback renderer" in w for w in report.warnings)


def test_index_content_effects_verdicts_failures(reports):
    publish(reports, quarto=None)
    qmd = (reports / "index.qmd").read_text()
    html = (reports / "_site" / "index.html").read_text()
    # headline effect as % change with CI (fmt_effect) and its unit
    unit = "percentage change against the expected level without the intervention"
    assert f"-18.0% (95% CI -29.0% to -5.0%); {unit}" in html
    assert f"-5.0% (95% CI -20.0% to +13.0%); {unit}" in html
    assert "underpowered (it could only reliably detect a fall of 35% or more)" in html
    assert '<span class="verdict verdict-improvement">▼ Improvement</span>, evidence level 2' in html
    assert '<span class="verdict verdict-unclear">◆ No clear change</span>' in html
    assert "benefit-cost ratio 2.40 (95% CI 0.53 to 4.08)" in html
    assert "Level 2: comparison without evidence of comparable trends. A single series" in html
    assert "Estimated benefit £575,000 (95% CI £126,000 to £980,000) at 2025/26 prices" in html
    assert "Not estimated" in html
    assert "Interrupted time series" in html and "Difference-in-differences" in html
    # the failed evaluation is listed with its error, never hidden
    assert "Evaluations that failed" in html
    assert "ValueError: no data for measure &#39;da_knife&#39; in E06000005" in html or \
        "ValueError: no data for measure 'da_knife' in E06000005" in html
    # a title with '|' is escaped in Markdown and shown whole
    assert "Youth navigators \\| difference-in-differences" in qmd
    assert "Youth navigators | difference-in-differences</a>" in html
    # the at-a-glance matrix: one row per priority (only priority 2 without a catalog), the three
    # Home Office measures and the local measures as columns; every cell in words
    table = html.split("<table", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") == 1 + 1
    for col in ("Homicide", "Hospital admissions for assault with a sharp object", "Police-recorded knife crime",
                "Local measures"):
        assert f">{col}</th>" in table
    assert table.count("Not evaluated") == 3 and "✖ Failed" in table
    # observed counts from the JSON series never reach the site
    for page in (reports / "_site").rglob("*.html"):
        assert "987654" not in page.read_text()


def test_methods_and_data_tables_render(reports):
    publish(reports, quarto=None)
    methods = (reports / "_site" / "methods.html").read_text()
    data = (reports / "_site" / "data.html").read_text()
    assert methods.count("<table") == 2  # power and diagnostics
    assert "Residual autocorrelation (Ljung-Box)" in methods and "35%" in methods
    assert data.count("<table") == 2  # measures and provenance (no catalog: no areas table)
    assert "abababababab" in data and "parameters/evaluations/nte-its.yaml" in data


def test_failed_notebook_page_shows_error(reports):
    publish(reports, quarto=None)
    html = (reports / "_site" / "evaluations" / "knife-synth.html").read_text()
    assert "output_error" in html and "no data for measure" in html


def test_quarto_project_sources(reports):
    report = publish(reports, quarto=None)
    cfg = yaml.safe_load((reports / "_quarto.yml").read_text())
    assert cfg["project"]["type"] == "website"
    assert cfg["project"]["output-dir"] == "_site"
    assert set(cfg["project"]["render"]) == {p.source for p in report.pages}
    assert cfg["execute"]["enabled"] is False and cfg["execute"]["echo"] is False
    assert cfg["format"]["html"]["css"] == ["sveval-site.css", "styles.css"] and cfg["format"]["html"]["toc"] is True
    assert cfg["format"]["html"]["include-after-body"] == "scroll-tables.html"
    assert cfg["project"]["resources"] == ["downloads/**"]
    nav = cfg["website"]["navbar"]["left"]
    assert [n["text"] for n in nav] == ["Home", "Evaluations", "Tracking", "Methods", "Data & disclosure"]
    evals = next(n for n in nav if n["text"] == "Evaluations")["menu"]
    assert [m["href"] for m in evals][0] == "evaluations.qmd"
    assert {m["href"] for m in evals[1:]} == {f"evaluations/{e}.ipynb" for e in EVALUATIONS}
    for src in ("index.qmd", "methods.qmd", "data.qmd", "evaluations.qmd"):
        fm = _front_matter((reports / src).read_text())
        assert fm["title"] and fm["description"] and fm["title"] != src
        assert "```{" not in (reports / src).read_text(), "generated pages must hold no executable cells"
    for eid, spec in EVALUATIONS.items():
        nb = nbformat.read(reports / "evaluations" / f"{eid}.ipynb", as_version=4)
        assert nb.cells[0].cell_type == "raw"
        fm = existing_front_matter(nb)
        assert fm["title"].replace("\\|", "|") == spec["title"]  # Markdown-escaped front matter
        assert fm["description"] == f"Evaluation {eid}." or fm["description"].startswith("Evaluation")
        assert fm["execute"]["echo"] is False and fm["execute"]["enabled"] is False
        assert sum(1 for c in nb.cells if c.cell_type == "raw") == 1
        assert f"[result JSON](../downloads/evaluations/{eid}.json)" in nb.cells[1].source
        nbformat.validate(nb)
    track = existing_front_matter(nbformat.read(reports / "tracking" / "knife-crime.ipynb", as_version=4))
    assert track["title"] == "Knife crime tracking"
    assert track["description"] == "Rates per 100,000 against the baseline."
    assert (reports / "styles.css").exists()


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".sveval" not in p.parts
    }


def test_publish_is_idempotent_and_leaves_no_staging(reports):
    publish(reports, quarto=None)
    first = _digest(reports)
    publish(reports, quarto=None)
    assert _digest(reports) == first
    assert not list((reports / ".sveval").glob("publish-*"))


def test_failed_render_leaves_previous_site(reports, monkeypatch):
    publish(reports, quarto=None)
    before = _digest(reports)
    import sveval.publish.render as sr

    def boom(*args, **kwargs):
        raise PublishError("render exploded")

    monkeypatch.setattr(sr, "render_fallback", boom)
    (reports / "evaluations" / "nte-its.json").write_text(
        (reports / "evaluations" / "nte-its.json").read_text().replace("Night-time", "Changed")
    )
    with pytest.raises(PublishError, match="render exploded"):
        publish(reports, quarto=None)
    after = _digest(reports)
    after.pop("evaluations/nte-its.json")
    before.pop("evaluations/nte-its.json")
    assert after == before
    assert not list((reports / ".sveval").glob("publish-*"))


def test_errors_are_clear(tmp_path, reports):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PublishError, match="evaluations: no such folder"):
        publish(empty, quarto=None)
    (empty / "evaluations").mkdir()
    with pytest.raises(PublishError, match="no evaluations to publish"):
        publish(empty, quarto=None)
    with pytest.raises(PublishError, match="no such reports folder"):
        publish(tmp_path / "missing", quarto=None)
    with pytest.raises(PublishError, match="not found"):
        publish(reports, quarto="/nonexistent/quarto")
    bad = reports / "evaluations" / "youth-did.json"
    bad.write_text('{"id": "youth-did", "status": ')
    with pytest.raises(PublishError, match=r"youth-did\.json: not valid JSON \(line 1"):
        publish(reports, quarto=None)
    bad.write_text(json.dumps({"id": "other", "status": "completed", "effects": []}))
    with pytest.raises(PublishError, match="field 'id' is 'other'"):
        publish(reports, quarto=None)
    bad.write_text(json.dumps({"id": "youth-did", "status": "completed"}))
    with pytest.raises(PublishError, match=r"youth-did\.json: not a valid result record \(field 'title': Field required"):
        publish(reports, quarto=None)
    no_effects = {**_record("youth-did", EVALUATIONS["youth-did"]), "effects": []}
    bad.write_text(json.dumps(no_effects))
    with pytest.raises(PublishError, match="a completed result needs at least one effect"):
        publish(reports, quarto=None)
    assert not (reports / "_site").exists()


def test_orphan_files_are_listed_not_dropped(reports):
    (reports / "evaluations" / "nte-its.json").unlink()  # notebook without JSON -> failed
    shutil.copy(reports / "evaluations" / "youth-did.json", reports / "evaluations" / "no-nb.json")
    rec = json.loads((reports / "evaluations" / "no-nb.json").read_text())
    rec.update(id="no-nb", title="Evaluation without notebook")
    (reports / "evaluations" / "no-nb.json").write_text(json.dumps(rec))
    report = publish(reports, quarto=None)
    assert report.evaluations == 4 and report.failed == 2
    html = (reports / "_site" / "index.html").read_text()
    assert "Evaluation without notebook" in html
    assert any("no result JSON" in w for w in report.warnings)
    assert any("no executed notebook" in w for w in report.warnings)


def test_disclosure_gate():
    import pandas as pd

    log: list[str] = []
    t = disclosure_control(pd.DataFrame({"a": ["x"], "b": [1.0]}), name="t", roles={"a": "label", "b": "estimate"}, log=log)
    assert log == ["t"] and "| x | 1.0 |" in markdown_table(t)
    with pytest.raises(DisclosureError, match="no disclosure role"):
        disclosure_control(pd.DataFrame({"a": [1]}), name="t", roles={})
    with pytest.raises(DisclosureError, match="observed counts"):
        disclosure_control(pd.DataFrame({"n": [3]}), name="t", roles={"n": "count"}, rule="hospital")
    from sveval.pipeline.disclosure import load_rules

    rules = load_rules(REPO / "parameters")
    t = disclosure_control(pd.DataFrame({"area": ["a", "b", "c"], "n": [3, 12, 0]}), name="t",
                           roles={"area": "label", "n": "count"}, rule="hospital", rules=rules)
    assert [str(v) for v in t.frame["n"]] == ["*", "10", "0"]
    with pytest.raises(TypeError):
        markdown_table(pd.DataFrame({"a": [1]}))


def test_every_table_passes_the_gate(reports):
    report = publish(reports, quarto=None)
    assert {"index.matrix", "methods.power", "methods.diagnostics", "data.measures", "data.provenance",
            "downloads.nte-its.series"} <= set(report.tables)
    n_tables = sum(len(re.findall(r"^\|.*\|\n\|:--", (reports / s).read_text(), re.M))
                   for s in ("index.qmd", "methods.qmd", "data.qmd", "evaluations.qmd"))
    pages = [t for t in report.tables if not t.startswith("downloads.")]
    assert n_tables == len(pages)
    downloads = sorted((reports / "downloads" / "evaluations").glob("*.csv"))
    assert len(downloads) == len([t for t in report.tables if t.startswith("downloads.")]) == 2


def test_front_matter_merges_existing_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_raw_cell("---\ntitle: Old\nauthor: Analyst\nexecute:\n  warning: false\n---"),
                nbformat.v4.new_markdown_cell("text")]
    out = with_front_matter(nb, {"title": "New: title", "execute": {"echo": False}})
    fm = existing_front_matter(out)
    assert fm == {"title": "New: title", "author": "Analyst", "execute": {"warning": False, "echo": False}}
    assert len(out.cells) == 2
    again = with_front_matter(out, {"title": "New: title", "execute": {"echo": False}})
    assert nbformat.writes(again) == nbformat.writes(out)


def test_banner_constant_mentions_quarto():
    assert "quarto render reports" in FALLBACK_BANNER


def test_publish_with_catalog_names_areas_and_scans(reports):
    from sveval.catalog import Catalog

    catalog = Catalog.load(REPO / "parameters")
    report = publish(reports, catalog=catalog, quarto=None)
    assert report.message.startswith("site written to") and "fallback" in report.message
    index = (reports / "_site" / "index.html").read_text()
    assert catalog.partnership in index
    data = (reports / "_site" / "data.html").read_text()
    assert data.count("<table") == 3  # measures, areas, provenance
    assert catalog.area_name("E06000005") in data
    # a record-level field planted in a notebook output is caught by the disclosure scan
    nb_path = reports / "evaluations" / "nte-its.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("Leaked column: crime_reference"))
    nbformat.write(nb, str(nb_path))
    before = (reports / "_site" / "index.html").read_bytes()
    with pytest.raises(PublishError, match="record-level field 'crime_reference'"):
        publish(reports, catalog=catalog, quarto=None)
    assert (reports / "_site" / "index.html").read_bytes() == before


def test_collect_coverage_keeps_default_estimators(tmp_path):
    from sveval.publish.site import collect_coverage

    results, reports = tmp_path / "results", tmp_path / "reports"
    results.mkdir()
    reports.mkdir()
    assert collect_coverage(results, reports) is None  # no benchmark results: nothing written
    rows = [
        {"dgp": "low05", "n": 48, "estimator": "auto", "default": True, "reps": 1000, "coverage": 0.955},
        {"dgp": "low05", "n": 48, "estimator": "poisson", "default": False, "reps": 200, "coverage": 0.96},
        {"dgp": "gauss_rho0.6", "n": 72, "estimator": "gls_ar", "default": True, "reps": 1000, "coverage": 0.938},
    ]
    (results / "its_coverage_x.json").write_text(json.dumps(rows))
    out = collect_coverage(results, reports)
    got = json.loads(out.read_text())
    assert [r["coverage"] for r in got] == [0.955, 0.938]
    assert got[0]["scenario"] == "low05, 48 months, count default (model: auto)"
    assert got[1]["n_sim"] == 1000 and got[1]["nominal"] == 0.95
    (results / "its_coverage_y.json").write_text("{not json")
    with pytest.raises(PublishError, match="its_coverage_y.json"):
        collect_coverage(results, reports)


# ------------------------------------------------------------------------------------------------
# Issue 14: the overview (priorities x Home Office measures), sensitivity variants, forest plot,
# listing, downloads, the Home Office measures page and page hygiene
# ------------------------------------------------------------------------------------------------
def _add_variant(reports: Path, notebooks) -> None:
    """A model-sensitivity variant of nte-its (difference scale) declared with sensitivity_of."""
    spec = {**EVALUATIONS["nte-its"], "title": "Night-time economy patrols, sensitivity (OLS)",
            "effects": [("level_change", "difference", -64.4, -130.0, 1.2)]}
    rec = _record("nte-ols", spec)
    rec["effects"][0]["description"] = "difference in offences per month; Newey-West errors"
    rec["sensitivity_of"] = "nte-its"
    rec["measure"] = "nte_violence"
    (reports / "evaluations" / "nte-ols.json").write_text(json.dumps(rec))
    nbformat.write(copy.deepcopy(notebooks["nte-its"]), str(reports / "evaluations" / "nte-ols.ipynb"))


def test_sensitivity_variants_grouped_under_their_evaluation(reports, executed_notebooks):
    _add_variant(reports, executed_notebooks)
    report = publish(reports, quarto=None)
    html = (reports / "_site" / "index.html").read_text()
    qmd = (reports / "index.qmd").read_text()
    # not a headline: absent from the matrix and the forest plot, present in its main's section
    matrix = html.split("<table", 1)[1].split("</table>", 1)[0]
    assert "nte-ols" not in matrix and matrix.count("evaluations/nte-its.html") == 1
    section = qmd.split("#### [Night-time economy patrols: interrupted time series]", 1)[1].split("\n### ", 1)[0]
    assert "**Sensitivity analyses** (1)" in section and "Night-time economy patrols, sensitivity (OLS)" in section
    # the variant's effect states its unit: no bare "-64.40"
    assert "-64.40 (95% CI -130.00 to +1.20); difference in offences per month" in section
    assert "index.sensitivity.nte-its" in report.tables
    alt = re.search(r'fig-alt="([^"]*)"', qmd).group(1)
    assert "2 headline effect(s)" in alt and "OLS" not in alt
    items = yaml.safe_load((reports / "evaluations.yml").read_text())
    roles = {i["title"]: i["role"] for i in items}
    assert roles["Night-time economy patrols, sensitivity (OLS)"] == "Sensitivity analysis"
    assert roles["Night-time economy patrols: interrupted time series"] == "Headline evaluation"
    cfg = yaml.safe_load((reports / "_quarto.yml").read_text())
    menu = next(n for n in cfg["website"]["navbar"]["left"] if n["text"] == "Evaluations")["menu"]
    assert "evaluations/nte-ols.ipynb" not in {m["href"] for m in menu}


def test_forest_plot_and_listing(reports):
    publish(reports, quarto=None)
    svg = (reports / "_site" / "figures" / "forest.svg").read_text()
    assert "<svg" in svg and "% change against expected" in svg
    index = (reports / "_site" / "index.html").read_text()
    assert re.search(r'<img src="figures/forest.svg" alt="Forest plot of 2 headline effect', index)
    fm = _front_matter((reports / "evaluations.qmd").read_text())
    lst = fm["listing"]
    assert lst["contents"] == "evaluations.yml" and lst["type"] == "table" and lst["categories"] is True
    assert lst["filter-ui"] is True and {"priority", "measure", "design", "verdict", "evidence"} <= set(lst["sort-ui"])
    items = yaml.safe_load((reports / "evaluations.yml").read_text())
    assert {i["path"] for i in items} == {f"evaluations/{e}.ipynb" for e in EVALUATIONS}
    nte = next(i for i in items if i["path"] == "evaluations/nte-its.ipynb")
    assert {"Priority 2", "Interrupted time series", "Improvement", "Level 2", "Local measure"} <= set(nte["categories"])
    # the fallback renders the same listing as a static table linking every evaluation
    page = (reports / "_site" / "evaluations.html").read_text()
    assert page.count('<tr>') == 1 + len(EVALUATIONS) and "Categories:" in page
    assert all(f'href="evaluations/{e}.html"' in page for e in EVALUATIONS)


def test_downloads_are_controlled(reports):
    from sveval.catalog import Catalog

    publish(reports, quarto=None)  # no disclosure rules: model estimates only
    csv = (reports / "_site" / "downloads" / "evaluations" / "nte-its-figure-data.csv").read_text()
    assert csv.splitlines()[0] == "period,counterfactual" and "987654" not in csv
    doc = json.loads((reports / "_site" / "downloads" / "evaluations" / "nte-its.json").read_text())
    assert "observed" not in doc["series"] and doc["effects"][0]["estimate"] == 0.82
    page = (reports / "_site" / "evaluations" / "nte-its.html").read_text()
    assert 'href="../downloads/evaluations/nte-its.json"' in page
    assert 'href="../downloads/evaluations/nte-its-figure-data.csv"' in page
    # with the catalog's rules the observed series passes the gate under its class (police: as is)
    publish(reports, catalog=Catalog.load(REPO / "parameters"), quarto=None)
    csv = (reports / "_site" / "downloads" / "evaluations" / "nte-its-figure-data.csv").read_text()
    assert csv.splitlines()[0] == "period,observed,counterfactual"


def test_latest_return_linked(reports):
    for tag, t in (("2024-25", 1_000_000), ("2025-26", 2_000_000)):
        d = reports.parent / "outputs" / "returns" / tag
        d.mkdir(parents=True)
        (d / f"sv-return-{tag}.xlsx").write_bytes(b"PK fake workbook")
        (d / "measures.csv").write_text("measure,value\n")
        import os

        os.utime(d / f"sv-return-{tag}.xlsx", (t, t))
    publish(reports, quarto=None)
    index = (reports / "_site" / "index.html").read_text()
    assert 'href="downloads/returns/2025-26/sv-return-2025-26.xlsx"' in index
    assert "2024-25" not in index
    assert (reports / "_site" / "downloads" / "returns" / "2025-26" / "measures.csv").exists()


def test_notebook_pages_one_title_toc_and_alt(reports):
    from sveval.publish.pages import prepare_notebook_page

    publish(reports, quarto=None)
    track = nbformat.read(reports / "tracking" / "knife-crime.ipynb", as_version=4)
    assert not any(ln.startswith("# ") for c in track.cells if c.cell_type == "markdown"
                   for ln in c.source.splitlines())
    html = (reports / "_site" / "tracking" / "knife-crime.html").read_text()
    assert html.count("<h1") == 1
    ev = (reports / "_site" / "evaluations" / "nte-its.html").read_text()
    assert '<nav class="toc" id="TOC" aria-label="On this page">' in ev
    assert '<a href="#Summary">Summary</a>' in ev and '<a href="#Caveats">Caveats</a>' in ev
    assert '<div class="table-scroll" tabindex="0" role="region"' in ev
    # figures in notebook outputs get alt text from the heading above them
    nb = nbformat.v4.new_notebook()
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x480 with 1 Axes>"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\n## Each measure"),
                nbformat.v4.new_code_cell("x", outputs=[
                    nbformat.v4.new_output("display_data", data={"text/markdown": "### Knife crime\n\ntext"}),
                    nbformat.v4.new_output("display_data", data=png),
                    nbformat.v4.new_output("display_data", data=png)])]
    out = prepare_notebook_page(nb, "Tracking")
    assert out.cells[0].source == "## Each measure"
    # the heading written by the cell's output becomes a Markdown cell (a real heading: in the TOC)
    assert out.cells[1].cell_type == "markdown" and out.cells[1].source.startswith("### Knife crime")
    assert out.cells[2].cell_type == "code" and len(out.cells[2].outputs) == 2
    alts = out.cells[2].metadata["fig-alt"]
    assert alts[0].startswith("Chart 1 for Knife crime") and alts[1].startswith("Chart 2 for Knife crime")
    assert out.cells[2].outputs[0].metadata["image/png"]["alt"] == alts[0]
    nbformat.validate(out)
    assert nbformat.writes(prepare_notebook_page(out, "Tracking")) == nbformat.writes(out)  # idempotent
    from sveval.publish.render import notebook_to_html

    body = notebook_to_html(out)
    assert f'alt="{alts[0]}"' in body and re.search(r'<h3 id="Knife-crime"', body)


def _fake_tracking(reports: Path) -> None:
    """Controlled tracking tables as TrackingResult.save writes them (knife crime and its split)."""
    import numpy as np
    import pandas as pd

    from sveval.designs.spc import xmr

    periods = [f"{2021 + (m + 3) // 12}-{(m + 3) % 12 + 1:02d}" for m in range(48)]  # 2021-04 on
    rows, charts = [], []
    rng = np.random.default_rng(1)
    for mid, name, level in (("knife_crime", "Knife crime", 40.0), ("knife_crime_u25", "Knife crime (under 25)", 15.0)):
        counts = rng.poisson(level, len(periods)).astype(float)
        counts[-8:] = counts[-8:] * 0.5  # a late fall: special cause
        for area_type, area, scale in (("partnership", "Durham and Darlington", 1.0), ("comparison", "Comparison areas (pooled)", 1.3)):
            for k, p in enumerate(periods):
                rows.append({"measure": mid, "measure_name": name, "area_type": area_type, "area_name": area,
                             "period": p, "count": counts[k] * scale, "rate_per": 100_000,
                             "rolling_12m_rate": 50.0 + k * 0.1 * scale})
        ch = xmr(counts, periods, better_if="lower").assign(measure=mid, shown=counts, suppressed=False,
                                                             aggregation="month", change_point="")
        charts.append(ch)
    tdir = reports / "tracking"
    pd.DataFrame(rows).to_csv(tdir / "partnership_monthly.csv", index=False)
    pd.concat(charts).to_csv(tdir / "partnership_spc.csv", index=False)
    (tdir / "partnership.json").write_text(json.dumps({
        "id": "partnership", "baseline_year": "2022/23", "data_end": "2025-03",
        "comparison_areas": ["Hartlepool", "Middlesbrough"], "readings": {"knife_crime": "Knife crime fell."},
        "chart_notes": {"knife_crime": "Monthly counts"},
        "tables": {"annual": [{"measure": "knife_crime", "area_type": "partnership", "financial_year": "2023/24",
                               "rate": 48.2, "change_pct": -7.5, "comparison_rate_ratio": 0.97}]}}))


def test_home_office_measures_page(reports):
    _fake_tracking(reports)
    report = publish(reports, quarto=None)
    assert "measures.qmd" in {p.source for p in report.pages}
    qmd = (reports / "measures.qmd").read_text()
    html = (reports / "_site" / "measures.html").read_text()
    assert "## Police-recorded knife crime" not in qmd and "## Knife crime" in qmd and "### Knife crime (under 25)" in qmd
    assert "Hartlepool, Middlesbrough" in html and "Knife crime fell." in html
    # Making Data Count icons: inline SVG, decorative, with the words beside them
    assert '<svg class="mdc-icon"' in html and 'aria-hidden="true"' in html
    assert "Special cause improvement: lower values in recent points" in html
    assert re.search(r"(Consistently better than|Hit and miss against) the 2022/23 baseline", html)
    for fig in ("measure-knife_crime-rolling.svg", "measure-knife_crime-spc.svg", "measure-knife_crime_u25-spc.svg"):
        assert (reports / "_site" / "figures" / fig).exists()
        assert re.search(rf'<img src="figures/{fig}" alt="[^"]{{40,}}"', html), fig
    assert "measures.knife_crime.annual" in report.tables and "-7.5%" in html
    index = (reports / "_site" / "index.html").read_text()
    assert 'href="measures.html"' in index


def test_sensitivity_link_is_validated(tmp_path):
    from sveval.catalog import Catalog
    from sveval.errors import SpecError
    from sveval.spec import EvaluationSpec, load_model

    catalog = Catalog.load(REPO / "parameters")
    folder = REPO / "parameters" / "evaluations"
    variant = load_model(EvaluationSpec, folder / "focused-deterrence-violence-gls.yaml")
    assert variant.sensitivity_of == "focused-deterrence-violence-its"
    catalog.check_evaluation(variant, folder / "focused-deterrence-violence-gls.yaml")
    for target, message in (("nope", "no evaluation with this id"),
                            ("focused-deterrence-violence-ols", "is itself a sensitivity variant"),
                            ("youth-navigators-fte-its", "must keep the intervention and measure")):
        with pytest.raises(SpecError, match=message):
            catalog.check_evaluation(variant.model_copy(update={"sensitivity_of": target}),
                                     folder / "focused-deterrence-violence-gls.yaml")
    with pytest.raises(SpecError, match="names the evaluation itself"):
        load_model(EvaluationSpec, folder / "focused-deterrence-violence-gls.yaml",
                   {**variant.model_dump(mode="json"), "sensitivity_of": variant.id})


def test_the_fallback_says_why_quarto_was_not_used(reports, monkeypatch):
    """--no-quarto and a missing Quarto are different reasons: the message names the right one."""
    report = publish(reports, quarto=None)
    assert "fallback renderer (Quarto not used (--no-quarto))" in report.message
    assert any(w.startswith("Quarto not used (--no-quarto): ") for w in report.warnings)
    monkeypatch.setenv("PATH", str(reports))  # no quarto on the PATH
    report = publish(reports, quarto="auto")
    assert report.renderer == "fallback" and "(Quarto is not installed)" in report.message
    assert any(w.startswith("Quarto is not installed: ") for w in report.warnings)
