"""Inference for one treatment coefficient in a linear model with absorbed fixed effects.

* :func:`wild_cluster_bootstrap` -- the wild cluster *restricted* bootstrap (WCR, Cameron, Gelbach
  & Miller 2008; MacKinnon, Nielsen & Webb 2023) for ``y ~ d | fixed effects``, with p-value and a
  confidence interval by test inversion. It works on the Frisch-Waugh-Lovell projection: the
  bootstrap coefficient and the cluster scores are linear in the weights, so every draw costs
  ``O(G)`` after one set-up (the "fast and wild" idea of Roodman et al. 2019). With few clusters
  (at most ``exact_max_clusters``) the re-projection of bootstrap residuals on the fixed effects is
  exact (a ``G x G`` matrix); with many it is dropped (its effect is of order ``1/G``). Memory is
  ``draws x G`` doubles, never ``draws x n`` -- the design note's 24 GB failure came from the latter.
  Webb's six-point weights are used with 12 clusters or fewer (Rademacher has only ``2^G`` distinct
  draws), Rademacher otherwise.
* :func:`randomisation_test` -- placebo-in-space / randomisation inference: treatment timings are
  reassigned among units and the coefficient re-estimated; all assignments are enumerated when
  there are no more than ``draws`` of them.

pyfixest is used for the fixed-effects projection (its compiled alternating-projections demeaner);
it also ships a wild bootstrap (via the ``wildboottest`` package), but that draws an ``n x B`` matrix
of bootstrap outcomes and does not give test-inversion intervals, hence this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from pyfixest.core.demean import demean as _pf_demean
from scipy import optimize, stats

from sveval.errors import EstimationError, OptionError

WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])


def codes(values) -> np.ndarray:
    """Integer codes 0..k-1 of a 1-d array of labels (sorted order)."""
    _, inv = np.unique(np.asarray(values), return_inverse=True)
    return inv.astype(np.uint64)


def annihilate(x: np.ndarray, fe: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Residuals of ``x`` (n or n x k) on the fixed effects ``fe`` (n x m integer codes)."""
    x2 = np.asarray(x, dtype=np.float64)
    one = x2.ndim == 1
    if one:
        x2 = x2[:, None]
    out, ok = _pf_demean(np.ascontiguousarray(x2), np.ascontiguousarray(fe.astype(np.uint64)),
                         np.ones(x2.shape[0]), tol, 100_000)
    if not ok:  # pragma: no cover - alternating projections failed to converge
        raise EstimationError("fixed-effects demeaning did not converge")
    return out[:, 0] if one else out


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    se: float
    t_stat: float
    p_value: float
    ci_low: float
    ci_high: float
    draws: int
    weights: str
    clusters: int
    exact: bool


def _cluster_sums(v: np.ndarray, g: np.ndarray, G: int) -> np.ndarray:
    """Sum of v (n or n x k) within clusters -> G (or G x k)."""
    if v.ndim == 1:
        return np.bincount(g, weights=v, minlength=G)
    out = np.zeros((G, v.shape[1]))
    np.add.at(out, g, v)
    return out


