"""Interrupted time series (ITS) design, single-series and controlled.

:func:`fit_its` fits a segmented regression to a monthly series (see
:mod:`sveval.designs.its_design` for the terms and :mod:`sveval.designs.its_models` for the
estimators), and returns a :class:`~sveval.result.Result` with

* ``effects`` - the **headline is the level change** (``level_change``): for count models a rate
  ratio (0.8 = 20% lower than the counterfactual once the effect is in place, i.e. after any lag
  and phase-in), for Gaussian models a difference in the measure's units. Then ``slope_change``
  (rate ratio per year, or difference per year) and ``average_post_effect`` (model-based ratio, or
  mean difference, of the fitted series to the counterfactual over the whole post period; this
  combines level and slope change and is the better single summary when the slope changes).
  Further change points add ``level_change_2``, ``slope_change_2``, ...;
* ``series`` - observed, fitted, counterfactual and its 95% interval (``cf_low``/``cf_high``,
  from 2,000 draws of the coefficients), ``post`` and ``group``;
* ``prevented`` - events prevented over the post period: counterfactual minus observed, summed
  over the post months used in the fit, with a 95% interval from the same draws (count outcomes);
* ``diagnostics`` - ``autocorrelation``, ``overdispersion`` (count outcomes), ``placebo_in_time``,
  ``sensitivity_date``, ``sensitivity_seasonality``;
* ``power`` - simulated power and minimum detectable effect (:func:`sveval.designs.power.its_power`).

The checks and the power study refit the model many times; ``arima`` and ``negbin`` refits use the
exact maximum-likelihood estimators of :mod:`sveval.designs.its_refit` (the same optimum as the
statsmodels fit of the headline, a hundred times faster).

The default model (``model: auto``) is chosen by the kind of measure and justified by the Monte
Carlo benchmark ``benchmarks/its_coverage.py``: counts (and rates modelled as counts with a
population offset) use the AR(1)-aware quasi-Poisson model with Wald intervals when the
pre-period averages at least ``LOW_COUNT`` (5) events a month, and below that quasi-Poisson
without AR terms with profile-likelihood intervals (:mod:`sveval.designs.its_profile`);
continuous measures use GLS with AR(1) errors by REML with Kackar-Harville / Satterthwaite
small-sample inference. ``interval`` and ``ar_order`` in the parameter file override the choice.

Example
-------
>>> import numpy as np, pandas as pd
>>> from sveval.spec import add_months, ITSOptions
>>> rng = np.random.default_rng(1)
>>> periods = [add_months("2018-04", i) for i in range(72)]
>>> y = rng.poisson(np.where(np.arange(72) >= 48, 24.0, 30.0))
>>> df = pd.DataFrame({"period": periods, "count": y, "population": 100_000.0})
>>> res = fit_its(df, "2022-04", ITSOptions(covid="none", power_sims=0, placebo=False,
...                                         sensitivity_months=0))
>>> res.headline.name, res.headline.scale
('level_change', 'rate_ratio')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sveval.designs.its_choice import LOW_COUNT, outcome_scale, resolve_inference, resolve_model  # noqa: F401
from sveval.designs.its_design import ITSDesign, build_design
from sveval.designs.its_models import COUNT_MODELS, ModelFit, fit_model
from sveval.designs.its_refit import refit_model
from sveval.errors import DataError, OptionError
from sveval.periods import (
    PERIOD_NOUN,
    index_of,
    months_to_periods,
    parse_any_period,
    to_granularity,
)
from sveval.result import Check, Effect, Prevented, Result
from sveval.spec import ITSOptions, add_months, parse_period, period_index

N_DRAWS = 2000
SEED = 20240601


@dataclass(frozen=True)
class ITSFit:
    """A fitted ITS model with its design (what checks and power need to refit)."""

    fit: ModelFit
    design: ITSDesign
    model: str
    kind: str
    options: ITSOptions
    outcome: str = "count"  # count | rate_per_100k: what a difference effect is measured in

    @property
    def log_link(self) -> bool:
        return self.fit.link == "log"

    def unit(self, per_year: bool = False) -> str:
        """The unit of a difference effect on this model's outcome (empty for rate ratios)."""
        if self.log_link:
            return ""
        per = PERIOD_NOUN[self.design.granularity]
        if self.kind == "continuous":
            base = f"measure units per {per}"
        elif self.outcome == "rate_per_100k":
            base = f"rate per 100,000 population per {per}"
        else:
            base = f"events per {per}"
        return base + (", change per year" if per_year else "")


