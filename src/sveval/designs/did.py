"""The difference-in-differences design (``design: did``): one front end for every estimator.

``did.estimator`` in the parameter file picks the headline estimator:

========== ==============================================================================
2x2        unit means before/after the start, treated vs comparison
twfe       two-way fixed effects, unit and month, linear (difference per unit-month)
poisson_fe Poisson fixed effects for counts with population exposure (rate ratio)
event_study leads and lags with binned end points, joint pre-trend test
staggered  Callaway-Sant'Anna group-time ATTs (never- or not-yet-treated controls), shown
           beside TWFE and Gardner's did2s, with a warning when they disagree
========== ==============================================================================

Whatever the headline, the result carries the same diagnostics: a pre-trend test, a placebo
in time (a fake start in the pre-period, wild-bootstrapped), placebo-in-space randomisation
inference, pre-period balance of levels and trends, and power / minimum detectable effect.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sveval.designs import did_estimators as est
from sveval.designs.did_inference import codes, randomisation_test
from sveval.designs.did_panel import DidPanel, covid_bounds
from sveval.designs.staggered import staggered_from_panel
from sveval.errors import EstimationError
from sveval.result import Check, CheckName, Effect, Power, Prevented, Result
from sveval.spec import DiDOptions

DESIGN_KEY = {"2x2": "did", "twfe": "twfe", "poisson_fe": "twfe", "event_study": "event_study",
              "staggered": "staggered"}


# ------------------------------------------------------------------------------------------------
def evaluate_panel(panel: DidPanel, opts: DiDOptions | None = None, better_if: str = "lower",
                   alpha: float = 0.05) -> Result:
    """Fit the DiD estimator ``opts.estimator`` to ``panel`` with all diagnostics.

    Parameters
    ----------
    panel : the unit x month panel with treatment timing
    opts : DiD options (defaults: TWFE, automatic inference)
    better_if : direction in which the measure improves
    """
    opts = opts or DiDOptions()
    covid = (opts.covid_start, opts.covid_end) if opts.covid == "indicator" else None
    G = panel.n_units
    warnings: list[str] = []
    effects: list[Effect] = []
    tables: dict[str, pd.DataFrame] = {}
    details: dict[str, Any] = {
        "estimator": opts.estimator, "outcome": panel.outcome_label, "unit": panel.unit_kind,
        "units": G, "treated_units": panel.n_treated_units, "months": panel.n_periods,
        "cohorts": [panel.period_of(c) for c in panel.cohorts],
        "comparison_units": sorted(panel.frame.loc[~panel.frame["treated"], "unit"].unique().tolist()),
        "vcov": opts.vcov,
    }
    diagnostics: list[Check] = []
    unit_desc = panel.outcome_label

    twfe = est.twfe(panel, opts.inference, opts.bootstrap_draws, alpha, covid, vcov=opts.vcov)
    few = est.few_treated(panel) and opts.inference == "auto" and opts.estimator != "staggered"
    details["inference"] = "time_permutation" if few else opts.inference
    if opts.estimator == "staggered":
        main, extra_effects, cs_checks, cs_tables, cs_details, series = _staggered(panel, opts, twfe, alpha, better_if, warnings)
        effects += [main, *extra_effects]
        diagnostics += cs_checks
        tables.update(cs_tables)
        details.update(cs_details)
        method = (f"Callaway-Sant'Anna DiD ({opts.control_group.replace('_', '-')} controls), "
                  f"overall ATT averaged over cohorts; {unit_desc}; influence-function standard errors "
                  f"clustered by {panel.unit_kind}")
        fit_for_power = (main.estimate, (main.ci_high - main.ci_low) / (2 * 1.96), "difference")
        prevented = _prevented_staggered(panel, tables["group_time"], main)
        rr = _implied_rate_ratio(panel, prevented, main)
        if rr is not None:
            effects.insert(1, rr)
    else:
        if opts.estimator == "twfe":
            fit = twfe
        elif opts.estimator == "poisson_fe":
            if not panel.counts_events:
                raise EstimationError(f"did.estimator 'poisson_fe' models event counts; this outcome is "
                                      f"{panel.outcome} (use twfe, 2x2, event_study or staggered)")
            fit = est.poisson_fe(panel, alpha, covid, vcov=opts.vcov)
        elif opts.estimator == "2x2":
            fit = est.two_by_two(panel, opts.inference, opts.bootstrap_draws, alpha, vcov=opts.vcov)
        elif opts.estimator == "event_study":
            fit = est.event_study(panel, tuple(opts.event_window), alpha, covid, vcov=opts.vcov)
        else:  # pragma: no cover - the spec's Literal forbids it
            raise EstimationError(f"unknown DiD estimator {opts.estimator!r}")
        if few:
            if fit.name in ("poisson_fe", "twfe", "2x2"):
                fit = est.with_time_permutation(panel, fit, alpha, covid)
            twfe = est.with_time_permutation(panel, twfe, alpha, covid)
            details["cluster_interval"] = list(fit.extra.get("cluster_interval", (np.nan, np.nan)))
        main = _effect(fit, better_if, unit_desc)
        effects.append(main)
        if fit.name != "twfe":
            effects.append(_effect(twfe, better_if, unit_desc, name="TWFE (static) effect"))
        if fit.table is not None:
            tables[fit.name] = fit.table
            details[fit.name] = _small(fit.table)
        if few:
            family = "poisson" if fit.effect_scale == "rate_ratio" else "linear"
            diagnostics.append(_pretrend_blocks_check(est.pretrend_blocks(panel, family, covid)))
            why = (f"not computed: with {panel.n_treated_units} treated {panel.unit_kind} the event-study "
                   "covariance (cluster-robust) is unreliable, and both analyses rest on it")
            diagnostics += [Check(CheckName.PARALLEL_TRENDS_SENSITIVITY, "Rambachan-Roth sensitivity of the "
                                  "post-period effect to violations of parallel trends", detail=why),
                            Check(CheckName.PRE_TREND_POWER, "power of the pre-trend test against a linear "
                                  "divergence (Roth 2022)", detail=why)]
        if opts.estimator == "event_study" and not few:
            diagnostics.append(_pretrend_check(fit.extra["pre_trend"], G))
            diagnostics += sensitivity_checks_from_fit(fit, panel.outcome_label)
        elif opts.estimator not in ("2x2", "event_study"):
            es = est.event_study(panel, tuple(opts.event_window), alpha, covid, vcov=opts.vcov)
            tables["event_study"] = es.table
            details["event_study"] = _small(es.table)
            if not few:
                diagnostics.append(_pretrend_check(es.extra["pre_trend"], G))
                diagnostics += sensitivity_checks_from_fit(es, panel.outcome_label)
        method = f"{_NAMES[fit.name]}; {unit_desc}; {fit.inference}"
        if few:
            method += (". With one treated area, cluster-robust errors and the wild cluster bootstrap are "
                       "unreliable and re-assigning treatment over the comparison areas cannot give a p-value "
                       f"below 1/{G}; the treated area's many months can: its residuals from the model fitted "
                       "under each null effect are permuted in moving blocks over time")
        series = _series(panel, fit)
        prevented = _prevented(panel, fit)
        fit_for_power = (fit.coef, fit.se, fit.effect_scale)

    if few:
        warnings.append(
            f"Only {panel.n_treated_units} treated {panel.unit_kind} among {G}: the headline interval uses "
            "time-permutation (conformal) inference over the treated area's months, not cluster-robust "
            f"errors (cluster-robust interval {_fmt_interval(fit, details)} for reference, far too narrow "
            "with one treated cluster). The placebo-in-space p-value cannot go below "
            f"{1 / G:.2f} with {G} {panel.unit_kind}s."
        )
    elif G < est.FEW_CLUSTERS:
        warnings.append(
            f"Only {G} {panel.unit_kind}s ({panel.n_treated_units} treated): cluster-robust standard errors "
            "are unreliable with so few clusters"
            + ("; linear estimates use the wild cluster bootstrap" if opts.inference != "cluster" else "")
            + ". Read the placebo-in-space p-value beside the headline interval."
        )
    diagnostics.append(_placebo_in_time(panel, opts, alpha, few=few, covid=covid,
                                        family="poisson" if opts.estimator == "poisson_fe" else "linear"))
    if opts.randomisation_draws > 0:
        diagnostics.append(_placebo_in_space(panel, opts, covid))
    bal_check, bal_table, trends = _balance(panel)
    diagnostics.append(bal_check)
    tables["balance"] = bal_table
    tables["trends"] = trends
    for c in diagnostics:
        if c.passed is False:
            warnings.append(f"Check '{c.name}' failed: {c.detail}")
    power = _power(panel, *fit_for_power, alpha=alpha)
    if panel.granularity != "month":  # a panel of quarters or years: say so where the text says months
        method = _in_periods(method, panel)
        warnings = [_in_periods(w, panel) for w in warnings]
        details["granularity"] = panel.granularity
        diagnostics = [dataclasses.replace(c, description=_in_periods(c.description, panel),
                                           detail=_in_periods(c.detail, panel)) for c in diagnostics]
    return Result(
        design=DESIGN_KEY[opts.estimator], method=method, effects=tuple(effects), prevented=prevented,
        series=series, diagnostics=tuple(diagnostics), power=power, warnings=tuple(warnings),
        n_obs=int(len(panel.frame)), details=details, tables=tables,
    )


_MONTH_WORDS = (("unit-months", "unit-{n}s"), ("unit-month", "unit-{n}"), ("month effects", "{n} effects"),
                ("post months", "post {n}s"), ("the months", "the {n}s"), ("'s months", "'s {n}s"),
                ("-month blocks", "-{n} blocks"), (" months", " {n}s"), ("reference month", "reference {n}"),
                ("per month", "per {n}"))


def _in_periods(text: str | None, panel: DidPanel) -> str | None:
    """The text of a monthly panel said of a panel of quarters or years ("unit and year effects")."""
    if not text:
        return text
    for a, b in _MONTH_WORDS:
        text = text.replace(a, b.format(n=panel.period_noun))
    return text


_NAMES = {
    "twfe": "two-way fixed effects DiD (unit and month effects)",
    "poisson_fe": "Poisson fixed-effects DiD (unit and month effects, population exposure)",
    "2x2": "2x2 DiD on unit means before and after the start",
    "event_study": "event-study DiD, post coefficients averaged",
}


def _effect(fit: est.DidFit, better_if: str, unit_desc: str, name: str | None = None) -> Effect:
    """A DiD fit as an effect on its own scale: a rate ratio (Poisson FE) or a difference in the
    outcome's units (``unit_desc``: events per unit-month, rate per 100,000, log points...)."""
    lo, hi = fit.interval
    label = name or {"twfe": "TWFE effect", "poisson_fe": "Rate ratio (Poisson FE)",
                     "2x2": "2x2 DiD effect", "event_study": "Event-study average post effect",
                     "did2s": "did2s effect"}[fit.name]
    desc = ("rate ratio of treated to counterfactual" if fit.effect_scale == "rate_ratio"
            else f"difference in the {unit_desc}")
    return Effect(label, fit.effect_scale, fit.estimate, lo, hi, fit.p_value, better_if,
                  f"{desc}; {fit.inference}",
                  unit="" if fit.effect_scale == "rate_ratio" else unit_desc)