def wild_cluster_bootstrap(
    y: np.ndarray,
    d: np.ndarray,
    fe: np.ndarray,
    cluster: np.ndarray,
    draws: int = 999,
    seed: int = 20240401,
    alpha: float = 0.05,
    exact_max_clusters: int = 200,
    weights: str = "auto",
) -> BootstrapResult:
    """Wild cluster restricted bootstrap for the coefficient of ``d`` in ``y ~ d | fe``.

    Parameters
    ----------
    y, d : outcome and regressor of interest (length n)
    fe : n x m integer codes of the absorbed fixed effects (e.g. unit and month)
    cluster : length-n cluster labels
    draws : bootstrap replications
    seed : random seed (results are deterministic)
    alpha : 1 - confidence level of the interval
    exact_max_clusters : above this the cross-cluster re-projection is dropped
    weights : ``"auto"`` (Webb if G <= 12 else Rademacher), ``"webb"`` or ``"rademacher"``

    Returns
    -------
    BootstrapResult with the OLS estimate, its CR1 standard error, the bootstrap p-value of
    ``H0: coefficient = 0`` and the test-inversion interval.
    """
    y = np.asarray(y, float)
    d = np.asarray(d, float)
    g = codes(cluster).astype(np.int64)
    G = int(g.max()) + 1
    if G < 3:
        raise EstimationError(f"the wild cluster bootstrap needs at least 3 clusters, got {G}")
    n = len(y)
    yd = annihilate(np.column_stack([y, d]), fe)
    yt, dt = yd[:, 0], yd[:, 1]
    S = float(dt @ dt)
    if S <= 1e-12 * max(1.0, float(d @ d)):
        raise EstimationError("the treatment indicator is collinear with the fixed effects")
    theta = float(dt @ yt) / S
    b = _cluster_sums(dt * dt, g, G)  # b_h
    a_y = _cluster_sums(dt * yt, g, G)  # sum_h dt*yt
    exact = G <= exact_max_clusters
    if exact:
        # C[g, h] = sum_{i in h} dt_i [M(v 1_g)]_i for v = yt and v = dt
        onehot_y = np.zeros((n, G))
        onehot_y[np.arange(n), g] = yt
        onehot_d = np.zeros((n, G))
        onehot_d[np.arange(n), g] = dt
        My = annihilate(onehot_y, fe)
        Md = annihilate(onehot_d, fe)
        Cy = _cluster_sums(My * dt[:, None], g, G).T  # rows: source cluster g, cols: h
        Cd = _cluster_sums(Md * dt[:, None], g, G).T
        del onehot_y, onehot_d, My, Md
    else:
        Cy = Cd = None

    kind = weights if weights != "auto" else ("webb" if G <= 12 else "rademacher")
    rng = np.random.default_rng(seed)
    if kind == "webb":
        W = WEBB[rng.integers(0, 6, size=(draws, G))]
    elif kind == "rademacher":
        W = rng.choice(np.array([-1.0, 1.0]), size=(draws, G))
    else:
        raise OptionError(f"unknown weights {weights!r}")
    k = 1 + sum(len(np.unique(fe[:, j])) for j in range(fe.shape[1])) - (fe.shape[1] - 1)
    adj = G / (G - 1) * (n - 1) / max(n - k, 1)

    # observed CR1 standard error
    resid = yt - theta * dt
    s_obs = _cluster_sums(dt * resid, g, G)
    se = math.sqrt(adj * float(s_obs @ s_obs)) / S

    def pval(theta0: float) -> float:
        a = a_y - theta0 * b
        num = W @ a / S  # theta* - theta0
        if exact:
            C = Cy - theta0 * Cd
            scores = W @ C - num[:, None] * b[None, :]
        else:
            scores = W * a[None, :] - num[:, None] * b[None, :]
        se_star = np.sqrt(adj * np.einsum("ij,ij->i", scores, scores)) / S
        t_star = num / np.where(se_star > 0, se_star, np.inf)
        t_obs = (theta - theta0) / se
        return float(np.mean(np.abs(t_star) >= abs(t_obs) - 1e-12))

    p0 = pval(0.0)

    def bound(sign: int) -> float:
        f = lambda x: pval(x) - alpha  # noqa: E731
        inner = theta
        step = max(se, 1e-8)
        outer = theta + sign * step
        for _ in range(60):
            if f(outer) < 0:
                break
            inner, outer = outer, theta + sign * (abs(outer - theta) * 2)
        else:  # pragma: no cover - interval unbounded within search
            return sign * math.inf
        # p is a step function of theta0: bisect to a tolerance of 1e-4 standard errors
        return float(optimize.bisect(f, min(inner, outer), max(inner, outer), xtol=1e-4 * step))

    lo, hi = bound(-1), bound(+1)
    return BootstrapResult(theta, se, theta / se, p0, lo, hi, draws, kind, G, exact)