def fit_core(
    data: pd.DataFrame,
    intervention_start: str,
    options: ITSOptions,
    *,
    kind: str = "count",
    comparison: pd.DataFrame | None = None,
    breaks: tuple[tuple[str, str], ...] = (),
    refit: bool = False,
) -> ITSFit:
    """Build the design and fit the model, without effects, diagnostics or power.

    ``refit=True`` (the checks' refits) fits ``arima`` and ``negbin`` with the fast exact
    estimators of :mod:`sveval.designs.its_refit` instead of statsmodels.
    """
    model = resolve_model(options, kind)
    if kind == "continuous" and model in COUNT_MODELS:
        raise DataError(f"model '{model}' is a count model but the measure is continuous; use ols, "
                        "newey_west, gls_ar or arima")
    design = build_design(
        data, intervention_start, options, comparison=comparison, breaks=breaks,
        count_model=model in COUNT_MODELS, outcome=outcome_scale(kind, model, data),
    )
    f = design.frame
    ar_order, interval, _ = resolve_inference(options, model, design)
    fit = (refit_model if refit else fit_model)(
        model, f["y"].to_numpy(float), design.X, f["offset"].to_numpy(float), design.columns,
        f["t"].to_numpy(float), design.series_id, design.included, ar_order=ar_order, interval=interval,
    )
    return ITSFit(fit=fit, design=design, model=model, kind=kind, options=options,
                  outcome=outcome_scale(kind, model, data))


def headline_of(core: ITSFit, better_if: str = "lower") -> Effect:
    """The level-change effect of the first intervention date."""
    return _coef_effect(core, "level_1", "level_change", better_if)


def _coef_effect(core: ITSFit, key: str, name: str, better_if: str, per_year: bool = False) -> Effect:
    col = core.design.effect_columns[key]
    b, se, lo, hi, p = core.fit.coef(col)
    mult = float(core.design.per_year) if per_year else 1.0
    b, lo, hi = b * mult, lo * mult, hi * mult
    if core.log_link:
        scale, est, lo, hi = "rate_ratio", math.exp(b), math.exp(lo), math.exp(hi)
    else:
        scale, est = "difference", b
    what = "per year" if per_year else "once the effect is in place"
    desc = (
        f"{'change in trend' if per_year else 'change in level'} {what} "
        f"({'rate ratio' if scale == 'rate_ratio' else 'difference in the measure'})"
    )
    return Effect(name=name, scale=scale, estimate=est, ci_low=lo, ci_high=hi, p_value=p,
                  better_if=better_if, description=desc, unit=core.unit(per_year))


def _draw_series(core: ITSFit, n_draws: int, seed: int):
    d = core.design
    f = d.frame
    off = f["offset"].to_numpy(float)
    rng = np.random.default_rng(seed)
    B = core.fit.draws(n_draws, rng)
    Xc = d.counterfactual_X()
    eta_f = B @ d.X.T + off
    eta_c = B @ Xc.T + off
    if core.log_link:
        return np.exp(np.clip(eta_f, -700, 700)), np.exp(np.clip(eta_c, -700, 700))
    return eta_f, eta_c


UNBOUNDED_SE = 10.0  # a log-rate-ratio standard error this large means the data do not bound the effect


def _unbounded_effect(core: ITSFit) -> bool:
    """True when a level or slope coefficient is not bounded by the data (Wald se huge or an
    infinite profile-likelihood bound), as when no events follow the intervention."""
    fit = core.fit
    for col in core.design.effect_columns.values():
        i = fit.names.index(col)
        if not np.isfinite(fit.bse[i]) or fit.bse[i] > UNBOUNDED_SE:
            return True
        if fit.profile is not None:
            _, _, lo, hi, _ = fit.coef(col)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                return True
    return False