def _small(table: pd.DataFrame, max_rows: int = 60) -> dict[str, list]:
    t = table.head(max_rows)
    return {c: t[c].tolist() for c in t.columns}


# ------------------------------------------------------------------------------------------------
# Parallel-trends sensitivity (Rambachan and Roth 2023) and pre-trend test power (Roth 2022)
# ------------------------------------------------------------------------------------------------
#: leads (before -1) and lags (from 0) entering the sensitivity analysis: the interior event times
#: nearest the start (binned end points excluded); more would make the relative-magnitudes sets slow
SENSITIVITY_LEADS, SENSITIVITY_LAGS = 5, 6


def sensitivity_checks_from_fit(fit: est.DidFit, unit: str) -> list[Check]:
    """:func:`sensitivity_checks` on an event-study fit's leads and lags (binned ends left out)."""
    ks = np.asarray(fit.extra.get("event_times", []), float)
    if not len(ks):
        return []
    keep = ~np.isin(ks, list(fit.extra.get("binned", ())))
    return sensitivity_checks(fit.extra["beta"][keep], fit.extra["V"][np.ix_(keep, keep)], ks[keep], unit,
                              source="event-study coefficients")


def sensitivity_checks(beta: np.ndarray, V: np.ndarray, event_times: np.ndarray, unit: str,
                       source: str) -> list[Check]:
    """How much parallel trends may fail before the conclusion changes, and what the pre-trend test
    could detect.

    Uses the leads ``-1-SENSITIVITY_LEADS..-2`` and lags ``0..SENSITIVITY_LAGS-1`` of ``beta``
    (relative to ``e = -1``) with covariance ``V``; the target is the average of those lags.
    Returns the ``parallel_trends_sensitivity`` check (Rambachan-Roth sets under relative
    magnitudes, C-LF, and smoothness, FLCI, with breakdown values) and the ``pre_trend_power``
    check (Roth 2022: the linear divergence the joint Wald pre-test detects with 50% and 80%
    power, and the bias such a divergence causes in the target).
    """
    from sveval.designs.honest import honest_bounds
    from sveval.designs.pretrends import pretrend_power, slope_for_power

    e = np.asarray(event_times, float)
    pre = np.flatnonzero((e <= -2) & (e >= -1 - SENSITIVITY_LEADS))
    post = np.flatnonzero((e >= 0) & (e < SENSITIVITY_LAGS))
    if len(pre) < 2 or len(post) < 1:
        note = (f"needs at least two leads before -1 and one lag in the {source}; have {len(pre)} and "
                f"{len(post)}")
        return [Check(CheckName.PARALLEL_TRENDS_SENSITIVITY, "Rambachan-Roth sensitivity of the "
                      "post-period effect to violations of parallel trends", detail="not computed: " + note),
                Check(CheckName.PRE_TREND_POWER, "power of the pre-trend test against a linear divergence "
                      "(Roth 2022)", detail="not computed: " + note)]
    idx = np.r_[pre, post]
    b, S = np.asarray(beta, float)[idx], np.asarray(V, float)[np.ix_(idx, idx)]
    npre, npost = len(pre), len(post)
    l_vec = np.full(npost, 1.0 / npost)
    target = float(l_vec @ b[npre:])
    rm = honest_bounds(b, S, npre, npost, method="rm", l_vec=l_vec)
    sd = honest_bounds(b, S, npre, npost, method="sd", l_vec=l_vec)
    window = f"event times {int(e[pre].min())}..-2 and 0..{int(e[post].max())} of the {source}"

    def holds(res) -> str:
        name = "Mbar" if res.parameter == "Mbar" else "M"
        if res.original_lb <= 0 <= res.original_ub:
            return "the interval includes no change even with exactly parallel trends"
        if res.breakdown is None:
            return f"the conclusion is lost as soon as any violation is allowed ({name} = {res.grid[1]:.3g})"
        more = " (it still holds at the largest value tried)" if res.breakdown_censored else ""
        return f"the conclusion (an interval excluding no change) holds up to {name} = {res.breakdown:.3g}{more}"

    text = (f"Average effect over lags 0..{int(e[post].max())}: {target:+.3g} {unit}. Relative magnitudes "
            "(post-start departures from parallel trends up to Mbar times the largest pre-start one): "
            f"{holds(rm)}. Smoothness (the trend difference may change slope by up to M {unit} per period): "
            f"{holds(sd)}.")
    sens = Check(CheckName.PARALLEL_TRENDS_SENSITIVITY,
                 "Rambachan-Roth robust intervals for the average post-period effect when parallel trends "
                 "may fail (relative magnitudes, C-LF; smoothness, FLCI)",
                 statistic=rm.breakdown, passed=None, detail=text,
                 data={"window": window, "target": target, "relative_magnitudes": rm.to_dict(),
                       "smoothness": sd.to_dict()})
    rel = e[idx]
    s50 = slope_for_power(S, rel, target_power=0.5, test="wald")
    s80 = slope_for_power(S, rel, target_power=0.8, test="wald")
    p80 = pretrend_power(b, S, rel, test="wald", slope=s80)
    bias80 = float(l_vec @ np.asarray(p80.bias_without_pretest, float)) if p80.bias_without_pretest is not None else float("nan")
    ptxt = (f"The joint Wald pre-trend test on the leads would detect a linear divergence of {s50:.3g} {unit} "
            f"per period half the time and of {s80:.3g} with 80% probability. A divergence of {s80:.3g} per "
            f"period would bias the average post-period effect by about {bias80:+.3g} {unit} (estimate "
            f"{target:+.3g}): a passed pre-trend test rules out only divergences of about that size.")
    power = Check(CheckName.PRE_TREND_POWER, "power of the pre-trend test against a linear divergence in "
                  "trends (Roth 2022)", statistic=s80, passed=None, detail=ptxt,
                  data={"window": window, "slope_50": s50, "slope_80": s80, "bias_at_slope_80": bias80,
                        "target": target, "at_slope_80": p80.to_dict()})
    return [sens, power]


