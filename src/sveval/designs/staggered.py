"""Callaway and Sant'Anna (2021) difference-in-differences for staggered adoption.

Group-time average treatment effects ``ATT(g, t)`` (``g`` = the month a cohort was first treated)
are simple 2x2 comparisons of a cohort with never-treated or not-yet-treated units, with the
base period ``g - 1`` for post-treatment cells and ``t - 1`` for pre-treatment cells (the ``did``
package's default "varying" base period). Inference uses the influence functions of each
``ATT(g, t)``; the aggregations (simple, by cohort, by event time) follow the ``did`` package's
``aggte`` including the estimated-weights correction, so standard errors match its analytic ones.
A multiplier bootstrap on the influence functions gives simultaneous bands for event-time effects.

This is the unconditional (no covariates) estimator. It is validated against the published
``mpdta`` results of the ``did`` package (tests/test_staggered.py). It is written here rather than
taken from a Python port because the ports on PyPI (``csdid``, ``differences``) are not actively
maintained; the estimator without covariates is a few array operations on a units x months matrix.

Examples
--------
>>> import pandas as pd
>>> df = pd.read_csv("tests/reference/data/mpdta.csv")  # doctest: +SKIP
>>> cs = callaway_santanna(df, "lemp", "countyreal", "year", "first.treat")  # doctest: +SKIP
>>> round(cs.aggregate("group").overall.estimate, 4)  # doctest: +SKIP
-0.031
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from sveval.errors import EstimationError, OptionError

ControlGroup = Literal["never_treated", "not_yet_treated"]
AggType = Literal["simple", "group", "dynamic", "calendar"]


@dataclass(frozen=True)
class Estimate:
    estimate: float
    se: float
    alpha: float = 0.05

    @property
    def z(self) -> float:
        return float(stats.norm.ppf(1 - self.alpha / 2))

    @property
    def ci_low(self) -> float:
        return self.estimate - self.z * self.se

    @property
    def ci_high(self) -> float:
        return self.estimate + self.z * self.se

    @property
    def p_value(self) -> float:
        return float(2 * stats.norm.sf(abs(self.estimate / self.se))) if self.se > 0 else float("nan")


@dataclass(frozen=True)
class Aggregate:
    """An aggregation of group-time effects: the overall effect and the table behind it."""

    kind: str
    overall: Estimate
    table: pd.DataFrame  # columns: key (cohort or event time), estimate, se, ci_low, ci_high, (band)
    crit_uniform: float | None = None
    inf: np.ndarray | None = field(default=None, repr=False)  # n_units x rows of table

    def wald(self, keys) -> tuple[float, int, float]:
        """Joint Wald test (chi-square) that the table's estimates at ``keys`` are all zero."""
        sel = self.table["key"].isin(list(keys)).to_numpy()
        if not sel.any() or self.inf is None:
            return float("nan"), 0, float("nan")
        a = self.table.loc[sel, "estimate"].to_numpy()
        n = self.inf.shape[0]
        V = self.inf[:, sel].T @ self.inf[:, sel] / n**2
        stat = float(a @ np.linalg.pinv(V) @ a)
        df = int(np.linalg.matrix_rank(V))
        return stat, df, float(stats.chi2.sf(stat, df)) if df else float("nan")


@dataclass(frozen=True)
class CSResult:
    """Group-time effects with their influence functions.

    ``gt`` has columns ``group``, ``time``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``post``,
    ``n_treated``, ``n_control``; ``inf`` is the n_units x n_cells matrix of influence functions.
    """

    gt: pd.DataFrame
    inf: np.ndarray = field(repr=False)
    unit_group: np.ndarray = field(repr=False)  # each unit's cohort (0 = never treated)
    n_units: int
    control_group: str
    alpha: float = 0.05
    pretrend_stat: float = float("nan")
    pretrend_df: int = 0
    pretrend_p: float = float("nan")

    def aggregate(self, kind: AggType = "group", uniform_draws: int = 0, seed: int = 11,
                  min_e: float = -np.inf, max_e: float = np.inf) -> Aggregate:
        """Aggregate ``ATT(g, t)`` as the ``did`` package's ``aggte(type=kind)`` does."""
        return _aggregate(self, kind, uniform_draws, seed, min_e, max_e)


