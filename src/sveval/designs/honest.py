"""Robust inference when parallel trends may fail: Rambachan & Roth (2023), "A More Credible
Approach to Parallel Trends" (Review of Economic Studies), as in the R package HonestDiD.

Input: an event study's coefficients ``betahat`` (``num_pre`` pre-period coefficients, then
``num_post`` post-period coefficients, the reference period omitted) and their covariance
``sigma``. Writing ``beta = tau + delta`` (``tau`` the dynamic effects, zero before treatment;
``delta`` the difference in trends, ``delta_pre = beta_pre``), the target is
``theta = l_vec' tau_post`` (default: the first post-period effect; ``l_vec = (1/T, ..., 1/T)`` is
the average over the post periods). Parallel trends is ``delta_post = 0``; the sensitivity
analysis replaces it with a set of allowed ``delta``:

* **relative magnitudes** ``Delta^RM(Mbar)``: every post-period change in the trend difference
  ``|delta_{t+1} - delta_t|`` (t >= 0) is at most ``Mbar`` times the largest pre-period change.
  The set is a union over which pre-period change is the largest (and its sign) of polyhedra;
  the confidence set is the union of the per-polyhedron sets, each by the conditional
  least-favourable hybrid test ("C-LF") of Andrews, Roth & Pakes (2023), inverted over a grid of
  ``theta`` values (the package's default method for RM);
* **smoothness** ``Delta^SD(M)``: the second differences of ``delta`` are at most ``M`` in absolute
  value (``M = 0``: an exactly linear trend difference extrapolated from the pre-period). The
  confidence interval is the optimal fixed-length CI ("FLCI") of Armstrong & Kolesar: the affine
  estimator ``v_pre' beta_pre + l_vec' beta_post`` and half-length ``cv_alpha(bias/sd) * sd`` that
  minimise the half-length over all such estimators (the package's default method for SD).

The **breakdown value** is the largest grid value of ``Mbar`` (or ``M``) whose confidence set
still excludes zero.

Implementation notes (where this differs from the R package, and why the numbers agree):

* ARP test. The test statistic is the value of the linear programme
  ``eta = min_{delta} max_j (y_j - X_j delta) / sd_j``; by LP duality it equals
  ``max_{g in D} g'y`` over the dual polytope ``D = {g >= 0, sd'g = 1, X'g = 0}``, which does not
  depend on the data. The package solves one LP per grid point (and more to find the truncation
  points ``vlo``/``vup``). Here the vertices of ``D`` are enumerated once, so the statistic, the
  optimal vertex and the exact truncation points (``vlo``/``vup`` of the conditioning event
  "this vertex is optimal") follow for the whole grid from matrix products. This is the same
  test (the package's "primal" and "dual" routes compute these same truncation points), without
  the bisection tolerances of the package's dual route. When the vertices would be too many
  (roughly more than 10 post periods) one LP per grid point is solved instead (scipy's HiGHS),
  with the same Newton iteration the package uses for ``vlo``/``vup``.
* Theta grid (RM): by default, for each ``Mbar``, 1000 points from 20 standard errors below the
  identified set to 20 above it: the grid that produced the package's documented README tables,
  which sveval reproduces exactly on the Callaway-Sant'Anna and Sun-Abraham examples. The
  package's current code uses +-20 standard errors around 0 (``grid_centre="zero"``).
* Cost: the vertex route is fast (well under a second per ``Mbar`` up to ~8 post periods); past
  ~10 post periods the LP route takes minutes per ``Mbar`` (13 post periods, 50 theta points and
  100 simulations: ~50 s on a loaded 2-core machine), as does the package: bin event times or
  target fewer post periods there.
* The least-favourable critical value is, as in the package, the ``1 - kappa`` quantile
  (``kappa = alpha / 10``) of the statistic over ``lf_sims = 1000`` draws from ``N(0, Sigma_Y)``
  with a fixed seed. The draws are numpy's, not R's, so this critical value carries Monte Carlo
  noise that differs from the package's: the C-LF bounds can differ from the package's by a grid
  step or two where they depend on it.
* FLCI: the package evaluates the folded-normal quantile ``cv_alpha(b)`` from 10^6 simulated
  draws; here it is solved exactly. The inner problem (least worst-case bias given the
  estimator's standard deviation ``h``) is solved with SLSQP instead of CVXR/ECOS and the outer
  minimisation over ``h`` with a bounded scalar search instead of a numerical-derivative bisection.

References: Rambachan, A. and Roth, J. (2023) RESTUD 90(5); Andrews, I., Roth, J. and Pakes, A.
(2023) "Inference for linear conditional moment inequalities", RESTUD 90(6); Armstrong, T. and
Kolesar, M. (2018) Econometrica 86(2).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

from sveval.errors import DataError, EstimationError

Method = Literal["rm", "sd"]

DEFAULT_MBAR_GRID = tuple(float(x) for x in np.linspace(0.0, 2.0, 10))
_MAX_SUPPORTS = 200_000  # candidate vertex supports enumerated before switching to one LP per point
_TOL = 1e-9


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class HonestRow:
    """One row of the sensitivity table.

    Attributes
    ----------
    value : the restriction's parameter (``Mbar`` for RM, ``M`` for SD)
    lb, ub : bounds of the robust confidence set (``nan`` when the set is empty on the grid)
    excludes_zero : whether the set excludes 0
    open_at_grid_edge : RM only: the set reaches an end of the theta grid (the bound shown is then
        the grid's end, not the set's, as the package warns)
    id_lb, id_ub : RM only: the identified set for ``theta`` at ``betahat`` (no sampling error)
    """

    value: float
    lb: float
    ub: float
    excludes_zero: bool
    open_at_grid_edge: bool = False
    id_lb: float = math.nan
    id_ub: float = math.nan


@dataclass(frozen=True)
class HonestResult:
    """Robust confidence sets over a grid of ``Mbar`` (RM) or ``M`` (SD).

    Attributes
    ----------
    delta : ``"DeltaRM"`` or ``"DeltaSD"`` (the package's names)
    method : ``"C-LF"`` (RM) or ``"FLCI"`` (SD)
    parameter : ``"Mbar"`` or ``"M"``
    rows : one :class:`HonestRow` per grid value, in grid order
    original_lb, original_ub : the usual CI for ``theta`` under parallel trends ("Original")
    breakdown : largest grid value such that it and every smaller grid value give a set that
        excludes 0; ``None`` when the first does not
    breakdown_censored : the set still excludes 0 at the largest grid value (the true breakdown
        value lies beyond the grid)
    l_vec : the target's weights on the post-period effects
    alpha : 1 - coverage
    num_pre, num_post : numbers of pre- and post-period coefficients
    settings : method settings (grid points and theta grid for RM; LF simulations and seed)
    """

    delta: str
    method: str
    parameter: str
    rows: tuple[HonestRow, ...]
    original_lb: float
    original_ub: float
    breakdown: float | None
    breakdown_censored: bool
    l_vec: tuple[float, ...]
    alpha: float
    num_pre: int
    num_post: int
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(r.value for r in self.rows)

    @property
    def lb(self) -> tuple[float, ...]:
        return tuple(r.lb for r in self.rows)

    @property
    def ub(self) -> tuple[float, ...]:
        return tuple(r.ub for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (NaN and infinities become ``None``)."""
        return {
            "delta": self.delta,
            "method": self.method,
            "parameter": self.parameter,
            "alpha": self.alpha,
            "num_pre": self.num_pre,
            "num_post": self.num_post,
            "l_vec": [_num(x) for x in self.l_vec],
            "original": {"method": "Original", "lb": _num(self.original_lb),
                         "ub": _num(self.original_ub)},
            "rows": [
                {self.parameter: _num(r.value), "lb": _num(r.lb), "ub": _num(r.ub),
                 "excludes_zero": r.excludes_zero, "open_at_grid_edge": r.open_at_grid_edge,
                 "id_lb": _num(r.id_lb), "id_ub": _num(r.id_ub)}
                for r in self.rows
            ],
            "breakdown": _num(self.breakdown),
            "breakdown_censored": self.breakdown_censored,
            "settings": {k: _num(v) for k, v in self.settings},
        }


def _num(x: Any) -> Any:
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (list, tuple)):
        return [_num(v) for v in x]
    v = float(x)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# Public API