def _effects_series_prevented(core: ITSFit, better_if: str, seed: int):
    d, fit = core.design, core.fit
    f = d.frame
    off = f["offset"].to_numpy(float)
    fitted = fit.mean(d.X, off)
    cf = fit.mean(d.counterfactual_X(), off)
    Ff, Fc = _draw_series(core, N_DRAWS, seed)
    treated = (f["group"] == "treated").to_numpy()
    post = f["post"].to_numpy(bool)
    inc = d.included
    tp = treated & post
    tpi = tp & inc

    effects = [headline_of(core, better_if)]
    if "slope_1" in d.effect_columns:
        effects.append(_coef_effect(core, "slope_1", "slope_change", better_if, per_year=True))
    # Average post-period effect (model-based), over the post months used in the fit
    if core.log_link:
        ratio = Ff[:, tpi].sum(1) / Fc[:, tpi].sum(1)
        est = float(fitted[tpi].sum() / cf[tpi].sum())
        lo, hi = np.quantile(ratio, [0.025, 0.975])
        p = float(min(1.0, 2 * min(np.mean(ratio >= 1), np.mean(ratio <= 1))))
        desc = "fitted / counterfactual over the whole post period (level and slope change)"
        if _unbounded_effect(core):
            # (near-)separation, e.g. no events after the intervention: the coefficient draws say
            # nothing, so the interval is reported as not bounded by the data rather than as numbers
            lo, hi, p = 0.0, math.inf, 1.0
            desc += "; the post period has too few events to bound it"
        effects.append(Effect("average_post_effect", "rate_ratio", est, float(lo), float(hi), p, better_if, desc))
    else:
        diff = (Ff[:, tpi] - Fc[:, tpi]).mean(1)
        est = float((fitted[tpi] - cf[tpi]).mean())
        lo, hi = np.quantile(diff, [0.025, 0.975])
        p = float(min(1.0, 2 * min(np.mean(diff >= 0), np.mean(diff <= 0))))
        effects.append(Effect("average_post_effect", "difference", est, float(lo), float(hi), p, better_if,
                              "mean of fitted minus counterfactual over the whole post period",
                              unit=core.unit()))
    for j in range(2, len(d.intervention_index) + 1):
        effects.append(_coef_effect(core, f"level_{j}", f"level_change_{j}", better_if))
        if f"slope_{j}" in d.effect_columns:
            effects.append(_coef_effect(core, f"slope_{j}", f"slope_change_{j}", better_if, per_year=True))

    lo_c = np.quantile(Fc, 0.025, axis=0)
    hi_c = np.quantile(Fc, 0.975, axis=0)
    series = pd.DataFrame({
        "period": f["period"].to_numpy(),
        "observed": f["y"].to_numpy(float),
        "fitted": fitted,
        "counterfactual": np.where(post, cf, fitted),
        "cf_low": np.where(post, lo_c, np.nan),
        "cf_high": np.where(post, hi_c, np.nan),
        "post": post,
        "group": f["group"].to_numpy(),
        "included": inc,
    })
    prevented = None
    if core.fit.link == "log" or core.kind == "count":
        obs = float(f["y"].to_numpy(float)[tpi].sum())
        sims = Fc[:, tpi].sum(1) - obs
        periods = f.loc[tp, "period"]
        prevented = Prevented(
            estimate=float(cf[tpi].sum() - obs), ci_low=float(np.quantile(sims, 0.025)),
            ci_high=float(np.quantile(sims, 0.975)), period_start=str(periods.min()),
            period_end=str(periods.max()), months=int(tpi.sum()), unit="events",
        )
    return effects, series, prevented


def _coef_table(core: ITSFit) -> pd.DataFrame:
    fit = core.fit
    rows = []
    for i, name in enumerate(fit.names):
        b, se, lo, hi, p = fit.coef(name)
        rows.append({"term": name, "estimate": b, "se": se, "ci_low": lo, "ci_high": hi, "p_value": p,
                     "df": fit.df_of(i)})
    return pd.DataFrame(rows)