def callaway_santanna(
    data: pd.DataFrame,
    y: str,
    unit: str,
    time: str,
    group: str,
    control_group: ControlGroup = "never_treated",
    alpha: float = 0.05,
    base_period: Literal["varying", "universal"] = "varying",
) -> CSResult:
    """Group-time ATTs of Callaway and Sant'Anna (2021), unconditional parallel trends.

    ``base_period`` as in the ``did`` package: ``varying`` compares pre-treatment cells with the
    period before them (short differences); ``universal`` compares every cell with the period
    before the cohort's start (``g - 1``), so event-time estimates are relative to ``e = -1``
    like an event study's, as Rambachan-Roth sensitivity analysis needs.

    Parameters
    ----------
    data : balanced long panel
    y, unit, time : outcome, unit id and (integer) time columns
    group : first treated period of each unit, ``0`` (or negative / NaN) for never treated
    control_group : ``never_treated`` or ``not_yet_treated``

    Raises
    ------
    EstimationError : unbalanced panel, no never-treated units when needed, no usable cohort
    """
    df = data[[unit, time, y, group]].copy()
    df[group] = df[group].fillna(0)
    df.loc[df[group] < 0, group] = 0
    wide = df.pivot(index=unit, columns=time, values=y).sort_index()
    if wide.isna().any().any():
        raise EstimationError("the Callaway-Sant'Anna estimator needs a balanced panel (a unit lacks a period)")
    G = df.groupby(unit)[group].first().reindex(wide.index).to_numpy(float)
    times = np.asarray(wide.columns, dtype=float)
    Y = wide.to_numpy(float)
    # drop units treated in (or before) the first period: no untreated period to compare
    keep = ~((G > 0) & (G <= times[0]))
    Y, G = Y[keep], G[keep]
    n = len(G)
    tpos = {t: i for i, t in enumerate(times)}
    cohorts = sorted(g for g in np.unique(G) if g > 0)
    cohorts = [g for g in cohorts if g in tpos and tpos[g] >= 1]
    if not cohorts:
        raise EstimationError("no treated cohort starts after the first period")
    never = G == 0
    if control_group == "never_treated" and not never.any():
        raise EstimationError("no never-treated units: use control_group 'not_yet_treated'")

    rows, infs = [], []
    z = stats.norm.ppf(1 - alpha / 2)
    for g in cohorts:
        gi = tpos[g]
        treated = G == g
        for ti in range(1, len(times)):
            t = times[ti]
            base = gi - 1 if (ti >= gi or base_period == "universal") else ti - 1
            if ti == base:
                continue  # the reference cell itself (universal base): zero by construction
            if control_group == "never_treated":
                ctrl = never
            else:
                ctrl = never | ((G > times[max(ti, base)]) & (G != g))
            n1, n0 = int(treated.sum()), int(ctrl.sum())
            if n1 == 0 or n0 == 0:
                continue
            dy = Y[:, ti] - Y[:, base]
            m1, m0 = dy[treated].mean(), dy[ctrl].mean()
            psi = np.zeros(n)
            psi[treated] = (dy[treated] - m1) * n / n1
            psi[ctrl] -= (dy[ctrl] - m0) * n / n0
            se = float(np.sqrt(psi @ psi) / n)
            att = float(m1 - m0)
            rows.append({"group": g, "time": t, "estimate": att, "se": se, "ci_low": att - z * se,
                         "ci_high": att + z * se, "post": bool(t >= g), "n_treated": n1, "n_control": n0})
            infs.append(psi)
    gt = pd.DataFrame(rows)
    inf = np.column_stack(infs)
    # Wald pre-test of parallel trends: all pre-treatment ATT(g, t) = 0 (analytic covariance)
    pre = ~gt["post"].to_numpy()
    stat, dfree, p = float("nan"), 0, float("nan")
    if pre.any():
        a = gt.loc[pre, "estimate"].to_numpy()
        V = inf[:, pre].T @ inf[:, pre] / n
        ok = np.isfinite(a) & (np.diag(V) > 0)
        a, V = a[ok], V[np.ix_(ok, ok)]
        if len(a):
            stat = float(n * a @ np.linalg.pinv(V) @ a)
            dfree = int(np.linalg.matrix_rank(V))
            p = float(stats.chi2.sf(stat, dfree))
    return CSResult(gt, inf, G, n, control_group, alpha, stat, dfree, p)