# ------------------------------------------------------------------------------------------------
# Randomisation (placebo-in-space) inference
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomisationResult:
    estimate: float
    p_value: float
    draws: int
    exhaustive: bool
    placebo_estimates: np.ndarray


def _assignments(n_units: int, treated_idx: np.ndarray, draws: int, seed: int):
    """Unit index sets to receive the treated units' timings (first one is the actual)."""
    k = len(treated_idx)
    total = math.comb(n_units, k)
    if total <= draws + 1 and total <= 100_000:
        combos = [np.array(c) for c in combinations(range(n_units), k)]
        return combos, True
    rng = np.random.default_rng(seed)
    out = [rng.choice(n_units, size=k, replace=False) for _ in range(draws)]
    return out, False


def randomisation_test(
    y: np.ndarray,
    unit: np.ndarray,
    t: np.ndarray,
    cohort_of_unit: dict,
    fe: np.ndarray,
    draws: int = 200,
    seed: int = 20240402,
) -> RandomisationResult:
    """Randomisation inference for the TWFE coefficient by reassigning treatment among units.

    The treated units' start months (their cohorts) are given, in a random order, to a random set
    of the same number of units; the coefficient of the resulting indicator is re-estimated by
    FWL (the outcome's projection is computed once). The p-value is the share of assignments
    (the actual one included) with an absolute estimate at least as large as the actual one.
    When the number of possible unit sets is at most ``draws`` every set is used (exact test).
    """
    y = np.asarray(y, float)
    units = np.asarray(unit)
    ulist = np.unique(units)
    uidx = np.searchsorted(ulist, units)
    starts = np.array([cohort_of_unit.get(u, -1) for u in ulist])
    treated_idx = np.flatnonzero(starts >= 0)
    tstarts = starts[treated_idx]
    yt = annihilate(y, fe)
    sets, exhaustive = _assignments(len(ulist), treated_idx, draws, seed)
    rng = np.random.default_rng(seed + 1)
    batch = 256
    estimates = []
    D_actual = (starts[uidx] >= 0) & (t >= starts[uidx])
    dt0 = annihilate(D_actual.astype(float), fe)
    actual = float(dt0 @ yt / (dt0 @ dt0))
    for i in range(0, len(sets), batch):
        chunk = sets[i: i + batch]
        D = np.zeros((len(y), len(chunk)))
        for j, s in enumerate(chunk):
            st = np.full(len(ulist), -1)
            st[s] = rng.permutation(tstarts)
            su = st[uidx]
            D[:, j] = (su >= 0) & (t >= su)
        dt = annihilate(D, fe)
        den = np.einsum("ij,ij->j", dt, dt)
        est = np.where(den > 1e-12, dt.T @ yt / np.where(den > 1e-12, den, 1.0), np.nan)
        estimates.append(est)
    est = np.concatenate(estimates) if estimates else np.array([])
    est = est[np.isfinite(est)]
    if exhaustive:
        p = float(np.mean(np.abs(est) >= abs(actual) - 1e-12))
    else:
        p = float((1 + np.sum(np.abs(est) >= abs(actual) - 1e-12)) / (1 + len(est)))
    return RandomisationResult(actual, p, int(len(est)), exhaustive, est)


def wald_test(beta: np.ndarray, vcov: np.ndarray, R: np.ndarray, df_denom: int | None) -> tuple[float, float, int]:
    """Joint Wald test of ``R beta = 0``: F statistic, p-value and numerator df.

    With ``df_denom`` (clusters - 1) the statistic is referred to F(q, df_denom); else chi2(q)/q.
    """
    rb = R @ beta
    V = R @ vcov @ R.T
    q = R.shape[0]
    W = float(rb @ np.linalg.pinv(V) @ rb)
    F = W / q
    p = float(stats.f.sf(F, q, df_denom)) if df_denom else float(stats.chi2.sf(W, q))
    return F, p, q