# ------------------------------------------------------------------------------------------------
# Staggered adoption
# ------------------------------------------------------------------------------------------------
def _staggered(panel: DidPanel, opts: DiDOptions, twfe: est.DidFit, alpha: float, better_if: str,
               warnings: list[str]):
    cs = staggered_from_panel(panel, opts.control_group, alpha)
    lo_e, hi_e = opts.event_window
    grp = cs.aggregate("group")
    dyn = cs.aggregate("dynamic", uniform_draws=999, min_e=lo_e, max_e=hi_e)
    simple = cs.aggregate("simple")
    desc = f"difference in the {panel.outcome_label}"
    main = Effect("Overall ATT (Callaway-Sant'Anna, cohort average)", "difference", grp.overall.estimate,
                  grp.overall.ci_low, grp.overall.ci_high, grp.overall.p_value, better_if,
                  f"{desc}; average of cohort ATTs weighted by cohort size", unit=panel.outcome_label)
    extra = [
        Effect("ATT by event time, average of post months in window", "difference", dyn.overall.estimate,
               dyn.overall.ci_low, dyn.overall.ci_high, dyn.overall.p_value, better_if, desc,
               unit=panel.outcome_label),
        Effect("ATT simple average of post group-time cells", "difference", simple.overall.estimate,
               simple.overall.ci_low, simple.overall.ci_high, simple.overall.p_value, better_if, desc,
               unit=panel.outcome_label),
        _effect(twfe, better_if, panel.outcome_label, name="TWFE (static) effect"),
    ]
    try:
        d2 = est.did2s(panel, alpha)
        extra.append(_effect(d2, better_if, panel.outcome_label, name="did2s (Gardner) effect"))
    except Exception as exc:  # pragma: no cover - the cross-check must not sink the evaluation
        warnings.append(f"The did2s cross-check could not be fitted: {exc}")
    gt = cs.gt.copy()
    gt["group"] = gt["group"].astype(int).map(panel.period_of)
    gt["period"] = gt["time"].astype(int).map(panel.period_of)
    by_cohort = grp.table.rename(columns={"key": "cohort"})
    by_cohort["cohort"] = by_cohort["cohort"].astype(int).map(panel.period_of)
    by_cohort["n_units"] = [int((cs.unit_group == g).sum()) for g in grp.table["key"]]
    by_event = dyn.table.rename(columns={"key": "event_time"})
    tables = {"group_time": gt, "by_cohort": by_cohort, "event_study": by_event}
    # pre-trend: joint Wald of the event-time leads in the window (e <= -2; e = -1 is a real
    # comparison under the varying base period)
    leads = [e for e in by_event["event_time"] if e <= -2]
    stat, dfree, p = dyn.wald(leads)
    checks = [Check("pre_trend", "joint Wald test that Callaway-Sant'Anna event-time effects before the "
                    f"start ({lo_e}..-2 months) are all zero", stat, p, None if np.isnan(p) else bool(p > 0.05),
                    f"chi-square {stat:.2f} on {dfree} df, p = {p:.3f}", {"df": dfree})]
    # parallel-trends sensitivity on event-time effects relative to e = -1 (universal base period,
    # as Rambachan and Roth's analysis of Callaway-Sant'Anna needs)
    try:
        cs_u = staggered_from_panel(panel, opts.control_group, alpha, base_period="universal")
        dyn_u = cs_u.aggregate("dynamic", min_e=lo_e, max_e=hi_e)
        keys = dyn_u.table["key"].to_numpy(float)
        V_u = dyn_u.inf.T @ dyn_u.inf / dyn_u.inf.shape[0] ** 2
        checks += sensitivity_checks(dyn_u.table["estimate"].to_numpy(float), V_u, keys,
                                     panel.outcome_label, source="Callaway-Sant'Anna event-time effects "
                                     "(universal base period)")
    except EstimationError as exc:  # pragma: no cover - reported, never fatal
        warnings.append(f"The parallel-trends sensitivity analysis could not be computed: {exc}")
    # agreement with TWFE
    agree = (twfe.ci_low <= main.estimate <= twfe.ci_high) and (main.ci_low <= twfe.coef <= main.ci_high)
    checks.append(Check(
        "estimator_agreement", "heterogeneity-robust (Callaway-Sant'Anna) and two-way fixed effects "
        "estimates lie within each other's intervals", twfe.coef - main.estimate, None, bool(agree),
        f"CS {main.estimate:+.3f} vs TWFE {twfe.coef:+.3f}",
        {"cs": main.estimate, "twfe": twfe.coef}))
    if not agree:
        warnings.append(
            f"TWFE ({twfe.coef:+.3f}) and Callaway-Sant'Anna ({main.estimate:+.3f}) disagree: with "
            "staggered timing and effects that vary by cohort or over time TWFE is biased; prefer the "
            "Callaway-Sant'Anna estimate."
        )
    if panel.n_units < est.FEW_CLUSTERS:
        warnings.append("Callaway-Sant'Anna standard errors are asymptotic in the number of units; "
                        f"with {panel.n_units} units treat its intervals as approximate.")
    details = {"by_cohort": _small(by_cohort), "event_study": _small(by_event),
               "pretrend_all_cells": {"statistic": cs.pretrend_stat, "df": cs.pretrend_df, "p_value": cs.pretrend_p},
               "uniform_band_critical_value": dyn.crit_uniform, "control_group": opts.control_group}
    series = _series_staggered(panel, gt, cs)
    return main, extra, checks, tables, details, series


