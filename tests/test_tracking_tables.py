"""The vectorised tracking tables (sveval.pipeline.tracking._monthly and period_totals) equal the
loop implementations they replaced (kept below as the oracle): the same rows, order, columns, types
and values, on the example (every measure) and on synthetic data with gaps, missing populations and
fractional populations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import make_project

from sveval.catalog import Catalog
from sveval.paths import ProjectPaths
from sveval.periods import fy_months, quarter_months
from sveval.pipeline import tracking
from sveval.spec import MeasureSpec, add_months, period_index

COMPARISON_CODE = tracking.COMPARISON_CODE


# ------------------------------------------------------------------------------------------------
# The oracle: the implementation before vectorisation (pandas groupby-agg with Python lambdas)
# ------------------------------------------------------------------------------------------------
def _monthly_loop(long: pd.DataFrame, ms: MeasureSpec, areas: list[str], comp: list[str],
             pcode: str, catalog: Catalog, start: str, end: str) -> pd.DataFrame:
    periods = [add_months(start, k) for k in range(period_index(end) - period_index(start) + 1)]
    d = long[long["measure"] == ms.id]
    frames = []

    def block(codes: list[str], code: str, name: str, area_type: str) -> pd.DataFrame:
        sub = d[d["area_code"].isin(codes)]
        have = set(sub["area_code"])
        if not have:
            return pd.DataFrame()
        g = sub.groupby("period").agg(count=("count", "sum"), population=("population", lambda s: s.sum(min_count=len(have))),
                                      n_areas=("area_code", "nunique"))
        g = g.reindex(periods)
        g.index.name = "period"
        g = g.reset_index()
        g["complete"] = g["n_areas"].fillna(0).astype(int) == len(have)
        g.loc[~g["complete"], "count"] = np.nan
        g["area_code"], g["area_name"], g["area_type"] = code, name, area_type
        return g.drop(columns="n_areas")

    frames.append(block(areas, pcode, catalog.partnership if len(areas) > 1 else catalog.area_name(areas[0]), "partnership"))
    if len(areas) > 1:
        for c in areas:
            frames.append(block([c], c, catalog.area_name(c), "area"))
    if comp:
        frames.append(block(comp, COMPARISON_CODE, "Comparison areas (pooled)", "comparison"))
        for c in comp:
            frames.append(block([c], c, catalog.area_name(c), "comparison_area"))
    out = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    out["measure"], out["measure_name"], out["disclosure"] = ms.id, ms.name, ms.disclosure
    out["rate_per"] = ms.rate_per
    out["rate"] = out["count"] / out["population"] * ms.rate_per
    out = out.sort_values(["area_type", "area_code", "period"], kind="stable")
    r_count = out.groupby("area_code")["count"].transform(lambda s: s.rolling(12, min_periods=12).sum())
    r_pop = out.groupby("area_code")["population"].transform(lambda s: s.rolling(12, min_periods=12).mean())
    out["rolling_12m"] = r_count
    out["rolling_12m_rate"] = r_count / r_pop * ms.rate_per
    cols = ["measure", "measure_name", "disclosure", "area_type", "area_code", "area_name", "period",
            "count", "population", "rate", "rolling_12m", "rolling_12m_rate", "rate_per", "complete"]
    return out[cols].reset_index(drop=True)


def _period_totals_loop(monthly: pd.DataFrame, windows: dict[str, list[str]], label: str = "financial_year") -> pd.DataFrame:
    """Totals of counts and person-time exposure over named windows of months.

    Returns one row per window x area x measure with ``fy_count``, ``exposure`` (population
    person-years: mean population x months / 12), ``months`` (months with data) and ``complete``.
    """
    rows = []
    keys = ["measure", "measure_name", "disclosure", "area_type", "area_code", "area_name", "rate_per"]
    for wname, months in windows.items():
        sub = monthly[monthly["period"].isin(months)]
        for k, g in sub.groupby(keys, sort=False):
            have = g.dropna(subset=["count"])
            n = len(have)
            pop = have["population"].mean() if n else np.nan
            rows.append({**dict(zip(keys, k, strict=True)), label: wname,
                         "fy_count": have["count"].sum() if n == len(months) else np.nan,
                         "population": pop, "exposure": pop * n / 12.0 if n else np.nan,
                         "months": n, "complete": n == len(months)})
    out = pd.DataFrame(rows)
    out["rate"] = out["fy_count"] / out["exposure"] * out["rate_per"]
    return out


# ------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------
def _same(new: pd.DataFrame, old: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(new, old, check_exact=True)


@pytest.fixture(scope="module")
def example(tmp_path_factory, example_data):
    root = make_project(tmp_path_factory.mktemp("tables") / "project", example_data)
    spec_path = root / "parameters" / "tracking" / "partnership.yaml"
    spec = tracking.load_spec(spec_path)
    paths = ProjectPaths(root)
    catalog = Catalog.load(paths.parameters)
    measures, areas, comp = tracking._resolve(spec, catalog, spec_path)
    long = tracking._load_long(spec, spec_path, paths, catalog)
    pcode, _ = tracking._partnership(catalog)
    return long, measures, areas, comp, pcode, catalog


def test_example_tables_equal_the_loops(example):
    long, measures, areas, comp, pcode, catalog = example
    monthly = []
    for ms in measures:
        d = long[(long["measure"] == ms.id) & long["area_code"].isin(areas)]
        start, end = d["period"].min(), d["period"].max()
        new = tracking._monthly(long, ms, areas, comp, pcode, catalog, start, end)
        _same(new, _monthly_loop(long, ms, areas, comp, pcode, catalog, start, end))
        monthly.append(new)
    monthly = pd.concat(monthly, ignore_index=True)
    years = {fy: fy_months(fy) for fy in ("2016/17", "2022/23", "2024/25", "2025/26", "2026/27")}
    _same(tracking.period_totals(monthly, years), _period_totals_loop(monthly, years))
    quarters = {f"2025/26 Q{q}": quarter_months("2025/26", q) for q in (1, 2, 3, 4)}
    _same(tracking.period_totals(monthly, quarters, "period"), _period_totals_loop(monthly, quarters, "period"))


def _synthetic(seed: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Areas A1-A3 and comparison areas C1-C4 over 30 months, with rows missing, counts and
    populations missing, fractional populations, and an area with no data at all."""
    rng = np.random.default_rng(seed)
    periods = [add_months("2021-01", k) for k in range(30)]
    rows = []
    for area in ("A1", "A2", "A3", "C1", "C2", "C3", "C4"):
        for p in periods:
            if rng.random() < 0.05:
                continue  # no row this month
            count = float(rng.poisson(6)) if rng.random() > 0.03 else np.nan
            pop = float(rng.uniform(5e4, 2e5)) if rng.random() > 0.04 else np.nan
            rows.append((p, area, "m", count, pop))
    long = pd.DataFrame(rows, columns=["period", "area_code", "measure", "count", "population"])
    long["period"] = long["period"].astype("string")
    long["area_code"] = long["area_code"].astype("string")
    long["measure"] = long["measure"].astype("string")
    return long, ["A1", "A2", "A3", "A9"], ["C1", "C2", "C3", "C4", "C9"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_synthetic_tables_equal_the_loops(seed):
    long, areas, comp = _synthetic(seed)
    catalog = SimpleNamespace(partnership="Partnership", area_name=lambda c: f"Area {c}")
    ms = SimpleNamespace(id="m", name="Measure", disclosure="police", rate_per=100_000)
    for a, c in ((areas, comp), (areas[:1], comp), (areas, [])):
        start, end = "2021-02", "2023-05"
        new = tracking._monthly(long, ms, a, c, "P", catalog, start, end)
        old = _monthly_loop(long, ms, a, c, "P", catalog, start, end)
        pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-12)
        windows = {"y1": [add_months("2021-04", k) for k in range(12)],
                   "y2": [add_months("2022-04", k) for k in range(12)], "q": ["2021-01", "2021-02", "2021-03"]}
        pd.testing.assert_frame_equal(tracking.period_totals(new, windows), _period_totals_loop(new, windows),
                                      check_exact=False, rtol=1e-12)