# ------------------------------------------------------------------------------------------------
# Few treated units: time-permutation (conformal) inference
# ------------------------------------------------------------------------------------------------
def poisson_fe_means(y: np.ndarray, fe: np.ndarray, offset: np.ndarray | None = None,
                     tol: float = 1e-10, max_iter: int = 10_000) -> np.ndarray:
    """Fitted means of the Poisson model ``log E[y] = offset + sum_j FE_j`` (no other regressor).

    The Poisson maximum-likelihood equations of a model with only categorical fixed effects say
    that fitted and observed totals agree on every margin, so the fit is iterative proportional
    fitting (raking) of the exposure to the margins -- the classical algorithm for log-linear
    models (Deming & Stephan 1940; Bishop, Fienberg & Holland 1975), exact and fast for the small
    area panels where it is used. ``y`` need not be integer (quasi-likelihood).
    """
    y = np.asarray(y, float)
    mu = np.exp(np.asarray(offset, float)) if offset is not None else np.ones_like(y)
    mu = mu * (y.sum() / mu.sum())
    cols = [np.asarray(fe[:, j], np.int64) for j in range(fe.shape[1])]
    targets = [np.bincount(c, weights=y) for c in cols]
    for _ in range(max_iter):
        worst = 0.0
        for c, tgt in zip(cols, targets, strict=True):
            cur = np.bincount(c, weights=mu, minlength=len(tgt))
            ratio = np.divide(tgt, cur, out=np.zeros_like(tgt), where=cur > 0)
            mu = mu * ratio[c]
            ok = (cur > 0) & (tgt > 0)
            if ok.any():
                worst = max(worst, float(np.max(np.abs(ratio[ok] - 1.0))))
        if worst < tol:
            return mu
    raise EstimationError("iterative proportional fitting of the Poisson fixed effects did not converge")


def _block_p_value(u: np.ndarray, post: np.ndarray) -> float:
    """Moving-block (cyclic shift) permutation p-value of ``|sum of u over the post block|``."""
    T = len(u)
    idx = np.flatnonzero(post)
    shifts = (idx[None, :] + np.arange(T)[:, None]) % T
    S = np.abs(u[shifts].sum(axis=1))
    return float(np.mean(S >= S[0] - 1e-9 * max(1.0, S[0])))