def original_ci(
    betahat, sigma, num_pre: int, num_post: int, *, l_vec=None, alpha: float = 0.05
) -> tuple[float, float]:
    """Usual CI for ``theta = l_vec' beta_post`` under parallel trends (``constructOriginalCS``)."""
    b, s, lv = _check(betahat, sigma, num_pre, num_post, l_vec, alpha)
    post = slice(num_pre, num_pre + num_post)
    est = float(lv @ b[post])
    se = math.sqrt(float(lv @ s[post, post] @ lv))
    z = stats.norm.ppf(1 - alpha / 2)
    return est - z * se, est + z * se


def honest_bounds(
    betahat,
    sigma,
    num_pre: int,
    num_post: int,
    *,
    method: Method = "rm",
    grid=None,
    l_vec=None,
    alpha: float = 0.05,
    grid_points: int = 1000,
    grid_lb: float | None = None,
    grid_ub: float | None = None,
    grid_centre: Literal["id_set", "zero"] = "id_set",
    lf_sims: int = 1000,
    seed: int = 0,
) -> HonestResult:
    """Robust confidence sets for ``theta = l_vec' tau_post`` over a grid of restrictions.

    Parameters
    ----------
    betahat : event-study coefficients, ``num_pre`` pre-period ones then ``num_post`` post-period
        ones, in time order, the reference period (normalised to 0) omitted; the reference period
        must be the last pre-period (relative time -1), as the package assumes
    sigma : their covariance matrix
    num_pre, num_post : numbers of pre- and post-period coefficients
    method : ``"rm"`` (relative magnitudes, C-LF) or ``"sd"`` (smoothness, FLCI)
    grid : values of ``Mbar`` (RM; default 10 values on [0, 2], as the package) or ``M`` (SD;
        default 10 values from 0 to the package's ``DeltaSD_upperBound_Mpre``)
    l_vec : weights on the post-period effects (default: first post period)
    alpha : 1 - coverage
    grid_points, grid_lb, grid_ub : RM only: the theta grid the test is inverted over, for each
        ``Mbar`` (default 1000 points from 20 standard errors of ``l_vec' beta_post`` below the
        identified set's lower bound to 20 above its upper bound)
    grid_centre : RM only, when ``grid_lb``/``grid_ub`` are not given: ``"id_set"`` (default:
        the grid above, which is what produced the package's documented README tables) or
        ``"zero"`` (``+-20`` standard errors around 0, the package's current GitHub code)
    lf_sims, seed : RM only: simulations and seed for the least-favourable critical value

    Returns
    -------
    HonestResult
    """
    b, s, lv = _check(betahat, sigma, num_pre, num_post, l_vec, alpha)
    o_lb, o_ub = original_ci(b, s, num_pre, num_post, l_vec=lv, alpha=alpha)
    if method == "rm":
        values = DEFAULT_MBAR_GRID if grid is None else _grid(grid, "Mbar")
        if grid_centre not in ("id_set", "zero"):
            raise DataError(f"grid_centre must be 'id_set' or 'zero', got {grid_centre!r}")
        if grid_points < 2:
            raise DataError(f"the theta grid needs at least 2 points, got {grid_points}")
        sd_theta = math.sqrt(float(lv @ s[num_pre:, num_pre:] @ lv))
        rows = []
        for mbar in values:
            id_lb, id_ub = rm_identified_set(b, num_pre, num_post, mbar, l_vec=lv)
            if grid_centre == "id_set":
                g_lb, g_ub = id_lb - 20 * sd_theta, id_ub + 20 * sd_theta
            else:
                g_lb, g_ub = -20 * sd_theta, 20 * sd_theta
            g_lb = g_lb if grid_lb is None else float(grid_lb)
            g_ub = g_ub if grid_ub is None else float(grid_ub)
            if not g_ub > g_lb:
                raise DataError(f"theta grid [{g_lb}, {g_ub}] is empty")
            theta = np.linspace(g_lb, g_ub, int(grid_points))
            accept = _rm_accept(b, s, num_pre, num_post, lv, mbar, alpha, theta, lf_sims, seed)
            rows.append(_row(mbar, theta, accept, id_lb, id_ub))
        settings = (("grid_points", int(grid_points)), ("grid_centre", grid_centre),
                    ("grid_lb", grid_lb), ("grid_ub", grid_ub),
                    ("lf_sims", int(lf_sims)), ("seed", int(seed)),
                    ("hybrid_kappa", alpha / 10))
        delta, name, param = "DeltaRM", "C-LF", "Mbar"
    elif method == "sd":
        values = _default_m_grid(b, s, num_pre) if grid is None else _grid(grid, "M")
        rows = []
        for m in values:
            lo, hi = flci(b, s, num_pre, num_post, m, l_vec=lv, alpha=alpha)
            rows.append(HonestRow(float(m), lo, hi, bool(lo > 0 or hi < 0)))
        settings = ()
        delta, name, param = "DeltaSD", "FLCI", "M"
    else:
        raise DataError(f"method must be 'rm' or 'sd', got {method!r}")
    bd, censored = _breakdown(rows)
    return HonestResult(delta, name, param, tuple(rows), o_lb, o_ub, bd, censored,
                        tuple(float(x) for x in lv), float(alpha), int(num_pre), int(num_post),
                        settings)


