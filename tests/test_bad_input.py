"""Bad input is refused before anything runs (issue 12 item 6), at `sveval validate` and
`sveval run`, each with the file, the field or row and what is allowed.

A small project with a long CSV of its own (no example data needed): two areas, 2019-2024."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sveval.cli import main
from sveval.data.ingest import read_long_csv
from sveval.errors import DataError, SpecError
from sveval.spec import MAX_PARAMETER_BYTES, read_yaml

REPO = Path(__file__).resolve().parents[1]
AREAS = ["E06000047", "E06000005"]
MONTHS = [f"{y}-{m:02d}" for y in range(2019, 2025) for m in range(1, 13)]

GOOD = {
    "id": "probe",
    "title": "Probe evaluation",
    "intervention": "youth_navigators",
    "measure": "knife_crime",
    "areas": ["E06000047"],
    "design": "its",
    "period": {"start": "2019-01", "end": "2024-12"},
    "data": {"source": "csv", "path": "../../data/long.csv"},
    "its": {"power_sims": 0},
}
CONTINUOUS = {"id": "wellbeing", "name": "Wellbeing score", "description": "Survey score change",
              "kind": "continuous", "source": "aggregate"}


def long_frame(measure: str = "knife_crime", kind: str = "count") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for a in AREAS:
        for p in MONTHS:
            v = rng.poisson(20) if kind == "count" else rng.normal(-0.5, 1)
            rows.append((p, a, measure, v, 500000))
    return pd.DataFrame(rows, columns=["period", "area_code", "measure", "count", "population"])


@pytest.fixture
def proj(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "parameters" / "evaluations").mkdir(parents=True)
    (root / "evaluations").mkdir()
    (root / "data").mkdir()
    for f in ("areas.yaml", "interventions.yaml", "measures.yaml", "disclosure.yaml"):
        shutil.copy(REPO / "parameters" / f, root / "parameters" / f)
    reg = yaml.safe_load((root / "parameters" / "measures.yaml").read_text())
    reg["measures"].append(CONTINUOUS)
    (root / "parameters" / "measures.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    long_frame().to_csv(root / "data" / "long.csv", index=False)
    return root


def spec(root: Path, data: dict | None = None, text: str | None = None, name: str = "probe") -> Path:
    p = root / "parameters" / "evaluations" / f"{name}.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data or GOOD, sort_keys=False))
    return p


def validate(root: Path, capsys, *files: Path) -> tuple[int, str]:
    args = ["--root", str(root), "validate", *(map(str, files) if files else ["--all"])]
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out + out.err


def refused(root: Path, capsys, *patterns: str, max_len: int = 3000) -> str:
    rc, msg = validate(root, capsys)
    assert rc == 2, msg
    for pat in patterns:
        assert pat in msg, (pat, msg)
    assert len(msg) < max_len
    return msg


def write_long(root: Path, df: pd.DataFrame) -> Path:
    p = root / "data" / "long.csv"
    df.to_csv(p, index=False)
    return p


def test_good_project_validates(proj, capsys):
    spec(proj)
    rc, msg = validate(proj, capsys)
    assert rc == 0, msg
    assert "ok       probe.yaml" in msg


# ---- counts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "pattern"), [
    ("inf", "count 'inf' is not a finite number"),
    ("-inf", "count '-inf' is not a finite number"),
    ("1e309", "count '1e309' is not a finite number"),
    ("nan", "count 'nan' is not a number"),
])
def test_non_finite_counts_refused_with_row(proj, capsys, value, pattern):
    df = long_frame().astype({"count": object})
    df.loc[5, "count"] = value
    p = write_long(proj, df)
    spec(proj)
    refused(proj, capsys, str(p), "row 6", "column 'count'", pattern)


def test_huge_count_refused(proj, capsys):
    df = long_frame().astype({"count": float})
    df.loc[3, "count"] = 1e308
    write_long(proj, df)
    spec(proj)
    refused(proj, capsys, "long.csv", "measure 'knife_crime'", "above 1e+09",
            "E06000047 2019-04: 1e+308")


def test_non_integer_count_refused_for_count_measure(proj, capsys):
    df = long_frame().astype({"count": float})
    df.loc[7, "count"] = 2.5
    write_long(proj, df)
    spec(proj)
    refused(proj, capsys, "long.csv", "not a whole number", "E06000047 2019-08: 2.5",
            "kind 'rate' or 'continuous'")


def test_negative_count_refused_continuous_negative_accepted(proj, capsys):
    df = long_frame().astype({"count": float})
    df.loc[2, "count"] = -1
    write_long(proj, df)
    spec(proj)
    refused(proj, capsys, "row 3", "column 'count'", "count '-1.0' is negative",
            "only continuous measures")
    write_long(proj, pd.concat([long_frame(), long_frame("wellbeing", "continuous")]))
    assert (pd.read_csv(proj / "data" / "long.csv")["count"] < 0).any()
    spec(proj, {**GOOD, "measure": "wellbeing", "its": {"model": "gls_ar", "power_sims": 0}})
    rc, msg = validate(proj, capsys)
    assert rc == 0, msg


def test_gaps_in_months_refused(proj, capsys):
    df = long_frame()
    drop = (df["area_code"] == "E06000047") & df["period"].isin(["2020-03", "2020-04", "2020-05", "2023-01"])
    write_long(proj, df[~drop])
    spec(proj)
    refused(proj, capsys, "long.csv", "area E06000047: 4 month(s) missing in 2019-01 to 2024-12",
            "2020-03 to 2020-05, 2023-01", "give every month")


def test_all_zero_series_refused(proj, capsys):
    df = long_frame()
    df.loc[df["area_code"] == "E06000047", "count"] = 0
    write_long(proj, df)
    spec(proj)
    refused(proj, capsys, "long.csv", "treated series (E06000047) is zero in every month")


def test_zero_pre_period_refused(proj, capsys):
    df = long_frame()
    df.loc[(df["area_code"] == "E06000047") & (df["period"] < "2022-10"), "count"] = 0
    write_long(proj, df)
    spec(proj)
    refused(proj, capsys, "zero in every month before 2022-10", "no baseline")


def test_header_only_and_empty_csv(proj, capsys):
    p = proj / "data" / "long.csv"
    p.write_text("period,area_code,measure,count,population\n")
    spec(proj)
    refused(proj, capsys, str(p), "no data rows: the file has a header only")
    p.write_text("")
    refused(proj, capsys, str(p), "empty file")


# ---- paths ----------------------------------------------------------------------------------------
def test_data_path_folder_or_device_refused(proj, capsys):
    spec(proj, {**GOOD, "data": {"source": "csv", "path": "../../data"}})
    refused(proj, capsys, "data.path", "not a regular file")
    spec(proj, {**GOOD, "data": {"source": "csv", "path": "/dev/zero"}})
    refused(proj, capsys, "data.path", "/dev/zero", "not a regular file")


def test_read_long_csv_refuses_folder_device_and_big_file(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="is a folder"):
        read_long_csv(tmp_path)
    with pytest.raises(DataError, match="not a regular file"):
        read_long_csv("/dev/zero")
    from sveval.data import ingest

    p = tmp_path / "big.csv"
    p.write_text("period,area_code,measure,count\n" + "2020-01,A,m,1\n" * 20)
    monkeypatch.setattr(ingest, "MAX_LONG_CSV_BYTES", 100)
    with pytest.raises(DataError, match=r"bytes; a long CSV of area totals is at most 100 bytes"):
        read_long_csv(p)


# ---- parameter files ------------------------------------------------------------------------------
def test_parameter_file_size_capped(proj, capsys):
    text = yaml.safe_dump(GOOD, sort_keys=False) + "# " + "x" * MAX_PARAMETER_BYTES + "\n"
    spec(proj, text=text)
    refused(proj, capsys, "probe.yaml", "parameter files are at most 1,000,000 bytes")


def test_parameter_file_device_refused():
    with pytest.raises(SpecError, match="not a regular file"):
        read_yaml("/dev/zero")


BOMB = """id: probe
title: Probe evaluation
intervention: youth_navigators
measure: knife_crime
areas: [E06000047]
design: its
description:
  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  - &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  - &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  - &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  - &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  - &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_alias_bomb_gives_a_short_error(proj, capsys):
    spec(proj, text=BOMB)
    msg = refused(proj, capsys, "probe.yaml", "YAML aliases ('*name') expand to more than", max_len=600)
    assert "lol" not in msg


