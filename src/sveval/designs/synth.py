"""Synthetic control for one treated area against a donor pool (``design: synth``).

The synthetic control is the convex combination of donor areas (weights >= 0 summing to 1) whose
monthly outcome best matches the treated area's over the whole pre-period (Abadie, Diamond &
Hainmueller 2010, with the pre-period outcomes as the predictors). Weights come from a
non-negative least-squares fit with the adding-up constraint imposed as a heavily weighted extra
row (scipy's NNLS: deterministic, no tuning). Several treated areas are pooled into one unit.

The headline interval and p-value come from conformal inference (Chernozhukov, Wuethrich & Zhu
2021): for each null effect the synthetic control is refitted on all periods and the treated
residuals are tested by moving-block permutations of the periods, valid for one treated area
however few the donors. Placebos in space (every donor in turn treated as if it were the treated
area; p-value = rank of the post/pre RMSPE ratio, never below 1 / (donors + 1)) are a check.
Monthly evaluations match trailing 12-month means and demean the series (Ferman & Pinto 2021),
since a few events a month are mostly noise month by month; the percent change is bounded below at
-100%.

The smoothing window follows the frequency of the series (:data:`FREQUENCY_SMOOTH`: 12 months, 4
quarters, none for years), given explicitly, in :class:`~sveval.spec.SynthOptions` or inferred from
the period index (:func:`infer_frequency`); an explicit ``smooth`` wins. On the yearly Proposition
99 panel the default is therefore unsmoothed, as in ADH (2010).

Covariates (:func:`synth_fit_predictors`): predictor means over chosen windows with the V weights of
ADH (2010) chosen by the nested optimisation of the R package Synth (or its regression-based V);
placebo units are refitted the same way and inference is ADH's (placebo gaps, RMSPE-ratio rank).

``SynthOptions.method = "sdid"`` gives synthetic difference-in-differences instead
(:func:`evaluate_sdid`, :mod:`sveval.designs.sdid`; Arkhangelsky et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

from sveval.designs import sdid as S
from sveval.errors import EstimationError, SpecError
from sveval.result import Check, Effect, Power, Prevented, Result
from sveval.spec import SynthOptions, period_from_index

PRE_RMSPE_FILTER = 5.0
#: monthly evaluations match (and judge the pre-period fit on) trailing 12-month mean rates
MONTHLY_SMOOTH = 12
#: default smoothing window by frequency: a year of periods for sub-annual data (seasonality and
#: noise averaged out), none for yearly data (Prop 99: ADH 2010 match the yearly outcomes)
FREQUENCY_SMOOTH: dict[str, int] = {"month": MONTHLY_SMOOTH, "quarter": 4, "year": 1}
Frequency = Literal["month", "quarter", "year"]
_WORD = {"month": "month", "quarter": "quarter", "year": "year", None: "period"}
_EVERY = {"month": "monthly", "quarter": "quarterly", "year": "yearly", None: "per-period"}


def infer_frequency(times) -> Frequency | None:
    """The frequency of an integer time index, or None when it is not one of the known encodings.

    Months are :func:`~sveval.periods.period_index` values (``12 * year + month - 1``, 12000 to
    35999 for years 1000-2999), quarters ``4 * year + quarter - 1`` (4000 to 11999) and years
    plain (1000 to 2999); anything else (e.g. ``0, 1, 2, ...``) is unknown.
    """
    t = np.asarray(times)
    if t.size == 0 or not np.issubdtype(t.dtype, np.number) or not np.all(t == np.round(t)):
        return None
    lo, hi = float(t.min()), float(t.max())
    for freq, (a, b) in (("year", (1000, 3000)), ("quarter", (4000, 12000)), ("month", (12000, 36000))):
        if a <= lo and hi < b:
            return freq  # type: ignore[return-value]
    return None


def resolve_frequency(times, frequency: str | None = None, opts: SynthOptions | None = None) -> Frequency | None:
    """Explicit ``frequency`` first, then ``opts.frequency``, then :func:`infer_frequency`."""
    f = frequency or (opts.frequency if opts is not None else None) or infer_frequency(times)
    if f is not None and f not in FREQUENCY_SMOOTH:
        raise SpecError(f"synth frequency must be one of {sorted(FREQUENCY_SMOOTH)}, got {f!r}")
    return f  # type: ignore[return-value]


def default_smooth(frequency: str | None) -> int:
    """Smoothing window implied by the frequency (1 when unknown)."""
    return FREQUENCY_SMOOTH.get(frequency, 1) if frequency else 1


def period_label(t: int, frequency: str | None) -> str:
    """``YYYY-MM`` for months, ``YYYY-Qn`` for quarters, ``YYYY`` for years, else the number."""
    t = int(t)
    if frequency == "month":
        return period_from_index(t)
    if frequency == "quarter":
        return f"{t // 4:04d}-Q{t % 4 + 1}"
    return str(t)


@dataclass(frozen=True)
class SynthFit:
    """A synthetic control: donor weights and the treated vs synthetic paths."""

    treated: str
    weights: pd.Series  # donor -> weight
    observed: pd.Series  # by time
    synthetic: pd.Series
    start: int  # first treated time
    pre_rmspe: float
    post_rmspe: float
    r2_pre: float
    r2_pre_raw: float = float("nan")  # R-squared of the unsmoothed series (= r2_pre without smoothing)
    smooth: int = 1
    demean: bool = False
    v_weights: pd.Series | None = None  # predictor -> V weight (covariate fits only)

    @property
    def gap(self) -> pd.Series:
        return self.observed - self.synthetic

    @property
    def ratio(self) -> float:
        return self.post_rmspe / self.pre_rmspe if self.pre_rmspe > 0 else np.inf

    @property
    def avg_post_gap(self) -> float:
        g = self.gap
        return float(g[g.index >= self.start].mean())


def synth_weights(y1: np.ndarray, Y0: np.ndarray) -> np.ndarray:
    """Simplex weights ``w`` minimising ``||y1 - Y0 w||`` (Y0: periods x donors)."""
    scale = max(float(np.abs(Y0).max()), 1e-9)
    lam = 1e3 * np.sqrt(len(y1))
    A = np.vstack([Y0 / scale, lam * np.ones((1, Y0.shape[1]))])
    b = np.concatenate([y1 / scale, [lam]])
    w, _ = optimize.nnls(A, b, maxiter=50 * Y0.shape[1] + 500)
    s = w.sum()
    if s <= 0:
        raise EstimationError("synthetic control weights could not be found")
    return w / s


def rolling_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Trailing ``k``-period means along axis 0 (only complete windows: ``len(a) - k + 1`` rows)."""
    a = np.asarray(a, float)
    if k <= 1:
        return a
    c = np.cumsum(np.concatenate([np.zeros((1, *a.shape[1:])), a]), axis=0)
    return (c[k:] - c[:-k]) / k


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    sst = float(np.sum((y - y.mean()) ** 2))
    return 1 - float(np.sum((y - yhat) ** 2)) / sst if sst > 0 else float("nan")