@dataclass(frozen=True)
class TimePermutationResult:
    """Test-inversion interval of a treatment coefficient from time-permutation inference."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    permutations: int
    family: str
    treated_units: int
    post_periods: int


def time_permutation_inference(
    y: np.ndarray,
    d: np.ndarray,
    fe: np.ndarray,
    treated: np.ndarray,
    t: np.ndarray,
    estimate: float,
    offset: np.ndarray | None = None,
    family: str = "poisson",
    alpha: float = 0.05,
    scale: float | None = None,
) -> TimePermutationResult:
    """Conformal inference for one (or a few) treated units, permuting time (Chernozhukov,
    Wuethrich & Zhu 2021, "An exact and robust conformal inference method for counterfactual and
    synthetic controls", JASA).

    With one treated unit, cluster-robust and wild-cluster-bootstrap inference fail (Conley & Taber
    2011; MacKinnon & Webb 2017, 2020) and permuting treatment over the comparison units cannot give
    a p-value below 1/(units); but the treated unit has many months. For each null value ``b`` of
    the coefficient, the treated post-period outcomes are adjusted by the null effect
    (``y exp(-b d)`` for Poisson, ``y - b d`` for linear), the two-way fixed-effects model *without*
    a treatment term is fitted to all months, and the treated units' residual series ``u_t``
    (Pearson residual of their monthly total for Poisson; mean residual for linear) is tested: the
    statistic ``|sum of u_t over the post months|`` is compared with the same statistic over every
    cyclic shift of the months (moving-block permutations, which keep short-run serial correlation
    within blocks). The interval is every ``b`` not rejected at ``alpha``, found on a grid and
    refined by bisection at its ends.

    Parameters
    ----------
    y, d : outcome and treatment (0/1) per row
    fe : n x m integer codes of the fixed effects (unit, month, ...)
    treated : bool per row, the treated units' rows
    t : month index per row
    estimate : the point estimate (centre of the search)
    offset : log exposure per row (Poisson)
    family : ``"poisson"`` (coefficient = log rate ratio) or ``"linear"``
    scale : a rough standard error to size the search grid
    """
    y = np.asarray(y, float)
    d = np.asarray(d, float)
    treated = np.asarray(treated, bool)
    times, tpos = np.unique(np.asarray(t)[treated], return_inverse=True)
    T = len(times)
    post = np.bincount(tpos, weights=d[treated], minlength=T) > 0
    if post.all() or not post.any():
        raise EstimationError("time-permutation inference needs treated months both before and after the start")
    if family == "linear":
        My, Md = annihilate(y, fe), annihilate(d, fe)
        n_tr = np.bincount(tpos, minlength=T)

        def resid(b: float) -> np.ndarray:
            r = (My - b * Md)[treated]
            return np.bincount(tpos, weights=r, minlength=T) / n_tr
    elif family == "poisson":
        def resid(b: float) -> np.ndarray:
            ya = y * np.exp(-b * d)
            mu = poisson_fe_means(ya, fe, offset)
            num = np.bincount(tpos, weights=(ya - mu)[treated], minlength=T)
            den = np.bincount(tpos, weights=mu[treated], minlength=T)
            return num / np.sqrt(np.maximum(den, 1e-12))
    else:
        raise OptionError(f"unknown family {family!r}")

    if scale is None or not np.isfinite(scale) or scale <= 0:
        scale = max(abs(estimate), 1.0) * 0.5
    # beyond this distance from the estimate the interval is reported as unbounded
    reach = 50 * scale if family == "linear" else min(50 * scale, 8.0)
    lo, hi, p0 = conformal_interval(resid, post, estimate, scale, alpha, reach)
    return TimePermutationResult(estimate, lo, hi, p0, T, family, int(len(np.unique(fe[treated, 0]))),
                                 int(post.sum()))


def conformal_interval(resid, post: np.ndarray, estimate: float, scale: float, alpha: float = 0.05,
                       reach: float | None = None) -> tuple[float, float, float]:
    """Invert the moving-block permutation test: every null value not rejected at ``alpha``.

    ``resid(b)`` returns the treated unit's residual series (one value per period) from the model
    fitted under the null value ``b``; ``post`` marks the post periods. The search starts at
    ``estimate``, steps out in multiples of ``scale`` until the test rejects (or ``reach`` is
    passed: the bound is then infinite), scans the bracket and bisects to ``1e-4 scale``.
    Returns ``(low, high, p-value of b = 0)``.
    """
    reach = 50 * scale if reach is None else reach

    def accept(b: float) -> bool:
        return _block_p_value(resid(b), post) > alpha

    def edge(sign: int) -> float:
        inner = estimate
        outer = estimate + sign * scale / 4
        while accept(outer):
            if abs(outer - estimate) >= reach:
                return sign * math.inf
            inner, outer = outer, estimate + sign * min(2 * abs(outer - estimate), reach)
        # the p-value is a step function: scan the bracket for the last accepted value, then bisect
        grid = np.linspace(inner, outer, 9)
        ok = [accept(g) for g in grid]
        last = max(i for i, v in enumerate(ok) if v) if any(ok) else 0
        lo_b, hi_b = grid[last], grid[min(last + 1, 8)]
        for _ in range(40):
            if abs(hi_b - lo_b) < 1e-4 * scale:
                break
            mid = 0.5 * (lo_b + hi_b)
            if accept(mid):
                lo_b = mid
            else:
                hi_b = mid
        return float(lo_b)

    return edge(-1), edge(+1), _block_p_value(resid(0.0), post)


# ------------------------------------------------------------------------------------------------
# Bias-reduced (CR2) and jackknife (CR3) cluster-robust variances
# ------------------------------------------------------------------------------------------------
#: the CR2 / CR3 adjustment matrices need one eigen-decomposition per cluster and a dense basis of
#: the non-nested fixed effects; above this many rows they are refused rather than left to run for
#: hours (the LSOA panels have millions of rows: use the fixest or CR1 corrections there)
ADJUSTED_MAX_ROWS = 25_000
ADJUSTED_MAX_CLUSTER_ROWS = 2_000


@dataclass(frozen=True)
class AdjustedVcov:
    """A CR2 or CR3 cluster-robust covariance of the coefficients of interest.

    ``df`` holds the Bell-McCaffrey / Satterthwaite degrees of freedom of each row of the
    contrasts asked for (CR2 only; ``G - 1`` for CR3), as clubSandwich's ``coef_test``.
    """

    kind: str
    coef: np.ndarray
    vcov: np.ndarray
    df: np.ndarray
    clusters: int


def _dummies(fe: np.ndarray) -> np.ndarray:
    cols = []
    for j in range(fe.shape[1]):
        c = codes(fe[:, j]).astype(np.int64)
        cols.append(np.eye(int(c.max()) + 1)[c])
    return np.hstack(cols) if cols else np.zeros((fe.shape[0], 0))


def _basis(a: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of the column space of ``a`` (n x r)."""
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], 0))
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, s > tol * max(s.max(), 1.0)] if s.size else u[:, :0]


