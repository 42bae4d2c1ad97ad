"""Quarterly, yearly and financial-year series through the designs (issue 10 item 5).

ITS on a quarterly series recovers a known effect with Fourier seasonality of period 4, and on a
yearly series runs without seasonality (said in its notes and method); monthly ITS results are
unchanged to the last bit (a reference computed before this change); DiD works on a quarterly panel
and says "per quarter"; a yearly long CSV (Proposition 99) goes through `sveval validate`,
`prepare`/`fit` and `sveval run`, reproducing the published synthetic-control (-19.6), synthetic DiD
(-15.6) and DiD (-27.3) estimates of Arkhangelsky et al. (2021); mixed forms are refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import sveval
from sveval.cli import main
from sveval.data.ingest import read_long_csv
from sveval.data.series import area_series, measure_granularity
from sveval.designs.did import evaluate_panel
from sveval.designs.did_panel import exclude_months, make_panel
from sveval.designs.its import fit_its
from sveval.errors import DataError, SpecError
from sveval.periods import add_periods
from sveval.spec import DiDOptions, ITSOptions

REPO = Path(__file__).resolve().parents[1]
REF = Path(__file__).parent / "reference" / "its_monthly"
PROP99 = Path(__file__).parent / "reference" / "data" / "california_prop99.csv"


# ---- ITS ----------------------------------------------------------------------------------------
def quarterly_series(effect=0.7, seed=11, n=48, start="2012-Q1", iv=28):
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    q = k % 4
    mu = 200 * np.exp(0.004 * k + np.array([0.15, -0.05, -0.2, 0.1])[q]) * np.where(k >= iv, effect, 1.0)
    periods = [add_periods(start, i) for i in range(n)]
    return pd.DataFrame({"period": periods, "count": rng.poisson(mu), "population": 500_000.0})


def test_quarterly_its_recovers_a_known_effect():
    df = quarterly_series()
    assert df["period"].iloc[28] == "2019-Q1"
    # the intervention start is given as a month: the quarter holding it
    r = fit_its(df, "2019-02", ITSOptions(covid="none", power_sims=0, placebo=False, sensitivity_months=0))
    h = r.headline
    assert h.scale == "rate_ratio"
    assert h.ci_low < 0.7 < h.ci_high and abs(h.estimate - 0.7) < 0.05
    assert r.details["granularity"] == "quarter"
    assert r.details["intervention_start"] == "2019-Q1"
    assert {"sin1", "cos1", "cos2"} <= set(r.details["terms"])  # Fourier of period 4, 2 harmonics
    assert "sin2" not in r.details["terms"]
    assert "quarterly series: Fourier seasonality of period 4 with 2 harmonics" not in " ".join(r.warnings)
    assert "on a series by quarter (time in quarters)" in r.method
    assert "Fourier harmonic(s) of period 4" in r.method
    assert r.details["pre_months"] == 28 and r.details["post_months"] == 20  # quarters
    slope = next(e for e in r.effects if e.name == "slope_change")
    assert 0.8 < slope.estimate < 1.25  # per year (4 quarters): no slope change simulated
    assert r.series["period"].iloc[0] == "2012-Q1"


def test_quarterly_its_converts_months_and_runs_checks_and_power():
    df = quarterly_series(n=44)
    opts = ITSOptions(covid="indicator", phase_in_months=6, lag_months=1, fourier_terms=3,
                      power_sims=20, sensitivity_months=3, placebo=True)
    r = fit_its(df, "2019-Q1", opts)
    notes = " ".join(r.warnings)
    assert "phase-in of 6 month(s) taken as 2 quarter(s) (rounded up)" in notes
    assert "lag of 1 month(s) taken as 0 quarter(s)" in notes
    assert "the COVID-19 window 2020-03 to 2021-06 is taken as the quarters holding it, 2020-Q1 to 2021-Q2" in notes
    assert "Fourier seasonality of period 4 with 2 harmonics (the most a quarterly series has), not 3" in notes
    assert "covid" in r.details["terms"]
    checks = {c.name: c for c in r.diagnostics}
    date = checks["sensitivity_date"]
    assert "(+/- 1 quarters)" in date.description
    assert [v["period"] for v in date.data["variants"]] == ["2018-Q4", "2019-Q1", "2019-Q2"]
    placebos = checks["placebo_in_time"].data["placebos"]
    assert placebos and all(p["period"].startswith("20") and "-Q" in p["period"] for p in placebos)
    assert r.power is not None and r.power.post_months == 16  # quarters


def test_yearly_its_switches_seasonality_off_and_says_so():
    rng = np.random.default_rng(2)
    years = [str(y) for y in range(1995, 2021)]
    k = np.arange(len(years))
    y = 50 + 0.5 * k - np.where(k >= 16, 6.0, 0.0) + rng.normal(0, 1.0, len(k))
    df = pd.DataFrame({"period": years, "count": y})
    r = fit_its(df, "2011-07", ITSOptions(covid="none", power_sims=0, sensitivity_months=0, placebo=False),
                kind="continuous")
    assert r.details["intervention_start"] == "2011"
    assert not any(t.startswith(("sin", "cos", "month_")) for t in r.details["terms"])
    assert "a series by year has no within-year seasonality: seasonality 'fourier' is switched off" in r.warnings
    assert "no seasonality (none within a year; 'fourier' switched off)" in r.method
    assert r.headline.unit == "measure units per year"
    assert r.headline.ci_low < -6 < r.headline.ci_high


def test_its_refuses_mixed_periods():
    df = quarterly_series()
    df.loc[3, "period"] = "2012-10"
    with pytest.raises(DataError, match="mixes period forms"):
        fit_its(df, "2019-Q1", ITSOptions(power_sims=0))
    with pytest.raises(DataError, match="is a year but the series is by quarter"):
        fit_its(quarterly_series(), "2019", ITSOptions(power_sims=0))


def test_monthly_its_results_unchanged():
    sys.path.insert(0, str(REF))
    try:
        import make_reference
    finally:
        sys.path.remove(str(REF))
    ref = json.loads((REF / "its_monthly_reference.json").read_text())
    new = json.loads(json.dumps(make_reference.compute(), sort_keys=True))
    for key in ref:
        assert new[key] == ref[key], key


# ---- DiD ----------------------------------------------------------------------------------------
def test_did_on_a_quarterly_panel():
    rng = np.random.default_rng(4)
    quarters = [add_periods("2014-Q1", i) for i in range(36)]
    rows, cf = [], []
    for u in range(12):
        base = rng.uniform(40, 80)
        for i, q in enumerate(quarters):
            mu = base * (1 + 0.1 * (i % 4 == 0))
            if u < 3 and i >= 24:
                cf.append(mu)
                mu *= 0.75
            rows.append((f"A{u:02d}", q, rng.poisson(mu)))
    f = pd.DataFrame(rows, columns=["unit", "period", "count"])
    panel = make_panel(f, {"A00": "2020-02", "A01": "2020-Q1", "A02": "2020-03"}, population=None,
                       unit_kind="area")
    assert panel.granularity == "quarter" and panel.cohorts == [4 * 2020]
    assert panel.outcome_label == "count per area per quarter"
    r = evaluate_panel(panel, DiDOptions(estimator="twfe", event_window=(-4, 4)))
    att = r.headline.estimate
    true = -0.25 * float(np.mean(cf))  # events per treated area-quarter
    assert r.headline.ci_low < true < r.headline.ci_high and att < 0
    assert r.headline.unit == "count per area per quarter"
    assert r.series["period"].iloc[0] == "2014-Q1"
    assert r.details["granularity"] == "quarter"
    assert "unit and quarter effects" in r.method and "month" not in r.method
    # the COVID window in months removes the quarters holding it
    ex = exclude_months(panel, "2020-03", "2021-06")
    assert sorted(set(panel.frame["period"]) - set(ex.frame["period"])) == [
        "2020-Q1", "2020-Q2", "2020-Q3", "2020-Q4", "2021-Q1", "2021-Q2"]


def test_did_panel_refuses_mixed_periods():
    f = pd.DataFrame({"unit": ["a", "a", "b", "b"], "period": ["2020", "2021-01", "2020", "2021-01"],
                      "count": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataError, match="panel mixes period forms"):
        make_panel(f, {"a": "2021"}, population=None)


# ---- data: long CSV, series ---------------------------------------------------------------------
def test_long_csv_reads_non_monthly_periods_and_refuses_mixed(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("period,area_code,measure,count\n2019-Q4,A,q,1\n2020-Q1,A,q,2\n2019/20,A,fy,3\n"
                 "2000,A,y,4\n2001,A,y,5\n")
    long = read_long_csv(p)
    assert long.attrs["granularity"] == {"fy": "financial_year", "q": "quarter", "y": "year"}
    assert measure_granularity(long, "y") == "year"
    s = area_series(long, "y", ["A"], "2000", "2001")
    assert s["period"].tolist() == ["2000", "2001"] and s["count"].tolist() == [4.0, 5.0]
    p.write_text("period,area_code,measure,count\n2000,A,y,4\n2001-01,A,y,5\n")
    with pytest.raises(DataError, match=r"measure 'y' mixes period forms: year '2000' \(row 1\), "
                                        r"month '2001-01' \(row 2\)"):
        read_long_csv(p)
    p.write_text("period,area_code,measure,count\n2000/02,A,y,4\n")
    with pytest.raises(DataError, match="'2000/02' is not a month as YYYY-MM"):
        read_long_csv(p)


def test_area_series_names_missing_years(tmp_path):
    long = pd.DataFrame({"period": ["2000", "2002"], "area_code": "A", "measure": "y",
                         "count": [1.0, 2.0], "population": np.nan})
    with pytest.raises(DataError, match=r"missing year\(s\) 2001 in the window 2000 to 2002"):
        area_series(long, "y", ["A"], "2000", "2002")


# ---- a yearly panel end to end: Proposition 99 ---------------------------------------------------
def prop99_project(root: Path, financial_years: bool = False) -> Path:
    (root / "parameters" / "evaluations").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "evaluations").mkdir()
    shutil.copy(REPO / "parameters" / "disclosure.yaml", root / "parameters" / "disclosure.yaml")
    df = pd.read_csv(PROP99)
    states = sorted(df["State"].unique())
    code = {s: "ST" + s.replace(" ", "")[:10].upper() for s in states}
    areas = {"partnership": "California", "partnership_code": "STCALIFORNIA", "code_system": "other",
             "areas": [{"code": code[s], "name": s, "role": "partnership" if s == "California" else "comparison"}
                       for s in states],
             "groups": {"donors": [code[s] for s in states if s != "California"]}}
    (root / "parameters" / "areas.yaml").write_text(yaml.safe_dump(areas, sort_keys=False))
    (root / "parameters" / "measures.yaml").write_text(yaml.safe_dump({"measures": [
        {"id": "packs", "name": "Cigarette packs per capita", "description": "Cigarette sales, packs per capita",
         "kind": "continuous", "source": "aggregate"}]}, sort_keys=False))
    (root / "parameters" / "interventions.yaml").write_text(yaml.safe_dump({"interventions": [
        {"id": "prop99", "title": "Proposition 99", "priority": 1, "areas": [code["California"]],
         "start": "1989-01"}]}, sort_keys=False))
    period = df["Year"].map(lambda y: f"{y}/{(y + 1) % 100:02d}" if financial_years else str(y))
    pd.DataFrame({"period": period, "area_code": df["State"].map(code), "measure": "packs",
                  "count": df["PacksPerCapita"]}).to_csv(root / "data" / "long.csv", index=False)
    base = {"intervention": "prop99", "measure": "packs", "areas": [code["California"]],
            "data": {"source": "csv", "path": "../../data/long.csv"}, "comparison": {"group": "donors"},
            "min_pre_months": 60}
    evs = {
        "prop99-sdid": {**base, "design": "synth", "title": "Proposition 99: synthetic DiD",
                        "synth": {"outcome": "count", "method": "sdid"}},
        "prop99-did": {**base, "design": "did", "title": "Proposition 99: DiD"},
        "prop99-sc": {**base, "design": "synth", "title": "Proposition 99: synthetic control",
                      "synth": {"outcome": "count"}},
    }
    for k, v in evs.items():
        (root / "parameters" / "evaluations" / f"{k}.yaml").write_text(
            yaml.safe_dump({"id": k, **v}, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def p99(tmp_path_factory):
    if not PROP99.exists():
        pytest.skip("reference data not available")
    return prop99_project(tmp_path_factory.mktemp("p99") / "proj")


def test_prop99_yearly_validates(p99, capsys):
    rc = main(["--root", str(p99), "validate", "--all"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "did on packs in California, 1970..2000, start 1989" in out


def test_prop99_yearly_synth_and_did_reproduce_the_published_estimates(p99):
    ctx = sveval.prepare(p99 / "parameters" / "evaluations" / "prop99-sdid.yaml")
    assert ctx.granularity == "year" and ctx.intervention_start == "1989"
    assert (ctx.start, ctx.end) == ("1970", "2000")
    assert ctx.pre_months == 19 * 12 and ctx.post_months == 12 * 12
    r = sveval.fit(ctx)
    # Arkhangelsky et al. (2021), Table 1 / R synthdid 0.0.9 (tests/test_sdid.py): SDID -15.6, SC -19.6, DiD -27.3
    assert round(r.headline.estimate, 1) == -15.6
    assert round(r.details["sc_estimate"], 1) == -19.6
    assert round(r.details["did_estimate"], 1) == -27.3
    assert r.details["frequency"] == "year"
    assert r.headline.unit == "count per year"
    assert "intervention 'prop99' start: month 1989-01 taken as the year holding it, 1989" in r.warnings
    assert r.series["period"].iloc[0] == "1970"

    ctx = sveval.prepare(p99 / "parameters" / "evaluations" / "prop99-did.yaml")
    r = sveval.fit(ctx)
    assert round(r.headline.estimate, 2) == -27.35
    assert r.details["granularity"] == "year"
    assert "unit and year effects" in r.method


def test_prop99_refuses_a_quarter_for_a_yearly_measure(p99, capsys):
    p = p99 / "parameters" / "evaluations" / "prop99-did.yaml"
    spec = yaml.safe_load(p.read_text())
    bad = p99 / "parameters" / "evaluations" / "bad.yaml"
    bad.write_text(yaml.safe_dump({**spec, "id": "bad", "intervention_start": "1989-Q1",
                                   "period": {"start": "1975", "end": "2000"}}))
    try:
        with pytest.raises(SpecError, match="is a quarter but the series is by year"):
            sveval.prepare(bad)
        bad.write_text(yaml.safe_dump({**spec, "id": "bad", "intervention_start": "1972"}))
        with pytest.raises(SpecError, match=r"pre-period too short: 2 year\(s\) from 1970; min_pre_months=60 "
                                            r"is 5 year\(s\)"):
            sveval.prepare(bad)
    finally:
        bad.unlink()


def test_financial_years_give_the_yearly_estimates_labelled_as_financial_years(p99, tmp_path):
    fy = prop99_project(tmp_path / "fy", financial_years=True)
    r_year = sveval.fit(sveval.prepare(p99 / "parameters" / "evaluations" / "prop99-sc.yaml"))
    spec_path = fy / "parameters" / "evaluations" / "prop99-sc.yaml"
    ctx = sveval.prepare(spec_path)
    # the registry's start month 1989-01 lies in financial year 1988/89
    assert ctx.granularity == "financial_year" and ctx.intervention_start == "1988/89"
    # the same data with the start given as a financial year: the yearly estimate, relabelled
    spec = yaml.safe_load(spec_path.read_text())
    spec_path.write_text(yaml.safe_dump({**spec, "intervention_start": "1989/90"}))
    r_fy = sveval.fit(sveval.prepare(spec_path))
    assert r_fy.headline.estimate == pytest.approx(r_year.headline.estimate, rel=1e-9)
    assert r_fy.series["period"].iloc[0] == "1970/71" and r_fy.details["frequency"] == "year"
    assert r_fy.headline.unit == "count per financial year"


@pytest.mark.slow
def test_prop99_yearly_runs(p99, capsys):
    rc = main(["--root", str(p99), "run", "--all"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    rec = json.loads((p99 / "reports" / "evaluations" / "prop99-sdid.json").read_text())
    assert rec["status"] == "completed"
    assert round(rec["effects"][0]["estimate"], 1) == -15.6
    assert rec["intervention_start"] == "1989"
    assert rec["series"]["period"][0] == "1970"
    rec = json.loads((p99 / "reports" / "evaluations" / "prop99-did.json").read_text())
    assert rec["status"] == "completed" and round(rec["effects"][0]["estimate"], 2) == -27.35


def test_measure_granularity_from_periods_when_not_declared():
    long = pd.DataFrame({"period": ["2020-01", "2020-Q1"], "area_code": ["A", "A"], "measure": ["m", "q"],
                         "count": [1.0, 2.0]})
    assert measure_granularity(long, "m") == "month" and measure_granularity(long, "q") == "quarter"
    long.loc[1, "measure"] = "m"
    with pytest.raises(DataError, match="measure 'm' mixes period forms"):
        measure_granularity(long, "m")


def test_tracking_refuses_a_yearly_measure():
    from sveval.pipeline.tracking import track

    long = pd.DataFrame({"period": ["2019", "2020"] * 2, "area_code": ["E06000047"] * 2 + ["E06000005"] * 2,
                         "measure": "knife_crime", "count": [10.0, 12.0, 3.0, 4.0], "population": 500000.0})
    with pytest.raises(DataError, match="measure 'knife_crime' is by year: tracking tables and the Home "
                                        "Office returns are built from monthly counts"):
        track(REPO / "parameters" / "tracking" / "partnership.yaml", root=REPO, long=long)