def _series_staggered(panel: DidPanel, gt: pd.DataFrame, cs) -> pd.DataFrame:
    f = panel.frame[panel.frame["treated"]]
    agg = "sum" if panel.outcome == "count" else "mean"
    obs = f.groupby("t")["y"].agg(agg)
    sizes = {g: int((cs.unit_group == g).sum()) for g in np.unique(cs.unit_group) if g > 0}
    n_tr = sum(sizes.values())
    eff = pd.Series(0.0, index=obs.index)
    var = pd.Series(0.0, index=obs.index)
    post_cells = cs.gt[cs.gt["post"]]
    for _, r in post_cells.iterrows():
        w = sizes[r["group"]] if panel.outcome == "count" else sizes[r["group"]] / n_tr
        eff[int(r["time"])] += w * r["estimate"]
        var[int(r["time"])] += (w * r["se"]) ** 2
    cf = obs - eff
    sd = np.sqrt(var)
    post = obs.index >= panel.first_start
    return pd.DataFrame({
        "period": [panel.period_of(int(t)) for t in obs.index], "observed": obs.to_numpy(),
        "fitted": np.where(post, obs.to_numpy(), np.nan), "counterfactual": cf.to_numpy(),
        "cf_low": (cf - 1.96 * sd).to_numpy(), "cf_high": (cf + 1.96 * sd).to_numpy(), "post": post,
    })