def _wif(keep_groups: np.ndarray, pg: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Influence function of estimated weights ``pg / sum(pg)`` (did's ``wif``)."""
    ind = (G[:, None] == keep_groups[None, :]).astype(float) - pg[None, :]
    s = pg.sum()
    if1 = ind / s
    if2 = ind.sum(axis=1)[:, None] * (pg / s**2)[None, :]
    return if1 - if2


def _combine(cs: CSResult, idx: np.ndarray, w: np.ndarray, wif: np.ndarray | None) -> tuple[float, np.ndarray]:
    att = cs.gt["estimate"].to_numpy()[idx]
    est = float(w @ att)
    infl = cs.inf[:, idx] @ w
    if wif is not None:
        infl = infl + wif @ att
    return est, infl


def _se(infl: np.ndarray, n: int) -> float:
    return float(np.sqrt(infl @ infl) / n)


def _aggregate(cs: CSResult, kind: str, draws: int, seed: int, min_e: float, max_e: float) -> Aggregate:
    gt = cs.gt
    n = cs.n_units
    G = cs.unit_group
    groups = gt["group"].to_numpy()
    times = gt["time"].to_numpy()
    share = {g: float(np.mean(G == g)) for g in np.unique(groups)}
    pg = np.array([share[g] for g in groups])
    z = stats.norm.ppf(1 - cs.alpha / 2)
    rows, infs = [], []
    if kind == "simple":
        idx = np.flatnonzero(times >= groups)
        w = pg[idx] / pg[idx].sum()
        est, infl = _combine(cs, idx, w, _wif(groups[idx], pg[idx], G))
        overall = Estimate(est, _se(infl, n), cs.alpha)
        return Aggregate("simple", overall, pd.DataFrame(columns=["key", "estimate", "se"]))
    if kind == "group":
        glist = np.unique(groups)
        for g in glist:
            idx = np.flatnonzero((groups == g) & (times >= g))
            w = np.full(len(idx), 1.0 / len(idx))
            est, infl = _combine(cs, idx, w, None)
            rows.append({"key": g, "estimate": est, "se": _se(infl, n)})
            infs.append(infl)
        att_g = np.array([r["estimate"] for r in rows])
        pgg = np.array([share[g] for g in glist])
        w = pgg / pgg.sum()
        inf_g = np.column_stack(infs)
        infl = inf_g @ w + _wif(glist, pgg, G) @ att_g
        overall = Estimate(float(w @ att_g), _se(infl, n), cs.alpha)
    elif kind == "dynamic":
        e_all = times - groups
        eseq = np.unique(e_all[(e_all >= min_e) & (e_all <= max_e)])
        for e in eseq:
            idx = np.flatnonzero(e_all == e)
            w = pg[idx] / pg[idx].sum()
            est, infl = _combine(cs, idx, w, _wif(groups[idx], pg[idx], G))
            rows.append({"key": e, "estimate": est, "se": _se(infl, n)})
            infs.append(infl)
        inf_e = np.column_stack(infs)
        post = eseq >= 0
        if not post.any():
            raise EstimationError("no post-treatment event times to aggregate")
        att_e = np.array([r["estimate"] for r in rows])
        infl = inf_e[:, post].mean(axis=1)
        overall = Estimate(float(att_e[post].mean()), _se(infl, n), cs.alpha)
    elif kind == "calendar":
        tlist = np.unique(times[times >= groups])
        for t in tlist:
            idx = np.flatnonzero((times == t) & (times >= groups))
            w = pg[idx] / pg[idx].sum()
            est, infl = _combine(cs, idx, w, _wif(groups[idx], pg[idx], G))
            rows.append({"key": t, "estimate": est, "se": _se(infl, n)})
            infs.append(infl)
        att_t = np.array([r["estimate"] for r in rows])
        infl = np.column_stack(infs).mean(axis=1)
        overall = Estimate(float(att_t.mean()), _se(infl, n), cs.alpha)
    else:
        raise OptionError(f"unknown aggregation {kind!r}; use simple, group, dynamic or calendar")
    table = pd.DataFrame(rows)
    table["ci_low"] = table["estimate"] - z * table["se"]
    table["ci_high"] = table["estimate"] + z * table["se"]
    crit = None
    if draws > 0 and len(rows) > 1:
        crit = uniform_critical_value(np.column_stack(infs), n, draws, seed, cs.alpha)
        table["band_low"] = table["estimate"] - crit * table["se"]
        table["band_high"] = table["estimate"] + crit * table["se"]
    return Aggregate(kind, overall, table, crit, np.column_stack(infs))


def uniform_critical_value(inf: np.ndarray, n: int, draws: int = 999, seed: int = 11,
                           alpha: float = 0.05, chunk: int = 200) -> float:
    """Sup-t critical value for simultaneous bands, by a Mammen multiplier bootstrap on ``inf``.

    Memory is ``chunk x n`` at a time, so it scales to thousands of units.
    """
    rng = np.random.default_rng(seed)
    se = np.sqrt(np.einsum("ij,ij->j", inf, inf)) / n
    ok = se > 0
    inf, se = inf[:, ok], se[ok]
    s5 = np.sqrt(5.0)
    a, b = -(s5 - 1) / 2, (s5 + 1) / 2
    pa = (s5 + 1) / (2 * s5)
    sups = []
    for start in range(0, draws, chunk):
        m = min(chunk, draws - start)
        V = np.where(rng.random((m, inf.shape[0])) < pa, a, b)
        boot = V @ inf / n
        sups.append(np.max(np.abs(boot) / se[None, :], axis=1))
    sups = np.concatenate(sups)
    return float(max(np.quantile(sups, 1 - alpha), stats.norm.ppf(1 - alpha / 2)))


def staggered_from_panel(panel, control_group: ControlGroup = "never_treated", alpha: float = 0.05,
                         base_period: Literal["varying", "universal"] = "varying") -> CSResult:
    """Run :func:`callaway_santanna` on a :class:`~sveval.designs.did_panel.DidPanel`."""
    f = panel.frame[["unit", "t", "y", "cohort"]].copy()
    f["g"] = np.where(f["cohort"] >= 0, f["cohort"], 0)
    return callaway_santanna(f, "y", "unit", "t", "g", control_group=control_group, alpha=alpha,
                             base_period=base_period)