def _row(value, theta, accept, id_lb, id_ub) -> HonestRow:
    if not accept.any():
        return HonestRow(float(value), math.nan, math.nan, True, False, id_lb, id_ub)
    lo = float(theta[accept].min())
    hi = float(theta[accept].max())
    return HonestRow(float(value), lo, hi, bool(lo > 0 or hi < 0),
                     bool(accept[0] or accept[-1]), id_lb, id_ub)


def _breakdown(rows: list[HonestRow]) -> tuple[float | None, bool]:
    order = sorted(rows, key=lambda r: r.value)
    best = None
    for r in order:
        if not r.excludes_zero or math.isnan(r.lb):
            return best, False
        best = r.value
    return best, best is not None


def _grid(values, name: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"the {name} grid must be non-negative finite numbers, got {values!r}")
    return tuple(float(x) for x in arr)


def _check(betahat, sigma, num_pre, num_post, l_vec, alpha):
    b = np.asarray(betahat, dtype=float).ravel()
    s = np.asarray(sigma, dtype=float)
    if num_pre < 1 or num_post < 1:
        raise DataError(f"need at least one pre and one post coefficient, got {num_pre}/{num_post}")
    if b.size != num_pre + num_post:
        raise DataError(f"betahat has {b.size} coefficients, expected num_pre + num_post = "
                        f"{num_pre + num_post}")
    if s.shape != (b.size, b.size):
        raise DataError(f"sigma has shape {s.shape}, expected {(b.size, b.size)}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(s))):
        raise DataError("betahat and sigma must be finite")
    if not np.allclose(s, s.T, rtol=1e-6, atol=1e-12 * max(1.0, float(np.abs(s).max()))):
        raise DataError("sigma must be symmetric")
    s = (s + s.T) / 2
    if np.linalg.eigvalsh(s).min() < -1e-8 * max(1e-300, float(np.abs(np.diag(s)).max())):
        raise DataError("sigma must be positive semi-definite")
    if l_vec is None:
        lv = np.zeros(num_post)
        lv[0] = 1.0
    else:
        lv = np.asarray(l_vec, dtype=float).ravel()
        if lv.size != num_post or not np.any(lv != 0):
            raise DataError(f"l_vec must have {num_post} weights, not all zero; got {l_vec!r}")
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1), got {alpha!r}")
    return b, s, lv


