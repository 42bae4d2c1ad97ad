"""Outcome tracking of the Home Office headline measures and the local measures.

For the partnership, each of its areas and the comparison areas, and for each measure:

* monthly counts, rates (per ``measure.rate_per``: per 100,000, per million for homicide) from the
  measure's denominator population, and rolling 12-month totals and rates;
* financial-year totals and rates against a baseline year, with the change as an exact Poisson
  rate ratio and its interval (:func:`sveval.designs.spc.rate_ratio_ci`), and against the comparison areas'
  change over the same years (ratio of rate ratios);
* XmR statistical process control charts (:func:`sveval.designs.spc.xmr`) on the partnership series, with
  limits recalculated only at declared change points (the Duty's start, recording breaks);
* a short plain-English reading of each measure, written from disclosure-controlled figures.

A tracking report is described by ``parameters/tracking/<id>.yaml`` (:class:`TrackingSpec`)::

    tr = track("parameters/tracking/partnership.yaml")
    tr.annual            # financial years x areas x measures, with baseline change and intervals
    tr.published(rules)  # the same tables after disclosure control, ready for the site
    run_tracking([...])  # executes evaluations/tracking.ipynb into reports/tracking/<id>.ipynb
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from sveval.catalog import Catalog
from sveval.data.load import load_long
from sveval.errors import DataError, SpecError
from sveval.paths import ProjectPaths
from sveval.periods import financial_year, fy_months, quarter_start
from sveval.spec import (
    AreaRegistry,
    DataSpec,
    MeasureSpec,
    StrictModel,
    add_months,
    load_model,
    parse_financial_year,
    parse_period,
    period_index,
)

PARTNERSHIP_CODE = "PARTNERSHIP"
COMPARISON_CODE = "COMPARISON"


_Strict = StrictModel


_fy = parse_financial_year


fy_of = financial_year
_quarter_start = quarter_start


class ChangePoint(_Strict):
    period: str
    name: str
    _p = field_validator("period", mode="before")(lambda cls, v: parse_period(v))


class ComparisonChoice(_Strict):
    group: str | None = Field(default=None, description="a group in areas.yaml, e.g. most_similar")
    areas: list[str] = Field(default_factory=list)
    exclude_vru: bool = False


class SPCSpec(_Strict):
    start: str | None = Field(default=None, description="first month on the charts (default: data start)")
    run_length: int = Field(default=7, ge=5, le=12)
    trend_length: int = Field(default=7, ge=5, le=12)
    baseline_points: int | None = Field(default=None, ge=12)
    min_mean_count: float = Field(
        default=5.0, ge=0, description="below this mean count a month, chart quarters instead"
    )
    use_measure_breaks: bool = Field(default=True, description="recording breaks are change points too")
    aggregation: dict[str, Literal["month", "quarter"]] = Field(
        default_factory=dict, description="per-measure override of the chart's period"
    )
    _p = field_validator("start", mode="before")(lambda cls, v: None if v is None else parse_period(v))


class TrackingSpec(_Strict):
    """``parameters/tracking/<id>.yaml``: one tracking report."""

    id: str
    title: str
    description: str = ""
    measures: list[str] = Field(default_factory=list, description="default: every measure (headline first)")
    areas: list[str] = Field(default_factory=list, description="default: the partnership's areas")
    comparison: ComparisonChoice | None = None
    baseline_year: str = "2022/23"
    years: list[str] = Field(default_factory=list, description="default: complete years after the baseline")
    change_points: list[ChangePoint] = Field(default_factory=list)
    spc: SPCSpec = Field(default_factory=SPCSpec)
    data: DataSpec = Field(default_factory=DataSpec)

    _b = field_validator("baseline_year")(lambda cls, v: _fy(v))

    @field_validator("years")
    @classmethod
    def _years(cls, v: list[str]) -> list[str]:
        return [_fy(x) for x in v]

    @model_validator(mode="after")
    def _after(self) -> TrackingSpec:
        if self.baseline_year in self.years:
            raise ValueError("years must not include the baseline year")
        return self


def load_spec(path: Path | str) -> TrackingSpec:
    path = Path(path)
    spec = load_model(TrackingSpec, path)
    if spec.id != path.stem:
        raise SpecError(path, [("id", spec.id, f"must match the file name '{path.stem}'")])
    return spec


@dataclass
class TrackingResult:
    """Tracking tables (unrounded, internal) and the SPC charts.

    ``monthly`` and ``annual`` carry every area (``area_type`` ``partnership``, ``area``,
    ``comparison`` for the pooled comparison group). Use :meth:`published` for anything that leaves
    the machine. ``totals`` are the financial-year totals (:func:`period_totals`); ``annual`` adds
    the baseline comparisons (:func:`compare_to_baseline`) and ``charts`` the SPC charts (with
    ``chart_notes``), each computed when first asked for (the returns need neither).
    """

    spec: TrackingSpec
    catalog: Catalog
    measures: list[MeasureSpec]
    monthly: pd.DataFrame
    totals: pd.DataFrame
    #: what each measure's SPC chart is drawn from: (its monthly table, the measure, the chart's
    #: first month, the suppression limit of its disclosure class or None)
    chart_inputs: list[tuple[pd.DataFrame, MeasureSpec, str, int | None]]
    partnership_code: str
    partnership_name: str
    data_end: str
    notes: list[str] = field(default_factory=list)
    #: folder of the persistent plan cache (:func:`sveval.pipeline.disclosure.plan_cache_dir`), or None
    plan_cache: Path | None = None
    #: controlled tables and plans already computed, per table and rules (the tables are not
    #: changed after :func:`track`)
    _memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def measure(self, mid: str) -> MeasureSpec:
        return next(m for m in self.measures if m.id == mid)

    @property
    def charts(self) -> dict[str, pd.DataFrame]:
        """Each measure's SPC chart (:func:`sveval.designs.spc.xmr` on the partnership's monthly or
        quarterly counts), by measure id."""
        return self._spc()[0]

    @property
    def chart_notes(self) -> dict[str, str]:
        """How each chart was drawn (monthly or quarterly counts; where the limits were recalculated)."""
        return self._spc()[1]

    def _spc(self) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        if "spc" not in self._memo:
            charts, notes = {}, {}
            for m, ms, start, smax in self.chart_inputs:
                charts[ms.id], notes[ms.id] = _chart(m, ms, self.spec, start, self.partnership_code, smax)
            self._memo["spc"] = (charts, notes)
        return self._memo["spc"]

    @property
    def annual(self) -> pd.DataFrame:
        """Financial years x areas x measures with the baseline comparisons: count and rate, rate
        ratio with its exact interval, change relative to the comparison areas."""
        key = ("annual", id(self.totals))
        if key not in self._memo:
            self._memo[key] = compare_to_baseline(self.totals, self.spec.baseline_year)
        return self._memo[key]

    def _memoised(self, what: str, rules, make):
        key = (what, id(self.monthly), id(self.totals), rules.model_dump_json())
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # -- publishing --------------------------------------------------------------------------------
    def published(self, rules) -> dict[str, pd.DataFrame]:
        """Disclosure-controlled tables for the site and the returns (see :mod:`sveval.pipeline.disclosure`).

        Rates and rate ratios of controlled classes (hospital data) are recomputed from the rounded
        counts, as the NHS rules require, so that no exact count can be recovered from a ratio;
        they are suppressed with their counts. Individual comparison areas are not published.
        Computed once per rules (the notebook, the readings and :meth:`save` all ask for them).
        """
        tables = self._memoised("published", rules, lambda: self._published(rules))
        return {name: df.copy() for name, df in tables.items()}

    def _published(self, rules) -> dict[str, pd.DataFrame]:
        from sveval.pipeline.disclosure import apply_plan, apply_to_frame

        m = self.monthly[self.monthly["area_type"] != "comparison_area"]
        monthly = apply_to_frame(
            m, "disclosure", rules, ["count", "rolling_12m"],
            rate_columns={"rate": "count", "rolling_12m_rate": "rolling_12m"},
            group_by=["measure", "period"],
        )
        # overlapping windows of a protected class are not published: two rolling 12-month totals
        # a month apart give x[t] - x[t-12] to within the rounding, and chains of them rebuild
        # suppressed months (tests/test_disclosure_tables.py)
        overlapping = monthly["disclosure"].map(lambda c: rules.protects(str(c))).to_numpy(dtype=bool)
        monthly.loc[overlapping, ["rolling_12m", "rolling_12m_rate"]] = None
        # protected measures with secondary suppression: one controlled set of cells for every
        # output (months, quarters, years, areas; sveval.pipeline.disclosure.plan_cells)
        plan = self.cell_plan(rules)
        monthly = apply_plan(monthly, m, plan, rules, "count", lambda r: [r["period"]],
                             {"rate": "count"})
        a = self.annual[self.annual["area_type"] != "comparison_area"]
        windows = {fy: fy_months(fy) for fy in a["financial_year"].unique()}
        annual = publish_totals(a, rules, self.spec.baseline_year, plan=plan, windows=windows)
        return {"monthly": monthly, "annual": annual}

    def cell_plan(self, rules):
        """The controlled cells of the protected measures (:func:`sveval.pipeline.disclosure.plan_cells`),
        shared by the tracking tables, the SPC charts and every return."""
        from sveval.pipeline.disclosure import plan_cells

        return self._memoised("plan", rules, lambda: plan_cells(
            self.monthly, rules, {m.id: m.parent for m in self.measures if m.parent}, cache_dir=self.plan_cache))

    def published_chart(self, mid: str, rules) -> pd.DataFrame:
        """The SPC chart of a measure with its plotted values controlled (``shown``: number or None)."""
        ch = self.charts[mid].copy()
        ms = self.measure(mid)
        rule = rules.rule(ms.disclosure)
        ch["shown"] = [None if rule.suppresses(v) else rule.round(v) for v in ch["value"]]
        plan = self.cell_plan(rules)
        if plan.covers(mid) and len(ch):
            # the plotted points are the plan's partnership cells (month or calendar quarter)
            span = 3 if (ch["aggregation"] == "quarter").all() else 1
            shown = [plan.shown(mid, self.partnership_code, [add_months(p, k) for k in range(span)])
                     for p in ch["period"]]
            ch["shown"] = [float(v) if isinstance(v, int | float) else None for v in shown]
        ch["suppressed"] = ch["shown"].isna()
        if rules.protects(ms.disclosure) and len(ch):
            # a protected measure's centre lines, limits and signals come from the published
            # points (suppressed points at the middle of the suppression range), never from the raw
            # counts: a segment's raw mean times its length is the segment's exact total
            mid_value = (rule.suppress_min + rule.suppress_max) / 2 if rule.suppress_min is not None else 0.0
            values = [mid_value if s else float(v) for v, s in zip(ch["shown"], ch["suppressed"], strict=True)]
            cps = [p for p, c in zip(ch["period"], ch["change_point"], strict=True) if c]
            from sveval.designs.spc import xmr

            redo = xmr(values, list(ch["period"]), cps, better_if=ms.better_if,
                       run_length=self.spec.spc.run_length, trend_length=self.spec.spc.trend_length,
                       baseline_points=self.spec.spc.baseline_points)
            for c in redo.columns:
                if c not in ("period", "value"):
                    ch[c] = redo[c].to_numpy()
        return ch

    def readings(self, rules) -> dict[str, str]:
        """Plain-English reading of each measure (partnership), from controlled figures."""
        pub = self.published(rules)["annual"]
        out = {}
        for ms in self.measures:
            rows = pub[(pub["measure"] == ms.id) & (pub["area_type"] == "partnership")]
            out[ms.id] = reading(ms, rows, self.spec.baseline_year, self.charts.get(ms.id),
                                 self.chart_notes.get(ms.id, ""))
        return out

    def save(self, out_dir: Path, rules) -> dict[str, Path]:
        """Write the controlled tables (CSV) and a JSON summary into ``out_dir``; return the paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pub = self.published(rules)
        written = {}
        for name, df in pub.items():
            p = out_dir / f"{self.spec.id}_{name}.csv"
            tmp = p.with_suffix(".csv.tmp")
            df.to_csv(tmp, index=False)
            os.replace(tmp, p)
            written[name] = p
        # SPC charts with their plotted values controlled (the published site reads these)
        keep = ["period", "shown", "suppressed", "segment", "mean", "ucl", "lcl", "outside", "shift",
                "trend", "two_of_three", "special_cause", "side", "variation", "aggregation",
                "change_point"]
        spc = [self.published_chart(ms.id, rules).assign(measure=ms.id) for ms in self.measures
               if ms.id in self.charts]
        if spc:
            p = out_dir / f"{self.spec.id}_spc.csv"
            tmp = p.with_suffix(".csv.tmp")
            pd.concat(spc)[["measure", *keep]].to_csv(tmp, index=False)
            os.replace(tmp, p)
            written["spc"] = p
        comparison = self.monthly.loc[self.monthly["area_type"] == "comparison_area", "area_name"]
        doc = {
            "id": self.spec.id,
            "title": self.spec.title,
            "baseline_year": self.spec.baseline_year,
            "data_end": self.data_end,
            "comparison_areas": sorted(comparison.dropna().unique().tolist()),
            "chart_notes": dict(self.chart_notes),
            "readings": self.readings(rules),
            "tables": {"annual": json.loads(pub["annual"].to_json(orient="records"))},
            "notes": self.notes,
        }
        p = out_dir / f"{self.spec.id}.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        written["json"] = p
        return written