def fit_its(
    data: pd.DataFrame,
    intervention_start: str,
    options: ITSOptions | None = None,
    *,
    kind: str = "count",
    better_if: str = "lower",
    comparison: pd.DataFrame | None = None,
    breaks: tuple = (),
    end: str | None = None,
) -> Result:
    """Fit an interrupted time series (controlled when ``comparison`` is given).

    Parameters
    ----------
    data : monthly series: ``period`` (YYYY-MM), ``count`` and optionally ``population`` (NaN = no
        offset). For ``kind='rate'`` with a Gaussian model the outcome is count / population x 1e5.
    intervention_start : first month of the intervention (YYYY-MM)
    options : :class:`~sveval.spec.ITSOptions` (defaults if None); ``phase_in_months=None`` = 0
    kind : the measure's kind: ``count``, ``rate`` or ``continuous``
    better_if : ``lower`` or ``higher``: the direction in which the measure improves
    comparison : a comparison series (same columns) for controlled ITS
    breaks : recording-practice breaks as ``(period, name)`` tuples or ``{period, name}`` dicts
    end : last month to analyse (default: the last month of the data)

    Returns
    -------
    Result with design ``its`` (or ``cits``), effects (headline ``level_change``), series,
    prevented, diagnostics, power and warnings.
    """
    options = options or ITSOptions()
    from sveval.designs.its_design import series_granularity

    gran = series_granularity(data["period"], "treated") if "period" in data.columns else "month"
    if gran == "month":
        intervention_start = parse_period(intervention_start)
        pp = parse_period
    else:
        try:
            intervention_start, _ = to_granularity(intervention_start, gran)
        except ValueError as exc:
            raise DataError(f"intervention start: {exc}", column="period") from None
        pp = parse_any_period
    if kind not in ("count", "rate", "continuous"):
        raise OptionError(f"kind must be count, rate or continuous, got {kind!r}")
    brk = tuple(
        (pp(b["period"]), str(b.get("name", b["period"]))) if isinstance(b, dict) else (pp(b[0]), str(b[1]))
        for b in breaks
    )
    data = _restrict(data, end)
    comparison = _restrict(comparison, end) if comparison is not None else None
    core = fit_core(data, intervention_start, options, kind=kind, comparison=comparison, breaks=brk)
    effects, series, prevented = _effects_series_prevented(core, better_if, SEED)

    from sveval.designs import checks
    from sveval.designs import power as power_mod

    # placebo dates, date and seasonality sensitivity and power refit with the inference chosen here
    # (AR order and interval type), so a series near the low-count threshold is not judged by a
    # different model in its checks than in its headline
    if core.model in COUNT_MODELS:
        options = options.model_copy(update={
            "ar_order": len(core.fit.ar), "interval": "profile" if core.fit.profile is not None else "wald"})
    refit = _Refitter(data, comparison, options, kind, brk, better_if)
    diags: list[Check] = [checks.autocorrelation(core)]
    if core.log_link:
        diags.append(checks.overdispersion(core))
    if options.placebo:
        diags.append(checks.placebo_in_time(refit, intervention_start, effects[0]))
    if options.sensitivity_months > 0 and gran != "month":
        # the date is moved by whole periods: the months asked for, rounded up to periods
        shift = months_to_periods(options.sensitivity_months, gran)
        diags.append(checks.sensitivity_date(refit, intervention_start, effects[0], shift,
                                             unit=f"{PERIOD_NOUN[gran]}s"))
        diags.append(checks.sensitivity_seasonality(refit, intervention_start, effects[0]))
    elif options.sensitivity_months > 0:
        diags.append(checks.sensitivity_date(refit, intervention_start, effects[0], options.sensitivity_months))
        diags.append(checks.sensitivity_seasonality(refit, intervention_start, effects[0]))
    if comparison is not None:
        diags.append(_pre_trend_check(core))
    pw = None
    if options.power_sims > 0:
        pw = power_mod.its_power(
            data, intervention_start, options, kind=kind, better_if=better_if, comparison=comparison,
            breaks=brk, n_sim=options.power_sims, seed=SEED,
        )
    warnings = _warnings(core, effects, diags, pw, data, intervention_start)
    design_name = "cits" if comparison is not None else "its"
    f = core.design.frame
    details: dict[str, Any] = {
        "model": core.model,
        "interval": "profile likelihood" if core.fit.profile is not None else "wald",
        "ar_order": len(core.fit.ar),
        "kind": kind,
        "outcome": "count" if core.log_link else ("rate per 100,000" if outcome_scale(kind, core.model, data) == "rate_per_100k" else "value"),
        "headline": "level_change",
        "intervention_start": intervention_start,
        "change_points": list(options.change_points),
        "terms": core.design.columns,
        "ar": list(core.fit.ar),
        "scale": core.fit.scale,
        "dispersion": core.fit.dispersion,
        "nb_alpha": core.fit.alpha,
        "pre_months": int(((~f["post"]) & (f["group"] == "treated")).sum()),
        "post_months": int((f["post"] & (f["group"] == "treated")).sum()),
        "options": options.model_dump(mode="json"),
        "notes": list(core.design.notes),
        "coefficients": _coef_table(core).to_dict(orient="list"),
    }
    if gran != "month":
        # pre_months / post_months count periods of this granularity
        details["granularity"] = gran
    method = _method_text(core, comparison is not None)
    return Result(
        design=design_name, method=method, effects=tuple(effects), prevented=prevented,
        series=series.drop(columns=["included"]), diagnostics=tuple(diags), power=pw,
        warnings=tuple(warnings), n_obs=int(core.design.included.sum()), details=details,
        tables={"coefficients": _coef_table(core)},
    )