# ---------------------------------------------------------------------------------------------
# Delta^RM: conditional least-favourable hybrid (ARP with nuisance parameters)


def _create_a_rm(num_pre: int, num_post: int, mbar: float, s: int, max_positive: bool):
    """Constraint matrix of Delta^RM_{s,+/-}(Mbar) (``.create_A_RM``): ``A delta <= 0``."""
    n = num_pre + num_post
    atilde = np.zeros((n, n + 1))
    for r in range(n):
        atilde[r, r:r + 2] = (-1.0, 1.0)
    v = np.zeros(n + 1)
    v[num_pre + s - 1:num_pre + s + 1] = (-1.0, 1.0)
    if not max_positive:
        v = -v
    a_ub = np.vstack([np.tile(v, (num_pre, 1)), np.tile(mbar * v, (num_post, 1))])
    a = np.vstack([atilde - a_ub, -atilde - a_ub])
    a = a[(a * a).sum(axis=1) > 1e-10]
    return np.delete(a, num_pre, axis=1)


def rm_identified_set(betahat, num_pre: int, num_post: int, mbar: float, *,
                      l_vec=None) -> tuple[float, float]:
    """Identified set for ``theta`` under Delta^RM(``mbar``) taking ``betahat`` as the truth
    (``.compute_IDset_DeltaRM``): the union over ``(s, sign)`` of linear-programme bounds."""
    b = np.asarray(betahat, dtype=float).ravel()
    lv = np.zeros(num_post) if l_vec is None else np.asarray(l_vec, dtype=float).ravel()
    if l_vec is None:
        lv[0] = 1.0
    f = np.concatenate([np.zeros(num_pre), lv])
    a_eq = np.hstack([np.eye(num_pre), np.zeros((num_pre, num_post))])
    est = float(lv @ b[num_pre:])
    lo, hi = math.inf, -math.inf
    for s_idx in range(-(num_pre - 1), 1):
        for positive in (True, False):
            a = _create_a_rm(num_pre, num_post, mbar, s_idx, positive)
            kw = {"A_ub": a, "b_ub": np.zeros(a.shape[0]), "A_eq": a_eq, "b_eq": b[:num_pre],
                  "bounds": [(None, None)] * f.size, "method": "highs"}
            top = optimize.linprog(-f, **kw)
            bot = optimize.linprog(f, **kw)
            if top.status == 0 and bot.status == 0:
                lo = min(lo, est + float(top.fun))
                hi = max(hi, est - float(bot.fun))
            elif top.status == 3 or bot.status == 3:
                return -math.inf, math.inf
    if lo > hi:  # every LP infeasible: the package falls back to the point estimate
        return est, est
    return lo, hi


def _gamma(l_vec: np.ndarray) -> np.ndarray:
    """An invertible matrix whose first row is ``l_vec`` (the test does not depend on the rest)."""
    n = l_vec.size
    q, _ = np.linalg.qr(np.column_stack([l_vec, np.eye(n)]))
    rest = q[:, 1:n].T
    return np.vstack([l_vec, rest])