# ------------------------------------------------------------------------------------------------
# Computation
# ------------------------------------------------------------------------------------------------
def _partnership(catalog: Catalog) -> tuple[str, str]:
    try:
        reg = load_model(AreaRegistry, catalog.parameters_dir / "areas.yaml")
        code = reg.partnership_code or PARTNERSHIP_CODE
    except SpecError:  # pragma: no cover - Catalog.load already validated the file
        code = PARTNERSHIP_CODE
    return code, catalog.partnership


def _load_long(spec: TrackingSpec, spec_path: Path | None, paths: ProjectPaths, catalog: Catalog) -> pd.DataFrame:
    return load_long(spec.data, spec_path, paths, catalog).long


def _resolve(spec: TrackingSpec, catalog: Catalog, spec_path: Path | None) -> tuple[list[MeasureSpec], list[str], list[str]]:
    problems = []
    if spec.measures:
        for i, mid in enumerate(spec.measures):
            if mid not in catalog.measures:
                problems.append((f"measures.{i}", mid, "unknown measure; allowed: " + ", ".join(sorted(catalog.measures))))
        measures = [catalog.measures[m] for m in spec.measures if m in catalog.measures]
    else:
        allm = list(catalog.measures.values())
        measures = [m for m in allm if m.headline] + [m for m in allm if not m.headline]
    areas = list(spec.areas) or catalog.partnership_areas
    for i, c in enumerate(areas):
        if c not in catalog.areas:
            problems.append((f"areas.{i}", c, "unknown area code; allowed: " + ", ".join(sorted(catalog.areas))))
    comp: list[str] = []
    if spec.comparison is not None:
        if spec.comparison.group:
            if spec.comparison.group not in catalog.groups:
                problems.append(("comparison.group", spec.comparison.group,
                                 "unknown group; allowed: " + ", ".join(sorted(catalog.groups))))
            else:
                comp = list(catalog.groups[spec.comparison.group])
        comp += [c for c in spec.comparison.areas]
        for c in comp:
            if c not in catalog.areas:
                problems.append(("comparison.areas", c, "unknown area code"))
        comp = [c for c in dict.fromkeys(comp) if c in catalog.areas and c not in areas]
        if spec.comparison.exclude_vru:
            comp = [c for c in comp if not catalog.areas[c].vru]
    if problems:
        raise SpecError(spec_path, problems)
    return measures, areas, comp