def synth_fit(wide: pd.DataFrame, treated: str, start: int, donors: list[str] | None = None,
              smooth: int | None = None, demean: bool = False, frequency: str | None = None) -> SynthFit:
    """Fit the synthetic control of ``treated`` (a row of ``wide``: units x times) from ``donors``.

    With ``smooth = k > 1`` the weights are chosen to match the trailing ``k``-period means of the
    pre-period (windows wholly before ``start``), and the pre-period R-squared is measured on them:
    for noisy monthly counts (a few events a month) matching every month fits noise, while matching
    the rolling 12-month rate matches level, trend and recording breaks (Abadie 2021 recommends
    matching pre-period averages rather than every noisy period). Gaps are on the original scale.

    With ``demean`` the treated and donor series are centred on their pre-period means before the
    weights are fitted, and the synthetic control carries the pre-period level difference as an
    intercept (the demeaned synthetic control of Ferman & Pinto 2021; Doudchenko & Imbens 2016):
    it matches trends rather than levels, so a treated area outside the donors' range of levels
    can still be fitted, and the pre-fit R-squared measures how well its trajectory is tracked.

    ``smooth`` defaults to the window of the series' ``frequency`` (:data:`FREQUENCY_SMOOTH`: 12 for
    months, 4 for quarters, 1 for years; ``frequency`` itself defaults to
    :func:`infer_frequency` of the columns); an explicit ``smooth`` wins.
    """
    if smooth is None:
        smooth = default_smooth(resolve_frequency(wide.columns, frequency))
    donors = [d for d in (donors if donors is not None else wide.index) if d != treated]
    if len(donors) < 2:
        raise EstimationError(f"a synthetic control needs at least 2 donor areas, got {len(donors)}")
    times = np.asarray(wide.columns)
    pre = times < start
    if pre.sum() < 6 + max(smooth - 1, 0) or (~pre).sum() < 1:
        word = _WORD.get(frequency or infer_frequency(times), "period")
        raise EstimationError(f"the synthetic control needs at least 6 pre-period {word}s (after smoothing) "
                              f"and 1 post-period {word}")
    y1 = wide.loc[treated].to_numpy(float)
    Y0 = wide.loc[donors].to_numpy(float).T
    y1s, Y0s = rolling_mean(y1[pre], smooth), rolling_mean(Y0[pre], smooth)
    c1, c0 = (y1[pre].mean(), Y0[pre].mean(axis=0)) if demean else (0.0, np.zeros(Y0.shape[1]))
    w = synth_weights(y1s - c1, Y0s - c0)
    synth = Y0 @ w + (c1 - c0 @ w)
    gap = y1 - synth
    pre_rmspe = float(np.sqrt(np.mean(gap[pre] ** 2)))
    post_rmspe = float(np.sqrt(np.mean(gap[~pre] ** 2)))
    r2_raw = _r2(y1[pre], synth[pre])
    r2 = _r2(y1s, Y0s @ w + (c1 - c0 @ w)) if smooth > 1 else r2_raw
    return SynthFit(treated, pd.Series(w, index=donors), pd.Series(y1, index=times),
                    pd.Series(synth, index=times), start, pre_rmspe, post_rmspe, r2, r2_raw, smooth, demean)


