"""Synthetic difference-in-differences (Arkhangelsky, Athey, Hirshberg, Imbens & Wager 2021, AER).

A line-by-line port of the R package ``synthdid`` (github synth-inference/synthdid, files
``R/synthdid.R``, ``R/solver.R``, ``R/utils.R`` and ``R/vcov.R``), without time-varying covariates:

* the panel is ``Y`` (units x times) with the ``N0`` control units in the first rows and the ``T0``
  pre-period times in the first columns; the treated block is the last ``N1`` rows and ``T1``
  columns (simultaneous adoption);
* unit weights ``omega`` solve the ridge-penalised synthetic control problem on the *collapsed*
  panel (treated rows and post columns averaged) with an intercept, penalty
  ``zeta_omega = (N1 * T1) ** (1/4) * noise_level`` where ``noise_level`` is the standard deviation
  of the first differences of the control units' pre-period outcomes; time weights ``lambda``
  solve the analogous problem across time with the 'infinitesimal' penalty ``1e-6 * noise_level``;
* both by Frank-Wolfe with exact line search, stopped when an iteration lowers the penalised
  objective by less than ``min_decrease ** 2`` (``min_decrease = 1e-5 * noise_level``) or after
  ``max_iter`` iterations; first 100 iterations, then the package's sparsification (weights at most a
  quarter of the largest set to zero, the rest renormalised), then up to ``max_iter`` more;
* the estimate is ``(-omega, 1/N1) Y (-lambda, 1/T1)``.

:func:`sc_estimate` (no intercept, no time weights, penalty ``1e-6 * noise_level``) and
:func:`did_estimate` (uniform weights) are the package's special cases. :func:`placebo_se` is the
package's ``vcov(method = "placebo")`` (Algorithm 4): controls are permuted, the last ``N1`` of them
play the treated units, the estimator is rerun with the original penalties (weights initialised at
the original ones), and the standard error is the standard deviation of the placebo estimates with
divisor ``replications``. The permutations are drawn exactly as R draws them (:class:`RRandom`:
R's Mersenne-Twister seeding and rejection sampling), so with the default 200 replications and
seed 12345 the standard error is the package's ``set.seed(12345); vcov(fit, method = "placebo")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sveval.errors import EstimationError

#: number of placebo replications of :func:`placebo_se` (the package's default)
PLACEBO_REPLICATIONS = 200
#: seed of the placebo permutations: the package vignette's ``set.seed(12345)``, with which R's
#: generator (reproduced by :class:`RRandom`) gives the placebo standard errors the paper prints
PLACEBO_SEED = 12345

Estimator = Literal["sdid", "sc", "did"]


@dataclass(frozen=True)
class SDIDOptions:
    """Tuning of one estimator, kept with the fit so placebo refits reuse it (as the package does)."""

    zeta_omega: float
    zeta_lambda: float
    omega_intercept: bool = True
    lambda_intercept: bool = True
    update_omega: bool = True
    update_lambda: bool = True
    min_decrease: float = 1e-5
    max_iter: int = 10_000
    sparsify: bool = True
    max_iter_pre_sparsify: int = 100


@dataclass(frozen=True)
class SDIDFit:
    """An SDID / SC / DiD estimate with its weights and the data it was computed on."""

    estimate: float
    estimator: Estimator
    omega: np.ndarray  # unit weights of the N0 controls
    lam: np.ndarray  # time weights of the T0 pre-periods
    Y: np.ndarray = field(repr=False)
    N0: int = 0
    T0: int = 0
    options: SDIDOptions | None = None
    noise_level: float = float("nan")

    @property
    def N1(self) -> int:
        return self.Y.shape[0] - self.N0

    @property
    def T1(self) -> int:
        return self.Y.shape[1] - self.T0

    def synthetic(self) -> np.ndarray:
        """Counterfactual path of the treated average: the omega-weighted controls, shifted by the
        lambda-weighted pre-period gap (for SC, whose lambda is zero, no shift). Its post-period mean
        gap to the treated average is the estimate."""
        y1 = self.Y[self.N0:].mean(axis=0)
        s = self.omega @ self.Y[: self.N0]
        shift = float(self.lam @ (y1[: self.T0] - s[: self.T0]))
        return s + shift

    def effect_curve(self) -> np.ndarray:
        """Per-post-period effects whose mean is the estimate (``synthdid_effect_curve``)."""
        tau = np.concatenate([-self.omega, np.full(self.N1, 1 / self.N1)]) @ self.Y
        return tau[self.T0:] - float(tau[: self.T0] @ self.lam)


# ------------------------------------------------------------------------------------------------
# solver (R/solver.R, R/utils.R)
def collapsed_form(Y: np.ndarray, N0: int, T0: int) -> np.ndarray:
    """``(N0 + 1) x (T0 + 1)``: treated rows and post columns replaced by their means.

    ``Y`` may be a batch ``R x N x T``; the result is then ``R x (N0 + 1) x (T0 + 1)``.
    """
    Y = np.asarray(Y, float)
    top = np.concatenate([Y[..., :N0, :T0], Y[..., :N0, T0:].mean(axis=-1, keepdims=True)], axis=-1)
    bottom = np.concatenate([Y[..., N0:, :T0].mean(axis=-2), Y[..., N0:, T0:].mean(axis=(-2, -1))[..., None]],
                            axis=-1)
    return np.concatenate([top, bottom[..., None, :]], axis=-2)


def sparsify_weights(v: np.ndarray) -> np.ndarray:
    """The package's ``sparsify_function``: zero weights at most ``max / 4``, renormalise (by row)."""
    v = np.where(v <= v.max(axis=-1, keepdims=True) / 4, 0.0, v)
    return v / v.sum(axis=-1, keepdims=True)