def _monthly(long: pd.DataFrame, ms: MeasureSpec, areas: list[str], comp: list[str],
             pcode: str, catalog: Catalog, start: str, end: str) -> pd.DataFrame:
    """One measure's monthly table: the partnership, its areas (when more than one), the pooled
    comparison areas and each comparison area, every month from ``start`` to ``end``.

    A unit's month is complete when every one of its areas that has data for the measure has a row
    that month (otherwise its count is missing); its population is missing unless every such area
    gives one. Computed for all units at once (one grouped sum over the rows of every unit)."""
    periods = [add_months(start, k) for k in range(period_index(end) - period_index(start) + 1)]
    d = long.loc[long["measure"] == ms.id, ["period", "area_code", "count", "population"]]
    units: list[tuple[str, str, str, list[str]]] = [
        (pcode, catalog.partnership if len(areas) > 1 else catalog.area_name(areas[0]), "partnership", areas)]
    if len(areas) > 1:
        units += [(c, catalog.area_name(c), "area", [c]) for c in areas]
    if comp:
        units.append((COMPARISON_CODE, "Comparison areas (pooled)", "comparison", comp))
        units += [(c, catalog.area_name(c), "comparison_area", [c]) for c in comp]
    present = set(d["area_code"])
    units = [(code, name, kind, [c for c in dict.fromkeys(codes) if c in present])
             for code, name, kind, codes in units]
    units = [u for u in units if u[3]]
    cols = ["measure", "measure_name", "disclosure", "area_type", "area_code", "area_name", "period",
            "count", "population", "rate", "rolling_12m", "rolling_12m_rate", "rate_per", "complete"]
    if not units:
        raise ValueError("No objects to concatenate")
    member = pd.DataFrame([(k, c) for k, u in enumerate(units) for c in u[3]], columns=["unit", "area_code"])
    rows = d.assign(area_code=d["area_code"].astype(object), period=d["period"].astype(object))
    rows = rows.merge(member, on="area_code", how="inner")
    rows = rows[rows["period"].isin(periods)]
    rows["has_pop"] = rows["population"].notna()
    g = rows.groupby(["unit", "period"]).agg(count=("count", "sum"), population=("population", "sum"),
                                             n_pop=("has_pop", "sum"), n_areas=("area_code", "nunique"))
    g = g.reindex(pd.MultiIndex.from_product([range(len(units)), periods], names=["unit", "period"]))
    need = np.repeat([len(u[3]) for u in units], len(periods))
    complete = g["n_areas"].fillna(0).astype(int).to_numpy() == need
    out = pd.DataFrame({
        "period": np.tile(np.array(periods, dtype=object), len(units)),
        "count": np.where(complete, g["count"].to_numpy(dtype=float), np.nan),
        "population": np.where(g["n_pop"].fillna(0).to_numpy() >= need, g["population"].to_numpy(dtype=float),
                               np.nan),
        "complete": complete,
        "area_code": np.repeat(np.array([u[0] for u in units], dtype=object), len(periods)),
        "area_name": np.repeat(np.array([u[1] for u in units], dtype=object), len(periods)),
        "area_type": np.repeat(np.array([u[2] for u in units], dtype=object), len(periods)),
    })
    out["measure"], out["measure_name"], out["disclosure"] = ms.id, ms.name, ms.disclosure
    out["rate_per"] = ms.rate_per
    out["rate"] = out["count"] / out["population"] * ms.rate_per
    out = out.sort_values(["area_type", "area_code", "period"], kind="stable")
    by_area = out.groupby("area_code", sort=False)
    r_count = by_area["count"].rolling(12, min_periods=12).sum().reset_index(level=0, drop=True)
    r_pop = by_area["population"].rolling(12, min_periods=12).mean().reset_index(level=0, drop=True)
    out["rolling_12m"] = r_count
    out["rolling_12m_rate"] = r_count / r_pop * ms.rate_per
    return out[cols].reset_index(drop=True)