def _pre_trend_check(core: ITSFit) -> Check:
    """Controlled ITS: did the treated and comparison series trend alike before the start?

    Tests the ``treated:time`` term (the difference in baseline trends, fitted on the whole
    series with the intervention terms in the model). Comparable pre-trends are what makes the
    comparison credible (Maryland level 3); the estimate itself allows for different trends.
    """
    b, se, lo, hi, p = core.fit.coef("treated:time")
    k = core.design.per_year
    per_year = k * b
    scale = "log rate ratio" if core.log_link else "difference"
    passed = bool(p is not None and np.isfinite(p) and p >= 0.05)
    detail = (
        f"difference in baseline trend {per_year:+.3f} per year ({scale}), p = {p:.3f}: "
        + ("no evidence that the series trended differently before the start"
           if passed else "the treated and comparison series trended differently before the start")
    )
    return Check(
        name="pre_trend", description="Difference in baseline (pre-intervention) trend between the "
        "treated and comparison series", statistic=float(b / se) if se else None, p_value=float(p),
        passed=passed, detail=detail, data={"per_year": per_year, "ci_low": k * lo, "ci_high": k * hi},
    )


def _restrict(df: pd.DataFrame | None, end: str | None) -> pd.DataFrame | None:
    if df is None:
        return None
    out = df.copy()
    out["period"] = out["period"].astype(str)
    if end is not None:
        from sveval.designs.its_design import series_granularity

        gran = series_granularity(out["period"]) if len(out) else "month"
        if gran == "month":
            out = out[out["period"] <= parse_period(end)]
        else:
            try:
                last, _ = to_granularity(end, gran)
            except ValueError as exc:
                raise DataError(f"end: {exc}", column="period") from None
            out = out[out["period"].map(lambda q: index_of(q, gran)) <= index_of(last, gran)]
    return out.sort_values("period").reset_index(drop=True)