def _rm_accept(b, s, num_pre, num_post, lv, mbar, alpha, theta, lf_sims, seed) -> np.ndarray:
    accept = np.zeros(theta.size, dtype=bool)
    for s_idx in range(-(num_pre - 1), 1):
        for positive in (True, False):
            a = _create_a_rm(num_pre, num_post, mbar, s_idx, positive)
            rows = np.flatnonzero(np.abs(a[:, num_pre:]).sum(axis=1) > 0)
            a = a[rows]
            accept |= _arp_lf_accept(a, b, s, num_pre, lv, alpha, theta, lf_sims, seed)
    return accept


def _arp_lf_accept(a, b, s, num_pre, lv, alpha, theta, lf_sims, seed) -> np.ndarray:
    """Accept/reject of the C-LF hybrid test of ``theta`` for ``{A delta <= 0}`` over a grid."""
    gi = np.linalg.inv(_gamma(lv))
    ag = a[:, num_pre:] @ gi
    a1, x = ag[:, 0], ag[:, 1:]
    y0 = a @ b
    sig_y = a @ s @ a.T
    sd = np.sqrt(np.clip(np.diag(sig_y), 0, None))
    if np.any(sd <= 0):
        raise EstimationError("a moment of the relative-magnitudes test has zero variance")
    dual = _make_dual(sd, x)
    kappa = alpha / 10
    lf_cv = dual.lf_cv(sig_y, kappa, lf_sims, seed)
    mod_size = (alpha - kappa) / (1 - kappa)
    ymat = y0[:, None] - np.outer(a1, theta)
    eta, gam, vlo, vup = dual.test_quantities(ymat, sig_y, lf_cv)
    sig_b = np.sqrt(np.einsum("ig,ij,jg->g", gam, sig_y, gam))
    reject = np.zeros(theta.size, dtype=bool)
    reject |= eta > lf_cv
    tiny = sig_b < 1e-12 * max(1.0, float(sd.max()))
    reject |= tiny & (eta > 0)
    rest = ~reject & ~tiny
    if rest.any():
        sb = sig_b[rest]
        maxstat = eta[rest] / sb
        zlo = vlo[rest] / sb
        zup = np.minimum(vup[rest], lf_cv) / sb
        inside = (zlo <= maxstat) & (maxstat <= zup)
        cval = np.zeros_like(maxstat)
        if inside.any():
            cval[inside] = np.maximum(0.0, _truncnorm_ppf(1 - mod_size, zlo[inside], zup[inside]))
        rej = inside & (maxstat > cval)
        idx = np.flatnonzero(rest)
        reject[idx] = rej
    return ~reject