def _sym_power(b: np.ndarray, p: float, tol: float = 1e-12) -> np.ndarray:
    """``b^p`` of a symmetric p.s.d. matrix, zero on its null space (clubSandwich's matrix_power)."""
    val, vec = np.linalg.eigh(b)
    keep = val > tol
    vp = np.zeros_like(val)
    vp[keep] = val[keep] ** p
    return (vec * vp) @ vec.T


def adjusted_cluster_vcov(x: np.ndarray, cluster: np.ndarray, other_fe: np.ndarray | None,
                          kind: str, y: np.ndarray | None = None, resid: np.ndarray | None = None,
                          weights: np.ndarray | None = None,
                          contrasts: np.ndarray | None = None) -> AdjustedVcov:
    """CR2 (Bell & McCaffrey 2002) or CR3 cluster-robust covariance of ``x``'s coefficients.

    The model is ``y ~ x | cluster + other_fe``: unit fixed effects nested in the clusters (every
    fit of this module clusters by unit) and further fixed effects (month, COVID indicator) that
    are not. The adjustment matrices are those of clubSandwich on the dummy-variable regression:
    ``A_j = (I - H_jj)^{-1/2}`` (CR2) or ``(I - H_jj)^{-1}`` (CR3), with ``H`` the hat matrix of
    the full model including every dummy and the generalised inverse where the nested unit effect
    makes ``I - H_jj`` singular. ``H_jj`` is computed without forming ``H``: within-unit centring
    plus an orthonormal basis of the unit-centred other regressors.

    Parameters
    ----------
    x : (n, k) regressors of interest
    cluster : (n,) cluster (= unit) labels
    other_fe : (n, m) codes of the fixed effects not nested in the clusters, or None
    kind : ``"CR2"`` or ``"CR3"``
    y : outcome of a linear model (residuals and coefficients are computed here), or
    resid : residuals of a fitted GLM (``y - mu`` for Poisson) together with
    weights : its working weights (``mu`` for Poisson; the model is then the weighted least
        squares problem at convergence with ``(I - H_jj)^{-1/2}`` in the weighted space: on the
        castle-doctrine Poisson panel the CR2 standard error is within 0.2% of clubSandwich's
        ``vcovCR.glm``, which places the working variance differently; its Satterthwaite df are not
        clubSandwich's, so callers use G - 1 df for a GLM)
    contrasts : (q, k) rows ``c`` whose Satterthwaite degrees of freedom are wanted (default: each
        coefficient)

    Returns
    -------
    AdjustedVcov

    Raises
    ------
    ValueError
        for an unknown ``kind``, or a panel too large for the adjustment matrices (callers
        translate it into an :class:`~sveval.errors.EstimationError`).
    """
    if kind not in ("CR2", "CR3"):
        raise OptionError(f"kind must be 'CR2' or 'CR3', got {kind!r}")
    x = np.asarray(x, float)
    x = x[:, None] if x.ndim == 1 else x
    n, k = x.shape
    g = codes(cluster).astype(np.int64)
    G = int(g.max()) + 1
    sizes = np.bincount(g)
    if n > ADJUSTED_MAX_ROWS or sizes.max() > ADJUSTED_MAX_CLUSTER_ROWS:
        raise OptionError(
            f"{kind} needs one adjustment matrix per cluster: {n:,} rows (largest cluster "
            f"{int(sizes.max()):,}) exceed the limits of {ADJUSTED_MAX_ROWS:,} rows and "
            f"{ADJUSTED_MAX_CLUSTER_ROWS:,} rows per cluster; use the fixest or CR1 correction")
    s = np.sqrt(np.asarray(weights, float)) if weights is not None else np.ones(n)
    if (y is None) == (resid is None):
        raise OptionError("give exactly one of y (linear model) or resid (GLM)")

    def centre(v: np.ndarray) -> np.ndarray:  # within-cluster (weighted) projection residual
        v2 = v[:, None] if v.ndim == 1 else v
        num = np.zeros((G, v2.shape[1]))
        np.add.at(num, g, s[:, None] * v2)
        den = np.bincount(g, weights=s * s, minlength=G)
        out = v2 - s[:, None] * (num / den[:, None])[g]
        return out[:, 0] if v.ndim == 1 else out

    xs = centre(s[:, None] * x)
    od = centre(s[:, None] * _dummies(other_fe)) if other_fe is not None and other_fe.size else \
        np.zeros((n, 0))
    qo = _basis(od)
    q = _basis(np.hstack([xs, od]))
    r = xs - qo @ (qo.T @ xs)  # regressors of interest net of every fixed effect
    bread = np.linalg.pinv(r.T @ r)
    if y is not None:
        yc = centre(s * np.asarray(y, float))
        coef = bread @ (r.T @ yc)
        e = yc - q @ (q.T @ yc)
    else:
        e = np.asarray(resid, float) / s
        coef = np.full(k, np.nan)
    power = -0.5 if kind == "CR2" else -1.0
    cmat = np.eye(k) if contrasts is None else np.atleast_2d(np.asarray(contrasts, float))
    order = np.argsort(g, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    comps = np.zeros((G, k))
    pc = bread @ cmat.T  # k x q
    diag = np.zeros((G, cmat.shape[0]))
    a_rows = np.zeros((G, q.shape[1], cmat.shape[0]))
    for j in range(G):
        idx = order[bounds[j]:bounds[j + 1]]
        sj, qj, rj = s[idx], q[idx], r[idx]
        cj = np.eye(len(idx)) - np.outer(sj, sj) / (sj @ sj)
        aj = _sym_power(cj - qj @ qj.T, power)
        ar = aj @ rj  # n_j x k
        comps[j] = ar.T @ e[idx]
        if kind == "CR2":
            pj = ar @ pc  # n_j x q: contribution vectors p_j of each contrast
            diag[j] = np.einsum("iq,iq->q", pj, cj @ pj)
            a_rows[j] = qj.T @ pj
    vcov = bread @ (comps.T @ comps) @ bread
    if kind == "CR2":
        df = np.empty(cmat.shape[0])
        for c in range(cmat.shape[0]):
            a = a_rows[:, :, c]
            gram = np.diag(diag[:, c]) - a @ a.T  # g_i'g_j of the Satterthwaite approximation
            df[c] = np.trace(gram) ** 2 / np.sum(gram * gram)
    else:
        df = np.full(cmat.shape[0], float(G - 1))
    return AdjustedVcov(kind, coef, vcov, df, G)
