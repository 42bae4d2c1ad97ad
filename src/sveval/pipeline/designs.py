"""The design registry: from a prepared evaluation context to a design's inputs and its Result.

Designs (``sveval.designs``) never see the evaluation context: each takes frames and options and
returns a :class:`~sveval.result.Result`. This module is the one place that turns a context into
those inputs, so adding a design means a ``fit_<design>`` function in ``sveval/designs/`` plus one
entry in :data:`DESIGNS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sveval.errors import DataError, EstimationError, SpecError
from sveval.periods import PERIOD_NOUN, from_index, index_of, period_from_index, period_index
from sveval.pipeline.context import EvaluationContext
from sveval.result import Result
from sveval.spec import ITSOptions, SynthOptions

if TYPE_CHECKING:
    from sveval.designs.did_panel import DidPanel

# Each design's module is imported when that design runs: validating or running an ITS evaluation
# does not pay for pyfixest and the DiD estimators (about 1.3 s of imports), nor DiD for ITS.


# ------------------------------------------------------------------------------------------------
# ITS
# ------------------------------------------------------------------------------------------------
def run_its(ctx: EvaluationContext) -> Result:
    """Run the ITS design of an evaluation context (:func:`sveval.pipeline.context.prepare`)."""
    from sveval.designs.its import fit_its

    spec = ctx.spec
    opts: ITSOptions = spec.its
    comparison = ctx.comparison_series() if spec.comparison is not None else None
    breaks = tuple((b["period"], b.get("name", b["period"])) for b in (ctx.measure.breaks or []))
    try:
        return fit_its(
            ctx.series(), ctx.intervention_start, opts, kind=ctx.measure.kind,
            better_if=ctx.measure.better_if, comparison=comparison, breaks=breaks, end=ctx.end,
        )
    except EstimationError as exc:
        raise EstimationError(f"{ctx.spec_path}: {exc}") from exc




# ------------------------------------------------------------------------------------------------
# DiD
# ------------------------------------------------------------------------------------------------
def run_did(ctx: EvaluationContext) -> Result:
    """Run the DiD design of an evaluation context."""
    from sveval.designs.did import evaluate_panel

    panel = panel_from_context(ctx)
    return evaluate_panel(panel, ctx.spec.did, better_if=ctx.measure.better_if)


def _cohorts_from_intervention(ctx: EvaluationContext, key: str) -> dict[str, str]:
    """Unit -> start from the registry's ``intervention.cohorts`` (:class:`~sveval.spec.CohortSpec`)."""
    out: dict[str, str] = {}
    for c in ctx.intervention.cohorts:
        for u in getattr(c, key):
            out[str(u)] = c.start
    return out


def panel_from_context(ctx: EvaluationContext) -> DidPanel:
    """Build the DiD panel an evaluation asks for (``did.unit`` = area or lsoa)."""
    from sveval.designs.did_panel import exclude_months, make_panel

    opts = ctx.spec.did if ctx.spec.design == "did" else None
    unit_kind = getattr(opts, "unit", "area") if opts is not None else "area"
    outcome = getattr(opts, "outcome", "auto") if opts is not None else "auto"
    if outcome == "auto" and ctx.measure.kind == "continuous":
        outcome = "continuous"  # no rates, no events prevented: effects on the measure's own scale
    if unit_kind == "area":
        p = ctx.panel()
        cohorts = _cohorts_from_intervention(ctx, "areas")
        cohorts = {a: cohorts.get(a, ctx.intervention_start) for a in ctx.treated}
        panel = make_panel(p, cohorts, unit="area_code", outcome=outcome, unit_kind="area",
                           rate_per=ctx.measure.rate_per)
    else:
        panel = _lsoa_panel(ctx, outcome)
    if opts is not None and getattr(opts, "covid", "none") == "exclude":
        panel = exclude_months(panel, opts.covid_start, opts.covid_end)
    return panel


def _lsoa_panel(ctx: EvaluationContext, outcome: str) -> DidPanel:
    from sveval.designs.did_panel import make_panel

    lp = ctx.lsoa_panel
    cohorts = _cohorts_from_intervention(ctx, "lsoas")
    if not cohorts:
        if not ctx.intervention.lsoas:
            raise SpecError(
                ctx.spec_path,
                [("did.unit", "lsoa", f"intervention '{ctx.intervention.id}' names no LSOAs or cohorts; "
                  "use did.unit: area, or list the treated LSOAs in interventions.yaml")],
            )
        cohorts = {lsoa: ctx.intervention_start for lsoa in ctx.intervention.lsoas}
    comp = ctx.spec.comparison
    treated_set = set(cohorts)
    if comp is not None and comp.lsoas:
        known = set(lp["lsoa_code"])
        problems = [(f"comparison.lsoas.{i}", c, "a treated LSOA cannot also be a comparison")
                    for i, c in enumerate(comp.lsoas) if c in treated_set]
        problems += [(f"comparison.lsoas.{i}", c, f"no '{ctx.measure.id}' rows for this LSOA in the "
                      "treated areas' data (check the code against the LSOA lookup)")
                     for i, c in enumerate(comp.lsoas) if c not in known and c not in treated_set]
        if problems:
            raise SpecError(ctx.spec_path, problems)
        keep = treated_set | set(comp.lsoas)
    elif comp is not None and comp.rule == "untreated_lsoas_same_areas":
        areas = set(lp.loc[lp["lsoa_code"].isin(treated_set), "area_code"])
        keep = set(lp.loc[lp["area_code"].isin(areas), "lsoa_code"])
    else:
        keep = treated_set | set(lp.loc[lp["area_code"].isin(ctx.comparison), "lsoa_code"])
    lp = lp[lp["lsoa_code"].isin(keep)]
    absent = sorted(treated_set - set(lp["lsoa_code"]))
    if absent:
        raise DataError(f"treated LSOA(s) {absent[:5]} have no '{ctx.measure.id}' rows in the data")
    # Fill the whole evaluation window (LSOA event data are sparse: a month with no event has no row)
    full = pd.DataFrame({"period": [period_from_index(i) for i in
                                    range(period_index(ctx.start), period_index(ctx.end) + 1)]})
    units = sorted(lp["lsoa_code"].unique())
    grid = full.merge(pd.DataFrame({"lsoa_code": units}), how="cross")
    lp = grid.merge(lp[["period", "lsoa_code", "count"]], on=["period", "lsoa_code"], how="left")
    lp["count"] = lp["count"].fillna(0.0)
    # LSOA populations are not part of the data contract: LSOA outcomes are counts
    return make_panel(lp, cohorts, unit="lsoa_code", population=None,
                      outcome="count" if outcome == "auto" else outcome, unit_kind="LSOA",
                      rate_per=ctx.measure.rate_per, fill_zero=True)


