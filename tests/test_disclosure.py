"""Disclosure control: rules, tables, result JSONs and the scan of published files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from openpyxl import Workbook

from sveval.errors import DisclosureError, SpecError
from sveval.pipeline.disclosure import (
    apply_to_frame,
    assert_clean,
    check_table,
    control_record,
    load_rules,
    scan_published,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rules():
    return load_rules(REPO / "parameters")


def test_rules_load_and_errors(tmp_path, rules):
    h = rules.rule("hospital")
    assert (h.suppress_min, h.suppress_max, h.round_to, h.secondary) == (1, 7, 5, True)
    assert rules.rule("police").round_to == 1 and rules.rule("model").exempt
    bad = tmp_path / "disclosure.yaml"
    bad.write_text(yaml.safe_dump({"source": "x", "rules": {"hospital": {"suppress_min": 1, "rounding": 5}}}))
    with pytest.raises(SpecError, match="rounding"):
        load_rules(tmp_path)


def test_hospital_rounding_and_primary_suppression(rules):
    df = pd.DataFrame({"count": [0, 1, 7, 8, 12, 13, 22.5, None]})
    out = apply_to_frame(df, "hospital", rules)
    assert out["count"].tolist() == [0, "*", "*", 10, 10, 15, 25, None]
    # police counts unrounded, model estimates exempt
    assert apply_to_frame(df, "police", rules)["count"].tolist()[:6] == [0, 1, 7, 8, 12, 13]
    assert apply_to_frame(df, "model", rules)["count"].tolist()[:3] == [0, 1, 7]


def test_secondary_suppression_of_a_part(rules):
    df = pd.DataFrame({"measure": "k", "period": "2024-01", "area_type": ["partnership", "area", "area", "area"],
                       "count": [40, 3, 25, 12], "disclosure": "hospital"})
    out = apply_to_frame(df, "disclosure", rules, group_by=["measure", "period"])
    assert out["count"].tolist() == [40, "*", 25, "*"]  # the smallest other part (12) goes too
    assert check_table(out, "t", rules) == []
    # without secondary suppression the scan finds the recoverable cell
    bare = apply_to_frame(df, "disclosure", rules)
    assert any("recoverable by subtraction" in f for f in check_table(bare, "t", rules))


def test_secondary_suppression_of_a_total(rules):
    # total 6 suppressed, parts 6 and 0: the 6 is suppressed already; a 0 reveals nothing
    df = pd.DataFrame({"measure": "k", "period": "p", "area_type": ["partnership", "area", "area"],
                       "count": [9, 9, 0], "disclosure": "hospital"})
    out = apply_to_frame(df, "disclosure", rules, group_by=["measure", "period"])
    assert out["count"].tolist() == [10, 10, 0]
    # one part suppressed and no other non-zero part: the total is suppressed instead
    df2 = df.assign(count=[5, 5, 0])
    out2 = apply_to_frame(df2, "disclosure", rules, group_by=["measure", "period"])
    assert out2["count"].tolist() == ["*", "*", 0]
    # comparison rows are not parts of the partnership total
    df3 = pd.DataFrame({"measure": "k", "period": "p", "area_type": ["partnership", "area", "area", "comparison"],
                        "count": [30, 4, 26, 2], "disclosure": "hospital"})
    out3 = apply_to_frame(df3, "disclosure", rules, group_by=["measure", "period"])
    assert out3["count"].tolist() == [30, "*", "*", "*"]


def test_rates_follow_their_counts(rules):
    df = pd.DataFrame({"count": [3, 12], "rate": [0.5, 2.0]})
    out = apply_to_frame(df, "hospital", rules, rate_columns={"rate": "count"})
    assert out["rate"].tolist() == ["*", pytest.approx(2.0 * 10 / 12)]


def test_control_record(rules):
    rec = {"id": "x", "measure_source": "hospital", "design": "its",
           "series": {"period": ["2024-01", "2024-02", "2024-03"], "observed": [3, 12, 0],
                      "counterfactual": [4.2, 11.1, 1.3]},
           "details": {"crime_reference": "CR-1", "nested": [{"victim_name": "A"}]}}
    out = control_record(rec, rules)
    # without the shared plan of cells, a protected class's observed months are not published
    # (month by month control could publish a month the tables suppress to protect another)
    assert out["series"]["observed"] == [None, None, None]
    assert out["series"]["counterfactual"] == [4.2, 11.1, 1.3]  # model estimates exempt
    assert "crime_reference" not in out["details"] and out["details"]["nested"] == [{}]
    assert out["disclosure_control"]["suppressed_points"] == 3
    # with the plan the tables and returns publish: the same cells, the same values
    from sveval.pipeline.disclosure import plan_cells

    monthly = pd.DataFrame({"measure": "m", "disclosure": "hospital", "area_type": "partnership",
                            "area_code": "A", "period": ["2024-01", "2024-02", "2024-03"],
                            "count": [3, 12, 0]})
    plan = plan_cells(monthly, rules)
    planned = control_record({**rec, "measure": "m", "area": ["A"]}, rules, plan=plan)
    assert planned["series"]["observed"] == [None, 10, 0]
    assert planned["disclosure_control"]["suppressed_points"] == 1
    other = control_record({**rec, "measure": "m", "area": ["B"]}, rules, plan=plan)
    assert other["series"]["observed"] == [None, None, None]  # not a planned unit
    assert rec["series"]["observed"] == [3, 12, 0]  # input unchanged
    police = control_record({**rec, "measure_source": "force_extract"}, rules)
    assert police["series"]["observed"] == [3, 12, 0]


def _bad_outputs(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"measure": ["k"], "period": ["2024"], "area_type": ["area"], "count": [4],
                  "disclosure": ["hospital"]}).to_csv(d / "t.csv", index=False)
    (d / "r.json").write_text(json.dumps({"measure_source": "hospital", "series": {"observed": [2, 10]}}))
    (d / "page.html").write_text("<html><body><p>ref CR-PLANTED-1</p><table><tr><th>measure</th><th>count</th>"
                                 "<th>disclosure</th></tr><tr><td>k</td><td>13</td><td>hospital</td></tr></table></body></html>")
    wb = Workbook()
    ws = wb.active
    ws.append(["measure", "period", "area_type", "count", "disclosure"])
    ws.append(["k", "2024", "partnership", 40, "hospital"])
    ws.append(["k", "2024", "area", "*", "hospital"])
    ws.append(["k", "2024", "area", 35, "hospital"])
    ws.append(["date_of_birth", None, None, None, None])
    wb.save(d / "w.xlsx")


def test_scan_finds_every_planted_problem(tmp_path, rules):
    _bad_outputs(tmp_path / "pub")
    f = scan_published([tmp_path / "pub"], ["crime_reference"], rules=rules, planted_values=["CR-PLANTED-1"])
    text = "\n".join(f)
    assert "t.csv" in text and "unsuppressed hospital count 4" in text
    assert "r.json: series.observed[0]: unsuppressed count 2" in text
    assert "page.html" in text and "not rounded" in text and "CR-PLANTED-1" in text
    assert "recoverable by subtraction" in text and "date_of_birth" in text
    with pytest.raises(DisclosureError, match="finding"):
        assert_clean([tmp_path / "pub"], rules)


def test_scan_clean_output(tmp_path, rules):
    d = tmp_path / "ok"
    d.mkdir()
    df = pd.DataFrame({"measure": "k", "period": "2024", "area_type": ["partnership", "area", "area"],
                       "count": [40, 3, 37], "disclosure": "hospital"})
    apply_to_frame(df, "disclosure", rules, group_by=["measure", "period"]).to_csv(d / "t.csv", index=False)
    rec = control_record({"measure_source": "hospital", "series": {"observed": [2, 10, 13]}}, rules)
    (d / "r.json").write_text(json.dumps(rec))
    assert scan_published([d], ["crime_reference"], rules=rules) == []


def test_protected_record_withholds_per_month_arrays(rules):
    n = 6
    rec = {"id": "x", "measure_source": "hospital", "design": "its", "n_obs": n,
           "series": {"period": [f"2024-0{i + 1}" for i in range(n)], "observed": [3, 12, 0, 9, 2, 20],
                      "fitted": [4.2, 11.1, 1.3, 8.0, 2.5, 19.0], "extra": [3.1, 12.2, 0.0, 9.0, 2.0, 20.0]},
           "diagnostics": [{"name": "autocorrelation", "data": {"acf": [1.0, 0.1], "residuals": [0.1] * n,
                                                                 "other": [0.2] * n}}],
           "details": {"coefficients": {"estimate": [1.0, 2.0]}, "per_month": list(range(n))}}
    out = control_record(rec, rules)
    assert out["series"]["fitted"] == rec["series"]["fitted"]  # ITS model estimate: exempt
    assert out["series"]["extra"] == [None, 10, 0, 10, None, 20]  # anything else: a count
    data = out["diagnostics"][0]["data"]
    assert "residuals" not in data and "other" not in data and data["acf"] == [1.0, 0.1]
    assert data["residuals_summary"]["n"] == n
    assert "per_month" not in out["details"] and out["details"]["coefficients"] == {"estimate": [1.0, 2.0]}
    assert len(out["disclosure_control"]["withheld"]) == 3
    # synthetic control and DiD series are the data: controlled like counts
    synth = control_record({**rec, "design": "synth"}, rules)
    assert synth["series"]["fitted"] == [None, 10, None, 10, None, 20]  # 1.3 is suppressed too
    # police records are published as they are (besides record-level fields)
    police = control_record({**rec, "measure_source": "force_extract"}, rules)
    assert police["diagnostics"][0]["data"]["residuals"] == [0.1] * n


def test_personal_fields_from_the_sources(tmp_path, rules):
    names = set(rules.personal_fields())
    assert {"victim_dob", "latitude", "longitude", "victim_name", "crime_ref"} <= names
    d = tmp_path / "pub"
    d.mkdir()
    pd.DataFrame({"period": ["2024-01"], "latitude": [54.7]}).to_csv(d / "a.csv", index=False)
    (d / "b.json").write_text(json.dumps({"rows": [{"victim_dob": "2001-01-01"}]}))
    (d / "c.html").write_text("<p>The location of the office; latitude is not a column here.</p>")
    found = "\n".join(scan_published([d], rules=rules))
    assert "a.csv: record-level field 'latitude' appears as a column" in found
    assert "b.json: record-level field 'victim_dob'" in found
    assert "c.html" not in found  # plain words in prose are not fields


def test_every_planted_field_in_a_file_is_named_also_when_fields_overlap(tmp_path, rules):
    """The scan first asks whether any field appears at all (one pass), then names each: fields
    that share a prefix (``crime_ref`` inside ``crime_ref_2``), differ in case or sit in one file
    together are all reported, and a file without any is clean."""
    d = tmp_path / "pub"
    d.mkdir()
    (d / "a.html").write_text("<p>id: CRIME_REF_2 and victim_dob; NHS_NUMBER.</p>")
    (d / "b.html").write_text("<p>crime_refs and victim_dobs are other words.</p>")
    (d / "c.md").write_text("nothing here but prose about crime references")
    found = scan_published([d], ["crime_ref_2", "nhs_number"], rules=rules)
    text = "\n".join(found)
    for name in ("crime_ref_2", "crime_ref", "victim_dob", "nhs_number"):
        assert f"a.html: record-level field '{name}' appears" in text, name
    assert "b.html" not in text and "c.md" not in text