@dataclass(frozen=True)
class Predictor:
    """One predictor of Abadie, Diamond & Hainmueller (2010): the mean of ``variable`` over the
    times ``first`` to ``last`` (inclusive; ``last = first`` for one lagged outcome), missing
    values skipped (Synth's ``dataprep``)."""

    variable: str
    first: int
    last: int | None = None

    @property
    def name(self) -> str:
        last = self.first if self.last is None else self.last
        return f"{self.variable} {self.first}" + (f"-{last}" if last != self.first else "")


def predictor_table(panels: dict[str, pd.DataFrame], predictors) -> pd.DataFrame:
    """Units x predictors: each :class:`Predictor` (or ``(variable, first[, last])``) averaged.

    ``panels`` maps each variable to its units x times frame.
    """
    cols = {}
    for pr in predictors:
        pr = pr if isinstance(pr, Predictor) else Predictor(*pr)
        if pr.variable not in panels:
            raise SpecError(f"predictor variable {pr.variable!r} has no data (have {sorted(panels)})")
        frame = panels[pr.variable]
        last = pr.first if pr.last is None else pr.last
        sel = (np.asarray(frame.columns) >= pr.first) & (np.asarray(frame.columns) <= last)
        if not sel.any():
            raise SpecError(f"predictor {pr.name}: no times between {pr.first} and {last}")
        cols[pr.name] = frame.loc[:, sel].mean(axis=1, skipna=True)
    return pd.DataFrame(cols)


