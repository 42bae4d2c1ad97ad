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
        "index.html", "methods.html", "data.html", "evaluations/nte-its.html",
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
    # headline effect as % change with CI, from fmt_effect
    assert "-18.0% (95% CI -29.0% to -5.0%)" in html
    assert "-5.0% (95% CI -20.0% to +13.0%)" in html
    assert "No clear change (underpowered)" in html
    assert "Improvement: the interval excludes no change" in html
    assert "Level 2 (limited)" in html and "Benefit-cost ratio 2.40 (95% CI 0.53 to 4.08)" in html
    assert "Level 2: comparison without evidence of comparable trends. A single series" in html
    assert "Estimated benefit £575,000 (95% CI £126,000 to £980,000) at 2025/26 prices" in html
    assert "Not estimated" in html
    assert "Interrupted time series" in html and "Difference-in-differences" in html
    # the failed evaluation is listed with its error, never hidden
    assert "Evaluations that failed" in html
    assert "ValueError: no data for measure &#39;da_knife&#39; in E06000005" in html or \
        "ValueError: no data for measure 'da_knife' in E06000005" in html
    # a title with '|' does not break the Markdown table: one rendered row per evaluation
    assert "Youth navigators \\| difference-in-differences" in qmd
    table = html.split("<table", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") == 1 + len(EVALUATIONS)
    assert "Youth navigators | difference-in-differences</a>" in table
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
    assert cfg["format"]["html"]["css"] == "styles.css" and cfg["format"]["html"]["toc"] is True
    nav = cfg["website"]["navbar"]["left"]
    assert [n["text"] for n in nav] == ["Home", "Evaluations", "Tracking", "Methods", "Data & disclosure"]
    evals = next(n for n in nav if n["text"] == "Evaluations")["menu"]
    assert {m["href"] for m in evals} == {f"evaluations/{e}.ipynb" for e in EVALUATIONS}
    for src in ("index.qmd", "methods.qmd", "data.qmd"):
        fm = _front_matter((reports / src).read_text())
        assert fm["title"] and fm["description"] and fm["title"] != src
        assert "```{" not in (reports / src).read_text(), "generated pages must hold no executable cells"
    for eid, spec in EVALUATIONS.items():
        nb = nbformat.read(reports / "evaluations" / f"{eid}.ipynb", as_version=4)
        assert nb.cells[0].cell_type == "raw"
        fm = existing_front_matter(nb)
        assert fm["title"] == spec["title"]
        assert fm["description"] == f"Evaluation {eid}." or fm["description"].startswith("Evaluation")
        assert fm["execute"]["echo"] is False and fm["execute"]["enabled"] is False
        assert sum(1 for c in nb.cells if c.cell_type == "raw") == 1
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
    assert {"index.summary", "methods.power", "methods.diagnostics", "data.measures", "data.provenance"} <= set(report.tables)
    n_tables = sum(len(re.findall(r"^\|.*\|\n\|:--", (reports / s).read_text(), re.M))
                   for s in ("index.qmd", "methods.qmd", "data.qmd"))
    assert n_tables == len(report.tables)


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