def _truncnorm_ppf(p: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.asarray(stats.truncnorm.ppf(p, lo, hi), dtype=float)
    # degenerate truncation interval: the only point is the bound
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = np.where(np.isfinite(hi[bad]), hi[bad], lo[bad])
    return out


class _VertexDual:
    """Dual polytope ``{g >= 0, W'g = e1}`` (``W = [sd, X]``) given by its enumerated vertices."""

    def __init__(self, verts: np.ndarray):
        self.verts = verts

    def lf_cv(self, sig_y, kappa, sims, seed) -> float:
        draws = _mvn_draws(sig_y, sims, seed)
        eta = (draws @ self.verts.T).max(axis=1)
        return float(np.quantile(eta, 1 - kappa))

    def test_quantities(self, ymat, sig_y, lf_cv):
        vals = self.verts @ ymat
        best = vals.argmax(axis=0)
        eta = vals[best, np.arange(ymat.shape[1])]
        gam = self.verts[best].T
        vlo = np.full(eta.size, -np.inf)
        vup = np.full(eta.size, np.inf)
        for i in np.unique(best):
            cols = np.flatnonzero(best == i)
            g = self.verts[i]
            c = sig_y @ g / float(g @ sig_y @ g)
            vc = self.verts @ c
            s_mat = ymat[:, cols] - np.outer(c, eta[cols])
            vs = self.verts @ s_mat
            lo_rows = vc < 1 - 1e-8
            up_rows = vc > 1 + 1e-8
            if lo_rows.any():
                vlo[cols] = (vs[lo_rows] / (1 - vc[lo_rows])[:, None]).max(axis=0)
            if up_rows.any():
                vup[cols] = (vs[up_rows] / (1 - vc[up_rows])[:, None]).min(axis=0)
        return eta, gam, vlo, vup


class _LPDual:
    """Same as :class:`_VertexDual` with one LP per evaluation (for large problems)."""

    def __init__(self, w: np.ndarray):
        self.w = w

    def _max(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        m, p = self.w.shape
        rhs = np.zeros(p)
        rhs[0] = 1.0
        res = optimize.linprog(-y, A_eq=self.w.T, b_eq=rhs, bounds=[(0, None)] * m,
                               method="highs-ds")
        if res.status != 0:
            raise EstimationError(f"the ARP linear programme failed: {res.message}")
        return float(-res.fun), np.asarray(res.x)

    def lf_cv(self, sig_y, kappa, sims, seed) -> float:
        draws = _mvn_draws(sig_y, sims, seed)
        eta = np.array([self._max(d)[0] for d in draws])
        return float(np.quantile(eta, 1 - kappa))

    def _edge(self, s_vec, c, start, eta) -> float:
        # Newton iteration of the package's .vlo_vup_dual_fn on g(v) = max_g g'(s + c v) = v
        v = start
        for _ in range(100):
            val, g = self._max(s_vec + c * v)
            if abs(val - v) <= 1e-10 * max(1.0, abs(v)):
                return v
            denom = 1 - float(g @ c)
            if abs(denom) < 1e-14:
                return eta
            v_new = float(g @ s_vec) / denom
            if abs(v_new - v) <= 1e-12 * max(1.0, abs(v)):
                return v_new
            v = v_new
        return v

    def test_quantities(self, ymat, sig_y, lf_cv):
        n = ymat.shape[1]
        eta = np.empty(n)
        gam = np.empty((self.w.shape[0], n))
        vlo = np.full(n, -np.inf)
        vup = np.full(n, np.inf)
        for j in range(n):
            e, g = self._max(ymat[:, j])
            eta[j], gam[:, j] = e, g
            if e <= 0 or e > lf_cv:
                # decided without the truncation points: accepted (the statistic is <= 0 and
                # the critical value >= 0) or rejected by the least-favourable first stage
                continue
            sb2 = float(g @ sig_y @ g)
            c = sig_y @ g / sb2
            s_vec = ymat[:, j] - c * e
            span = 20 * math.sqrt(sb2)
            hi, lo = max(100.0, e + span), min(-100.0, e - span)
            vup[j] = math.inf if abs(self._max(s_vec + c * hi)[0] - hi) <= 1e-9 else \
                self._edge(s_vec, c, hi, e)
            vlo[j] = -math.inf if abs(self._max(s_vec + c * lo)[0] - lo) <= 1e-9 else \
                self._edge(s_vec, c, lo, e)
        return eta, gam, vlo, vup


def _mvn_draws(cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0, None))
    z = np.random.default_rng(seed).standard_normal((int(n), cov.shape[0]))
    return z @ root.T


def _make_dual(sd: np.ndarray, x: np.ndarray):
    w = np.column_stack([sd, x])
    m, p = w.shape
    if math.comb(m, p) > _MAX_SUPPORTS:
        return _LPDual(w)
    return _VertexDual(_vertices(w))


def _vertices(w: np.ndarray) -> np.ndarray:
    """Vertices of ``{g >= 0, W'g = e1}`` by enumerating bases (supports of size ``rank W``)."""
    m, p = w.shape
    rhs = np.zeros(p)
    rhs[0] = 1.0
    combos = np.array(list(itertools.combinations(range(m), p)), dtype=int)
    mats = np.transpose(w[combos], (0, 2, 1))  # (n, p, p): W_S'
    scale = np.abs(w).max(axis=0)
    det = np.linalg.det(mats / scale[None, :, None])
    ok = np.abs(det) > 1e-10
    combos, mats = combos[ok], mats[ok]
    sol = np.linalg.solve(mats, np.broadcast_to(rhs, (mats.shape[0], p))[..., None])[..., 0]
    keep = (sol >= -1e-10 * np.abs(sol).max(axis=1, keepdims=True)).all(axis=1)
    verts = np.zeros((int(keep.sum()), m))
    rows = np.repeat(np.arange(verts.shape[0]), p)
    verts[rows, combos[keep].ravel()] = np.clip(sol[keep], 0, None).ravel()
    if verts.shape[0] == 0:
        raise EstimationError("the ARP dual polytope has no vertex (the moments are degenerate)")
    key = np.round(verts / np.abs(verts).max(), 10)
    _, first = np.unique(key, axis=0, return_index=True)
    return verts[np.sort(first)]


# ---------------------------------------------------------------------------------------------
# Delta^SD: optimal fixed-length confidence interval


def delta_sd_upper_bound_mpre(betahat, sigma, num_pre: int, alpha: float = 0.05) -> float:
    """Upper confidence bound for ``M`` from the pre-period second differences
    (``DeltaSD_upperBound_Mpre``), the end of the default ``M`` grid."""
    b = np.asarray(betahat, dtype=float).ravel()[:num_pre]
    s = np.asarray(sigma, dtype=float)[:num_pre, :num_pre]
    if num_pre < 2:
        raise DataError("an upper bound for M needs at least two pre-period coefficients")
    at = np.zeros((num_pre - 1, num_pre + 1))
    for r in range(num_pre - 1):
        at[r, r:r + 3] = (1.0, -2.0, 1.0)
    at = np.delete(at, num_pre, axis=1)
    a = np.vstack([at, -at])
    se = np.sqrt(np.diag(a @ s @ a.T))
    return float((a @ b + stats.norm.ppf(1 - alpha) * se).max())


def _default_m_grid(b, s, num_pre) -> tuple[float, ...]:
    top = math.sqrt(s[0, 0]) if num_pre == 1 else delta_sd_upper_bound_mpre(b, s, num_pre)
    return tuple(float(x) for x in np.linspace(0.0, max(top, 0.0), 10))


def folded_normal_quantile(p: float, mu: float) -> float:
    """``p`` quantile of ``|N(mu, 1)|`` (exact; the package simulates 10^6 draws)."""
    mu = abs(float(mu))
    ndtr = special.ndtr  # what stats.norm.cdf computes (bit for bit), without its per-call checks

    def f(c):
        return ndtr(c - mu) - ndtr(-c - mu) - p

    hi = mu + 10.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-14))