def sc_weight_fw(Y: np.ndarray, zeta: float | np.ndarray, intercept: bool = True,
                 lam: np.ndarray | None = None, min_decrease: float | np.ndarray = 1e-3,
                 max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Frank-Wolfe for weights ``lam`` on the first ``T0 = ncol - 1`` columns matching the last.

    Minimises ``zeta^2 ||lam||^2 + ||A lam - b||^2 / N`` with ``A = Y[:, :T0]``, ``b = Y[:, T0]``
    (columns centred first if ``intercept``) over the simplex, by the package's Frank-Wolfe steps
    with exact line search (``fw.step``), stopping after an iteration that lowers the objective by
    ``min_decrease^2`` or less, or after ``max_iter`` iterations (``sc.weight.fw``).

    ``Y`` may be a batch ``R x N x (T0 + 1)`` of problems (the placebo replications), each stopped
    by its own rule. ``A lam`` and ``A'A lam`` are updated along each step rather than recomputed
    (the step moves ``lam`` towards a vertex, so both move by a column), which makes an iteration
    O(N + T0) instead of O(N T0); to rounding, the iterates are the package's. Returns the weights
    and the number of iterations.
    """
    single = np.ndim(Y) == 2
    Y = np.asarray(Y, float)[None] if single else np.asarray(Y, float)
    R, N, T0 = Y.shape[0], Y.shape[1], Y.shape[2] - 1
    lam = np.full((R, T0), 1 / T0) if lam is None else np.array(lam, float).reshape(R, T0)
    zeta2 = np.broadcast_to(np.asarray(zeta, float), (R,)) ** 2
    md2 = np.broadcast_to(np.asarray(min_decrease, float), (R,)) ** 2
    if intercept:
        Y = Y - Y.mean(axis=1, keepdims=True)
    A, b = Y[:, :, :T0], Y[:, :, T0]
    At = np.ascontiguousarray(np.swapaxes(A, 1, 2))  # R x T0 x N: columns of A as rows
    G = At @ A  # R x T0 x T0
    c = (At @ b[:, :, None])[:, :, 0]
    eta = (N * zeta2)[:, None]
    rows = np.arange(R)
    Ax = (A @ lam[:, :, None])[:, :, 0]
    Gx = (G @ lam[:, :, None])[:, :, 0]
    active = np.ones(R, bool)
    prev = np.full(R, np.nan)
    iters = np.zeros(R, int)
    t = 0
    while t < max_iter and active.any():
        t += 1
        half_grad = Gx - c + eta * lam
        i = np.argmin(half_grad, axis=1)
        d_x = -lam
        d_x[rows, i] += 1
        d_err = At[rows, i] - Ax
        num = -np.einsum("rt,rt->r", half_grad, d_x)
        den = np.einsum("rn,rn->r", d_err, d_err) + eta[:, 0] * np.einsum("rt,rt->r", d_x, d_x)
        still = ~np.any(d_x != 0, axis=1) | ~active
        step = np.where(still, 0.0, np.clip(num / np.where(still, 1.0, den), 0.0, 1.0))
        lam = lam + step[:, None] * d_x
        Ax = Ax + step[:, None] * d_err
        Gx = Gx + step[:, None] * (G[rows, :, i] - Gx)
        err = Ax - b
        val = zeta2 * np.einsum("rt,rt->r", lam, lam) + np.einsum("rn,rn->r", err, err) / N
        iters[active] = t
        if t >= 2:
            active &= prev - val > md2
        prev = np.where(iters == t, val, prev)
    return (lam[0], iters[0]) if single else (lam, iters)


# ------------------------------------------------------------------------------------------------
# estimators (R/synthdid.R)
def noise_level_of(Y: np.ndarray, N0: int, T0: int) -> float:
    """Standard deviation (divisor n - 1) of the first differences of the controls' pre-period rows."""
    if T0 < 2:
        raise EstimationError("synthetic DiD needs at least 2 pre-period times")
    d = np.diff(Y[:N0, :T0], axis=1)
    return float(np.std(d, ddof=1)) if d.size > 1 else 0.0


def _check(Y: np.ndarray, N0: int, T0: int) -> np.ndarray:
    Y = np.asarray(Y, float)
    if Y.ndim != 2 or not (0 < N0 < Y.shape[0]) or not (0 < T0 < Y.shape[1]):
        raise EstimationError(f"synthetic DiD needs controls, treated units, pre and post times; got a "
                              f"{Y.shape} panel with N0={N0}, T0={T0}")
    if not np.all(np.isfinite(Y)):
        raise EstimationError("synthetic DiD needs a complete panel (missing or infinite outcomes)")
    return Y


def _fit_batch(Ys: np.ndarray, N0: int, T0: int, opts: SDIDOptions, omega: np.ndarray | None,
               lam: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights and estimates for a batch ``R x N x T`` of panels sharing ``N0``, ``T0`` and ``opts``."""
    R, N, T = Ys.shape
    N1, T1 = N - N0, T - T0
    pre_iter = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    Yc = collapsed_form(Ys, N0, T0)
    fw = dict(min_decrease=opts.min_decrease)
    if opts.update_lambda:
        lam, _ = sc_weight_fw(Yc[:, :N0], opts.zeta_lambda, opts.lambda_intercept, lam, max_iter=pre_iter, **fw)
        if opts.sparsify:
            lam, _ = sc_weight_fw(Yc[:, :N0], opts.zeta_lambda, opts.lambda_intercept, sparsify_weights(lam),
                                  max_iter=opts.max_iter, **fw)
    if opts.update_omega:
        A = np.swapaxes(Yc[:, :, :T0], 1, 2)
        omega, _ = sc_weight_fw(A, opts.zeta_omega, opts.omega_intercept, omega, max_iter=pre_iter, **fw)
        if opts.sparsify:
            omega, _ = sc_weight_fw(A, opts.zeta_omega, opts.omega_intercept, sparsify_weights(omega),
                                    max_iter=opts.max_iter, **fw)
    omega = np.broadcast_to(np.asarray(omega, float), (R, N0))
    lam = np.broadcast_to(np.asarray(lam, float), (R, T0))
    u = np.concatenate([-omega, np.full((R, N1), 1 / N1)], axis=1)
    v = np.concatenate([-lam, np.full((R, T1), 1 / T1)], axis=1)
    est = np.einsum("rn,rnt,rt->r", u, Ys, v)
    return est, omega, lam


def _fit(Y: np.ndarray, N0: int, T0: int, opts: SDIDOptions, omega: np.ndarray | None,
         lam: np.ndarray | None, estimator: Estimator, noise_level: float) -> SDIDFit:
    est, om, la = _fit_batch(Y[None], N0, T0, opts, None if omega is None else omega[None],
                             None if lam is None else lam[None])
    return SDIDFit(float(est[0]), estimator, om[0].copy(), la[0].copy(), Y, N0, T0, opts, noise_level)


def synthdid_estimate(Y: np.ndarray, N0: int, T0: int, *, noise_level: float | None = None,
                      eta_omega: float | None = None, eta_lambda: float = 1e-6,
                      omega_intercept: bool = True, lambda_intercept: bool = True,
                      omega: np.ndarray | None = None, lam: np.ndarray | None = None,
                      min_decrease: float | None = None, max_iter: int = 10_000,
                      sparsify: bool = True, max_iter_pre_sparsify: int = 100,
                      estimator: Estimator = "sdid") -> SDIDFit:
    """Synthetic DiD estimate of the average effect on the treated block (``synthdid_estimate``).

    Parameters
    ----------
    Y : units x times outcomes, controls first (rows ``:N0``), pre-period first (columns ``:T0``)
    N0, T0 : number of control units and of pre-period times
    noise_level : sigma; default the sd of the controls' pre-period first differences
    eta_omega : ``zeta_omega = eta_omega * noise_level``; default ``(N1 * T1) ** 0.25``
    eta_lambda : ``zeta_lambda = eta_lambda * noise_level``
    omega, lam : fixed weights (not re-estimated) when given
    min_decrease : stopping threshold; default ``1e-5 * noise_level``
    max_iter, sparsify, max_iter_pre_sparsify : Frank-Wolfe iterations and sparsification

    Returns
    -------
    SDIDFit
    """
    Y = _check(Y, N0, T0)
    N1, T1 = Y.shape[0] - N0, Y.shape[1] - T0
    sigma = noise_level_of(Y, N0, T0) if noise_level is None else float(noise_level)
    eta_o = (N1 * T1) ** 0.25 if eta_omega is None else eta_omega
    opts = SDIDOptions(zeta_omega=eta_o * sigma, zeta_lambda=eta_lambda * sigma,
                       omega_intercept=omega_intercept, lambda_intercept=lambda_intercept,
                       update_omega=omega is None, update_lambda=lam is None,
                       min_decrease=1e-5 * sigma if min_decrease is None else min_decrease,
                       max_iter=max_iter, sparsify=sparsify, max_iter_pre_sparsify=max_iter_pre_sparsify)
    return _fit(Y, N0, T0, opts, omega, lam, estimator, sigma)


def sc_estimate(Y: np.ndarray, N0: int, T0: int, eta_omega: float = 1e-6, **kw) -> SDIDFit:
    """Synthetic control as the package defines it: no intercept, zero time weights, tiny ridge."""
    return synthdid_estimate(Y, N0, T0, eta_omega=eta_omega, lam=np.zeros(T0), omega_intercept=False,
                             estimator="sc", **kw)


def did_estimate(Y: np.ndarray, N0: int, T0: int, **kw) -> SDIDFit:
    """Difference-in-differences as the package defines it: uniform unit and time weights."""
    return synthdid_estimate(Y, N0, T0, lam=np.full(T0, 1 / T0), omega=np.full(N0, 1 / N0),
                             estimator="did", **kw)


ESTIMATORS = {"sdid": synthdid_estimate, "sc": sc_estimate, "did": did_estimate}


# ------------------------------------------------------------------------------------------------
# inference (R/vcov.R)
class RRandom:
    """R's default generator (Mersenne-Twister seeded by ``set.seed``, ``sample`` by rejection).

    Reproduces ``set.seed(seed); sample(1:n)`` of R >= 3.6 exactly, so that the placebo standard
    error equals the package's ``set.seed(seed); vcov(fit, method = "placebo")`` draw for draw.
    """

    def __init__(self, seed: int) -> None:
        s = seed & 0xFFFFFFFF
        for _ in range(50):  # R's initial scrambling
            s = (69069 * s + 1) & 0xFFFFFFFF
        key = []
        for _ in range(625):  # mti, then the 624 words of the state
            s = (69069 * s + 1) & 0xFFFFFFFF
            key.append(s)
        self._bg = np.random.MT19937(0)
        self._bg.state = {"bit_generator": "MT19937",
                          "state": {"key": np.array(key[1:], dtype=np.uint32), "pos": 624}}

    def unif(self) -> float:
        v = int(self._bg.random_raw()) * 2.3283064365386963e-10
        if v <= 0:
            return 0.5 * 2.328306437080797e-10
        return 1 - 0.5 * 2.328306437080797e-10 if 1 - v <= 0 else v

    def _index(self, n: int) -> int:
        bits = int(np.ceil(np.log2(n)))
        while True:
            v = 0
            for _ in range(0, bits + 1, 16):
                v = 65536 * v + int(self.unif() * 65536)
            v &= (1 << bits) - 1
            if v < n:
                return v

    def permutation(self, n: int) -> np.ndarray:
        """``sample(1:n) - 1``."""
        x, out = list(range(n)), []
        for m in range(n, 0, -1):
            j = self._index(m)
            out.append(x[j])
            x[j] = x[m - 1]
        return np.array(out)


def _sum_normalize(x: np.ndarray) -> np.ndarray:
    s = x.sum()
    return x / s if s != 0 else np.full(len(x), 1 / len(x))


def placebo_estimates(fit: SDIDFit, replications: int = PLACEBO_REPLICATIONS,
                      seed: int = PLACEBO_SEED, rng: Literal["r", "numpy"] = "r") -> np.ndarray:
    """Placebo estimates of Algorithm 4: each permutes the controls, treats the last ``N1`` of them.

    The refit keeps the original penalties and stopping rule and starts from the original weights
    (unit weights restricted to the placebo controls and renormalised), as ``placebo_se`` does.
    With ``rng = "r"`` the permutations are R's ``set.seed(seed); sample(1:N0)``, one a replication.
    """
    N0, N1 = fit.N0, fit.N1
    if N0 <= N1:
        raise EstimationError("the placebo standard error needs more control units than treated units")
    assert fit.options is not None
    gen = RRandom(seed) if rng == "r" else np.random.default_rng(seed)
    perms = np.array([gen.permutation(N0) for _ in range(replications)])
    n0 = N0 - N1
    omega0 = np.array([_sum_normalize(fit.omega[ind[:n0]]) for ind in perms])
    lam0 = np.tile(fit.lam, (replications, 1))
    est, _, _ = _fit_batch(fit.Y[perms], n0, fit.T0, fit.options, omega0, lam0)
    return est


def placebo_se(fit: SDIDFit, replications: int = PLACEBO_REPLICATIONS, seed: int = PLACEBO_SEED,
               rng: Literal["r", "numpy"] = "r") -> float:
    """``sqrt(vcov(fit, method = "placebo"))``: sd of the placebo estimates, divisor ``replications``."""
    return float(np.std(placebo_estimates(fit, replications, seed, rng), ddof=0))