def test_recursive_alias_refused(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: &a [1, *a]\n")
    with pytest.raises(SpecError, match="refers to itself"):
        read_yaml(p)


def test_long_bad_value_is_shortened(proj, capsys):
    spec(proj, {**GOOD, "title": list(range(5000))})
    msg = refused(proj, capsys, "field 'title'", max_len=800)
    assert "4999" not in msg
    spec(proj, {**GOOD, "measure": "m" * 100000})
    msg = refused(proj, capsys, "field 'measure'", "more characters", max_len=4000)


def test_duplicate_keys_are_errors(proj, capsys):
    text = yaml.safe_dump(GOOD, sort_keys=False) + "measure: homicide\n"
    spec(proj, text=text)
    refused(proj, capsys, "probe.yaml", "duplicate key 'measure' at line", "(first given at line 4)")
    nested = yaml.safe_dump(GOOD, sort_keys=False).replace("  model:", "  model: x\n  model:")
    spec(proj, text=nested.replace("its:\n", "its:\n  model: ols\n  model: auto\n"))
    refused(proj, capsys, "duplicate key 'model'")


def test_duplicate_key_in_a_registry(proj, capsys):
    reg = proj / "parameters" / "areas.yaml"
    reg.write_text(reg.read_text() + "partnership: Another name\n")
    spec(proj)
    refused(proj, capsys, "areas.yaml", "duplicate key 'partnership'")


@pytest.mark.parametrize("design", ["its", "did"])
def test_covid_start_after_end_refused(proj, capsys, design):
    data = {**GOOD, design: {"covid_start": "2021-06", "covid_end": "2020-03"}}
    if design == "did":
        data["comparison"] = {"areas": ["E06000005"]}
        data["design"] = "did"
    spec(proj, data)
    refused(proj, capsys, f"field '{design}'", "covid_start 2021-06 is after covid_end 2020-03")


@pytest.mark.parametrize("title", ["", "   "])
def test_empty_title_refused(proj, capsys, title):
    spec(proj, {**GOOD, "title": title})
    refused(proj, capsys, "field 'title'", "the title is empty")


# ---- area code systems ----------------------------------------------------------------------------
def test_area_codes_other_system(proj, capsys):
    areas = proj / "parameters" / "areas.yaml"
    reg = yaml.safe_load(areas.read_text())
    reg["areas"][0]["code"] = "DUR-1"
    areas.write_text(yaml.safe_dump(reg, sort_keys=False))
    spec(proj)
    refused(proj, capsys, "areas.yaml", "areas.0.code 'DUR-1'", "not a 9-character ONS code",
            "code_system: other")
    reg["code_system"] = "other"
    reg["areas"][0]["code"] = "DUR 1"  # spaces never
    areas.write_text(yaml.safe_dump(reg, sort_keys=False))
    refused(proj, capsys, "areas.0.code", "no spaces")


# ---- run refuses the same, before anything runs ----------------------------------------------------
def test_run_refuses_bad_input_before_anything_runs(proj, capsys):
    df = long_frame()
    write_long(proj, df[df["period"] != "2021-07"])
    p = spec(proj)
    rc = main(["--root", str(proj), "run", str(p)])
    out = capsys.readouterr()
    assert rc == 2, out
    assert "month(s) missing" in out.out + out.err
    assert not (proj / "reports" / "evaluations" / "probe.json").exists()