class _FLCIProblem:
    """Affine estimators ``l_pre' beta_pre + l' beta_post`` parametrised as in the package by
    ``w`` (``l_pre = (w_1, w_2 - w_1, ..., w_K - w_{K-1})``), with ``sum(w) = sum_t t l_t``.
    Worst-case bias over Delta^SD(1): ``const + sum_k |w_1 + ... + w_k|``.

    With ``z = cumsum(w)`` (``z_K = sum(w)`` fixed) the bias is ``const + |z_K| + sum_{k<K} |z_k|``
    and the variance a quadratic in ``z_free = z_1..z_{K-1}``, so the frontier of least variance
    for each bias is the path of the lasso ``min var(z) + lam * sum |z_free|``, solved here by
    coordinate descent; the half-length is minimised along that path."""

    def __init__(self, sigma, num_pre, num_post, lv):
        k, t = num_pre, num_post
        self.k = k
        self.lv = lv
        lmat = np.eye(k)
        for col in range(k - 1):
            lmat[col + 1, col] = -1.0
        self.lmat = lmat
        self.scale = math.sqrt(float(lv @ sigma[k:, k:] @ lv)) or 1.0
        sc2 = self.scale**2
        s_pre = sigma[:k, :k] / sc2
        s_pp = sigma[:k, k:] @ lv / sc2
        self.const_var = float(lv @ sigma[k:, k:] @ lv) / sc2
        self.sum_w = float(np.arange(1, t + 1) @ lv)
        self.const_bias = sum(abs(float(np.arange(1, s + 1) @ lv[t - s:])) for s in
                              range(1, t + 1)) - self.sum_w
        # w = D z; l_pre = lmat @ D @ z = P z (second differences of z)
        dmat = np.eye(k)
        for col in range(k - 1):
            dmat[col + 1, col] = -1.0
        pmat = lmat @ dmat
        p_free, p_last = pmat[:, :k - 1], pmat[:, k - 1] * self.sum_w
        self.p_free, self.p_last, self.dmat = p_free, p_last, dmat
        self.quad = p_free.T @ s_pre @ p_free
        self.lin = 2 * p_free.T @ (s_pre @ p_last + s_pp)
        self.const = float(p_last @ s_pre @ p_last + 2 * p_last @ s_pp + self.const_var)

    def w_of(self, z_free):
        return self.dmat @ np.append(z_free, self.sum_w)

    def var(self, z_free):
        return float(z_free @ self.quad @ z_free + self.lin @ z_free + self.const)

    def bias(self, z_free):
        return self.const_bias + abs(self.sum_w) + float(np.abs(z_free).sum())

    def lasso_path(self) -> list[tuple[float, float, np.ndarray, np.ndarray, np.ndarray]]:
        """Exact solution path of ``min z'Qz + lin'z + lam * sum|z|`` (LARS-lasso homotopy), as
        segments ``(lam_hi, lam_lo, active, a, b)`` on which ``z_active = a + lam * b``."""
        n = self.k - 1
        q2, lin = 2 * self.quad, self.lin
        if n == 0:
            return []
        lam = float(np.abs(lin).max())
        if lam <= 0:
            return [(0.0, 0.0, np.zeros(n, dtype=bool), np.zeros(0), np.zeros(0))]
        active = np.zeros(n, dtype=bool)
        sign = np.zeros(n)
        j = int(np.abs(lin).argmax())
        active[j], sign[j] = True, -np.sign(lin[j])
        segs = []
        for _ in range(20 * n + 20):
            idx = np.flatnonzero(active)
            inv = np.linalg.inv(q2[np.ix_(idx, idx)])
            a = -inv @ lin[idx]
            b = -inv @ sign[idx]
            # inactive correlations c = alpha + lam * beta; join when |c| = lam
            alpha = lin + q2[:, idx] @ a
            beta = q2[:, idx] @ b
            cands = []
            for k in np.flatnonzero(~active):
                for val, sg in ((alpha[k] / (1 - beta[k]) if beta[k] != 1 else -1.0, -1.0),
                                (-alpha[k] / (1 + beta[k]) if beta[k] != -1 else -1.0, 1.0)):
                    if 0 <= val < lam * (1 - 1e-12):
                        cands.append((val, k, sg, "join"))
            for pos, k in enumerate(idx):
                if b[pos] != 0:
                    val = -a[pos] / b[pos]
                    if 0 <= val < lam * (1 - 1e-12):
                        cands.append((val, k, 0.0, "leave"))
            if not cands:
                segs.append((lam, 0.0, active.copy(), a, b))
                break
            nxt, k, sg, kind = max(cands, key=lambda c: c[0])
            segs.append((lam, nxt, active.copy(), a, b))
            if kind == "join":
                active[k], sign[k] = True, sg
            else:
                active[k], sign[k] = False, 0.0
            lam = nxt
            if lam <= 0:
                break
        return segs

    @staticmethod
    def z_at(seg, lam, n):
        z = np.zeros(n)
        z[seg[2]] = seg[3] + lam * seg[4]
        return z