def predictor_weights(X1: np.ndarray, X0: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Simplex ``w`` minimising ``(X1 - X0 w)' diag(v) (X1 - X0 w)`` (X0: predictors x donors)."""
    r = np.sqrt(np.asarray(v, float))
    return synth_weights(r * X1, r[:, None] * X0)


def regression_v(X1: np.ndarray, X0: np.ndarray, Z1: np.ndarray, Z0: np.ndarray) -> np.ndarray:
    """Synth's regression-based V: the pre-period outcomes regressed on the (scaled) predictors
    across units with an intercept; ``V = diag(B B')`` normalised to sum to one."""
    A = np.column_stack([np.ones(X0.shape[1] + 1), np.column_stack([X1, X0]).T])
    Z = np.column_stack([Z1, Z0])
    B, *_ = np.linalg.lstsq(A, Z.T, rcond=None)
    v = np.sum(B[1:] ** 2, axis=1)
    return v / v.sum()


def fit_v(X1: np.ndarray, X0: np.ndarray, Z1: np.ndarray, Z0: np.ndarray,
          method: Literal["nested", "regression"] = "nested") -> tuple[np.ndarray, np.ndarray, float]:
    """Predictor weights V and donor weights W of the synthetic control with covariates.

    ``nested`` (Abadie, Diamond & Hainmueller 2010; the R package Synth): V minimises the
    pre-period outcome MSPE ``|Z1 - Z0 W(V)|^2 / T`` where ``W(V)`` solves the inner predictor
    problem; as in Synth, ``V = |x| / sum|x|`` is searched by Nelder-Mead and BFGS from equal
    weights and from the regression-based V, the best of the four kept. ``regression`` uses the
    regression-based V directly (no search). ``X1``/``X0`` are the scaled predictors. Returns
    ``(v, w, mspe)``.
    """
    def loss(x: np.ndarray) -> float:
        a = np.abs(x)
        v = a / a.sum() if a.sum() > 0 else np.full(len(x), 1 / len(x))
        e = Z1 - Z0 @ predictor_weights(X1, X0, v)
        return float(e @ e / len(Z1))

    k = len(X1)
    v_reg = regression_v(X1, X0, Z1, Z0)
    if method == "regression" or k == 1:
        v = v_reg if k > 1 else np.ones(1)
    elif method == "nested":
        best_x, best = v_reg, loss(v_reg)
        for start in (np.full(k, 1 / k), v_reg):
            for m, o in (("Nelder-Mead", {"maxiter": 500}), ("BFGS", {})):
                r = optimize.minimize(loss, start, method=m, options=o)
                if r.fun < best:
                    best_x, best = r.x, float(r.fun)
        v = np.abs(best_x) / np.abs(best_x).sum()
    else:
        raise SpecError(f"v_method must be 'nested' or 'regression', got {method!r}")
    w = predictor_weights(X1, X0, v)
    e = Z1 - Z0 @ w
    return v, w, float(e @ e / len(Z1))


def synth_fit_predictors(wide: pd.DataFrame, treated: str, start: int, donors: list[str] | None,
                         predictors, covariates: dict[str, pd.DataFrame] | None = None,
                         v_method: Literal["nested", "regression"] = "nested",
                         optimize_times=None) -> SynthFit:
    """Synthetic control matched on predictors (Abadie, Diamond & Hainmueller 2010).

    Parameters
    ----------
    wide : units x times outcome (its pre-period values are the outcomes V is chosen to fit)
    predictors : :class:`Predictor` s or ``(variable, first[, last])`` tuples computed from
        ``covariates`` by :func:`predictor_table`, or that table itself (units x predictors)
    covariates : variable -> units x times frame; the outcome is available as ``"outcome"``
        unless a key of that name is given
    v_method : ``nested`` (V minimises the pre-period outcome MSPE) or ``regression``
    optimize_times : times whose outcomes V is chosen to fit (default every pre-period time)

    Each predictor is divided by its standard deviation across the treated and donor units before
    fitting (as Synth does). Raises :class:`~sveval.errors.EstimationError` when a predictor is
    missing for a unit or does not vary across donors.
    """
    donors = [d for d in (donors if donors is not None else wide.index) if d != treated]
    if len(donors) < 2:
        raise EstimationError(f"a synthetic control needs at least 2 donor areas, got {len(donors)}")
    if isinstance(predictors, pd.DataFrame):
        X = predictors.reindex([treated, *donors])
    else:
        X = predictor_table({"outcome": wide, **(covariates or {})}, predictors).reindex([treated, *donors])
    if X.isna().to_numpy().any():
        bad = X.columns[X.isna().any()].tolist()
        raise EstimationError(f"predictors {bad} are missing for some units")
    if (X.loc[donors].std(axis=0, ddof=1) <= 0).any():
        raise EstimationError("a predictor does not vary across the donors; drop it")
    Xs = X / X.std(axis=0, ddof=1)
    times = np.asarray(wide.columns)
    pre = times < start
    opt = pre if optimize_times is None else np.isin(times, list(optimize_times))
    if opt.sum() < 1 or (~pre).sum() < 1:
        raise EstimationError("the synthetic control needs pre-period times to fit and a post period")
    y1 = wide.loc[treated].to_numpy(float)
    Y0 = wide.loc[donors].to_numpy(float).T
    v, w, _ = fit_v(Xs.loc[treated].to_numpy(), Xs.loc[donors].to_numpy().T, y1[opt], Y0[opt], v_method)
    synth = Y0 @ w
    gap = y1 - synth
    r2 = _r2(y1[pre], synth[pre])
    return SynthFit(treated, pd.Series(w, index=donors), pd.Series(y1, index=times), pd.Series(synth, index=times),
                    start, float(np.sqrt(np.mean(gap[pre] ** 2))), float(np.sqrt(np.mean(gap[~pre] ** 2))),
                    r2, r2, 1, False, pd.Series(v, index=X.columns))


def conformal_gap_interval(wide: pd.DataFrame, treated: str, start: int, donors: list[str],
                           estimate: float, scale: float, smooth: int = 1,
                           alpha: float = 0.05, demean: bool = False) -> tuple[float, float, float, int]:
    """Conformal interval for a constant post-period gap (Chernozhukov, Wuethrich & Zhu 2021).

    For each null gap ``theta`` the treated area's post-period values are reduced by ``theta``, the
    synthetic control is refitted on *all* periods (smoothed as in :func:`synth_fit`), and the
    treated-minus-synthetic residuals are tested with moving-block permutations of the periods
    (:func:`~sveval.designs.did_inference.conformal_interval`). Valid with one treated unit and few
    donors, unlike intervals from the spread of placebo gaps. Returns ``(low, high, p(0), T)``.
    """
    from sveval.designs.did_inference import conformal_interval

    times = np.asarray(wide.columns)
    post = times >= start
    y1 = wide.loc[treated].to_numpy(float)
    Y0 = wide.loc[donors].to_numpy(float).T
    Y0s = rolling_mean(Y0, smooth)

    c0 = Y0.mean(axis=0) if demean else np.zeros(Y0.shape[1])

    def resid(theta: float) -> np.ndarray:
        ya = y1 - theta * post
        c1 = ya.mean() if demean else 0.0
        w = synth_weights(rolling_mean(ya, smooth) - c1, Y0s - c0)
        return ya - Y0 @ w - (c1 - c0 @ w)

    lo, hi, p0 = conformal_interval(resid, post, estimate, scale, alpha)
    return lo, hi, p0, len(times)


@dataclass(frozen=True)
class PlaceboResult:
    actual: SynthFit
    placebos: dict[str, SynthFit] = field(repr=False)
    table: pd.DataFrame = field(repr=False)  # unit, pre_rmspe, post_rmspe, ratio, avg_post_gap, treated
    p_value: float = float("nan")


def placebo_in_space(wide: pd.DataFrame, treated: str, start: int, donors: list[str],
                     smooth: int | None = None, demean: bool = False,
                     frequency: str | None = None, predictors=None,
                     covariates: dict[str, pd.DataFrame] | None = None,
                     v_method: Literal["nested", "regression"] = "nested") -> PlaceboResult:
    """Refit with each donor as the treated unit; p-value = rank of the treated RMSPE ratio.

    ``smooth`` defaults as in :func:`synth_fit`. With ``predictors`` every fit (treated and
    placebos) matches them as in :func:`synth_fit_predictors` (V re-chosen for each placebo unit,
    as in Abadie, Diamond & Hainmueller 2010).
    """
    if predictors is not None:
        if not isinstance(predictors, pd.DataFrame):  # compute the table once
            predictors = predictor_table({"outcome": wide, **(covariates or {})}, predictors)

        def fit(unit: str, pool: list[str]) -> SynthFit:
            return synth_fit_predictors(wide, unit, start, pool, predictors, v_method=v_method)
    else:
        if smooth is None:
            smooth = default_smooth(resolve_frequency(wide.columns, frequency))

        def fit(unit: str, pool: list[str]) -> SynthFit:
            return synth_fit(wide, unit, start, pool, smooth, demean)
    actual = fit(treated, donors)
    placebos = {}
    for d in donors:
        others = [x for x in donors if x != d]
        if len(others) >= 2:
            placebos[d] = fit(d, others)
    rows = [{"unit": f.treated, "pre_rmspe": f.pre_rmspe, "post_rmspe": f.post_rmspe, "ratio": f.ratio,
             "avg_post_gap": f.avg_post_gap, "treated": f.treated == treated}
            for f in [actual, *placebos.values()]]
    table = pd.DataFrame(rows).sort_values("ratio", ascending=False).reset_index(drop=True)
    p = float(np.mean(table["ratio"] >= actual.ratio - 1e-12))
    return PlaceboResult(actual, placebos, table, p)


# ------------------------------------------------------------------------------------------------
def _prevented(synth, obs, post, times, freq, est, ci_lo, ci_hi, events_per_unit, unit_desc) -> Prevented | None:
    """Events prevented over the post period (synthetic minus observed, in events), with the
    headline interval scaled alike; None unless the outcome counts events."""
    if events_per_unit is None and not unit_desc.startswith("count"):
        return None
    k = (events_per_unit.reindex(times).to_numpy() if events_per_unit is not None else np.ones(len(times)))
    tot = float(np.sum((synth - obs)[post] * k[post]))
    per = tot / -est if est else 0.0
    lo, hi = sorted([-ci_hi * per, -ci_lo * per])
    return Prevented(tot, lo, hi, period_label(times[post][0], freq),
                     period_label(times[post][-1], freq), int(post.sum()), "events")


def evaluate_wide(wide: pd.DataFrame, treated: str, start: int, donors: list[str],
                  opts: SynthOptions | None = None, better_if: str = "lower",
                  unit_desc: str = "outcome", events_per_unit: pd.Series | None = None,
                  alpha: float = 0.05, smooth: int | None = None, demean: bool = False,
                  frequency: str | None = None, predictors=None,
                  covariates: dict[str, pd.DataFrame] | None = None,
                  v_method: Literal["nested", "regression"] = "nested") -> Result:
    """Synthetic control (or synthetic DiD) on a units x periods matrix.

    With ``opts.method == "sc"`` (default) the headline interval and p-value come from conformal
    inference with moving-block permutations of the periods (:func:`conformal_gap_interval`), valid
    for one treated unit however few the donors; the placebo-in-space RMSPE-ratio rank (whose
    p-value cannot go below 1 / (donors + 1)) is reported as a check. ``smooth`` is the window of
    the rolling means the weights and the pre-fit R-squared are computed on; it defaults to the
    window of the frequency (12 for months, 4 for quarters, none for years), the frequency being
    ``frequency``, else ``opts.frequency``, else inferred from the columns (:func:`infer_frequency`).

    With ``predictors`` (and ``covariates``, see :func:`synth_fit_predictors`) the weights match
    predictor means with the V weights of ``v_method`` (Abadie, Diamond & Hainmueller 2010;
    ``smooth`` and ``demean`` unused), every placebo unit is refitted the same way, and the headline
    interval and p-value are theirs: the placebo-gap interval and the RMSPE-ratio rank (conformal
    inference needs weights refitted on all periods, which predictor matching does not do).

    With ``opts.method == "sdid"`` the headline is the synthetic difference-in-differences estimate
    with its placebo standard error (:func:`evaluate_sdid`; ``smooth``, ``demean`` and predictors
    unused).
    """
    opts = opts or SynthOptions()
    freq = resolve_frequency(wide.columns, frequency, opts)
    if opts.method == "sdid":
        return evaluate_sdid(wide, treated, start, donors, opts, better_if, unit_desc, events_per_unit,
                             alpha, freq)
    with_x = predictors is not None
    if with_x:
        smooth, demean = 1, False
    elif smooth is None:
        smooth = default_smooth(freq)
    word = _WORD.get(freq, "period")
    pr = placebo_in_space(wide, treated, start, donors, smooth, demean, freq, predictors, covariates, v_method)
    fit = pr.actual
    times = np.asarray(wide.columns)
    post = times >= start
    good = [f for f in pr.placebos.values() if f.pre_rmspe <= PRE_RMSPE_FILTER * max(fit.pre_rmspe, 1e-12)]
    if len(good) < 4:
        good = list(pr.placebos.values())
    pg = np.array([f.avg_post_gap for f in good])
    est = fit.avg_post_gap
    q_lo, q_hi = np.quantile(pg, [alpha / 2, 1 - alpha / 2]) if len(pg) else (np.nan, np.nan)
    placebo_ci = (est - q_hi, est - q_lo)
    n_pre, n_post = int((~post).sum()), int(post.sum())
    scale = fit.pre_rmspe * np.sqrt(1 / n_post + 1 / n_pre)
    if with_x:
        (ci_lo, ci_hi), p_conf, n_perm = placebo_ci, pr.p_value, len(times)
    else:
        ci_lo, ci_hi, p_conf, n_perm = conformal_gap_interval(wide, treated, start, donors, est, scale,
                                                              smooth, alpha, demean)
    # the band is the headline interval carried to each month (counterfactual = observed - effect)
    band_lo = np.full(len(times), est - ci_hi)
    band_hi = np.full(len(times), est - ci_lo)
    synth = fit.synthetic.to_numpy()
    obs = fit.observed.to_numpy()
    series = pd.DataFrame({
        "period": [period_label(t, freq) for t in times], "observed": obs, "fitted": synth,
        "counterfactual": synth,
        "cf_low": np.where(post, synth + band_lo, synth), "cf_high": np.where(post, synth + band_hi, synth),
        "post": post,
    })
    syn_post = float(synth[post].mean())
    pct = 100 * est / syn_post if syn_post else float("nan")
    inf_desc = (f"interval and p-value by conformal inference ({n_perm} moving-block permutations of the "
                f"{word}s, Chernozhukov, Wuethrich & Zhu 2021)")
    if with_x:
        inf_desc = (f"interval from the spread of the {len(pg)} placebo units' average gaps, p-value the rank of "
                    "the post/pre RMSPE ratio (Abadie, Diamond & Hainmueller 2010)")
    effects = [
        Effect("Average post-period gap (treated - synthetic)", "difference", est, ci_lo, ci_hi, p_conf,
               better_if, f"difference in the {unit_desc}; {inf_desc}", unit=unit_desc),
        Effect("Percent change against the synthetic control", "percent_change", pct,
               max(100 * ci_lo / syn_post, -100.0), 100 * ci_hi / syn_post, p_conf, better_if,
               "average post gap as a percentage of the synthetic control's post-period mean; " + inf_desc),
    ]
    checks = [
        Check("pre_fit", "pre-period fit of the synthetic control (R-squared at least "
              f"{opts.min_pre_fit_r2}" + (f", on trailing {smooth}-{word} means" if smooth > 1 else "") + ")",
              fit.r2_pre, None, bool(fit.r2_pre >= opts.min_pre_fit_r2),
              f"pre-period R-squared {fit.r2_pre:.2f}"
              + (f" on {smooth}-{word} means ({fit.r2_pre_raw:.2f} {word} by {word}, where noise dominates)"
                 if smooth > 1 else "") + f", {_EVERY.get(freq, 'per-period')} RMSPE {fit.pre_rmspe:.3f}",
              {"rmspe": fit.pre_rmspe, "r2": fit.r2_pre, "r2_monthly": fit.r2_pre_raw, "smooth_months": smooth}),
        Check("placebo_in_space", "rank of the treated area's post/pre RMSPE ratio among "
              f"{len(pr.table)} units (treated + donors as placebos)", fit.ratio, pr.p_value, None,
              f"ratio {fit.ratio:.2f}, rank {int((pr.table['ratio'] >= fit.ratio - 1e-12).sum())} of "
              f"{len(pr.table)}: p = {pr.p_value:.3f} (the smallest attainable is {1 / len(pr.table):.3f})",
              {"table": {c: pr.table[c].tolist() for c in pr.table.columns}}),
        Check("donor_weights", "donor areas with weight in the synthetic control", None, None, None,
              ", ".join(f"{k} {v:.2f}" for k, v in fit.weights[fit.weights > 0.005].sort_values(ascending=False).items()),
              {"weights": {k: float(v) for k, v in fit.weights.items()}}),
    ]
    warnings = []
    if fit.r2_pre < opts.min_pre_fit_r2:
        warnings.append(f"The synthetic control fits the pre-period poorly (R-squared {fit.r2_pre:.2f}): "
                        "the post-period gap is not a credible effect estimate.")
    if len(pr.table) < 20 and with_x:
        warnings.append(f"Only {len(pr.table) - 1} donors: the placebo-in-space p-value (the headline with "
                        f"predictors) cannot go below {1 / len(pr.table):.2f}.")
    elif len(pr.table) < 20:
        warnings.append(f"Only {len(pr.table) - 1} donors: the placebo-in-space p-value cannot go below "
                        f"{1 / len(pr.table):.2f}; the headline interval therefore uses conformal inference "
                        f"over the {word}s instead.")
    prevented = _prevented(synth, obs, post, times, freq, est, ci_lo, ci_hi, events_per_unit, unit_desc)
    # power from the standard error implied by the conformal interval (normal approximation)
    sd = float((ci_hi - ci_lo) / (2 * stats.norm.ppf(1 - alpha / 2))) if np.isfinite(ci_hi - ci_lo) else float("nan")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(0.8)
    mde = float(z * sd / syn_post) if syn_post and np.isfinite(sd) else None
    power = Power(mde=mde, post_months=int(post.sum()), n_sim=0,
                  underpowered=bool(mde is None or mde > 0.3),
                  power_at={f"{d:.2f}": float(stats.norm.cdf(d * syn_post / sd - stats.norm.ppf(1 - alpha / 2)))
                            for d in (0.1, 0.2, 0.3, 0.5)} if np.isfinite(sd) and sd > 0 else {},
                  method="analytic: normal approximation with the standard error implied by the "
                  + ("placebo-gap" if with_x else "conformal") + " interval")
    tables = {"weights": fit.weights.rename("weight").rename_axis("donor").reset_index(),
              "placebos": pr.table,
              "gaps": pd.DataFrame({f.treated: f.gap for f in [fit, *pr.placebos.values()]}).reindex(times)
              .assign(period=[period_label(t, freq) for t in times]).reset_index(drop=True)}
    return Result(
        design="synth",
        method=(f"synthetic control ({len(donors)} donors, simplex weights matching "
                f"{fit.v_weights.size if fit.v_weights is not None else 0} predictors with "
                + ("V chosen to fit the pre-period outcomes" if v_method == "nested" else "regression-based V")
                + f", Abadie, Diamond & Hainmueller 2010); {unit_desc}; placebo-gap interval and "
                "placebo-in-space RMSPE-ratio rank over every donor refitted the same way") if with_x else (
               f"synthetic control ({len(donors)} donors, simplex weights matching the pre-period "
               + (f"trailing {smooth}-{word} means" if smooth > 1 else "outcomes")
               + (", demeaned: trends matched, pre-period level difference kept as an intercept" if demean else "")
               + f"); {unit_desc}; "
               f"conformal inference by moving-block permutations of the {n_perm} {word}s (Chernozhukov, "
               "Wuethrich & Zhu 2021), valid for one treated area; placebo-in-space rank as a check"),
        effects=tuple(effects), prevented=prevented, series=series, diagnostics=tuple(checks), power=power,
        warnings=tuple(warnings), n_obs=int(wide.size),
        details={"weights": {k: float(v) for k, v in fit.weights.items()}, "pre_rmspe": fit.pre_rmspe,
                 "post_rmspe": fit.post_rmspe, "r2_pre": fit.r2_pre, "r2_pre_monthly": fit.r2_pre_raw,
                 "smooth_months": smooth, "smooth_periods": smooth, "frequency": freq, "demeaned": demean,
                 "treated_unit": treated, "comparison_units": list(donors),
                 "placebo_gap_interval": [float(x) for x in placebo_ci],
                 **({"v_weights": {k: float(v) for k, v in fit.v_weights.items()}, "v_method": v_method}
                    if fit.v_weights is not None else {})},
        tables=tables,
    )


# ------------------------------------------------------------------------------------------------
def evaluate_sdid(wide: pd.DataFrame, treated: str, start: int, donors: list[str],
                  opts: SynthOptions | None = None, better_if: str = "lower",
                  unit_desc: str = "outcome", events_per_unit: pd.Series | None = None,
                  alpha: float = 0.05, frequency: str | None = None) -> Result:
    """Synthetic difference-in-differences on a units x periods matrix (``synth.method: sdid``).

    The headline is the SDID estimate of Arkhangelsky et al. (2021) (:mod:`sveval.designs.sdid`, a
    port of the R package ``synthdid``) with a normal interval from its placebo standard error
    (``opts.placebo_replications`` placebo assignments among the donors, R's generator seeded
    12345). The figure's counterfactual is the unit-weighted donor average shifted by the
    time-weighted pre-period gap, so its post-period mean gap to the treated series is the
    estimate. The package's synthetic control and DiD estimates are kept in ``details`` for
    comparison. Outcomes are used as they are (no smoothing or demeaning: the intercepts and time
    weights of SDID take their place).
    """
    opts = opts or SynthOptions()
    freq = resolve_frequency(wide.columns, frequency, opts)
    word = _WORD.get(freq, "period")
    donors = [d for d in donors if d != treated]
    if len(donors) < 2:
        raise EstimationError(f"synthetic DiD needs at least 2 donor areas, got {len(donors)}")
    times = np.asarray(wide.columns)
    post = times >= start
    T0 = int((~post).sum())
    if T0 < 2 or post.sum() < 1 or np.any(post[:T0]):
        raise EstimationError(f"synthetic DiD needs at least 2 pre-period {word}s before the first "
                              f"post-period {word}, in time order")
    Y = wide.loc[[*donors, treated]].to_numpy(float)
    fit = S.synthdid_estimate(Y, len(donors), T0)
    placebos = S.placebo_estimates(fit, opts.placebo_replications)
    se = float(np.std(placebos, ddof=0))
    est = fit.estimate
    z = float(stats.norm.ppf(1 - alpha / 2))
    ci_lo, ci_hi = est - z * se, est + z * se
    p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else float("nan")
    p_rank = float((1 + np.sum(np.abs(placebos) >= abs(est) - 1e-12)) / (len(placebos) + 1))
    sc = S.sc_estimate(Y, len(donors), T0)
    did = S.did_estimate(Y, len(donors), T0)

    obs = Y[-1]
    synth = fit.synthetic()
    r2 = _r2(obs[~post], synth[~post])
    pre_rmspe = float(np.sqrt(np.mean((obs - synth)[~post] ** 2)))
    series = pd.DataFrame({
        "period": [period_label(t, freq) for t in times], "observed": obs, "fitted": synth,
        "counterfactual": synth,
        "cf_low": np.where(post, synth + est - ci_hi, synth), "cf_high": np.where(post, synth + est - ci_lo, synth),
        "post": post,
    })
    syn_post = float(synth[post].mean())
    pct = 100 * est / syn_post if syn_post else float("nan")
    inf_desc = (f"normal interval from the placebo standard error ({len(placebos)} placebo assignments "
                "among the donors, Arkhangelsky et al. 2021 Algorithm 4)")
    effects = [
        Effect("Average post-period effect (synthetic DiD)", "difference", est, ci_lo, ci_hi, p, better_if,
               f"difference in the {unit_desc}; {inf_desc}", unit=unit_desc),
        Effect("Percent change against the synthetic DiD counterfactual", "percent_change", pct,
               max(100 * ci_lo / syn_post, -100.0), 100 * ci_hi / syn_post, p, better_if,
               "average post-period effect as a percentage of the counterfactual's post-period mean; " + inf_desc),
    ]
    weights = pd.Series(fit.omega, index=donors)
    lam = pd.Series(fit.lam, index=times[~post])
    checks = [
        Check("pre_fit", f"pre-period fit of the synthetic DiD counterfactual (R-squared at least "
              f"{opts.min_pre_fit_r2}, after its intercept)", r2, None, bool(r2 >= opts.min_pre_fit_r2),
              f"pre-period R-squared {r2:.2f}, {_EVERY.get(freq, 'per-period')} RMSPE {pre_rmspe:.3f}",
              {"rmspe": pre_rmspe, "r2": r2}),
        Check("placebo_in_space", "placebo assignments among the donors (the spread of their estimates is "
              "the standard error; the rank of the actual estimate among them a permutation p-value)",
              se, p_rank, None,
              f"placebo standard error {se:.3g}; |estimate| reached by {int(np.sum(np.abs(placebos) >= abs(est)))} "
              f"of {len(placebos)} placebo estimates (p = {p_rank:.3f})",
              {"placebo_estimates": placebos.tolist(), "seed": S.PLACEBO_SEED}),
        Check("donor_weights", "donor areas with weight in the synthetic DiD (and pre-period "
              f"{word}s with weight in its baseline)", None, None, None,
              ", ".join(f"{k} {v:.2f}" for k, v in weights[weights > 0.005].sort_values(ascending=False).items())
              + "; baseline " + ", ".join(f"{period_label(k, freq)} {v:.2f}" for k, v in lam[lam > 0.005].items()),
              {"weights": {k: float(v) for k, v in weights.items()},
               "time_weights": {period_label(k, freq): float(v) for k, v in lam.items()}}),
        Check("estimator_agreement", "synthetic DiD against the synthetic control and DiD estimates of the "
              "same package (Arkhangelsky et al. 2021, Table 1 layout)", None, None, None,
              f"synthetic DiD {est:.3g}, synthetic control {sc.estimate:.3g}, DiD {did.estimate:.3g}",
              {"sdid": est, "sc": sc.estimate, "did": did.estimate}),
    ]
    warnings = []
    if r2 < opts.min_pre_fit_r2:
        warnings.append(f"The synthetic DiD counterfactual tracks the pre-period poorly (R-squared {r2:.2f}): "
                        "the post-period effect is not a credible estimate.")
    if len(donors) < 20:
        warnings.append(f"Only {len(donors)} donors: the placebo standard error rests on few distinct "
                        "placebo units and may be unreliable.")
    prevented = _prevented(synth, obs, post, times, freq, est, ci_lo, ci_hi, events_per_unit, unit_desc)
    zp = z + stats.norm.ppf(0.8)
    mde = float(zp * se / syn_post) if syn_post and se > 0 else None
    power = Power(mde=mde, post_months=int(post.sum()), n_sim=0, underpowered=bool(mde is None or mde > 0.3),
                  power_at={f"{d:.2f}": float(stats.norm.cdf(d * abs(syn_post) / se - z))
                            for d in (0.1, 0.2, 0.3, 0.5)} if se > 0 else {},
                  method="analytic: normal approximation with the placebo standard error")
    tables = {"weights": weights.rename("weight").rename_axis("donor").reset_index(),
              "time_weights": pd.DataFrame({"period": [period_label(t, freq) for t in lam.index],
                                            "weight": lam.to_numpy()}),
              "placebos": pd.DataFrame({"replication": np.arange(1, len(placebos) + 1), "estimate": placebos})}
    assert fit.options is not None
    return Result(
        design="synth",
        method=f"synthetic difference-in-differences (Arkhangelsky et al. 2021; {len(donors)} donors, unit and "
               f"time weights with intercepts as in the R package synthdid); {unit_desc}; placebo standard "
               f"error from {len(placebos)} placebo assignments",
        effects=tuple(effects), prevented=prevented, series=series, diagnostics=tuple(checks), power=power,
        warnings=tuple(warnings), n_obs=int(Y.size),
        details={"weights": {k: float(v) for k, v in weights.items()},
                 "time_weights": {period_label(k, freq): float(v) for k, v in lam.items()},
                 "estimator": "sdid", "placebo_se": se, "placebo_replications": len(placebos),
                 "placebo_seed": S.PLACEBO_SEED, "placebo_rank_p": p_rank,
                 "sc_estimate": sc.estimate, "did_estimate": did.estimate,
                 "zeta_omega": fit.options.zeta_omega, "zeta_lambda": fit.options.zeta_lambda,
                 "noise_level": fit.noise_level, "pre_rmspe": pre_rmspe, "r2_pre": r2, "frequency": freq,
                 "treated_unit": treated, "comparison_units": list(donors)},
        tables=tables,
    )