def period_totals(monthly: pd.DataFrame, windows: dict[str, list[str]], label: str = "financial_year") -> pd.DataFrame:
    """Totals of counts and person-time exposure over named windows of months.

    Returns one row per window x area x measure with ``fy_count``, ``exposure`` (population
    person-years: mean population x months / 12), ``months`` (months with data) and ``complete``.
    The total is missing unless every month of the window has a count; the population is the mean
    over the months with a count.
    """
    keys = ["measure", "measure_name", "disclosure", "area_type", "area_code", "area_name", "rate_per"]
    parts = [monthly.loc[monthly["period"].isin(months), [*keys, "count", "population"]].assign(
        _w=k) for k, months in enumerate(windows.values())]
    names = list(windows)
    size = np.array([len(m) for m in windows.values()])
    if not parts or not sum(len(p) for p in parts):
        return pd.DataFrame(columns=[*keys, label, "fy_count", "population", "exposure", "months",
                                     "complete", "rate"])
    sub = pd.concat(parts, ignore_index=True)
    has = sub["count"].notna()
    sub["_pop"] = sub["population"].where(has)
    g = sub.groupby(["_w", *keys], sort=False).agg(n=("count", "count"), total=("count", "sum"),
                                                    pop=("_pop", "mean"))
    idx = g.index.to_frame(index=False)
    n = g["n"].to_numpy()
    full = n == size[idx["_w"].to_numpy()]
    pop = np.where(n > 0, g["pop"].to_numpy(dtype=float), np.nan)
    out = idx[keys].copy()
    out[label] = [names[w] for w in idx["_w"]]
    out["fy_count"] = np.where(full, g["total"].to_numpy(dtype=float), np.nan)
    out["population"] = pop
    out["exposure"] = np.where(n > 0, pop * n / 12.0, np.nan)
    out["months"] = n
    out["complete"] = full
    out["rate"] = out["fy_count"] / out["exposure"] * out["rate_per"]
    return out