def flci(betahat, sigma, num_pre: int, num_post: int, m: float, *, l_vec=None,
         alpha: float = 0.05) -> tuple[float, float]:
    """Optimal FLCI for ``theta = l_vec' tau_post`` under Delta^SD(``m``) (``findOptimalFLCI``)."""
    b, s, lv = _check(betahat, sigma, num_pre, num_post, l_vec, alpha)
    if m < 0 or not math.isfinite(m):
        raise DataError(f"M must be a non-negative number, got {m!r}")
    prob = _FLCIProblem(s, num_pre, num_post, lv)
    m_sc = m / prob.scale

    def half(z):
        sd = math.sqrt(max(prob.var(z), 1e-300))
        return folded_normal_quantile(1 - alpha, m_sc * prob.bias(z) / sd) * sd

    n = num_pre - 1
    segs = prob.lasso_path()
    z_minvar = np.linalg.solve(2 * prob.quad, -prob.lin) if n else np.zeros(0)
    cands = [z_minvar, np.zeros(n)]
    if m > 0 and segs:
        # the half-length is unimodal along the path: search around its best breakpoint
        points = [(seg, seg[0]) for seg in segs] + [(segs[-1], segs[-1][1])]
        vals = [half(prob.z_at(seg, lam, n)) for seg, lam in points]
        best = int(np.argmin(vals))
        for seg in segs[max(best - 1, 0):best + 1]:
            hi, lo = seg[0], seg[1]
            if hi - lo <= 0:
                continue
            res = optimize.minimize_scalar(lambda lam, seg=seg: half(prob.z_at(seg, lam, n)),
                                           bounds=(lo, hi), method="bounded",
                                           options={"xatol": 1e-12 * max(hi, 1e-300)})
            cands.append(prob.z_at(seg, float(res.x), n))
        cands.append(prob.z_at(points[best][0], points[best][1], n))
    z_star = min(cands, key=half)
    halflength = half(z_star) * prob.scale
    l_pre = prob.lmat @ prob.w_of(z_star)
    centre = float(l_pre @ b[:num_pre] + lv @ b[num_pre:])
    return centre - halflength, centre + halflength


def worst_case_bias_sd(v_pre, l_vec, num_pre: int, m: float) -> float:
    """Worst-case |bias| of ``v_pre' beta_pre + l_vec' beta_post`` for ``l_vec' tau_post`` over
    Delta^SD(``m``), by linear programming (a check of the closed form the FLCI uses)."""
    v_pre = np.asarray(v_pre, dtype=float)
    lv = np.asarray(l_vec, dtype=float)
    t = lv.size
    n = num_pre + t
    # delta with delta_0 = 0 inserted at position num_pre; second differences within [-m, m]
    full = np.zeros((n - 1, n + 1))
    for r in range(n - 1):
        full[r, r:r + 3] = (1.0, -2.0, 1.0)
    a = np.delete(full, num_pre, axis=1)
    obj = np.concatenate([v_pre, lv])
    a_ub = np.vstack([a, -a])
    b_ub = np.full(a_ub.shape[0], float(m))
    res = optimize.linprog(-obj, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * n,
                           method="highs")
    if res.status == 3:
        return math.inf
    if res.status != 0:
        raise EstimationError(f"worst-case bias LP failed: {res.message}")
    return float(-res.fun)