def _prevented_staggered(panel: DidPanel, gt: pd.DataFrame, main: Effect) -> Prevented | None:
    """Events prevented: minus the sum over post cells of ATT(g, t) x the cohort's exposure.

    The exposure of cell (g, t) is the cohort's number of units for counts, and its population
    over ``rate_per`` for rates. None for continuous and log outcomes (they count no events).
    """
    if not panel.counts_events:
        return None
    f = panel.frame[panel.frame["treated"]]
    if panel.outcome == "count":
        expo = f.groupby(["cohort", "t"])["unit"].nunique().astype(float)
    else:
        expo = f.groupby(["cohort", "t"])["population"].sum() / panel.rate_per
    cells = gt[gt["post"]]
    keys = pd.MultiIndex.from_arrays([cells["group"].map(panel.index_of), cells["period"].map(panel.index_of)])
    tot = float(-(cells["estimate"].to_numpy() * expo.reindex(keys).fillna(0.0).to_numpy()).sum())
    # interval: scale the headline interval by the same events-per-unit-of-effect factor
    scale = tot / -main.estimate if main.estimate != 0 else 0.0
    lo, hi = sorted([-main.ci_high * scale, -main.ci_low * scale])
    post = panel.frame[panel.frame["D"] == 1]
    return Prevented(tot, lo, hi, panel.period_of(int(post["t"].min())),
                     panel.period_of(int(post["t"].max())), int(post["t"].nunique()), "events")


