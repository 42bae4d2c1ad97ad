"""Home Office returns: the workbook's sheets, reconciliations, checks and disclosure."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from openpyxl import load_workbook
from test_tracking import PARTNERSHIP, PLANTED, make_project

from sveval.pipeline.disclosure import load_rules, scan_published
from sveval.publish.returns import ReturnsCheckError, build_returns


def fake_record(eid: str, intervention: str, measure: str, design: str = "its", **kw) -> dict:
    rec = {
        "id": eid, "title": eid, "design": design, "method": "test", "measure": measure,
        "measure_source": "force_extract", "intervention": intervention, "area": PARTNERSHIP,
        "comparison": [], "status": "completed", "period": {"start": "2019-04", "end": "2026-03"},
        "effects": [{"name": "level change", "scale": "rate_ratio", "estimate": 0.8, "ci_low": 0.7,
                     "ci_high": 0.92, "p_value": 0.002}],
        "prevented": {"estimate": 60.0, "ci_low": 25.0, "ci_high": 95.0, "months": 27},
        "diagnostics": [{"name": "autocorrelation", "description": "d", "passed": True},
                        {"name": "overdispersion", "description": "d", "passed": True},
                        {"name": "placebo_in_time", "description": "d", "passed": True}],
        "details": {},
        "provenance": {"sveval_version": "0.1.0", "generated_at": "2026-01-01T00:00:00Z"},
    }
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root, long = make_project(tmp_path_factory.mktemp("ret"))
    ev = root / "reports" / "evaluations"
    ev.mkdir(parents=True)
    (ev / "fd-knife-did.json").write_text(json.dumps(fake_record(
        "fd-knife-did", "focused_deterrence", "knife_crime", design="did", comparison=["E06000001"],
        diagnostics=[{"name": "pre_trend", "description": "d", "passed": True},
                     {"name": "placebo_in_space", "description": "d", "passed": True}])))
    (ev / "yn-fte-its.json").write_text(json.dumps(fake_record("yn-fte-its", "youth_navigators", "fte_youth")))
    # record-level fields planted in the input must not travel into the return
    planted = long.assign(**PLANTED)
    rep = build_returns(root, year="2025/26", long=planted, planted_values=list(PLANTED.values()))
    return root, long, rep


def test_workbook_sheets_and_layout(built):
    _, _, rep = built
    wb = load_workbook(rep.workbook, read_only=True)
    assert wb.sheetnames == ["Headline measures", "Local measures", "Interventions", "Data quality", "Metadata"]
    head = [c.value for c in next(wb["Headline measures"].iter_rows(max_row=1))]
    assert head[:3] == ["measure", "measure_name", "split_of"] and "rr_ci_low" in head
    wb.close()
    assert set(rep.csvs) == {"headline", "local", "interventions", "data_quality", "metadata"}
    for p in rep.csvs.values():
        assert p.exists()


def test_headline_rows_reconcile_with_tracking(built):
    _, long, rep = built
    df = pd.read_excel(rep.workbook, sheet_name="Headline measures", dtype=object)
    assert set(df["measure"]) == {"homicide", "knife_admissions", "knife_crime"}
    assert set(df["period"]) == {"2025/26"} and set(df["baseline_period"]) == {"2022/23"}
    # police counts are unrounded and the areas add up to the partnership total
    kc = df[df["measure"] == "knife_crime"]
    tot = int(kc.loc[kc["area_type"] == "partnership", "fy_count"].iloc[0])
    assert kc.loc[kc["area_type"] == "area", "fy_count"].astype(int).sum() == tot
    raw = long[(long["measure"] == "knife_crime") & long["area_code"].isin(PARTNERSHIP)
               & long["period"].between("2025-04", "2026-03")]["count"].sum()
    assert tot == raw
    # the 30% fall is reported with an interval below 1
    p = kc[kc["area_type"] == "partnership"].iloc[0]
    assert float(p["rr_ci_high"]) < 1


def test_hospital_cells_are_rounded_and_ratios_use_rounded_counts(built):
    _, _, rep = built
    df = pd.read_csv(rep.csvs["headline"], dtype=str, keep_default_na=False)
    ka = df[df["measure"] == "knife_admissions"]
    for v in list(ka["fy_count"]) + list(ka["baseline_count"]):
        assert v == "*" or int(v) % 5 == 0
    row = ka[ka["area_type"] == "partnership"].iloc[0]
    if row["fy_count"] != "*" and row["baseline_count"] != "*":
        # same populations in both years in the simulation: the ratio is of the rounded counts
        assert float(row["rate_ratio"]) == pytest.approx(int(row["fy_count"]) / int(row["baseline_count"]), rel=1e-3)


def test_interventions_sheet(built):
    _, _, rep = built
    iv = pd.read_excel(rep.workbook, sheet_name="Interventions")
    did = iv[iv["evaluation"] == "fd-knife-did"].iloc[0]
    assert did["evidence_level"] == 3 and did["bcr"] > 0 and did["vfm_price_year"] == "2025/26"
    its = iv[iv["evaluation"] == "yn-fte-its"].iloc[0]
    assert its["evidence_level"] == 2
    assert "no cost category" in its["vfm_caveats"]  # first-time entrants have no unit cost


def test_metadata_and_quality(built):
    _, _, rep = built
    meta = pd.read_excel(rep.workbook, sheet_name="Metadata").set_index("key")["value"]
    for key in ("reporting period", "baseline period", "price year", "generated at", "data sha256",
                "disclosure rule: hospital", "definition: knife_crime"):
        assert key in meta.index
    q = pd.read_excel(rep.workbook, sheet_name="Data quality")
    assert ((q["kind"] == "break") & q["detail"].str.contains("NDQIS")).any()
    assert (q["kind"] == "disclosure").any()


def test_scan_finds_nothing_in_returns(built):
    root, _, rep = built
    rules = load_rules(root / "parameters")
    assert scan_published([rep.out_dir], list(PLANTED), rules=rules, planted_values=list(PLANTED.values())) == []


def test_incomplete_period_is_refused(built, tmp_path):
    root, long, _ = built
    short = long[~((long["measure"] == "knife_crime") & (long["period"] == "2026-02")
                   & (long["area_code"] == "E06000005"))]
    out = tmp_path / "ret"
    with pytest.raises(ReturnsCheckError, match="incomplete.*2026-02"):
        build_returns(root, year="2025/26", long=short, out_dir=out)
    assert not out.exists()


def test_quarterly_return(built, tmp_path):
    root, long, _ = built
    rep = build_returns(root, year="2025/26", quarter=1, long=long, out_dir=tmp_path / "q1")
    df = pd.read_csv(rep.csvs["headline"])
    assert set(df["period"]) == {"2025/26 Q1"} and set(df["baseline_period"]) == {"2022/23 Q1"}
    shutil.rmtree(tmp_path / "q1")


@pytest.mark.parametrize("given, expected", [("Q3", 3), ("q1", 1), ("4", 4), (" Q2 ", 2)])
def test_quarter_argument_accepts_q1_to_q4(given, expected):
    from sveval.cli import quarter_arg

    assert quarter_arg(given) == expected


@pytest.mark.parametrize("given", ["Q5", "Q0", "third", "", "Q", "2025Q3"])
def test_bad_quarter_argument_is_refused_with_the_expected_form(given, capsys):
    from sveval.cli import main

    with pytest.raises(SystemExit) as info:
        main(["returns", "--quarter", given])
    assert info.value.code == 2
    assert "expected Q1, Q2, Q3 or Q4" in capsys.readouterr().err


def test_returns_do_not_draw_the_spc_charts(built, tmp_path, monkeypatch):
    # the charts (and scipy.stats, about 0.6 s to import) are computed only when asked for: the
    # returns use the tables alone
    import sveval.pipeline.tracking as tracking

    def no_charts(*a, **k):
        raise AssertionError("the returns drew an SPC chart")

    monkeypatch.setattr(tracking, "_chart", no_charts)
    root, long, _ = built
    rep = build_returns(root, year="2025/26", quarter=2, long=long, out_dir=tmp_path / "q2")
    assert rep.workbook.exists()
    spec = next((root / "parameters" / "tracking").glob("*.yaml"))
    tr = tracking.track(spec, root=root, long=long)
    with pytest.raises(AssertionError, match="drew an SPC chart"):
        tr.charts  # noqa: B018 - the lazy property is what is tested
