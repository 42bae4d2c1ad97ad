"""The data-quality report: computed on frames (months, gaps, duplicates, zeros, breaks,
population coverage, out-of-area LSOAs), read from generated police.uk files, written as
markdown and JSON, and run by `sveval data check` on a project."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from sveval.catalog import Catalog
from sveval.cli import main
from sveval.data.check import (
    data_quality,
    out_of_area,
    police_uk_lsoa_records,
    read_lookup,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
MONTHS = [f"2022-{m:02d}" for m in range(1, 13)] + [f"2023-{m:02d}" for m in range(1, 13)]


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load(REPO / "parameters")


def frame(rows):
    return pd.DataFrame(rows, columns=["period", "area_code", "measure", "count", "population"])


def test_months_gaps_duplicates_zeros_population(cat):
    rows = []
    for p in MONTHS:
        if p not in ("2022-05", "2022-06", "2023-02"):  # gaps in Durham
            rows.append((p, "E06000047", "knife_crime", 0 if "2023-06" <= p <= "2023-09" else 12, 530000))
        rows.append((p, "E06000005", "knife_crime", 0 if p < "2022-04" else 1, None if p < "2022-07" else 108000))
    rows.append(("2022-01", "E06000005", "knife_crime", 1, 108000))  # duplicate
    rep = data_quality(frame(rows), cat)
    q = next(m for m in rep.measures if m.measure == "knife_crime")
    assert (q.first, q.last, q.months) == ("2022-01", "2023-12", 24)
    assert q.duplicates == 1
    dur = next(a for a in q.areas if a.area_code == "E06000047")
    assert dur.gaps == ["2022-05 to 2022-06", "2023-02"]
    assert dur.zero_months == 4 and dur.zero_runs == ["2023-06 to 2023-09"]
    dar = next(a for a in q.areas if a.area_code == "E06000005")
    # Darlington averages about 1 a month: its three zero months are not flagged
    assert dar.zero_months == 3 and dar.zero_runs == []
    assert dar.population_months == 19  # 25 rows, 6 without a population
    assert q.population_coverage == pytest.approx(round(1 - 6 / (21 + 25), 4))
    assert q.breaks == [{"period": "2021-04", "name": "NDQIS knife-crime recording"}]
    assert "E06000001" in q.areas_without_data  # a comparison area without rows
    probs = " ".join(q.problems)
    assert "1 duplicated period x area rows" in probs and "missing months in E06000047" in probs
    assert "runs of 3+ months of zeros in E06000047" in probs
    other = next(m for m in rep.measures if m.measure == "homicide")
    assert other.months == 0 and other.problems == ["no data"]
    assert not rep.ok


def test_out_of_area_counts_and_names(cat):
    records = pd.DataFrame({
        "falls_within": ["Durham Constabulary"] * 4 + ["Cleveland Police"],
        "lsoa_code": ["E01000001", "E01000002", "E01000003", None, "E01000009"],
        "lsoa_name": ["County Durham 001A", "Darlington 001A", "Hartlepool 001A", None, "Stockton 001A"],
        "records": [100, 50, 3, 2, 40],
    })
    lookup = pd.DataFrame({"lsoa_code": ["E01000001", "E01000002", "E01000003", "E01000009"],
                           "area_code": ["E06000047", "E06000005", "E06000001", "E06000004"]})
    o = out_of_area(records, lookup, cat.partnership_areas, source="street", forces=["Durham Constabulary"])
    assert (o.records, o.total_records) == (5, 155)
    assert [x["lsoa_code"] for x in o.lsoas] == ["E01000003", "(no location)"]
    assert o.lsoas[0] == {"lsoa_code": "E01000003", "lsoa_name": "Hartlepool 001A",
                          "area_code": "E06000001", "records": 3}
    everyone = out_of_area(records, None, cat.partnership_areas, source="street")
    assert everyone.records == 195  # without a lookup, no LSOA maps to an area


STREET_HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,"
                 "LSOA name,Crime type,Last outcome category,Context\n")


def write_street(folder: Path, month: str, force: str, rows: list[tuple[str, str]]) -> Path:
    d = folder / month
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{month}-durham-street.csv.gz"
    body = "".join(f"id{i},{month},{force},{force},-1.5,54.7,On or near X,{code},\"{name}\","
                   "Robbery,Under investigation,\n" for i, (code, name) in enumerate(rows))
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write(STREET_HEADER + body)
    return p


def test_police_uk_reader_and_lookup(tmp_path, cat):
    f1 = write_street(tmp_path, "2024-01", "Durham Constabulary",
                      [("E01000001", "County Durham 001A")] * 3 + [("E01000003", "Hartlepool, 001A")])
    f2 = write_street(tmp_path, "2024-02", "Durham Constabulary", [("E01000001", "County Durham 001A"), ("", "")])
    rec = police_uk_lsoa_records([f1, f2])
    assert list(rec.columns) == ["falls_within", "lsoa_code", "lsoa_name", "records"]
    assert rec["records"].sum() == 6
    assert "Hartlepool, 001A" in set(rec["lsoa_name"])  # quoted comma kept in its column
    lk = tmp_path / "lookup.csv"
    lk.write_text("\ufeffLSOA11CD,LSOA21CD,LSOA21NM,LAD22CD,LAD23CD\n"
                  "E01000001,E01000001,a,E06000047,E06000047\nE01000003,E01000003,b,E06000001,E06000001\n")
    lookup = read_lookup(lk)
    assert list(lookup.columns) == ["lsoa_code", "area_code"]
    assert lookup["area_code"].tolist() == ["E06000047", "E06000001"]
    o = out_of_area(rec, lookup, cat.partnership_areas, source="street")
    assert o.records == 2 and {x["lsoa_code"] for x in o.lsoas} == {"E01000003", "(no location)"}


def test_report_files(tmp_path, cat):
    rows = [(p, a, "robbery", 5, 1000) for p in MONTHS for a in cat.areas]
    recs = pd.DataFrame({"lsoa_code": ["E01000003"], "lsoa_name": ["Hartlepool 001A"], "records": [7]})
    rep = data_quality(frame(rows), cat, out_of_area_checks=[out_of_area(recs, None, ["E06000047"], source="street")],
                       notes=["from a test"])
    js, md = write_report(rep, tmp_path / "reports")
    doc = json.loads(js.read_text())
    rob = next(m for m in doc["measures"] if m["measure"] == "robbery")
    assert rob["months"] == 24 and rob["problems"] == [] and doc["ok"] is False
    text = md.read_text()
    assert text.startswith("# Data quality: County Durham and Darlington")
    assert "| robbery | police_uk | 24 | 2022-01 | 2023-12 | 100% |" in text
    assert "7 of 7 records (100.00%) lie in 1 LSOA(s)" in text and "| E01000003 | Hartlepool 001A |" in text
    assert "street: 7 of 7 records in 1 LSOA(s) outside the partnership's areas: E01000003 Hartlepool 001A" \
        in rep.summary()


def test_cli_data_check_on_a_long_csv_project(tmp_path, capsys):
    root = tmp_path / "proj"
    (root / "parameters" / "evaluations").mkdir(parents=True)
    (root / "evaluations").mkdir()
    (root / "parameters" / "areas.yaml").write_text((REPO / "parameters" / "areas.yaml").read_text())
    (root / "parameters" / "interventions.yaml").write_text(
        "interventions:\n  - {id: youth_navigators, title: Y, priority: 1, areas: [E06000047], start: 2023-01}\n")
    (root / "parameters" / "measures.yaml").write_text(
        "measures:\n  - {id: knife_crime, name: Knife crime, description: d, source: extract,\n"
        "     filter: \"knife_flag AND ho_offence_code IN ('1', '2')\"}\n")
    (root / "parameters" / "sources.yaml").write_text(
        "base: project\nsources:\n  - id: street\n    kind: police_uk\n    path: data/street\n"
        "  - id: extract\n    kind: records\n    path: data/extract/*.csv\n"
        "    columns: {date: Recorded, lsoa_code: LSOA}\n    types: {date: date}\n")
    rows = [(p, "E06000047", "knife_crime", 10, 530000) for p in MONTHS if p != "2023-03"]
    (root / "data").mkdir()
    frame(rows).to_csv(root / "data" / "long.csv", index=False)
    (root / "parameters" / "evaluations" / "e.yaml").write_text(
        "id: e\ntitle: t\nintervention: youth_navigators\nmeasure: knife_crime\nareas: [E06000047]\n"
        "design: its\ndata: {source: csv, path: ../../data/long.csv}\n")
    rc = main(["--root", str(root), "data", "check"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISSING source street (police_uk)" in out and "expected at data/street" in out
    assert "ok      source csv:long.csv (long_csv): 1 file(s)" in out
    assert "measure knife_crime: 2022-01 to 2023-12, 24 months; missing months in E06000047" in out
    doc = json.loads((root / "reports" / "data-quality.json").read_text())
    kc = next(m for m in doc["measures"] if m["measure"] == "knife_crime")
    assert kc["areas"][0]["gaps"] == ["2023-03"]