def _implied_rate_ratio(panel: DidPanel, prevented: Prevented | None, main: Effect) -> Effect | None:
    """The overall ATT as a rate ratio: observed treated events after the start over the
    counterfactual (observed + prevented), with the interval carried over from the ATT's."""
    if prevented is None or panel.outcome != "count":
        return None
    obs = float(panel.frame.loc[panel.frame["D"] == 1, "count"].sum())
    vals = [obs / (obs + x) if obs + x > 0 else float("nan")
            for x in (prevented.estimate, prevented.ci_high, prevented.ci_low)]
    return Effect("Rate ratio implied by the overall ATT (observed / counterfactual events)", "rate_ratio",
                  vals[0], vals[1], vals[2], main.p_value, main.better_if,
                  "treated units' observed events after their start divided by the counterfactual "
                  "(observed plus the events prevented by the group-time ATTs); interval from the ATT's")


# ------------------------------------------------------------------------------------------------
# Series, prevented, power
# ------------------------------------------------------------------------------------------------
def _series(panel: DidPanel, fit: est.DidFit) -> pd.DataFrame:
    f = panel.frame.assign(fitted=fit.fitted, cf=fit.counterfactual)
    f = f[f["treated"]]
    agg = "sum" if panel.outcome == "count" or fit.effect_scale == "rate_ratio" else "mean"
    col = "count" if fit.effect_scale == "rate_ratio" else "y"
    g = f.groupby("t")
    obs, fitted, cf = g[col].agg(agg), g["fitted"].agg(agg), g["cf"].agg(agg)
    # counterfactual band from the effect interval (the effect is the only uncertain part of the
    # counterfactual that the DiD identifies)
    if fit.effect_scale == "rate_ratio":
        low = (f["fitted"] * np.exp(-fit.ci_high * f["D"])).groupby(f["t"]).sum()
        high = (f["fitted"] * np.exp(-fit.ci_low * f["D"])).groupby(f["t"]).sum()
    else:
        shift = (fit.fitted - fit.counterfactual)[panel.frame["treated"].to_numpy()]
        ratio_lo = fit.ci_low / fit.coef if fit.coef else 1.0
        ratio_hi = fit.ci_high / fit.coef if fit.coef else 1.0
        s = pd.Series(shift, index=f.index)
        a = (f["fitted"] - s * ratio_lo).groupby(f["t"]).agg(agg)
        b = (f["fitted"] - s * ratio_hi).groupby(f["t"]).agg(agg)
        low, high = np.minimum(a, b), np.maximum(a, b)
    post = obs.index >= panel.first_start
    out = pd.DataFrame({
        "period": [panel.period_of(int(t)) for t in obs.index], "observed": obs.to_numpy(),
        "fitted": fitted.to_numpy(), "counterfactual": cf.to_numpy(),
        "cf_low": np.asarray(low, float), "cf_high": np.asarray(high, float), "post": post,
    })
    for c in ("cf_low", "cf_high"):
        out[c] = out[c].where(out["post"], out["counterfactual"])
    return out


def _to_events(panel: DidPanel, values: pd.Series) -> pd.Series:
    """Convert per-row outcome values to event counts."""
    if panel.outcome == "rate":
        return values * panel.frame.loc[values.index, "population"] / panel.rate_per
    return values


def _prevented(panel: DidPanel, fit: est.DidFit) -> Prevented | None:
    """Events prevented over the post period; None for continuous and log outcomes."""
    if not panel.counts_events:
        return None
    f = panel.frame
    post = (f["D"] == 1).to_numpy()
    if not post.any():
        return None
    if fit.effect_scale == "rate_ratio":
        cf = fit.counterfactual[post]
        vals = [float(np.sum(cf * (1 - np.exp(c)))) for c in (fit.coef, fit.ci_high, fit.ci_low)]
    else:
        diff = pd.Series(fit.counterfactual - fit.fitted, index=f.index)[post]
        tot = float(_to_events(panel, diff).sum())
        vals = [tot] + [tot * c / fit.coef if fit.coef else 0.0 for c in (fit.ci_high, fit.ci_low)]
    lo, hi = sorted(vals[1:])
    t = f.loc[post, "t"]
    return Prevented(vals[0], lo, hi, panel.period_of(int(t.min())), panel.period_of(int(t.max())),
                     int(t.nunique()), "events")


def _power(panel: DidPanel, coef: float, se: float, scale: str, alpha: float = 0.05,
           target: float = 0.8, threshold: float = 0.3) -> Power:
    """Analytic power from the estimate's standard error (normal approximation).

    The minimum detectable effect is ``(z_{1-alpha/2} + z_{power}) x SE``, expressed as a
    proportional fall relative to the treated units' counterfactual mean in the post period.
    """
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(target)
    f = panel.frame
    if scale == "rate_ratio":
        mde = float(1 - np.exp(-(z_a + z_b) * se))

        def pw(drop: float) -> float:
            return float(stats.norm.cdf(abs(np.log(1 - drop)) / se - z_a))
    else:
        base = float(f.loc[f["D"] == 1, "y"].mean() - coef)
        if not np.isfinite(base) or base <= 0:
            base = float(f.loc[f["treated"] & (f["D"] == 0), "y"].mean())
        mde = float((z_a + z_b) * se / base) if base > 0 else None

        def pw(drop: float) -> float:
            return float(stats.norm.cdf(drop * base / se - z_a)) if base > 0 else float("nan")
    power_at = {f"{d:.2f}": pw(d) for d in (0.1, 0.2, 0.3, 0.5)}
    return Power(mde=mde, target_power=target, alpha=alpha,
                 post_months=int(f.loc[f["D"] == 1, "t"].nunique()), power_at=power_at, n_sim=0,
                 underpowered=bool(mde is None or mde > threshold), threshold=threshold,
                 method="analytic: normal approximation with the estimate's standard error")