@functools.lru_cache(maxsize=16384)
def _rate_ratio(count: float, exposure: float, baseline_count: float,
                baseline_exposure: float) -> tuple[float, float, float, float]:
    """Estimate, interval and p-value of :func:`sveval.designs.spc.rate_ratio_ci` (a function of the
    four numbers only, which it reads as floats: kept, since the tracking report, its controlled
    tables and every return compare the same totals again)."""
    from sveval.designs.spc import rate_ratio_ci

    x = rate_ratio_ci(count, exposure, baseline_count, baseline_exposure)
    return (x.estimate, x.ci_low, x.ci_high, x.p_value)


def compare_to_baseline(totals: pd.DataFrame, baseline: str, label: str = "financial_year") -> pd.DataFrame:
    """Add the baseline window's count and rate, the rate ratio with its exact interval, and the
    change relative to the pooled comparison areas (ratio of rate ratios, log-normal interval)."""
    base = totals[totals[label] == baseline][["measure", "area_code", "fy_count", "exposure", "rate"]]
    base = base.rename(columns={"fy_count": "baseline_count", "exposure": "baseline_exposure", "rate": "baseline_rate"})
    out = totals.merge(base, on=["measure", "area_code"], how="left")
    rr = []
    for r in out.itertuples(index=False):
        ok = all(np.isfinite(x) for x in (r.fy_count, r.exposure, r.baseline_count, r.baseline_exposure)) \
            and r.exposure > 0 and r.baseline_exposure > 0
        if ok and (r.fy_count + r.baseline_count) > 0:
            rr.append(_rate_ratio(float(r.fy_count), float(r.exposure), float(r.baseline_count),
                                  float(r.baseline_exposure)))
        else:
            rr.append((np.nan,) * 4)
    out[["rate_ratio", "rr_ci_low", "rr_ci_high", "rr_p_value"]] = pd.DataFrame(rr, index=out.index)
    out["change_pct"] = 100 * (out["rate_ratio"] - 1)
    comp = out[out["area_type"] == "comparison"][["measure", label, "rate", "rate_ratio", "fy_count", "baseline_count"]]
    comp = comp.rename(columns={"rate": "comparison_rate", "rate_ratio": "comparison_rate_ratio",
                                "fy_count": "_cc", "baseline_count": "_cb"})
    out = out.merge(comp, on=["measure", label], how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = out["rate_ratio"] / out["comparison_rate_ratio"]
        se = np.sqrt(1 / out["fy_count"] + 1 / out["baseline_count"] + 1 / out["_cc"] + 1 / out["_cb"])
        out["relative_to_comparison"] = rel
        out["rel_ci_low"] = np.exp(np.log(rel) - 1.959964 * se)
        out["rel_ci_high"] = np.exp(np.log(rel) + 1.959964 * se)
    own = out["area_type"].isin(["comparison", "comparison_area"])
    out.loc[own, ["relative_to_comparison", "rel_ci_low", "rel_ci_high"]] = np.nan
    return out.drop(columns=["_cc", "_cb"])


TOTAL_COLUMNS = ["measure", "measure_name", "disclosure", "area_type", "area_code", "area_name",
                 "rate_per", "fy_count", "population", "exposure", "months", "complete"]
DERIVED_COLUMNS = ["fy_count", "rate", "baseline_count", "baseline_rate", "rate_ratio", "rr_ci_low",
                   "rr_ci_high", "rr_p_value", "change_pct", "comparison_rate", "comparison_rate_ratio",
                   "relative_to_comparison", "rel_ci_low", "rel_ci_high"]


def publish_totals(totals: pd.DataFrame, rules, baseline: str, label: str = "financial_year", *,
                   plan=None, windows: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Disclosure-controlled window totals with their baseline comparison.

    Counts of controlled classes are rounded / suppressed (with secondary suppression across the
    partnership's areas); rates, rate ratios, intervals and comparisons of those classes are then
    recomputed from the rounded counts, so no exact count can be recovered from a ratio, and are
    suppressed with their counts.

    Parameters
    ----------
    totals : rows of :func:`period_totals` (any extra columns are dropped and recomputed)
    rules : :class:`sveval.pipeline.disclosure.DisclosureRules`
    baseline : the baseline window's label
    label : the window column (``financial_year`` or ``period``)
    plan : :class:`sveval.pipeline.disclosure.CellPlan`; the counts of the measures it covers are
        its cells (``windows`` gives each label's months); a withheld cell stays blank
    """
    from sveval.pipeline.disclosure import apply_plan, apply_to_frame

    totals = totals[[*TOTAL_COLUMNS[:7], label, *TOTAL_COLUMNS[7:]]].reset_index(drop=True)
    ctl = apply_to_frame(totals, "disclosure", rules, ["fy_count"], group_by=["measure", label])
    blank: set[tuple[str, str, str]] = set()
    if plan is not None:
        ctl = apply_plan(ctl, totals, plan, rules, "fy_count", lambda r: (windows or {})[r[label]])
        blank = {(str(r["measure"]), str(r["area_code"]), str(r[label]))
                 for (_, r), v in zip(totals.iterrows(), ctl["fy_count"], strict=True)
                 if v is None and np.isfinite(pd.to_numeric(r["fy_count"], errors="coerce"))}
    controlled = totals["disclosure"].map(
        lambda c: not rules.rule(c).exempt and (rules.rule(c).round_to > 1 or rules.rule(c).suppress_min is not None)
    ).to_numpy()
    redo = totals.copy()
    redo["fy_count"] = np.where(controlled, pd.to_numeric(ctl["fy_count"], errors="coerce"),
                                totals["fy_count"].to_numpy())
    redo["rate"] = redo["fy_count"] / redo["exposure"] * redo["rate_per"]
    out = compare_to_baseline(redo, baseline, label)
    full = compare_to_baseline(totals.assign(rate=totals["fy_count"] / totals["exposure"] * totals["rate_per"]),
                               baseline, label)
    out = out.astype({c: object for c in DERIVED_COLUMNS})
    for c in DERIVED_COLUMNS:
        hidden = controlled & out[c].isna().to_numpy() & full[c].notna().to_numpy()
        out.loc[hidden, c] = out.loc[hidden, "disclosure"].map(lambda k: rules.rule(k).symbol)
    if blank:  # withheld cells (a breakdown of a suppressed small total) stay blank
        own = [(str(m), str(a), str(w)) in blank for m, a, w in zip(out["measure"], out["area_code"], out[label], strict=True)]
        base = [(str(m), str(a), baseline) in blank for m, a in zip(out["measure"], out["area_code"], strict=True)]
        out.loc[np.array(own, dtype=bool), ["fy_count", "rate"]] = None
        out.loc[np.array(base, dtype=bool), ["baseline_count", "baseline_rate"]] = None
    for c in ("fy_count", "baseline_count"):
        out[c] = out[c].map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
    return out


def _chart(monthly: pd.DataFrame, ms: MeasureSpec, spec: TrackingSpec, start: str, pcode: str,
           suppress_max: int | None = None) -> tuple[pd.DataFrame, str]:
    s = monthly[(monthly["area_code"] == pcode) & (monthly["period"] >= start)].dropna(subset=["count"])
    s = s.sort_values("period")
    cps = {c.period: c.name for c in spec.change_points}
    if spec.spc.use_measure_breaks:
        for b in ms.breaks:
            if "period" in b:
                cps[parse_period(b["period"])] = b.get("name", "recording break")
    agg = spec.spc.aggregation.get(ms.id)
    if agg is None:
        small = suppress_max is not None and (s["count"].between(1, suppress_max)).mean() > 0.1
        agg = "month" if s["count"].mean() >= spec.spc.min_mean_count and not small else "quarter"
    if agg == "quarter":
        s = s.assign(q=s["period"].map(_quarter_start))
        full = s.groupby("q")["period"].transform("count") == 3
        s = s[full].groupby("q", as_index=False)["count"].sum().rename(columns={"q": "period"})
        cps = {_quarter_start(p) if p == _quarter_start(p) else _next_quarter(p): n for p, n in cps.items()}
    periods = list(s["period"])
    cps = {p: n for p, n in cps.items() if periods and periods[0] < p <= periods[-1]}
    # a change point must be one of the chart's periods: move it to the first period on/after it
    moved = {}
    for p, n in cps.items():
        first = next(x for x in periods if x >= p)
        moved[first] = n
    from sveval.designs.spc import xmr

    chart = xmr(s["count"].to_numpy(), periods, list(moved), better_if=ms.better_if,
                run_length=spec.spc.run_length, trend_length=spec.spc.trend_length,
                baseline_points=spec.spc.baseline_points)
    chart["aggregation"] = agg
    chart["change_point"] = chart["period"].map(moved).fillna("")
    note = ("Monthly counts" if agg == "month" else "Quarterly counts (too few events a month for a monthly chart)")
    if moved:
        note += "; limits recalculated at " + ", ".join(f"{n} ({p})" for p, n in sorted(moved.items()))
    return chart, note


def _next_quarter(p: str) -> str:
    return add_months(_quarter_start(p), 3)


def _checked(long: pd.DataFrame, measures: list[MeasureSpec]) -> pd.DataFrame:
    """The long frame with a population column, after checking that it has the columns tracking
    needs and that every tracked measure is monthly."""
    missing_cols = {"period", "area_code", "measure", "count"} - set(long.columns)
    if missing_cols:
        raise DataError(f"the long frame lacks columns {sorted(missing_cols)}")
    if "population" not in long.columns:
        long = long.assign(population=np.nan)
    from sveval.data.series import measure_granularity

    for ms in measures:  # tracking tables and returns are monthly (months -> quarters -> years)
        g = measure_granularity(long, ms.id) if (long["measure"] == ms.id).any() else "month"
        if g != "month":
            raise DataError(f"measure '{ms.id}' is by {g.replace('_', ' ')}: tracking tables and the "
                            "Home Office returns are built from monthly counts; track a monthly "
                            "measure, or evaluate this one with a design (ITS, DiD, synth)")
    return long


def _monthly_tables(long: pd.DataFrame, measures: list[MeasureSpec], areas: list[str], comp: list[str],
                    pcode: str, catalog: Catalog, spec_path: Path | None):
    """Each measure's monthly table (:func:`_monthly`) over the months of its data in the
    partnership's areas: ``(measure, table, start, end)``."""
    for ms in measures:
        d = long[(long["measure"] == ms.id) & long["area_code"].isin(areas)]
        if d.empty:
            raise SpecError(spec_path, [("measures", ms.id, "no data for this measure in the partnership's areas")])
        start, end = d["period"].min(), d["period"].max()
        yield ms, _monthly(long, ms, areas, comp, pcode, catalog, start, end), start, end


def _check_baseline(totals: pd.DataFrame, baseline: str) -> None:
    if not totals.loc[totals["financial_year"] == baseline, "complete"].all():
        raise DataError(f"the baseline year {baseline} is not complete in the data for every measure and area")


def track(
    spec_path_or_spec: Path | str | TrackingSpec,
    *,
    root: Path | None = None,
    long: pd.DataFrame | None = None,
    catalog: Catalog | None = None,
    plan_cache: Path | str | Literal[False] | None = None,
) -> TrackingResult:
    """Compute a tracking report.

    Parameters
    ----------
    spec_path_or_spec : ``parameters/tracking/<id>.yaml`` or a :class:`TrackingSpec`
    root : project root (default: discovered from the spec's folder or the current directory)
    long : the long frame (period, area_code, measure, count, population); default: loaded as the
        spec's ``data`` says (built-in example or a long CSV)
    catalog : registries (default: loaded from ``<root>/parameters``)
    plan_cache : folder of the persistent cache of the plan of controlled cells (default: the
        project's, :func:`sveval.pipeline.disclosure.plan_cache_dir`; False: none)

    Returns
    -------
    TrackingResult
    """
    spec_path = None
    if isinstance(spec_path_or_spec, TrackingSpec):
        spec = spec_path_or_spec
    else:
        spec_path = Path(spec_path_or_spec).resolve()
        spec = load_spec(spec_path)
    paths = ProjectPaths(root) if root else ProjectPaths.discover(spec_path.parent if spec_path else None)
    catalog = catalog or Catalog.load(paths.parameters)
    measures, areas, comp = _resolve(spec, catalog, spec_path)
    if long is None:
        long = _load_long(spec, spec_path, paths, catalog)
    long = _checked(long, measures)
    pcode, pname = _partnership(catalog)
    rules = None
    if (catalog.parameters_dir / "disclosure.yaml").exists():
        from sveval.pipeline.disclosure import load_rules

        rules = load_rules(catalog.parameters_dir)
    notes: list[str] = []
    monthly, chart_inputs = [], []
    end_all = []
    for ms, m, start, end in _monthly_tables(long, measures, areas, comp, pcode, catalog, spec_path):
        end_all.append(end)
        if m.loc[m["area_type"] == "partnership", "population"].isna().all():
            notes.append(f"{ms.name}: no population data, so no rates are given.")
        monthly.append(m)
        rule = rules.rules.get(ms.disclosure) if rules is not None else None
        smax = rule.suppress_max if rule is not None and not rule.exempt else None
        chart_inputs.append((m, ms, spec.spc.start or start, smax))  # charted when first asked for
        for b in ms.breaks:
            notes.append(f"{ms.name}: recording break in {b.get('period')}: {b.get('name', '')}.")
    monthly_df = pd.concat(monthly, ignore_index=True)
    data_end = min(end_all)
    years = list(spec.years)
    if not years:
        last_full = fy_of(data_end) if data_end.endswith("-03") else fy_of(add_months(data_end, -12))
        y = int(spec.baseline_year[:4]) + 1
        while y <= int(last_full[:4]):
            years.append(f"{y}/{(y + 1) % 100:02d}")
            y += 1
    windows = {fy: fy_months(fy) for fy in [spec.baseline_year, *years]}
    totals = period_totals(monthly_df, windows)
    _check_baseline(totals, spec.baseline_year)
    if plan_cache is None:
        from sveval.pipeline.disclosure import plan_cache_dir

        plan_cache = plan_cache_dir(paths.root)
    return TrackingResult(spec, catalog, measures, monthly_df, totals, chart_inputs, pcode, pname,
                          data_end, notes, Path(plan_cache) if plan_cache is not False else None)


# ------------------------------------------------------------------------------------------------
# Plain English
# ------------------------------------------------------------------------------------------------
def _fmt_rate(v: Any, per: int) -> str:
    unit = "per million" if per == 1_000_000 else f"per {per:,}"
    return "suppressed" if v == "*" or v is None else f"{float(v):.1f} {unit}"


def reading(ms: MeasureSpec, rows: pd.DataFrame, baseline: str, chart: pd.DataFrame | None, chart_note: str = "") -> str:
    """A short plain-English reading of one measure from its controlled partnership rows."""
    from sveval.designs.spc import latest_variation

    rows = rows[rows["complete"].astype(bool)] if "complete" in rows else rows
    rows = rows.sort_values("financial_year")
    if rows.empty:
        return f"{ms.name}: no complete financial year of data."
    last = rows.iloc[-1]
    fy = last["financial_year"]
    cnt = last["fy_count"]
    if fy == baseline:
        return f"{ms.name}: only the baseline year {baseline} is complete so far."
    count_txt = "a suppressed number (fewer than 8)" if cnt == "*" else f"{int(cnt):,}"
    s = f"In {fy} there were {count_txt} {ms.short_name or ms.name.lower()} ({_fmt_rate(last['rate'], ms.rate_per)})"
    # suppressed ratios are the symbol '*': read as missing
    rr, lo, hi = (pd.to_numeric(last.get(k), errors="coerce") for k in ("rate_ratio", "rr_ci_low", "rr_ci_high"))
    if rr is not None and np.isfinite(rr):
        direction = "lower" if rr < 1 else "higher"
        s += (f", a rate {abs(100 * (rr - 1)):.0f}% {direction} than in {baseline} "
              f"(95% CI {100 * (lo - 1):+.0f}% to {100 * (hi - 1):+.0f}%).")
        if lo > 1 or hi < 1:
            good = (rr < 1) == (ms.better_if == "lower")
            s += " The change is larger than chance variation would explain" + (" and is an improvement." if good else ", in the wrong direction.")
        else:
            s += " The interval includes no change."
    else:
        s += "."
    crr = pd.to_numeric(last.get("comparison_rate_ratio"), errors="coerce")
    if crr is not None and np.isfinite(crr):
        s += f" Over the same years the comparison areas' rate changed by {100 * (crr - 1):+.0f}%."
    if chart is not None and len(chart):
        s += " " + latest_variation(chart)
    return s


# ------------------------------------------------------------------------------------------------
# Running the notebook
# ------------------------------------------------------------------------------------------------
def run_tracking(spec_paths: list[Path], *, root: Path | None = None, force: bool = False,
                 notebook: Path | None = None, retries: int = 2, wait: float = 0.0,
                 timeout: int = 1800, pool: Any = None) -> bool:
    """Execute ``evaluations/tracking.ipynb`` for each tracking spec into ``reports/tracking/<id>.ipynb``.

    Also writes the controlled tables and JSON summary beside it. Runs through the shared executor
    (:func:`sveval.pipeline.executor.execute`) under the project lock, and is cached like the
    evaluations: a report whose parameter file, registries, notebook, data and sveval sources are
    unchanged since its last successful run is skipped unless ``force``
    (``reports/.sveval/tracking-manifest.json``). Returns True when every report ran; a failed
    notebook is kept (with its error visible) and the failing cell is named on stderr. ``pool``:
    warm kernels (:class:`sveval.pipeline.batch.KernelPool`) to run on instead of a new kernel per
    report (``sveval pipeline`` shares its evaluations' workers).
    """
    import sys
    from datetime import UTC, datetime

    import nbformat

    from sveval.pipeline import executor
    from sveval.pipeline.lock import project_lock

    paths = ProjectPaths(root) if root else ProjectPaths.discover()
    nb = notebook or paths.notebook("tracking")
    out_dir = paths.reports / "tracking"
    ok = True
    with project_lock(paths.reports, "sveval track", wait=wait):
        executor.clean_work_folders(out_dir, all_=True)
        manifest = executor.Manifest(paths.reports / ".sveval" / "tracking-manifest.json", section="tracking")
        catalog = Catalog.load(paths.parameters)
        for sp in spec_paths:
            sp = Path(sp).resolve()
            spec = load_spec(sp)
            out = out_dir / f"{spec.id}.ipynb"
            files = load_long(spec.data, sp, paths, catalog).files
            key = executor.cache_key(notebook=nb, inputs=[sp, *sorted(paths.parameters.glob("*.yaml"))],
                                     data=files)
            prev = manifest.get(spec.id)
            if not force and prev.get("status") == "completed" and prev.get("cache_key") == key:
                try:
                    nbformat.read(str(out), as_version=4)
                    continue
                except (OSError, ValueError):
                    pass  # missing or corrupted: run again
            work = executor.work_folder(out_dir, spec.id)
            try:
                ex = executor.execute(nb, out, {"spec_path": str(sp), "root": str(paths.root),
                                                "out_dir": str(out_dir)},
                                      work=work, cwd=paths.root, retries=retries, timeout=timeout,
                                      pool=pool)
            finally:
                import shutil

                shutil.rmtree(work, ignore_errors=True)
            if not ex.ok:
                print(f"tracking '{spec.id}' failed: {ex.error} (see {out})", file=sys.stderr)
                ok = False
            manifest.update(spec.id, {
                "status": "completed" if ex.ok else "failed", "cache_key": key if ex.ok else None,
                "error": ex.error, "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return ok


def project_plan(parameters_dir: Path | str, rules, measure: str):
    """The plan of cells the project's tracking report and returns publish, for a record's measure.

    Builds the monthly tables of the tracking report named by ``parameters/returns.yaml``
    (``tracking``, default ``partnership``) for its protected measures only (their monthly tables,
    hence the plan, are the same as in the full report; no charts or annual comparisons are
    computed) and returns their plan (:func:`sveval.pipeline.disclosure.plan_cells`, as
    :meth:`TrackingResult.cell_plan`), read from the project's plan cache when ``sveval track``,
    ``sveval returns`` or another evaluation computed it for the same data. None when there is no
    such report, it fails its data checks, or it does not track ``measure``: the record's observed
    months are then suppressed (:func:`control_record`).
    """
    import yaml

    from sveval.catalog import Catalog
    from sveval.errors import DataError
    from sveval.pipeline.disclosure import plan_cache_dir, plan_cells

    params = Path(parameters_dir)
    try:
        doc = yaml.safe_load((params / "returns.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        doc = {}
    spec_path = params / "tracking" / f"{doc.get('tracking') or 'partnership'}.yaml"
    if not spec_path.exists():
        return None
    try:
        spec = load_spec(spec_path)
        catalog = Catalog.load(params)
        ids = list(spec.measures) or list(catalog.measures)
        keep = [m for m in ids if m in catalog.measures and rules.protects(catalog.measures[m].disclosure)
                and rules.rule(catalog.measures[m].disclosure).secondary]
        if measure not in keep:
            return None
        # what track() computes for the monthly tables, with its checks
        spec = spec.model_copy(update={"measures": keep})
        paths = ProjectPaths(params.parent)
        measures, areas, comp = _resolve(spec, catalog, spec_path)
        long = _checked(_load_long(spec, spec_path.resolve(), paths, catalog), measures)
        pcode, _ = _partnership(catalog)
        monthly = pd.concat([m for _, m, _, _ in _monthly_tables(long, measures, areas, comp, pcode, catalog,
                                                                   spec_path)], ignore_index=True)
        _check_baseline(period_totals(monthly, {spec.baseline_year: fy_months(spec.baseline_year)}),
                        spec.baseline_year)
    except (SpecError, DataError, OSError, KeyError):
        return None
    return plan_cells(monthly, rules, {m.id: m.parent for m in measures if m.parent},
                      cache_dir=plan_cache_dir(paths.root))