def _method_text(core: ITSFit, controlled: bool) -> str:
    o = core.options
    season = {"fourier": f"{o.fourier_terms} Fourier pair(s)", "month": "month indicators", "none": "no seasonality"}[o.seasonality]
    parts = [("Controlled " if controlled else "") + "interrupted time series (segmented regression)",
             core.fit.description, f"linear trend, {season}"]
    if o.slope_change:
        parts.append("level and slope change")
    else:
        parts.append("level change")
    gran = core.design.granularity
    if gran != "month":
        noun = PERIOD_NOUN[gran]
        parts[0] += f" on a series by {noun} (time in {noun}s)"
        if gran == "quarter":
            season = {"fourier": f"{min(o.fourier_terms, 2)} Fourier harmonic(s) of period 4",
                      "month": "quarter indicators", "none": "no seasonality"}[o.seasonality]
        else:
            season = "no seasonality (none within a year" + (
                f"; '{o.seasonality}' switched off)" if o.seasonality != "none" else ")")
        parts[2] = f"linear trend, {season}"
    if o.phase_in_months:
        parts.append(f"{o.phase_in_months}-month linear phase-in")
    if o.lag_months:
        parts.append(f"{o.lag_months}-month lag")
    if o.covid != "none":
        parts.append(f"COVID-19 {o.covid_start} to {o.covid_end} {'indicator' if o.covid == 'indicator' else 'excluded'}")
    if gran != "month" and (o.phase_in_months or o.lag_months or o.covid != "none"):
        parts.append(f"dates and durations in months mapped to {PERIOD_NOUN[gran]}s (see the notes)")
    brk = [c.split(":", 1)[1] for c in core.design.columns if c.startswith("break:")]
    if brk:
        parts.append("recording breaks: " + ", ".join(brk))
    return "; ".join(parts)


def _warnings(core, effects, diags, pw, data, start) -> list[str]:
    out = list(core.design.notes)
    d = core.design.frame
    tr = d[d["group"] == "treated"]
    if core.log_link:
        total_post = float(tr.loc[tr["post"], "y"].sum())
        per_month = float(tr["y"].mean())
        noun = PERIOD_NOUN[core.design.granularity]
        if per_month < 2:
            out.append(
                f"Low counts: about {per_month:.1f} events a {noun} ({total_post:.0f} in the post period); "
                "estimates are imprecise and small changes cannot be detected."
            )
    if pw is not None:
        p20 = pw.power_at.get("0.2")
        if p20 is not None and p20 < pw.target_power:
            out.append(f"Too few events to detect a 20% change reliably (power {p20:.0%} at a 20% change).")
        if pw.underpowered:
            mde = "more than 95%" if pw.mde is None else f"{100 * pw.mde:.0f}%"
            out.append(
                f"Underpowered: the smallest change detectable with {pw.target_power:.0%} power is {mde}, "
                f"above the {100 * pw.threshold:.0f}% threshold; a non-significant result is not evidence "
                "of no effect."
            )
    for c in diags:
        if c.passed is False:
            out.append(f"Check '{c.name}' raised a concern: {c.detail}")
    if core.model == "poisson":
        od = next((c for c in diags if c.name == "overdispersion"), None)
        if od is not None and od.statistic is not None and od.statistic > 1.5:
            out.append("The Poisson model ignores the overdispersion found; its intervals are too narrow. "
                       "Use quasipoisson or negbin.")
    return out


class _Refitter:
    """Refit the same ITS with another date, seasonality or data window (for checks)."""

    def __init__(self, data, comparison, options, kind, breaks, better_if):
        self.data, self.comparison, self.options = data, comparison, options
        self.kind, self.breaks, self.better_if = kind, breaks, better_if
        self._windows: dict = {}  # (which, end) -> the restricted frame, copied for each refit

    def _window(self, which: str, end: str | None) -> pd.DataFrame | None:
        key = (which, end)
        if key not in self._windows:
            self._windows[key] = _restrict(getattr(self, which), end)
        frame = self._windows[key]
        return None if frame is None else frame.copy()

    def __call__(self, intervention_start: str, *, end: str | None = None, **changes: Any) -> Effect:
        opts = self.options.model_copy(update=changes) if changes else self.options
        data = self._window("data", end)
        comp = self._window("comparison", end) if self.comparison is not None else None
        core = fit_core(data, intervention_start, opts, kind=self.kind, comparison=comp, breaks=self.breaks,
                        refit=True)
        return headline_of(core, self.better_if)

    @property
    def periods(self) -> list[str]:
        return list(self.data["period"])


__all__ = ["fit_its", "fit_core", "resolve_model", "ITSFit", "headline_of",
           "add_months", "period_index"]