# ------------------------------------------------------------------------------------------------
# Diagnostics
# ------------------------------------------------------------------------------------------------
def _pretrend_check(pre: dict, G: int) -> Check:
    p = pre.get("p_value", float("nan"))
    blocks = pre.get("blocks", 0)
    leads = pre.get("leads", 0)
    how = (f"all {leads} leads" if blocks == leads else f"{leads} leads averaged into {blocks} blocks "
           f"(the clustered covariance has rank at most {G - 1})")
    return Check("pre_trend", f"joint Wald test that event-study leads are zero ({how}), F with {G - 1} df",
                 pre.get("statistic"), p, None if p is None or np.isnan(p) else bool(p > 0.05),
                 f"F = {pre.get('statistic', float('nan')):.2f}, p = {p:.3f}"
                 + ("; cluster-robust Wald tests over-reject with few clusters" if G < est.FEW_CLUSTERS else ""),
                 {k: v for k, v in pre.items()})


def _fmt_interval(fit, details: dict) -> str:
    lo, hi = details.get("cluster_interval", (np.nan, np.nan))
    if getattr(fit, "effect_scale", "") == "rate_ratio":
        lo, hi = np.exp(lo), np.exp(hi)
    return f"{lo:.3g} to {hi:.3g}"


def _pretrend_blocks_check(pre: dict) -> Check:
    p = pre.get("p_value", float("nan"))
    ok = None if p is None or np.isnan(p) else bool(p > 0.05)
    return Check(
        "pre_trend",
        f"joint Wald test that the treated unit's pre-period deviations, in {pre.get('blocks', 0)} blocks of "
        f"{pre.get('block_months', 12)} months before the last pre-year, are zero "
        f"({pre.get('family', '')} fixed effects, heteroskedasticity-robust chi-square; a clustered test "
        "over-rejects with one treated cluster)",
        pre.get("statistic"), p, ok,
        f"chi-square {pre.get('statistic', float('nan')):.2f} on {pre.get('df', 0)} df, p = {p:.3f}",
        {k: v for k, v in pre.items()})


