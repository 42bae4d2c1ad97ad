"""Outcome tracking: rates, rolling totals, financial years against a baseline, SPC charts.

The module-level helpers build a small simulated project (registries + long frame) that
``test_returns`` and ``test_disclosure`` reuse; they do not depend on the example data generator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sveval.catalog import Catalog
from sveval.designs.spc import rate_ratio_ci
from sveval.errors import SpecError
from sveval.pipeline.disclosure import check_table, load_rules
from sveval.pipeline.tracking import TrackingSpec, fy_months, fy_of, load_spec, track

REPO = Path(__file__).resolve().parents[1]
PARTNERSHIP = ["E06000047", "E06000005"]
COMPARISON = ["E06000001", "E06000002", "E06000004"]
PLANTED = {"crime_reference": "CR-PLANTED-0042", "victim_name": "Zebedee Quintrell"}

MEASURES = [
    {"id": "homicide", "name": "Homicides", "short_name": "homicides", "description": "Homicide",
     "source": "homicide_index", "headline": True, "rate_per": 1_000_000, "disclosure": "police",
     "cost_category": "homicide"},
    {"id": "knife_admissions", "name": "Hospital admissions for assault by a sharp object",
     "short_name": "knife admissions", "description": "HES X99", "source": "hospital",
     "headline": True, "disclosure": "hospital", "cost_category": "violence_with_injury"},
    {"id": "knife_crime", "name": "Knife crime", "short_name": "knife crimes", "description": "knife flag",
     "source": "force_extract", "headline": True, "cost_category": "violence_with_injury",
     "breaks": [{"period": "2021-04", "name": "NDQIS knife-crime classification"}]},
    {"id": "fte_youth", "name": "First-time entrants to youth justice", "short_name": "first-time entrants",
     "description": "10-17", "source": "youth_justice", "priorities": [1], "population_band": "10-17"},
]
# monthly means per area (partnership areas first, then comparison areas)
MEANS = {"homicide": [0.35, 0.08, 0.2, 0.15, 0.1], "knife_admissions": [5.0, 1.2, 4.0, 3.0, 2.0],
         "knife_crime": [26.0, 7.0, 20.0, 15.0, 10.0], "fte_youth": [9.0, 2.5, 6.0, 5.0, 4.0]}
POP = [530_000, 108_000, 150_000, 140_000, 95_000]


def write_registries(pdir: Path) -> None:
    pdir.mkdir(parents=True, exist_ok=True)
    names = ["County Durham", "Darlington", "Hartlepool", "Middlesbrough", "Redcar and Cleveland"]
    areas = [{"code": c, "name": n, "role": "partnership" if c in PARTNERSHIP else "comparison",
              "vru": c == "E06000002"} for c, n in zip(PARTNERSHIP + COMPARISON, names, strict=True)]
    (pdir / "measures.yaml").write_text(yaml.safe_dump({"measures": MEASURES}))
    (pdir / "areas.yaml").write_text(yaml.safe_dump({
        "partnership": "County Durham and Darlington", "partnership_code": "E23000008",
        "areas": areas, "groups": {"most_similar": COMPARISON}}))
    (pdir / "interventions.yaml").write_text(yaml.safe_dump({"interventions": [
        {"id": "youth_navigators", "title": "Youth navigators", "priority": 1, "areas": ["E06000047"],
         "start": "2022-10", "cost_gbp": 400000, "cost_price_year": "2023/24",
         "measures": ["fte_youth", "knife_crime"]},
        {"id": "focused_deterrence", "title": "Focused deterrence", "priority": 3, "areas": PARTNERSHIP,
         "start": "2024-01", "cost_gbp": 250000, "cost_price_year": "2024/25", "measures": ["knife_crime"]},
    ]}))
    for name in ("disclosure.yaml", "costs_of_crime.yaml", "deflators.yaml", "returns.yaml"):
        if (REPO / "parameters" / name).exists():
            shutil.copy(REPO / "parameters" / name, pdir / name)


def simulate_long(seed: int = 20240401, start: str = "2019-04", end: str = "2026-03") -> pd.DataFrame:
    """Deterministic Poisson counts with a 30% fall in knife crime in the partnership from 2023-04."""
    rng = np.random.default_rng(seed)
    periods = pd.period_range(start, end, freq="M").strftime("%Y-%m").tolist()
    rows = []
    for mid, means in MEANS.items():
        for k, code in enumerate(PARTNERSHIP + COMPARISON):
            for p in periods:
                mu = means[k]
                if mid == "knife_crime" and code in PARTNERSHIP and p >= "2023-04":
                    mu *= 0.70
                pop = POP[k] * (0.11 if mid == "fte_youth" else 1.0)
                rows.append((p, code, mid, float(rng.poisson(mu)), pop))
    return pd.DataFrame(rows, columns=["period", "area_code", "measure", "count", "population"])


def make_project(tmp: Path) -> tuple[Path, pd.DataFrame]:
    """A project root with registries, tracking spec and the simulated long frame (as CSV too)."""
    root = tmp / "project"
    write_registries(root / "parameters")
    (root / "evaluations").mkdir(parents=True, exist_ok=True)
    long = simulate_long()
    data = root / "data"
    data.mkdir(exist_ok=True)
    long.to_csv(data / "long.csv", index=False)
    (root / "parameters" / "tracking").mkdir(exist_ok=True)
    (root / "parameters" / "tracking" / "partnership.yaml").write_text(yaml.safe_dump({
        "id": "partnership", "title": "Partnership outcomes", "baseline_year": "2022/23",
        "comparison": {"group": "most_similar"},
        "change_points": [{"period": "2023-02", "name": "Serious Violence Duty in force"}],
        "data": {"source": "csv", "path": "../../data/long.csv"},
    }))
    return root, long


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("trk"))


@pytest.fixture(scope="module")
def result(project):
    root, long = project
    return track(root / "parameters" / "tracking" / "partnership.yaml", root=root, long=long)


def test_financial_year_helpers():
    assert fy_of("2023-03") == "2022/23" and fy_of("2023-04") == "2023/24"
    assert fy_months("2022/23")[0] == "2022-04" and fy_months("2022/23")[-1] == "2023-03"


def test_monthly_rates_and_rolling_totals(result, project):
    _, long = project
    m = result.monthly
    p = m[(m["measure"] == "knife_crime") & (m["area_type"] == "partnership")].set_index("period")
    raw = long[(long["measure"] == "knife_crime") & long["area_code"].isin(PARTNERSHIP)]
    by = raw.groupby("period")[["count", "population"]].sum()
    assert np.allclose(p["count"], by["count"])
    assert np.allclose(p["rate"], by["count"] / by["population"] * 100_000)
    # rolling 12-month total at 2024-03 equals the sum of 2023-04..2024-03
    assert p.loc["2024-03", "rolling_12m"] == by.loc["2023-04":"2024-03", "count"].sum()
    assert np.isnan(p.loc["2020-02", "rolling_12m"])  # fewer than 12 months available
    # homicide rates are per million
    h = m[(m["measure"] == "homicide") & (m["area_type"] == "partnership")]
    assert (h["rate_per"] == 1_000_000).all()


def test_annual_against_baseline_uses_exact_interval(result):
    a = result.annual
    row = a[(a["measure"] == "knife_crime") & (a["area_type"] == "partnership")
            & (a["financial_year"] == "2024/25")].iloc[0]
    ref = rate_ratio_ci(row["fy_count"], row["exposure"], row["baseline_count"], row["baseline_exposure"])
    assert row["rate_ratio"] == pytest.approx(ref.estimate)
    assert row["rr_ci_low"] == pytest.approx(ref.ci_low) and row["rr_ci_high"] == pytest.approx(ref.ci_high)
    # the simulated 30% fall in the partnership is visible; the comparison areas have none
    assert row["rate_ratio"] < 0.95 and row["rr_ci_high"] < 1.0
    assert 0.85 < row["comparison_rate_ratio"] < 1.15
    assert row["relative_to_comparison"] < 1.0
    years = sorted(a["financial_year"].unique())
    assert years == ["2022/23", "2023/24", "2024/25", "2025/26"]
    assert set(a["area_type"]) >= {"partnership", "area", "comparison"}


def test_areas_sum_to_partnership(result):
    a = result.annual
    for (mid, fy), g in a.groupby(["measure", "financial_year"]):
        tot = g.loc[g["area_type"] == "partnership", "fy_count"].iloc[0]
        assert g.loc[g["area_type"] == "area", "fy_count"].sum() == tot, (mid, fy)


def test_spc_limits_recalculated_at_declared_changes_only(result):
    kc = result.charts["knife_crime"]
    assert kc["aggregation"].iloc[0] == "month"
    # two declared changes inside the chart (NDQIS 2021-04, Duty 2023-02): three segments
    assert kc["segment"].nunique() == 3
    for _, seg in kc.groupby("segment"):
        assert seg["mean"].nunique() == 1 and seg["ucl"].nunique() == 1
    # homicide is rare: charted by quarter
    assert result.charts["homicide"]["aggregation"].iloc[0] == "quarter"


def test_published_tables_pass_disclosure_scan(result, project):
    root, _ = project
    rules = load_rules(root / "parameters")
    pub = result.published(rules)
    for name, df in pub.items():
        assert check_table(df, name, rules) == [], name
    ka = pub["monthly"][pub["monthly"]["measure"] == "knife_admissions"]
    assert (ka["count"] == "*").any()  # small monthly hospital counts are suppressed
    nums = pd.to_numeric(ka["count"], errors="coerce").dropna()
    assert (nums % 5 == 0).all()


def test_readings_are_plain_english_and_controlled(result, project):
    root, _ = project
    rules = load_rules(root / "parameters")
    texts = result.readings(rules)
    assert set(texts) == {"homicide", "knife_admissions", "knife_crime", "fte_youth"}
    assert "2025/26" in texts["knife_crime"] and "2022/23" in texts["knife_crime"]
    assert "per million" in texts["homicide"]


def test_spec_errors_are_precise(tmp_path, project):
    root, long = project
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"id": "bad", "title": "t", "baseline_year": "2022-23"}))
    with pytest.raises(SpecError, match="baseline_year"):
        load_spec(bad)
    spec = TrackingSpec(id="x", title="t", measures=["knife_crim"])
    with pytest.raises(SpecError, match="Did you mean|unknown measure"):
        track(spec, root=root, long=long, catalog=Catalog.load(root / "parameters"))


@pytest.mark.slow
def test_tracking_notebook_runs_and_publishes_clean(project):
    """Execute evaluations/tracking.ipynb on the simulated project; scan everything it wrote."""
    from sveval.pipeline.tracking import run_tracking

    root, _ = project
    shutil.copy(REPO / "evaluations" / "tracking.ipynb", root / "evaluations" / "tracking.ipynb")
    ok = run_tracking([root / "parameters" / "tracking" / "partnership.yaml"], root=root, force=True)
    out = root / "reports" / "tracking"
    assert ok, (out / "partnership.ipynb").read_text()[-3000:]
    assert (out / "partnership.ipynb").exists() and (out / "partnership_annual.csv").exists()
    import nbformat

    nb = nbformat.read(out / "partnership.ipynb", as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for name in ("Homicides", "Knife crime", "First-time entrants"):
        assert name in text
    from sveval.pipeline.disclosure import load_rules, scan_published

    assert scan_published([out], list(PLANTED), rules=load_rules(root / "parameters")) == []
