"""Difference-in-differences estimators on a :class:`~sveval.designs.did_panel.DidPanel`.

* :func:`twfe` -- two-way fixed effects (unit and month), linear, clustered by unit;
* :func:`poisson_fe` -- Poisson fixed effects for counts with ``log(population)`` as exposure;
* :func:`two_by_two` -- the canonical 2x2 (unit pre and post means);
* :func:`event_study` -- leads and lags with binned end points and a joint pre-trend test;
* :func:`did2s` -- Gardner's two-stage DiD (heterogeneity-robust cross-check).

The fixed-effects fits use pyfixest: its compiled demeaner fits the 35,000-LSOA x 120-month
panel (4.2M rows) in seconds where dummy-variable OLS is infeasible. Cluster-robust variances
(``vcov``): fixest's default small-sample correction, or clubSandwich's CR1 / CR1S / CR2
(Bell-McCaffrey, Satterthwaite df) / CR3, checked against fixest and clubSandwich values
(tests/test_did_ssc.py); the choice is named in every fit's method text. Linear estimators
switch to the wild cluster restricted bootstrap (:mod:`sveval.designs.did_inference`) when there
are fewer than ``few_clusters`` clusters (``inference='auto'``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyfixest as pf
from pyfixest.core import demean as _pf_demean
from pyfixest.core import find_collinear_variables
from pyfixest.core.detect_singletons import detect_singletons
from scipy import linalg, sparse, stats
from scipy.sparse.linalg import spsolve

from sveval.designs.did_inference import (
    adjusted_cluster_vcov,
    codes,
    time_permutation_inference,
    wald_test,
    wild_cluster_bootstrap,
)
from sveval.designs.did_panel import DidPanel, covid_bounds
from sveval.errors import EstimationError

FEW_CLUSTERS = 30
#: with this many treated units or fewer (and one common start) the headline interval comes from
#: time-permutation (conformal) inference: no cluster-based method is reliable with so few
#: treated clusters (Conley & Taber 2011; MacKinnon & Webb 2017, 2020)
FEW_TREATED = 2
VcovType = Literal["fixest", "CR1", "CR1S", "CR2", "CR3"]
#: pyfixest small-sample corrections of the cluster-robust (CR1-type) variances, clustered by unit:
#:
#: * ``fixest`` -- fixest's default ``ssc(adj = TRUE, fixef.K = "nested", cluster.adj = TRUE)``:
#:   G/(G-1) x (n-1)/(n-K), K without the fixed effects nested in the clusters (the unit effects),
#:   i.e. pyfixest's ``ssc(k_fixef="nonnested")``;
#: * ``CR1`` -- clubSandwich's CR1, G/(G-1) only;
#: * ``CR1S`` -- clubSandwich's CR1S / Stata / ``sandwich::vcovCL(type="HC1")`` on the
#:   dummy-variable regression: G/(G-1) x (n-1)/(n-K) counting every unit effect in K (much larger
#:   than fixest's with short panels: x1.41 for a 2x2 on unit pre/post means).
#:
#: ``CR2`` (Bell-McCaffrey bias-reduced, Satterthwaite degrees of freedom) and ``CR3`` (jackknife)
#: are computed by :func:`~sveval.designs.did_inference.adjusted_cluster_vcov`.
SSC_OPTIONS: dict[str, dict] = {
    "fixest": dict(k_adj=True, k_fixef="nonnested", G_adj=True),
    "CR1": dict(k_adj=False, k_fixef="nonnested", G_adj=True),
    "CR1S": dict(k_adj=True, k_fixef="full", G_adj=True),
}
VCOV_TEXT = {
    "fixest": "fixest small-sample correction G/(G-1) x (n-1)/(n-K), unit effects nested in the "
              "clusters not counted in K",
    "CR1": "CR1 small-sample correction G/(G-1)",
    "CR1S": "CR1S small-sample correction G/(G-1) x (n-1)/(n-K), every fixed effect counted in K",
    "CR2": "CR2 (Bell-McCaffrey) bias-reduced",
    "CR3": "CR3 (jackknife)",
}


def _check_vcov(vcov: str) -> None:
    if vcov not in VCOV_TEXT:
        raise EstimationError(f"unknown cluster-robust variance {vcov!r}; choose one of {list(VCOV_TEXT)}")


def _vcov_text(vcov: str, unit_kind: str, df: float | None = None, G: int | None = None) -> str:
    """``df`` given for CR2: Satterthwaite df; else t with ``G - 1`` df."""
    how = f"cluster-robust by {unit_kind}, {VCOV_TEXT[vcov]}"
    if vcov == "CR2" and df is not None:
        return f"{how}, t with {df:.1f} Satterthwaite df"
    return f"{how}, t with {G - 1} df" if G is not None else how


@dataclass(frozen=True)
class DidFit:
    """One fitted DiD model, reduced to what a report needs.

    ``coef``/``ci_*`` are on the model's scale (a difference in the outcome, or a log rate ratio for
    Poisson); ``effect_scale`` says how to report them (``difference`` or ``rate_ratio``).
    ``fitted`` and ``counterfactual`` are aligned with ``panel.frame`` rows.
    """

    name: str
    effect_scale: str
    coef: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    inference: str
    n_obs: int
    n_clusters: int
    fitted: np.ndarray = field(repr=False)
    counterfactual: np.ndarray = field(repr=False)
    table: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)

    @property
    def estimate(self) -> float:
        return float(np.exp(self.coef)) if self.effect_scale == "rate_ratio" else self.coef

    @property
    def interval(self) -> tuple[float, float]:
        if self.effect_scale == "rate_ratio":
            return float(np.exp(self.ci_low)), float(np.exp(self.ci_high))
        return self.ci_low, self.ci_high


def _frame(panel: DidPanel, covid: tuple[str, str] | None) -> tuple[pd.DataFrame, str]:
    f = panel.frame.copy()
    fes = "unit + t"
    if covid is not None:
        a, b = covid_bounds(panel, covid)
        f["covid_grp"] = (f["treated"] & f["t"].between(a, b)).astype(np.int64)
        if f["covid_grp"].any():
            fes += " + covid_grp"
    return f, fes


def _model_frame(panel: DidPanel, cols: list[str], covid: tuple[str, str] | None
                 ) -> tuple[pd.DataFrame, str]:
    """Like :func:`_frame` but only ``cols`` (plus ``covid_grp``), without copying the panel: the
    columns are shared copy-on-write with ``panel.frame`` (a 35,000-LSOA panel's full copy costs
    about a second and its object ``period`` column is never needed by a fit)."""
    src = panel.frame
    f = pd.DataFrame({c: src[c] for c in cols}, copy=False)
    fes = "unit + t"
    if covid is not None:
        a, b = covid_bounds(panel, covid)
        t = src["t"].to_numpy()
        grp = (src["treated"].to_numpy(bool) & (t >= a) & (t <= b)).astype(np.int64)
        if grp.any():
            f["covid_grp"] = grp
            fes += " + covid_grp"
    return f, fes


def _fe_codes(f: pd.DataFrame, fes: str) -> np.ndarray:
    cols = [c.strip() for c in fes.split("+")]
    return np.column_stack([codes(f[c].to_numpy()) for c in cols])


def _use_bootstrap(inference: str, G: int) -> bool:
    if inference == "wild_bootstrap":
        return True
    return inference == "auto" and G < FEW_CLUSTERS


def _tidy(fit, name: str) -> tuple[float, float, float, float, float]:
    t = fit.tidy().loc[name]
    return (float(t["Estimate"]), float(t["Std. Error"]), float(t["2.5%"]), float(t["97.5%"]),
            float(t["Pr(>|t|)"]))


def _pin_fixed_effect_order() -> None:
    """Make pyfixest's fixed-effect order the written order (``unit + t``), not a set's.

    pyfixest (0.60) builds the fixed-effect formula from ``set(...)`` of the names, so the order of
    the alternating projections, and with it the converged estimate in the 7th significant digit,
    depended on ``PYTHONHASHSEED`` (a different Poisson DiD in every process). The wrapper keeps
    pyfixest's encoding and only puts the terms back in the order written; if pyfixest changes the
    format, its own result is used unchanged.
    """
    import re

    try:
        from pyfixest.estimation.formula import model_matrix
    except ImportError:  # pragma: no cover - another pyfixest layout: nothing to pin
        return
    original = getattr(model_matrix, "_encode_fixed_effects", None)
    if original is None or getattr(original, "_sveval_ordered", False):
        return

    def ordered(fixed_effects: str, data: pd.DataFrame) -> str:
        formula = original(fixed_effects, data)
        names = [fe.replace("^", "_") for fe in dict.fromkeys(re.split(r"\s*\+\s*", fixed_effects))]
        terms = [f"__fixed_effect__({n})" for n in names]
        if formula.endswith(" - 1") and sorted(formula[:-4].split(" + ")) == sorted(terms):
            return " + ".join(terms) + " - 1"
        return formula

    ordered._sveval_ordered = True  # type: ignore[attr-defined]
    model_matrix._encode_fixed_effects = ordered


_pin_fixed_effect_order()


def _fit_quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@dataclass(frozen=True)
class _Cov:
    """Coefficients of interest, their cluster-robust covariance and the t degrees of freedom of
    each requested contrast (G-1, or Satterthwaite for CR2)."""

    beta: np.ndarray
    vcov: np.ndarray
    df: np.ndarray


def _adjusted(f: pd.DataFrame, xnames: list[str], fes: str, vcov: str, contrasts: np.ndarray | None,
              y: str | None = None, resid: np.ndarray | None = None,
              weights: np.ndarray | None = None):
    other = [c.strip() for c in fes.split("+") if c.strip() != "unit"]
    try:
        return adjusted_cluster_vcov(
            f[xnames].to_numpy(float), f["unit"].to_numpy(),
            np.column_stack([codes(f[c].to_numpy()) for c in other]) if other else None, vcov,
            y=None if y is None else f[y].to_numpy(float), resid=resid, weights=weights,
            contrasts=contrasts)
    except ValueError as exc:
        raise EstimationError(str(exc)) from exc


def _linear(f: pd.DataFrame, y: str, xnames: list[str], fes: str, vcov: str,
            contrasts: np.ndarray | None = None, copy_data: bool = True, G: int | None = None):
    """``y ~ xnames | fes`` clustered by unit with the variance ``vcov``; returns (fit, _Cov).
    ``G``: the number of clusters if the caller knows it."""
    _check_vcov(vcov)
    cols = [y, *xnames, *[c.strip() for c in fes.split("+")]]
    ssc = SSC_OPTIONS.get(vcov, SSC_OPTIONS["fixest"])
    fit = _fit_quiet(pf.feols, f"{y} ~ {' + '.join(xnames)} | {fes}", data=f[cols],
                     vcov={"CRV1": "unit"}, ssc=pf.ssc(**ssc), copy_data=copy_data)
    names = list(fit.coef().index)
    idx = [names.index(n) for n in xnames]
    beta = fit.coef()[xnames].to_numpy(float)
    cm = np.eye(len(xnames)) if contrasts is None else np.atleast_2d(contrasts)
    G = int(f["unit"].nunique()) if G is None else G
    if vcov in ("CR2", "CR3"):
        a = _adjusted(f, xnames, fes, vcov, cm, y=y)
        return fit, _Cov(beta, a.vcov, a.df)
    V = np.asarray(fit._vcov)[np.ix_(idx, idx)]
    return fit, _Cov(beta, V, np.full(cm.shape[0], float(G - 1)))


def _t_interval(coef: float, se: float, df: float, alpha: float) -> tuple[float, float, float]:
    tq = stats.t.ppf(1 - alpha / 2, df)
    p = float(2 * stats.t.sf(abs(coef / se), df)) if se > 0 else float("nan")
    return coef - tq * se, coef + tq * se, p


def twfe(panel: DidPanel, inference: str = "auto", draws: int = 999, alpha: float = 0.05,
         covid: tuple[str, str] | None = None, seed: int = 20240401, vcov: VcovType = "fixest") -> DidFit:
    """Two-way fixed effects ``y ~ D | unit + month``, standard errors clustered by unit.

    With ``inference='auto'`` and fewer than 30 clusters, the p-value and interval come from the
    wild cluster restricted bootstrap (``draws`` Webb/Rademacher draws); otherwise from the
    cluster-robust variance ``vcov`` (see :data:`SSC_OPTIONS`; default fixest's) with a t reference
    (G-1 df, Satterthwaite df for CR2).
    """
    # only the model's columns, shared with the panel (no copy); f is this function's own frame,
    # so pyfixest may work on it in place (copy_data=False spares its copy at LSOA scale)
    f, fes = _model_frame(panel, ["y", "D", "unit", "t"], covid)
    G = panel.n_units
    fit, cov = _linear(f, "y", ["D"], fes, vcov, copy_data=False, G=G)
    coef, se, df = float(cov.beta[0]), float(np.sqrt(cov.vcov[0, 0])), float(cov.df[0])
    lo, hi, p = _t_interval(coef, se, df, alpha)
    method = _vcov_text(vcov, panel.unit_kind, df, G)
    extra: dict = {"vcov": vcov, "df": df}
    if _use_bootstrap(inference, G):
        extra["cluster_ci"] = (lo, hi)
        bs = wild_cluster_bootstrap(f["y"].to_numpy(), f["D"].to_numpy(float), _fe_codes(f, fes),
                                    f["unit"].to_numpy(), draws=draws, alpha=alpha, seed=seed)
        lo, hi, p = bs.ci_low, bs.ci_high, bs.p_value
        method = (f"wild cluster restricted bootstrap ({bs.draws} draws, {bs.weights} weights, "
                  f"{G} clusters); standard error {VCOV_TEXT[vcov]}")
    fitted = np.asarray(fit.predict(), float)
    cf = fitted - coef * f["D"].to_numpy(float)
    return DidFit("twfe", "difference", coef, se, lo, hi, p, method, int(fit._N), G, fitted, cf, extra=extra)


def poisson_fe(panel: DidPanel, alpha: float = 0.05, covid: tuple[str, str] | None = None,
               vcov: VcovType = "fixest") -> DidFit:
    """Poisson fixed effects ``count ~ D | unit + month`` with ``log(population)`` exposure.

    The effect is a rate ratio. Standard errors are clustered by unit (``vcov``, default fixest's
    small-sample correction; t with G-1 df, also for CR2), which makes the Poisson
    quasi-likelihood robust to overdispersion and serial correlation within units. CR2 and CR3
    treat the fit as the weighted least-squares problem at convergence (weights ``mu``).
    """
    _check_vcov(vcov)
    f, fes = _frame(panel, covid)
    G = panel.n_units
    kw = {}
    if f["population"].notna().all() and (f["population"] > 0).all():
        f["log_pop"] = np.log(f["population"])
        kw["offset"] = "log_pop"
    fit = _fit_quiet(pf.fepois, f"count ~ D | {fes}", data=f, vcov={"CRV1": "unit"},
                     ssc=pf.ssc(**SSC_OPTIONS.get(vcov, SSC_OPTIONS["fixest"])), **kw)
    coef, se, *_ = _tidy(fit, "D")
    # fitted means for every row (pyfixest drops units with all-zero counts: they predict 0)
    used = np.zeros(len(f), bool)
    fitted = np.zeros(len(f))
    mu = np.asarray(fit.predict(type="response"), float)
    if len(mu) == len(f):
        fitted = mu
        used[:] = True
    else:
        keep = f.groupby("unit")["count"].transform("sum") > 0
        fitted[keep.to_numpy()] = mu
        used = keep.to_numpy()
    df = float(G - 1)
    if vcov in ("CR2", "CR3"):
        fu = f.loc[used].reset_index(drop=True)
        a = _adjusted(fu, ["D"], fes, vcov, None, resid=fu["count"].to_numpy(float) - fitted[used],
                      weights=fitted[used])
        se = float(np.sqrt(a.vcov[0, 0]))
    lo, hi, p = _t_interval(coef, se, df, alpha)
    cf = fitted * np.exp(-coef * f["D"].to_numpy(float))
    # Satterthwaite df are validated for linear models only: a GLM keeps t with G - 1 df
    method = ("Poisson fixed effects (unit and month), exposure log(population) if known; "
              + _vcov_text(vcov, panel.unit_kind, None, G))
    return DidFit("poisson_fe", "rate_ratio", coef, se, lo, hi, p, method, int(fit._N), G, fitted, cf,
                  extra={"rows_used": int(used.sum()), "vcov": vcov, "df": df})


def two_by_two(panel: DidPanel, inference: str = "auto", draws: int = 999, alpha: float = 0.05,
               seed: int = 20240401, vcov: VcovType = "fixest") -> DidFit:
    """Canonical 2x2 DiD on unit means before and after the (first) start.

    Each unit's months are averaged into a pre and a post mean; the DiD is the coefficient of
    treated x post with unit and period fixed effects (identical to the difference of mean
    changes), clustered by unit (``vcov``; with two periods CR2 is the Welch standard error of the
    difference of mean changes) or wild-bootstrapped when clusters are few.
    """
    f = panel.frame.copy()
    start = panel.first_start
    f["post"] = (f["t"] >= start).astype(np.int64)
    c = f.groupby(["unit", "post"], as_index=False).agg(y=("y", "mean"), treated=("treated", "first"))
    c["D"] = (c["treated"] & (c["post"] == 1)).astype(np.int64)
    G = panel.n_units
    fit, cov = _linear(c, "y", ["D"], "unit + post", vcov)
    coef, se, df = float(cov.beta[0]), float(np.sqrt(cov.vcov[0, 0])), float(cov.df[0])
    lo, hi, p = _t_interval(coef, se, df, alpha)
    method = _vcov_text(vcov, panel.unit_kind, df, G)
    if _use_bootstrap(inference, G):
        bs = wild_cluster_bootstrap(c["y"].to_numpy(), c["D"].to_numpy(float), _fe_codes(c, "unit + post"),
                                    c["unit"].to_numpy(), draws=draws, alpha=alpha, seed=seed)
        lo, hi, p = bs.ci_low, bs.ci_high, bs.p_value
        method = (f"wild cluster restricted bootstrap ({bs.draws} draws, {bs.weights} weights, "
                  f"{G} clusters); standard error {VCOV_TEXT[vcov]}")
    # fitted on the monthly panel: unit pre/post means shifted
    post = (f["t"] >= start).to_numpy()
    m = f.groupby("unit")["y"].transform("mean").to_numpy()
    fitted = f["y"].to_numpy(float) * 0 + m
    cf = fitted - coef * (f["treated"].to_numpy() & post)
    table = c.groupby(["treated", "post"])["y"].mean().unstack("post").rename(columns={0: "pre", 1: "post"})
    table["change"] = table["post"] - table["pre"]
    table.index = ["comparison" if not x else "treated" for x in table.index]
    return DidFit("2x2", "difference", coef, se, lo, hi, p, method, int(len(c)), G, fitted, cf,
                  table=table.reset_index(names="group"), extra={"vcov": vcov, "df": df})


def _event_time(f: pd.DataFrame, window: tuple[int, int]) -> np.ndarray:
    """Event time of every row, end points binned into ``window``; -1 (the reference) for rows of
    never-treated units. One small integer column instead of one float column per lead/lag."""
    lo, hi = window
    if not (lo < -1 < 0 <= hi):
        raise EstimationError(f"event_window must run from a negative lead to a non-negative lag, got {window}")
    rel = np.where(f["treated"].to_numpy(bool), f["t"].to_numpy() - f["cohort"].to_numpy(), -1)
    dtype = np.int16 if max(-lo, hi) < 2**15 else np.int64
    return np.clip(rel, lo, hi).astype(dtype)


#: columns of event-time dummies demeaned per pass (memory: rows x this many float64 at a time)
_DEMEAN_CHUNK = 4


@dataclass(frozen=True)
class _WithinFit:
    """OLS of ``y`` on event-time dummies after the fixed effects are partialled out."""

    beta: np.ndarray
    vcov: np.ndarray  # CRV1 by unit with the small-sample correction of SSC_OPTIONS
    resid: np.ndarray


def _ssc_factor(opts: dict, N: int, k: int, k_fe: np.ndarray, nested: np.ndarray, G: int) -> float:
    """fixest's / pyfixest's ``ssc`` factor of a CRV1 covariance (pyfixest ``get_ssc``):
    ``k_fe`` levels of each fixed effect, ``nested`` which of them are nested in the clusters."""
    n_fe = len(k_fe)
    k_fe_adj = int(k_fe.sum()) - (n_fe - 1) if n_fe > 1 else int(k_fe.sum())
    if opts["k_fixef"] == "full" or not nested.any():
        df_k = k + k_fe_adj
    else:  # "nonnested": the effects nested in the clusters are not counted (one is kept back)
        df_k = k + k_fe_adj - int(k_fe[nested].sum()) + int(nested.sum())
    adj = (N - 1) / (N - df_k) if opts["k_adj"] else 1.0
    return adj * (G / (G - 1) if opts["G_adj"] else 1.0)


def _feols_rows(f: pd.DataFrame, fes: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``feols`` keeps (finite ``y``, then no singleton fixed-effect level, its default
    ``fixef_rm='singleton'``) and their fixed-effect codes (pyfixest's: order of appearance)."""
    y = f["y"].to_numpy(float)
    fe_names = [c.strip() for c in fes.split("+")]

    def _codes(rows: np.ndarray | None) -> np.ndarray:
        fl = np.empty((len(y) if rows is None else len(rows), len(fe_names)), dtype=np.uintp)
        for j, c in enumerate(fe_names):
            col = f[c].to_numpy()
            fl[:, j] = pd.factorize(col if rows is None else col[rows])[0]
        return fl

    used = np.isfinite(y)
    fl = _codes(None if used.all() else np.flatnonzero(used))
    single = detect_singletons(fl)
    if single.any():
        used[np.flatnonzero(used)[single]] = False
        fl = _codes(np.flatnonzero(used))
    return used, fl


def _within_event_fit(y: np.ndarray, rel: np.ndarray, ks: list[int], fl: np.ndarray,
                      fes: str, vcov: str) -> _WithinFit:
    """``y ~ sum_k 1[rel == k] | fes`` clustered by unit, as pyfixest's ``feols`` computes it, on
    the rows :func:`_feols_rows` keeps (``fl`` their fixed-effect codes).

    Same steps as pyfixest (its compiled alternating-projections demeaner with its default
    tolerance, each column on its own, so the columns can be demeaned a few at a time; OLS on the
    demeaned columns; CRV1 with fixest's small-sample factor), but the dummies are built from the
    integer event time a few columns at a time and never held as a frame: the peak memory is the
    demeaned regressors once instead of several copies of the dummy matrix (5.9 GB for 24 leads/lags
    on 35,000 LSOAs x 120 months through ``feols``).
    """
    fe_names = [c.strip() for c in fes.split("+")]
    w = np.ones(len(y))

    def _demean(x: np.ndarray) -> np.ndarray:
        out, ok = _pf_demean(x, fl, w, 1e-06, 10_000)  # pyfixest's default MapDemeaner
        if not ok:
            raise EstimationError("demeaning by the fixed effects did not converge")
        return out

    yd = _demean(np.ascontiguousarray(y[:, None]))[:, 0]
    k = len(ks)
    xd = np.empty((len(y), k))
    for j in range(0, k, _DEMEAN_CHUNK):
        kk = np.asarray(ks[j:j + _DEMEAN_CHUNK], dtype=rel.dtype)
        xd[:, j:j + len(kk)] = _demean((rel[:, None] == kk[None, :]).astype(np.float64))
    txx = xd.T @ xd
    _, n_excl, _ = find_collinear_variables(np.ascontiguousarray(txx), 1e-09)
    if n_excl:
        raise EstimationError(
            "event-time indicators are collinear with the fixed effects (with no never-treated "
            "units the lags are identified only relative to each other): narrow the event window "
            "or add comparison units")
    beta = linalg.solve(txx, xd.T @ yd, assume_a="pos")
    u = yd - xd @ beta
    cl = fl[:, fe_names.index("unit")].astype(np.intp)
    G = int(cl.max()) + 1
    scores = np.empty((G, k))
    for j in range(k):
        scores[:, j] = np.bincount(cl, weights=xd[:, j] * u, minlength=G)
    bread = np.linalg.inv(txx)
    k_fe = np.array([int(fl[:, j].max()) + 1 for j in range(len(fe_names))])
    # a fixed effect is nested in the clusters if each of its levels lies in one cluster
    nested = np.array([c == "unit" or bool(np.all(np.subtract(*pd.Series(cl).groupby(
        fl[:, j]).agg(["max", "min"]).to_numpy().T) == 0)) for j, c in enumerate(fe_names)])
    ssc = _ssc_factor(SSC_OPTIONS.get(vcov, SSC_OPTIONS["fixest"]), len(y), k, k_fe, nested, G)
    return _WithinFit(beta, ssc * (bread @ (scores.T @ scores) @ bread), u)


def event_study(panel: DidPanel, window: tuple[int, int] = (-12, 12), alpha: float = 0.05,
                covid: tuple[str, str] | None = None, vcov: VcovType = "fixest") -> DidFit:
    """Event study with leads and lags ``window``, end points binned, reference month -1.

    Returns a fit whose ``table`` has one row per event time (``event_time``, ``estimate``, ``se``,
    ``ci_low``, ``ci_high``, ``binned``), whose ``coef`` is the average of the post coefficients
    weighted by treated unit-months (the post-period ATT), and whose ``extra`` carries the joint pre-trend test. With fewer leads
    than clusters - 1 the test is the joint Wald test of every lead; otherwise leads are averaged
    into blocks so the cluster-robust covariance is of full rank (F with G-1 df).

    The regression is pyfixest's ``feols`` computation done on an integer event-time column
    (:func:`_within_event_fit`): equal to ``feols`` with one dummy column per lead/lag to 1e-8
    (tests/test_did.py), at about a third of its peak memory on 35,000 LSOAs x 120 months.
    """
    _check_vcov(vcov)
    f, fes = _model_frame(panel, ["y", "unit", "t", "treated", "cohort"], covid)
    rel = _event_time(f, window)
    G = panel.n_units
    used, fl = _feols_rows(f, fes)
    every = bool(used.all())
    y = f["y"].to_numpy(float)
    y_u, rel_u = (y, rel) if every else (y[used], rel[used])
    n_rel = np.bincount(rel_u.astype(np.int64) - window[0], minlength=window[1] - window[0] + 1)
    ks = [k for k in range(window[0], window[1] + 1) if k != -1 and n_rel[k - window[0]] > 0]
    # headline: post coefficients averaged with weights = treated unit-months in each (binned) lag,
    # so it estimates the same post-period ATT as the static TWFE without its weighting problems
    n_k = np.array([float(n_rel[k - window[0]]) if k >= 0 else 0.0 for k in ks])
    if n_k.sum() == 0:
        raise EstimationError("no post-treatment months inside the event window")
    w = n_k / n_k.sum()
    cm = np.vstack([np.eye(len(ks)), w])
    wf = _within_event_fit(y_u, rel_u, ks, fl, fes, vcov)
    beta, V = wf.beta, wf.vcov
    dfs_all = np.full(cm.shape[0], float(G - 1))
    if vcov in ("CR2", "CR3"):  # small panels only (adjusted_cluster_vcov refuses large ones)
        fu = f.loc[used].reset_index(drop=True)
        names = [f"e_{i}" for i in range(len(ks))]
        dummies = rel_u[:, None] == np.asarray(ks, dtype=rel.dtype)[None, :]
        fu = pd.concat([fu, pd.DataFrame(dummies.astype(np.float64), columns=names)], axis=1)
        a = _adjusted(fu, names, fes, vcov, cm, y="y")
        V, dfs_all = a.vcov, a.df
    se = np.sqrt(np.diag(V))
    dfs = dfs_all[:-1]
    tq = stats.t.ppf(1 - alpha / 2, dfs)
    lo, hi = window
    table = pd.DataFrame({"event_time": ks, "estimate": beta, "se": se})
    table["ci_low"] = table["estimate"] - tq * table["se"]
    table["ci_high"] = table["estimate"] + tq * table["se"]
    table["binned"] = table["event_time"].isin([lo, hi])
    ref = pd.DataFrame({"event_time": [-1], "estimate": [0.0], "se": [0.0], "ci_low": [0.0],
                        "ci_high": [0.0], "binned": [False]})
    table = pd.concat([table, ref]).sort_values("event_time").reset_index(drop=True)

    coef = float(w @ beta)
    se_avg = float(np.sqrt(w @ V @ w))
    df_avg = float(dfs_all[-1])
    ci_lo, ci_hi, p = _t_interval(coef, se_avg, df_avg, alpha)
    # joint pre-trend test on leads (all leads, binned end included)
    lead_idx = np.flatnonzero(np.array(ks) < -1)
    pre = {"statistic": float("nan"), "p_value": float("nan"), "df": 0, "blocks": 0}
    if len(lead_idx):
        q_max = max(1, (G - 1) // 2) if len(lead_idx) >= G - 1 else len(lead_idx)
        blocks = np.array_split(lead_idx, min(q_max, len(lead_idx)))
        R = np.zeros((len(blocks), len(ks)))
        for r, b in enumerate(blocks):
            R[r, b] = 1.0 / len(b)
        F, pp, q = wald_test(beta, V, R, G - 1)
        pre = {"statistic": F, "p_value": pp, "df": q, "blocks": len(blocks),
               "leads": int(len(lead_idx))}
    # fitted = y - residual (the fixed effects' part included, as feols' predict); the
    # counterfactual removes each post month's lag effect: effect[rel] looked up, no dummy matrix
    fitted = np.full(len(f), np.nan)
    fitted[used] = y_u - wf.resid
    effect = np.zeros(hi - lo + 1)
    for b, k in zip(beta, ks, strict=True):
        if k >= 0:
            effect[k - lo] = b
    cf = fitted - effect[rel.astype(np.int64) - lo]
    method = (f"event study (leads/lags {lo}..{hi}, end points binned, reference -1); "
              + _vcov_text(vcov, panel.unit_kind, df_avg, G))
    return DidFit("event_study", "difference", coef, se_avg, ci_lo, ci_hi, p, method,
                  int(used.sum()), G, fitted, cf, table=table,
                  extra={"pre_trend": pre, "vcov": vcov, "df": df_avg, "event_times": list(ks),
                         "beta": np.asarray(beta, float), "V": np.asarray(V, float), "binned": (lo, hi)})


def _dummy_matrix(c: np.ndarray, drop_first: bool = False) -> sparse.csr_matrix:
    n, k = len(c), int(c.max()) + 1
    m = sparse.csr_matrix((np.ones(n), (np.arange(n), c)), shape=(n, k))
    return m[:, 1:] if drop_first else m


@dataclass(frozen=True)
class Did2sResult:
    """Gardner's two-stage DiD: coefficients of the second stage and their GMM covariance."""

    coef: np.ndarray
    vcov: np.ndarray
    resid_first: np.ndarray
    used: np.ndarray
    dropped_units: int


def gardner_did2s(y: np.ndarray, unit: np.ndarray, time: np.ndarray, d: np.ndarray,
                  x2: np.ndarray | None = None, cluster: np.ndarray | None = None) -> Did2sResult:
    """Two-stage DiD (Gardner 2022) with unit and time fixed effects, on any (unbalanced) panel.

    Stage 1 fits ``y ~ 0 | unit + time`` on the untreated rows (``d == 0``) only -- every unit and
    time with an untreated row gets its effect, a unit with a single untreated row included
    (pyfixest's ``did2s`` drops such singletons and then fails on the row mismatch); stage 2
    regresses ``y - stage-1 prediction`` on ``x2`` (default ``d``) without intercept. Rows of units
    (or times) with no untreated row cannot be imputed and are left out (``used``). The covariance
    is the GMM one of Gardner (2022) / R's ``did2s`` / pyfixest, clustered by ``cluster`` (default
    unit), without small-sample factor.
    """
    y = np.asarray(y, float)
    d = np.asarray(d, float)
    x2 = (d[:, None] if x2 is None else np.asarray(x2, float).reshape(len(y), -1))
    untreated = d == 0
    ok_u = np.isin(unit, np.unique(unit[untreated]))
    ok_t = np.isin(time, np.unique(time[untreated]))
    used = ok_u & ok_t
    dropped = int(len(np.unique(unit[~ok_u])))
    y, d, x2 = y[used], d[used], x2[used]
    u_c, t_c = codes(unit[used]).astype(np.int64), codes(time[used]).astype(np.int64)
    cl = codes((unit if cluster is None else np.asarray(cluster))[used]).astype(np.int64)
    x1 = sparse.hstack([_dummy_matrix(u_c), _dummy_matrix(t_c, drop_first=True)]).tocsr()
    x10 = sparse.diags((d == 0).astype(float)) @ x1
    a = (x10.T @ x10).tocsc()
    gamma = spsolve(a, x10.T @ y)
    u1 = y - x1 @ gamma  # first-stage residuals; on treated rows: y minus the imputed outcome
    xx2 = x2.T @ x2
    coef = np.linalg.solve(xx2, x2.T @ u1)
    u2 = u1 - x2 @ coef
    # GMM influence: x2_i u2_i - (x10 (x10'x10)^-1 x1'x2)_i u1_i, summed within clusters
    z = spsolve(a, sparse.csc_matrix(x1.T @ x2))
    z = z.toarray() if sparse.issparse(z) else np.asarray(z).reshape(x1.shape[1], -1)
    infl = x2 * u2[:, None] - np.asarray(x10 @ z) * np.where(d == 0, u1, 0.0)[:, None]
    scores = np.zeros((int(cl.max()) + 1, x2.shape[1]))
    np.add.at(scores, cl, infl)
    bread = np.linalg.inv(xx2)
    vcov = bread @ (scores.T @ scores) @ bread
    full_u1 = np.full(len(used), np.nan)
    full_u1[used] = u1
    return Did2sResult(coef, vcov, full_u1, used, dropped)


def did2s(panel: DidPanel, alpha: float = 0.05) -> DidFit:
    """Gardner's two-stage DiD (fixed effects estimated on untreated unit-months), GMM standard
    errors clustered by unit, t with G-1 df; works on unbalanced panels (:func:`gardner_did2s`)."""
    f = panel.frame
    G = panel.n_units
    r = gardner_did2s(f["y"].to_numpy(float), f["unit"].to_numpy(), f["t"].to_numpy(),
                      f["D"].to_numpy(float))
    coef, se = float(r.coef[0]), float(np.sqrt(r.vcov[0, 0]))
    lo, hi, p = _t_interval(coef, se, G - 1, alpha)
    fitted = np.full(len(f), np.nan)
    method = "two-stage DiD (Gardner 2022), GMM standard errors clustered by unit, t with " \
             f"{G - 1} df"
    if r.dropped_units:
        method += (f"; {r.dropped_units} {panel.unit_kind}(s) treated in every month they are "
                   "observed cannot be imputed and are left out")
    return DidFit("did2s", "difference", coef, se, lo, hi, p, method, int(r.used.sum()), G, fitted,
                  fitted, extra={"dropped_units": r.dropped_units})


def few_treated(panel: DidPanel) -> bool:
    """True when cluster-based inference is unreliable: at most ``FEW_TREATED`` treated units with
    one common start (time-permutation inference then gives the interval)."""
    return 0 < panel.n_treated_units <= FEW_TREATED and not panel.staggered


def with_time_permutation(panel: DidPanel, fit: DidFit, alpha: float = 0.05,
                          covid: tuple[str, str] | None = None) -> DidFit:
    """Replace the interval and p-value of a static DiD fit (``poisson_fe``, ``twfe``, ``2x2``) by
    time-permutation (conformal) inference (:func:`~sveval.designs.did_inference.time_permutation_inference`).

    The point estimate is unchanged. ``se`` becomes the standard error implied by the interval
    (its width / 2 z), which is what power and minimum detectable effect are computed from.
    """
    f, fes = _frame(panel, covid)
    fe = _fe_codes(f, fes)
    if fit.effect_scale == "rate_ratio":
        offset = np.log(f["population"].to_numpy(float)) if (f["population"] > 0).all() else None
        r = time_permutation_inference(f["count"].to_numpy(float), f["D"].to_numpy(float), fe,
                                       f["treated"].to_numpy(), f["t"].to_numpy(), fit.coef,
                                       offset=offset, family="poisson", alpha=alpha, scale=fit.se)
    else:
        r = time_permutation_inference(f["y"].to_numpy(float), f["D"].to_numpy(float), fe,
                                       f["treated"].to_numpy(), f["t"].to_numpy(), fit.coef,
                                       family="linear", alpha=alpha, scale=fit.se)
    z = stats.norm.ppf(1 - alpha / 2)
    se = (r.ci_high - r.ci_low) / (2 * z) if np.isfinite(r.ci_high - r.ci_low) else float("inf")
    method = (f"time-permutation (conformal) inference for {r.treated_units} treated {panel.unit_kind}"
              f"{'s' if r.treated_units > 1 else ''}: {r.permutations} moving-block permutations of "
              f"the months, {r.post_periods} post months, interval by test inversion "
              "(Chernozhukov, Wuethrich & Zhu 2021)")
    extra = dict(fit.extra)
    extra["cluster_interval"] = (fit.ci_low, fit.ci_high)
    extra["cluster_inference"] = fit.inference
    return DidFit(fit.name, fit.effect_scale, fit.coef, se, r.ci_low, r.ci_high, r.p_value, method,
                  fit.n_obs, fit.n_clusters, fit.fitted, fit.counterfactual, fit.table, extra)


def pretrend_blocks(panel: DidPanel, family: str = "poisson", covid: tuple[str, str] | None = None,
                    block: int = 12) -> dict:
    """Pre-trend test for few treated units: leads grouped into ``block``-month blocks.

    On the pre-period only, the treated units get one indicator per block of months counted back
    from the start (the block just before the start is the reference), beside unit and month fixed
    effects (Poisson with log population exposure, or linear). The joint Wald test uses the
    heteroskedasticity-robust (not clustered) covariance: with one treated unit a clustered
    covariance has rank one and over-rejects, while the lead blocks are estimated from the treated
    unit's own months, whose errors the robust covariance treats as independent across blocks.
    Blocks of a year average out short-run serial correlation and seasonality mismatches.
    """
    f, fes = _frame(panel, covid)
    start = panel.first_start
    f = f[f["t"] < start].copy()
    rel = start - f["t"]  # 1 .. months before the start
    blk = ((rel - 1) // block).astype(int)
    n_pre = int(rel.max())
    last = int(blk.max())
    if n_pre % block and n_pre % block < block // 2 and last > 1:
        blk = blk.where(blk < last, last - 1)  # a short earliest block joins the next one
    names = []
    for b in sorted(blk.unique()):
        if b == 0:
            continue
        nm = f"lead_y{b}"
        f[nm] = (f["treated"] & (blk == b)).astype(float)
        if f[nm].any():
            names.append(nm)
    if not names:
        return {"statistic": float("nan"), "p_value": float("nan"), "df": 0, "blocks": 0}
    cols = [c.strip() for c in fes.split("+")]
    rhs = f"{' + '.join(names)} | {fes}"
    if family == "poisson":
        kw = {}
        if (f["population"] > 0).all():
            f["log_pop"] = np.log(f["population"])
            kw["offset"] = "log_pop"
        fit = _fit_quiet(pf.fepois, f"count ~ {rhs}", data=f[["count", *names, *cols, *kw.values()]],
                         vcov="hetero", **kw)
    else:
        fit = _fit_quiet(pf.feols, f"y ~ {rhs}", data=f[["y", *names, *cols]], vcov="hetero")
    beta = fit.coef()[names].to_numpy()
    idx = [list(fit.coef().index).index(n) for n in names]
    V = np.asarray(fit._vcov)[np.ix_(idx, idx)]
    W = float(beta @ np.linalg.pinv(V) @ beta)
    q = int(np.linalg.matrix_rank(V))
    p = float(stats.chi2.sf(W, q)) if q else float("nan")
    return {"statistic": W, "p_value": p, "df": q, "blocks": len(names), "block_months": block,
            "leads": n_pre, "family": family,
            "estimates": {n: float(b) for n, b in zip(names, beta, strict=True)},
            "test": "chi-square, heteroskedasticity-robust"}