# ------------------------------------------------------------------------------------------------
# Synthetic control
# ------------------------------------------------------------------------------------------------
def _wide(ctx: EvaluationContext, opts: SynthOptions) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    p = ctx.panel()
    label = "+".join(ctx.treated)
    p = p.assign(unit=np.where(p["area_code"].isin(ctx.treated), label, p["area_code"]))
    p = p.groupby(["unit", "period"], as_index=False).agg(count=("count", "sum"), population=("population", "sum"))
    if opts.outcome == "rate":
        if (p["population"] <= 0).any() or p["population"].isna().any():
            raise EstimationError("synth.outcome 'rate' needs populations for every area and month")
        p["y"] = p["count"] / p["population"] * ctx.measure.rate_per
    else:
        p["y"] = p["count"]
    if ctx.granularity == "month":
        p["t"] = p["period"].map(period_index)
    else:
        p["t"] = p["period"].map(lambda q: index_of(q, ctx.granularity))
    return p.pivot(index="unit", columns="t", values="y"), p, label


#: synthetic control's frequency of each data granularity (financial years are yearly)
SYNTH_FREQUENCY = {"month": "month", "quarter": "quarter", "year": "year", "financial_year": "year"}


def run_synth(ctx: EvaluationContext) -> Result:
    """Run the synthetic-control design of an evaluation context."""
    from sveval.designs.synth import evaluate_wide

    opts = ctx.spec.synth
    wide, long, label = _wide(ctx, opts)
    donors = [d for d in wide.index if d != label]
    per = PERIOD_NOUN[ctx.granularity]
    unit_desc = (f"rate per {ctx.measure.rate_per:,} population per {per}" if opts.outcome == "rate"
                 else f"count per {per}")
    pop = long[long["unit"] == label].set_index("t")["population"]
    freq = SYNTH_FREQUENCY[ctx.granularity]
    if opts.frequency and opts.frequency != freq:
        raise SpecError(ctx.spec_path, [("synth.frequency", opts.frequency, f"measure "
                                         f"'{ctx.measure.id}' is by {per}: use {freq} or leave it out")])
    start = (period_index(ctx.intervention_start) if ctx.granularity == "month"
             else index_of(ctx.intervention_start, ctx.granularity))
    result = evaluate_wide(wide, label, start, donors, opts,
                           better_if=ctx.measure.better_if, unit_desc=unit_desc,
                           events_per_unit=(pop / ctx.measure.rate_per) if opts.outcome == "rate" else None,
                           frequency=freq, demean=True)
    if ctx.granularity == "financial_year":  # yearly to synth; labelled as financial years again
        fy = {str(y): from_index(y, "financial_year") for y in wide.columns}
        series = result.series.assign(period=result.series["period"].astype(str).map(lambda q: fy.get(q, q)))
        prevented = result.prevented
        if prevented is not None:
            prevented = dataclasses.replace(prevented, period_start=fy.get(prevented.period_start, prevented.period_start),
                                            period_end=fy.get(prevented.period_end, prevented.period_end))
        result = dataclasses.replace(result, series=series, prevented=prevented)
    return result




#: design key in the parameter file -> function from a prepared context to a Result
DESIGNS: dict[str, Callable[[EvaluationContext], Result]] = {
    "its": run_its,
    "did": run_did,
    "synth": run_synth,
}


def check_inputs(ctx: EvaluationContext) -> None:
    """Checks of the design's inputs that need the data, run at validation (before anything runs):
    an LSOA-level DiD builds its panel here, so a bad ``comparison.lsoas`` or a treated LSOA
    without data is refused by ``sveval validate``, not when the model is fitted."""
    if ctx.spec.design == "did" and ctx.spec.did.unit == "lsoa":
        panel_from_context(ctx)


def run_design(ctx: EvaluationContext) -> Result:
    """Run the evaluation's design (the ``design`` key of the parameter file)."""
    try:
        runner = DESIGNS[ctx.spec.design]
    except KeyError:  # pragma: no cover - the spec schema admits only registered designs
        raise SpecError(ctx.spec_path, [("design", ctx.spec.design, f"no such design; have {sorted(DESIGNS)}")]) from None
    result = runner(ctx)
    notes = list(getattr(ctx, "period_notes", []) or [])
    if notes:  # a quarterly or yearly measure: say how months given were mapped to its periods
        result = dataclasses.replace(result, warnings=tuple(notes) + tuple(result.warnings))
    return result