def _placebo_in_time(panel: DidPanel, opts: DiDOptions, alpha: float, few: bool = False,
                     covid: tuple[str, str] | None = None, family: str = "linear") -> Check:
    """A fake start halfway through the pre-period, on pre-period data only.

    TWFE with the design's inference, or, with few treated units, the same time-permutation
    inference as the headline (Poisson or linear)."""
    f = panel.frame
    first = panel.first_start
    pre = f[f["t"] < first]
    tmin = int(pre["t"].min())
    fake = tmin + (first - tmin) // 2
    if few:
        # the fake post period must be a short block for moving-block permutations to be informative:
        # as long as the real post period, at most a third of the pre-period, ending at the real start
        n_post = int(f.loc[f["D"] == 1, "t"].nunique())
        fake = first - max(1, min(n_post, (first - tmin) // 3))
    if first - tmin < 12:
        return Check("placebo_in_time", "TWFE with a fake start in the pre-period", None, None, None,
                     f"pre-period too short for a placebo in time (needs 12 {panel.period_noun}s)")
    fr = pre.copy()
    fr["cohort"] = np.where(fr["treated"], fake, -1)
    fr["D"] = (fr["treated"] & (fr["t"] >= fake)).astype(np.int64)
    p2 = DidPanel(fr.reset_index(drop=True), panel.outcome, panel.unit_kind, panel.rate_per, panel.granularity)
    if few:
        base = (est.poisson_fe(p2, alpha, covid, vcov=opts.vcov) if family == "poisson"
                else est.twfe(p2, "cluster", alpha=alpha, covid=covid, vcov=opts.vcov))
        fit = est.with_time_permutation(p2, base, alpha, covid)
        if family == "poisson":  # report on the rate-ratio scale
            return Check("placebo_in_time",
                         f"Poisson FE on pre-period data with a fake start {panel.period_of(fake)}; no effect "
                         "expected (time-permutation inference)",
                         fit.estimate, fit.p_value, bool(fit.p_value > 0.05),
                         f"placebo rate ratio {fit.estimate:.3f} ({np.exp(fit.ci_low):.3f} to "
                         f"{np.exp(fit.ci_high):.3f}), p = {fit.p_value:.3f}; {fit.inference}",
                         {"fake_start": panel.period_of(fake), "estimate": fit.estimate,
                          "ci_low": float(np.exp(fit.ci_low)), "ci_high": float(np.exp(fit.ci_high))})
    else:
        fit = est.twfe(p2, opts.inference, min(opts.bootstrap_draws, 999), alpha, vcov=opts.vcov)
    return Check("placebo_in_time",
                 f"TWFE on pre-period data with a fake start {panel.period_of(fake)}; no effect expected",
                 fit.coef, fit.p_value, bool(fit.p_value > 0.05),
                 f"placebo effect {fit.coef:+.3f} ({fit.ci_low:+.3f} to {fit.ci_high:+.3f}), p = {fit.p_value:.3f}; {fit.inference}",
                 {"fake_start": panel.period_of(fake), "estimate": fit.coef, "ci_low": fit.ci_low,
                  "ci_high": fit.ci_high})


def _placebo_in_space(panel: DidPanel, opts: DiDOptions, covid) -> Check:
    f = panel.frame
    fe_cols = [codes(f["unit"].to_numpy()), codes(f["t"].to_numpy())]
    if covid is not None:
        a, b = covid_bounds(panel, covid)
        fe_cols.append(codes((f["treated"] & f["t"].between(a, b)).to_numpy()))
    cohort_of = panel.unit_cohorts()
    cmap = {u: int(c) for u, c in cohort_of.items() if c >= 0}
    r = randomisation_test(f["y"].to_numpy(), f["unit"].to_numpy(), f["t"].to_numpy(), cmap,
                           np.column_stack(fe_cols), draws=opts.randomisation_draws)
    qs = np.quantile(r.placebo_estimates, [0.025, 0.975]) if len(r.placebo_estimates) else [np.nan, np.nan]
    kind = "all" if r.exhaustive else "random"
    return Check("placebo_in_space",
                 f"randomisation inference: treatment timings reassigned to other {panel.unit_kind}s "
                 f"({kind} {r.draws} assignments), TWFE re-estimated",
                 r.estimate, r.p_value, None,
                 f"actual TWFE {r.estimate:+.3f}; placebo 95% range {qs[0]:+.3f} to {qs[1]:+.3f}; "
                 f"randomisation p = {r.p_value:.3f}",
                 {"draws": r.draws, "exhaustive": r.exhaustive,
                  "placebo_estimates": [float(x) for x in np.sort(r.placebo_estimates)[:500]]})


def _balance(panel: DidPanel) -> tuple[Check, pd.DataFrame, pd.DataFrame]:
    """Pre-period balance of levels and trends, and the trends table for the figure."""
    f = panel.frame
    pre = f[f["t"] < panel.first_start]
    unit_means = pre.groupby("unit").agg(y=("y", "mean"), treated=("treated", "first"))
    # unit-specific linear trend (per year) in the pre-period
    slopes = pre.groupby("unit").apply(
        lambda d: np.polyfit((d["t"] - d["t"].min()) / float(panel.per_year), d["y"], 1)[0]
        if d["t"].nunique() > 2 else np.nan,
        include_groups=False,
    )
    unit_means["slope"] = slopes
    rows = []
    for label, flag in (("treated", True), ("comparison", False)):
        u = unit_means[unit_means["treated"] == flag]
        rows.append({"group": label, "units": len(u), "pre_mean": u["y"].mean(), "pre_sd": u["y"].std(ddof=1),
                     "pre_trend_per_year": u["slope"].mean(), "trend_sd": u["slope"].std(ddof=1)})
    table = pd.DataFrame(rows)
    sd_pooled = np.sqrt(np.nanmean([table.loc[0, "pre_sd"] ** 2, table.loc[1, "pre_sd"] ** 2]))
    std_diff = float((table.loc[0, "pre_mean"] - table.loc[1, "pre_mean"]) / sd_pooled) if sd_pooled > 0 else float("nan")
    t_sl = unit_means.loc[unit_means["treated"], "slope"].dropna()
    c_sl = unit_means.loc[~unit_means["treated"], "slope"].dropna()
    p_trend = float("nan")
    if len(t_sl) >= 2 and len(c_sl) >= 2:
        p_trend = float(stats.ttest_ind(t_sl, c_sl, equal_var=False).pvalue)
    elif len(t_sl) == 1 and len(c_sl) >= 2:
        # one treated unit: where does its slope fall among the comparison slopes?
        p_trend = float((1 + np.sum(np.abs(c_sl - c_sl.mean()) >= abs(t_sl.iloc[0] - c_sl.mean()))) / (1 + len(c_sl)))
    table["std_diff_mean"] = [std_diff, np.nan]
    check = Check(
        "balance", "pre-period balance: level (standardised difference of unit means; DiD allows level "
        "differences) and linear trend per year (treated vs comparison, Welch test or rank with one treated unit)",
        std_diff, p_trend, None if np.isnan(p_trend) else bool(p_trend > 0.05),
        f"standardised level difference {std_diff:+.2f}; pre-trend per year treated "
        f"{table.loc[0, 'pre_trend_per_year']:+.3f} vs comparison {table.loc[1, 'pre_trend_per_year']:+.3f} "
        f"(p = {p_trend:.3f})",
        {"table": {c: table[c].tolist() for c in table.columns}},
    )
    trends = f.groupby(["t", "treated"])["y"].mean().unstack("treated").rename(
        columns={True: "treated", False: "comparison"}).reset_index()
    trends["period"] = trends["t"].map(lambda t: panel.period_of(int(t)))
    trends = trends[["period", "treated", "comparison"]]
    trends.columns.name = None
    return check, table, trends
