"""Estimators of the ITS design: count models and models of continuous measures.

Every estimator takes the outcome ``y``, design ``X``, log ``offset`` (counts), the month index
``t`` and series id of each row, and returns a :class:`ModelFit` with coefficients, their
covariance, the degrees of freedom of the reference distribution (None = normal) and residuals.

Models (``ITSOptions.model``):

``poisson``       Poisson GLM, model-based (likelihood) standard errors. Assumes no
                  overdispersion and no autocorrelation: use for reference or very low counts.
``quasipoisson``  Poisson mean model with variance ``phi * mu``. With ``ar_order = 0`` the classic
                  quasi-Poisson GLM (``phi`` = Pearson chi-square / residual df, t intervals). With
                  ``ar_order = p >= 1`` (the default for counts) the working residuals follow an
                  AR(p) process: the coefficients solve the GLS-IRLS estimating equations with an
                  AR(p) working correlation whose parameters and ``phi`` are estimated by restricted
                  maximum likelihood (REML) on the working scale at every iteration (a GEE with an
                  autoregressive working correlation, i.e. penalised quasi-likelihood with AR errors),
                  ``phi`` floored at 1 (Poisson variation is the least there can be), and t
                  intervals on the residual degrees of freedom. With ``ar_order = 0`` and
                  ``interval = "profile"`` (the default at low counts) the intervals are
                  profile-likelihood intervals, see :mod:`sveval.designs.its_profile`.
``negbin``        Negative binomial (NB2) GLM with the dispersion estimated by maximum likelihood
                  (``alpha = 1/theta``; the fixed ``alpha = 1`` of statsmodels' GLM family is a
                  known pitfall), standard errors at the estimated ``alpha`` as in MASS::glm.nb.
                  statsmodels' estimate of ``alpha`` is checked against :func:`negbin_ml` (Newton
                  on the profile likelihood) and replaced where statsmodels' optimiser failed.
``ols``           Ordinary least squares, classical standard errors.
``newey_west``    OLS with Newey-West (Bartlett HAC) standard errors, lag
                  ``floor(4 (n/100)^(2/9))`` unless given, small-sample factor ``n/(n-k)``, t intervals.
``gls_ar``        GLS with AR(p) errors, the AR parameters estimated by REML (as ``nlme::gls`` with
                  ``corAR1``/``corARMA`` and ``method = "REML"``), t intervals on ``n - k`` df.
                  Unlike two-step Prais-Winsten/Cochrane-Orcutt, REML does not inherit the downward
                  bias of the residual autocorrelation on short series.
``arima``         Regression with AR(p) errors by exact maximum likelihood (statsmodels SARIMAX,
                  as R's ``arima(..., xreg=)``), normal intervals.

Rows with ``included == False`` (e.g. an excluded COVID-19 window) are left out of the fit; AR
correlations use the actual month gaps, so leaving months out does not break the AR structure.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats
from scipy.linalg import lapack

from sveval.designs.its_profile import PoissonProfile
from sveval.errors import DataError, EstimationError, OptionError

COUNT_MODELS = ("poisson", "quasipoisson", "negbin")
GAUSSIAN_MODELS = ("ols", "newey_west", "gls_ar", "arima")


@functools.cache
def _sm():
    """The statsmodels classes used here, imported from their own modules on first use
    (``statsmodels.api`` also imports every other model, the formula interface and the graphics:
    about 0.4 s more in each kernel)."""
    from types import SimpleNamespace

    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.regression.linear_model import OLS

    return SimpleNamespace(GLM=GLM, OLS=OLS, families=families)


@dataclass
class ModelFit:
    """A fitted ITS regression.

    ``df`` is the degrees of freedom of the t reference distribution, or None for the normal.
    ``link`` is ``log`` for count models (coefficients are log rate ratios) or ``identity``.
    ``resid`` are Pearson residuals (raw residuals for Gaussian models) of the fitted rows in time
    order; ``innovations`` are the residuals whitened by the fitted AR(p) process (equal to
    ``resid`` scaled when the model has no AR part).
    """

    model: str
    link: str
    params: np.ndarray
    cov: np.ndarray
    df: float | None
    scale: float
    names: list[str]
    resid: np.ndarray
    innovations: np.ndarray
    n: int
    ar: tuple[float, ...] = ()
    alpha: float | None = None
    dispersion: float | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)
    df_coef: np.ndarray | None = None
    profile: PoissonProfile | None = None  # profile-likelihood intervals (low-count default)

    def df_of(self, i: int) -> float | None:
        """Degrees of freedom for coefficient ``i`` (Satterthwaite where computed)."""
        if self.df_coef is not None:
            return float(self.df_coef[i])
        return self.df

    @property
    def bse(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    def crit(self, level: float = 0.95, i: int | None = None) -> float:
        q = 0.5 + level / 2
        df = self.df_of(i) if i is not None else self.df
        if df and df > 0 and 0 < q < 1:
            # what stats.t.ppf computes for valid arguments (stdtrit * scale + loc), without its
            # argument handling, which costs 20 times the quantile (the power study asks 200 times)
            return float(special.stdtrit(df, q) * 1.0 + 0.0)
        return float(stats.t.ppf(q, df) if df else stats.norm.ppf(q))

    def coef(self, name: str) -> tuple[float, float, float, float, float]:
        """Estimate, standard error, CI low, CI high and two-sided p of one coefficient."""
        i = self.names.index(name)
        b, se = float(self.params[i]), float(self.bse[i])
        c = self.crit(i=i)
        df = self.df_of(i)
        if self.profile is not None:
            lo, hi, p = self.profile.interval(i, se)
            return b, se, lo, hi, p
        z = b / se if se > 0 else np.inf
        p = float(2 * (stats.t.sf(abs(z), df) if df else stats.norm.sf(abs(z))))
        return b, se, b - c * se, b + c * se, p

    def linear(self, X: np.ndarray, offset: np.ndarray | float = 0.0) -> np.ndarray:
        return X @ self.params + offset

    def mean(self, X: np.ndarray, offset: np.ndarray | float = 0.0) -> np.ndarray:
        eta = self.linear(X, offset)
        return np.exp(eta) if self.link == "log" else eta

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Coefficient draws from the sampling distribution (multivariate t or normal)."""
        L = np.linalg.cholesky(self.cov + 1e-14 * np.eye(len(self.params)))
        z = rng.standard_normal((n, len(self.params)))
        df = float(np.min(self.df_coef)) if self.df_coef is not None else self.df
        if df:
            z = z / np.sqrt(rng.chisquare(df, size=(n, 1)) / df)
        return self.params + z @ L.T


# ------------------------------------------------------------------------------------------------
# AR(p) correlation machinery (shared by gls_ar and the AR-aware quasi-Poisson)
#
# Everything here is O(n) in the number of months: the inverse of an AR(p) correlation matrix is
# banded, and its Cholesky factor is the Prais-Winsten transform. Whitening row i is the
# standardised one-step prediction error of row i given the rows before it in its series, which
# for an AR(p) process is ``(z_i - sum_j phi_j z_{i-j}) / sqrt(v)`` as soon as the p months before
# row i are observed (``v`` the innovation variance of the unit-variance process). Only the first
# p rows of a series and the few rows after a gap (excluded months) need the conditional
# distribution on a short window of earlier rows: by the Markov property of the AR(p) state,
# conditioning on all earlier rows equals conditioning on the last p consecutive observed months
# before the gap and the observed rows since. The result equals ``L^-1 Z`` with ``L`` the dense
# Cholesky factor of the correlation matrix of the observed rows, and ``log|R|`` is the sum of
# the log conditional variances. No n x n matrix is formed.
# ------------------------------------------------------------------------------------------------
def pacf_to_ar(pacf: np.ndarray) -> np.ndarray:
    """AR coefficients from partial autocorrelations (Durbin-Levinson); stationary when |pacf| < 1."""
    phi = np.array([], dtype=float)
    for k, r in enumerate(pacf):
        phi = np.append(phi - r * phi[::-1], r) if k else np.array([r], dtype=float)
    return phi


def ar_acf(phi: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations 0..nlags of a stationary AR(p) process (Yule-Walker, then the recursion)."""
    phi = np.asarray(phi, dtype=float)
    p = len(phi)
    rho = np.zeros(max(nlags, p) + 1)
    rho[0] = 1.0
    if p == 0:
        return rho[: nlags + 1]
    # rho_k = sum_j phi_j rho_|k-j| for k = 1..p, a p x p linear system in rho_1..rho_p
    A = np.eye(p)
    for k in range(1, p + 1):
        for j in range(1, p + 1):
            if j != k:
                A[k - 1, abs(k - j) - 1] -= phi[j - 1]
    rho[1:p + 1] = np.linalg.solve(A, phi)
    for k in range(p + 1, len(rho)):
        rho[k] = float(np.dot(phi, rho[k - 1:k - p - 1 if k - p - 1 >= 0 else None:-1]))
    return rho[: nlags + 1]


class ARWhitener:
    """Whitening of series with AR(p) errors observed at month indices ``t`` (gaps allowed), in O(n).

    ``whiten(Z, phi)`` returns ``Q Z`` with ``Q R Q' = I`` (R the AR correlation matrix of the
    observed rows within each series, independence between series; ``Q = L^-1`` for the Cholesky
    factor ``L`` of R) and ``log|R|``. See the section comment above for the method.
    """

    def __init__(self, t: np.ndarray, series_id: np.ndarray):
        self.t = np.asarray(t, dtype=float)
        self.sid = np.asarray(series_id)
        n = len(self.t)
        order = np.lexsort((self.t, self.sid))
        if not np.array_equal(order, np.arange(n)):
            raise DataError("rows must be sorted by series then month")
        new = np.r_[True, self.sid[1:] != self.sid[:-1]]
        self.gap = np.where(new, np.inf, np.r_[np.inf, np.diff(self.t)])
        self._first = new
        self._block_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
        self._plans: dict[int, tuple] = {}
        # AR(1) pieces that do not depend on the coefficient
        self._has_prev = ~np.isinf(self.gap)
        self._gap1 = np.where(self._has_prev, self.gap, 1.0)
        self._single_no_gap = n > 0 and bool(np.all(self.gap[1:] == 1.0))

    def _plan(self, p: int) -> tuple:
        """Regular rows (p observed months just before) and the windows of the other rows."""
        if p in self._plans:
            return self._plans[p]
        n = len(self.t)
        idx = np.arange(n)
        bs = self._block_start
        # row i has its previous p months observed when row i-p is in its series p months earlier
        regular = np.zeros(n, bool)
        ok = idx - p >= bs
        ip = np.where(ok, idx - p, 0)
        regular[ok] = (self.t[ok] - self.t[ip[ok]]) == p
        # rows j whose p months j-p+1..j are all observed (the AR state at j is observed)
        full_state = np.zeros(n, bool)
        ok = idx - (p - 1) >= bs
        iq = np.where(ok, idx - (p - 1), 0)
        full_state[ok] = (self.t[ok] - self.t[iq[ok]]) == p - 1
        windows = []
        last_full = -1
        for i in range(n):
            if i == bs[i]:
                last_full = -1
            if not regular[i]:
                lo = bs[i] if last_full < 0 else max(bs[i], last_full - p + 1)
                S = np.arange(lo, i)
                ts = self.t[np.r_[S, i]]
                lags = np.abs(ts[:, None] - ts[None, :]).astype(int)
                windows.append((i, S, lags))
            if full_state[i]:
                last_full = i
        reg = np.flatnonzero(regular)
        maxlag = max([int(w[2].max()) for w in windows] + [p])
        plan = (reg, windows, maxlag)
        self._plans[p] = plan
        return plan

    def whiten(self, Z: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, float]:
        phi = np.asarray(phi, dtype=float)
        p = len(phi)
        if p == 0:
            return Z, 0.0
        if p == 1:
            r = phi[0]
            if self._single_no_gap:  # one series, no excluded months: the plain Prais-Winsten form
                s1 = math.sqrt(1.0 - r * r)
                out = np.empty_like(Z, dtype=float)
                out[0] = Z[0]
                np.subtract(Z[1:], r * Z[:-1], out=out[1:])
                out[1:] /= s1
                return out, (len(Z) - 1) * math.log(s1 * s1)
            rd = np.where(self._has_prev, r ** self._gap1, 0.0)
            s = np.sqrt(1.0 - rd**2)
            prev = np.empty_like(Z, dtype=float)
            prev[1:] = Z[:-1]
            prev[:1] = 0.0
            if Z.ndim == 2:
                out = (Z - rd[:, None] * prev) / s[:, None]
            else:
                out = (Z - rd * prev) / s
            return out, float(np.sum(np.log(s**2)))
        reg, windows, maxlag = self._plan(p)
        rho = ar_acf(phi, maxlag)
        v = 1.0 - float(np.dot(phi, rho[1:p + 1]))  # innovation variance of the unit-variance process
        out = np.empty_like(Z, dtype=float)
        acc = Z[reg].astype(float, copy=True)
        for j in range(1, p + 1):
            acc -= phi[j - 1] * Z[reg - j]
        out[reg] = acc / math.sqrt(v)
        logdet = len(reg) * math.log(v)
        for i, S, lags in windows:
            if len(S) == 0:
                out[i] = Z[i]
                continue
            R = rho[lags]
            c = np.linalg.solve(R[:-1, :-1], R[:-1, -1])
            vi = float(R[-1, -1] - R[-1, :-1] @ c)
            out[i] = (Z[i] - c @ Z[S]) / math.sqrt(vi)
            logdet += math.log(vi)
        return out, logdet

    def innovations(self, Z: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One-step prediction errors of ``Z`` (unscaled) and their variances.

        Returns ``(E, c)``: ``E[i] = Z[i] - E[Z[i] | earlier rows of its series]`` and ``c[i]`` the
        conditional variance of row i for a process of unit marginal variance, so that
        ``whiten(Z, phi)[0] == E / sqrt(c)`` and ``log|R| == sum(log c)``. These are the Kalman
        filter's forecast errors and (divided by the marginal variance) their variances.
        """
        phi = np.asarray(phi, dtype=float)
        p = len(phi)
        Z = np.asarray(Z, dtype=float)
        if p == 0:
            return Z.copy(), np.ones(len(Z))
        reg, windows, maxlag = self._plan(p)
        rho = ar_acf(phi, maxlag)
        v = 1.0 - float(np.dot(phi, rho[1:p + 1]))
        E = np.empty_like(Z)
        c = np.empty(len(Z))
        acc = Z[reg].copy()
        for j in range(1, p + 1):
            acc -= phi[j - 1] * Z[reg - j]
        E[reg] = acc
        c[reg] = v
        for i, S, lags in windows:
            if len(S) == 0:
                E[i], c[i] = Z[i], 1.0
                continue
            R = rho[lags]
            w = np.linalg.solve(R[:-1, :-1], R[:-1, -1])
            c[i] = float(R[-1, -1] - R[-1, :-1] @ w)
            E[i] = Z[i] - w @ Z[S]
        return E, c


def _qr(W: np.ndarray) -> np.ndarray:
    """LAPACK ``dgeqrf`` of ``W`` (R in the upper triangle); numpy's wrapper costs 5x the work here."""
    qr, _, _, info = lapack.dgeqrf(W)
    if info != 0:  # pragma: no cover - only on invalid input
        raise np.linalg.LinAlgError(f"QR factorisation failed (info {info})")
    return qr


def _ls_parts(W: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Triangular factor of ``X`` and the residual sum of squares of ``y`` from one QR of ``[X | y]``.

    ``W`` is ``[X | y]`` (n x (k+1)); returns ``R`` ((k+1) x (k+1), ``R[:k, :k]`` the factor of X,
    ``R[:k, k]`` = ``Q'y``) and the residual sum of squares ``R[k, k]^2``.
    """
    R = np.triu(_qr(W)[: k + 1])
    return R, float(R[k, k] ** 2)


def _reml_value(W: np.ndarray, k: int, logdet: float) -> float:
    """-2 x restricted log-likelihood (profiled over sigma2, up to a constant) of whitened ``[X | y]``."""
    n = W.shape[0]
    d = np.abs(np.diagonal(_qr(W))[: k + 1])
    rss = float(d[k] ** 2)
    return ((n - k) * math.log(max(rss, 1e-300) / (n - k)) + logdet
            + 2.0 * float(np.sum(np.log(d[:k]))))


def _gls_solution(W: np.ndarray, k: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Coefficients, residual sum of squares and ``(X'X)^-1`` of whitened ``[X | y]``."""
    R, rss = _ls_parts(W, k)
    Rinv = np.linalg.inv(R[:k, :k])
    beta = Rinv @ R[:k, k]
    return beta, rss, Rinv @ Rinv.T


def gls_ar_reml(
    y: np.ndarray,
    X: np.ndarray,
    t: np.ndarray,
    series_id: np.ndarray,
    p: int,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
    whitener: ARWhitener | None = None,
) -> dict:
    """GLS with AR(p) errors (and optional inverse-variance weights) fitted by REML.

    Returns a dict with ``beta``, ``cov`` (``sigma2 (X' Sigma^-1 X)^-1``), ``sigma2``, ``phi`` (AR
    coefficients), ``pacf``, ``resid`` (raw, weighted scale), ``innov`` (whitened) and ``df``.
    ``whitener`` reuses the :class:`ARWhitener` of ``(t, series_id)``.
    """
    n, k = X.shape
    sw = np.sqrt(weights) if weights is not None else np.ones(n)
    W = np.column_stack([X * sw[:, None], y * sw])
    wh = whitener or ARWhitener(t, series_id)

    def objective(z: np.ndarray) -> float:
        phi = pacf_to_ar(np.tanh(np.atleast_1d(z)))
        Ww, lw = wh.whiten(W, phi)
        return _reml_value(Ww, k, lw)

    if p == 0:
        pacf = np.zeros(0)
    elif p == 1:
        res = optimize.minimize_scalar(
            lambda z: objective(np.array([z])), bounds=(-3.8, 3.8), method="bounded",
            options={"xatol": 1e-9},
        )
        pacf = np.tanh(np.array([res.x]))
    else:
        z0 = np.arctanh(np.clip(start, -0.9, 0.9)) if start is not None else np.zeros(p)
        res = optimize.minimize(objective, z0, method="Nelder-Mead",
                                options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        pacf = np.tanh(np.clip(res.x, -3.8, 3.8))
    phi = pacf_to_ar(pacf) if p else np.zeros(0)
    Ww, _ = wh.whiten(W, phi)
    beta, rss, XtXi = _gls_solution(Ww, k)
    sigma2 = rss / (n - k)
    return {
        "beta": beta, "cov": sigma2 * XtXi, "sigma2": sigma2, "phi": phi, "pacf": pacf,
        "resid": W[:, k] - W[:, :k] @ beta, "innov": Ww[:, k] - Ww[:, :k] @ beta, "df": n - k,
    }


def satterthwaite_df(
    y: np.ndarray,
    X: np.ndarray,
    t: np.ndarray,
    series_id: np.ndarray,
    pacf: np.ndarray,
    sigma2: float,
    weights: np.ndarray | None = None,
    whitener: ARWhitener | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Small-sample inference of a REML GLS-AR(p) fit: Satterthwaite df and a variance correction.

    Returns ``(df, extra)``: the degrees of freedom of each coefficient and a ``k x k`` matrix to
    add to the plug-in covariance for the uncertainty in the AR parameters (Kackar-Harville).

    ``df_j = 2 V_j^2 / (g_j' A g_j)`` where ``V_j`` is the variance of coefficient j as a function
    of the covariance parameters ``theta = (log sigma2, atanh pacf)``, ``g_j`` its gradient and ``A``
    the inverse of the observed REML information of ``theta`` (numerical derivatives). Short series
    with autocorrelation get fewer df than ``n - k``, widening intervals for the uncertainty in the
    AR parameters (as in SAS/lme4 small-sample inference for mixed models). Each evaluation is one
    O(n) whitening and one QR of the n x (k + 1) whitened design.
    """
    n, k = X.shape
    sw = np.sqrt(weights) if weights is not None else np.ones(n)
    W = np.column_stack([X * sw[:, None], y * sw])
    wh = whitener or ARWhitener(t, series_id)

    def parts(theta):
        s2 = math.exp(theta[0])
        phi = pacf_to_ar(np.tanh(theta[1:]))
        Ww, lw = wh.whiten(W, phi)
        R, rss = _ls_parts(Ww, k)
        rinv = np.linalg.inv(R[:k, :k])
        beta = rinv @ R[:k, k]
        ll = -0.5 * ((n - k) * theta[0] + lw + 2 * np.sum(np.log(np.abs(np.diag(R)[:k]))) + rss / s2)
        return ll, s2 * np.sum(rinv**2, axis=1), beta

    return satterthwaite_from_parts(parts, n, k, pacf, sigma2)


def satterthwaite_from_parts(parts, n: int, k: int, pacf, sigma2: float):
    """The Satterthwaite degrees of freedom and Kackar-Harville variance of :func:`satterthwaite_df`
    from ``parts(theta) -> (REML log-likelihood, coefficient variances, coefficients)`` at the
    AR parameters on the working scale (log variance, Fisher-z partial autocorrelations), by
    central differences (shared with the lean refits of :mod:`sveval.designs.its_refit`)."""
    theta0 = np.r_[math.log(sigma2), np.arctanh(np.clip(pacf, -0.999, 0.999))]
    m = len(theta0)
    h = 1e-4
    H = np.empty((m, m))
    f0, V0, _ = parts(theta0)
    G = np.empty((m, k))
    D = np.zeros((m, k))
    for a in range(m):
        ea = np.zeros(m)
        ea[a] = h
        fp, Vp, bp = parts(theta0 + ea)
        fm, Vm, bm = parts(theta0 - ea)
        G[a] = (Vp - Vm) / (2 * h)
        D[a] = (bp - bm) / (2 * h)
        H[a, a] = (fp - 2 * f0 + fm) / h**2
        for b in range(a):
            eb = np.zeros(m)
            eb[b] = h
            H[a, b] = H[b, a] = (
                parts(theta0 + ea + eb)[0] - parts(theta0 + ea - eb)[0]
                - parts(theta0 - ea + eb)[0] + parts(theta0 - ea - eb)[0]
            ) / (4 * h**2)
    try:
        A = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        return np.full(k, float(n - k)), np.zeros((k, k))
    if not np.all(np.isfinite(A)) or np.any(np.diag(A) <= 0):
        return np.full(k, float(n - k)), np.zeros((k, k))
    # Kackar-Harville term: extra variance of beta from estimating the AR parameters, with the
    # derivative of the GLS coefficients taken at the data (its expectation is the KH term)
    extra = D.T @ A @ D
    V1 = V0 + np.diag(extra)
    q = np.einsum("aj,ab,bj->j", G, A, G)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(q > 0, 2 * V1**2 / q, n - k)
    return np.clip(df, 1.0, n - k), extra


def gls_ar_fixed(y, X, t, series_id, phi, weights=None, whitener: ARWhitener | None = None) -> dict:
    """Weighted GLS with AR errors of known coefficients ``phi`` (one IRLS step)."""
    n, k = X.shape
    sw = np.sqrt(weights) if weights is not None else np.ones(n)
    W = np.column_stack([X * sw[:, None], y * sw])
    wh = whitener or ARWhitener(t, series_id)
    Ww, _ = wh.whiten(W, phi)
    beta, rss, XtXi = _gls_solution(Ww, k)
    sigma2 = rss / (n - k)
    return {"beta": beta, "cov": sigma2 * XtXi, "sigma2": sigma2, "phi": np.asarray(phi),
            "resid": W[:, k] - W[:, :k] @ beta, "innov": Ww[:, k] - Ww[:, :k] @ beta, "df": n - k}


# ------------------------------------------------------------------------------------------------
# NB2 maximum likelihood (the refits' estimator, and the main fit's check on statsmodels)
# ------------------------------------------------------------------------------------------------
NB_LOG_ALPHA_MIN = -14.0  # the boundary search of fit_negbin runs over log(alpha) in [-14, 3]
NB_LOG_ALPHA_MAX = 12.0
NB_FAILED_LL = 1e-3  # statsmodels' NB fit is taken as failed when the maximum is this much higher


def nb_loglike(y, X, offset, beta, alpha) -> float:
    """NB2 log-likelihood of counts ``y`` at coefficients ``beta`` and dispersion ``alpha``."""
    mu = np.exp(X @ beta + offset)
    r = 1.0 / alpha
    return float(np.sum(special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
                        + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu))))


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A^-1 b``, by least squares when ``A`` is singular (a coefficient running off to infinity)."""
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, b, rcond=None)[0]


def newton_converged(step: np.ndarray, score: np.ndarray, b: np.ndarray) -> bool:
    """A Newton step this small ends the iterations: a negligible step, or a predicted gain in
    log-likelihood below 1e-11 (a coefficient running off to infinity, as with no events after the
    intervention, gains ever less; the remaining error of a regular fit is then about 1e-14)."""
    return (np.max(np.abs(step)) < 1e-13 * max(1.0, float(np.max(np.abs(b))))
            or 0.5 * float(score @ step) < 1e-11)


class _NB:
    """NB2 log-likelihood pieces with ``theta = log(alpha)``, ``r = 1 / alpha``."""

    def __init__(self, y, X, offset):
        self.y, self.X, self.off = y, X, offset

    def beta_at(self, theta: float, b: np.ndarray) -> np.ndarray:
        """Coefficients maximising the likelihood at ``alpha = exp(theta)`` (Newton, observed
        information, which is negative definite for NB2 with a log link)."""
        y, X = self.y, self.X
        r = math.exp(-theta)
        for _ in range(200):
            mu = np.exp(np.clip(X @ b + self.off, -700, 700))
            score = X.T @ (r * (y - mu) / (r + mu))
            w = r * mu * (r + y) / (r + mu) ** 2
            step = _solve(X.T @ (w[:, None] * X), score)
            b = b + step
            if newton_converged(step, score, b):
                break
        return b

    def profile_derivs(self, theta: float, b: np.ndarray) -> tuple[float, float]:
        """First and second derivative of the profile log-likelihood in ``theta`` at ``b = beta(theta)``."""
        y, X = self.y, self.X
        r = math.exp(-theta)
        mu = np.exp(X @ b + self.off)
        rm = r + mu
        dpsi = special.digamma(y + r) - special.digamma(r)
        dl_dr = dpsi - np.log1p(mu / r) + (mu - y) / rm
        d2l_dr2 = (special.polygamma(1, y + r) - special.polygamma(1, r)) + mu / (r * rm) - (mu - y) / rm**2
        g = -r * float(np.sum(dl_dr))
        h_tt = r * r * float(np.sum(d2l_dr2)) + r * float(np.sum(dl_dr))
        w = r * mu * (r + y) / rm**2
        h_bt = -r * (X.T @ ((y - mu) * mu / rm**2))
        H_bb = -(X.T @ (w[:, None] * X))
        h = h_tt - float(h_bt @ _solve(H_bb, h_bt))
        return g, h


def negbin_ml(y, X, offset, beta0: np.ndarray) -> tuple[float, np.ndarray]:
    """``(alpha, beta)`` maximising the NB2 likelihood over ``log(alpha)`` in [-14, 12].

    Like the main fit's optimiser, the search starts at ``alpha = 0.1`` and climbs the profile
    likelihood: steps in the uphill direction until the profile score changes sign (or a bound is
    reached: ``alpha = exp(-14)`` when the likelihood rises all the way towards no
    overdispersion), then safeguarded Newton steps inside the bracket.
    """
    nb = _NB(y, X, offset)
    lo_b, hi_b = NB_LOG_ALPHA_MIN, NB_LOG_ALPHA_MAX
    theta = math.log(0.1)
    b = nb.beta_at(theta, beta0)
    g, h = nb.profile_derivs(theta, b)
    # 1. bracket: walk uphill until the score changes sign
    direction = 1.0 if g > 0 else -1.0
    while True:
        step = -g / h if h < 0 else direction * 2.0
        step = direction * min(max(abs(step), 0.5), 4.0)
        new = min(max(theta + step, lo_b), hi_b)
        if new == theta:  # at a bound and still climbing towards it
            return math.exp(theta), b
        b_new = nb.beta_at(new, b)
        g_new, h_new = nb.profile_derivs(new, b_new)
        if (g_new > 0) != (direction > 0) or g_new == 0.0:
            break
        theta, b, g, h = new, b_new, g_new, h_new
    # the score is positive at lo and negative at hi
    (lo, b_lo), (hi, b_hi) = sorted([(theta, b), (new, b_new)], key=lambda x: x[0])
    theta, b, g, h = new, b_new, g_new, h_new
    # 2. safeguarded Newton inside [lo, hi]
    for _ in range(200):
        if abs(g) < 1e-10 * max(1.0, abs(h)) or hi - lo < 1e-13:
            break
        new = theta - g / h if h < 0 else (lo + hi) / 2
        if not (lo < new < hi):
            new = (lo + hi) / 2
        if abs(new - theta) < 1e-13:
            break
        start = b_lo if new - lo < hi - new else b_hi
        theta = new
        b = nb.beta_at(theta, start)
        g, h = nb.profile_derivs(theta, b)
        if g > 0:
            lo, b_lo = theta, b
        else:
            hi, b_hi = theta, b
    return math.exp(theta), b


# ------------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------------
def _glm(y, X, offset, family, scale=None):
    sm = _sm()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.GLM(y, X, family=family, offset=offset)
        res = model.fit(scale=scale, tol=1e-10, maxiter=200)
    if not np.all(np.isfinite(res.params)):
        raise EstimationError("the count model did not converge (non-finite coefficients)")
    return res


def fit_poisson(y, X, offset, names, interval: str = "wald") -> ModelFit:
    sm = _sm()

    res = _glm(y, X, offset, sm.families.Poisson())
    pr = np.asarray(res.resid_pearson)
    disp = float(np.sum(pr**2) / res.df_resid)
    profile = PoissonProfile(y, X, offset, np.asarray(res.params)) if interval == "profile" else None
    return ModelFit(
        model="poisson", link="log", params=np.asarray(res.params), cov=np.asarray(res.cov_params()),
        df=None, scale=1.0, names=names, resid=pr, innovations=pr, n=len(y), dispersion=disp,
        profile=profile,
        description="Poisson regression (log link, population offset), "
        + ("profile-likelihood intervals" if profile else "model-based standard errors"),
    )


def fit_quasipoisson(y, X, offset, names, t, series_id, ar_order=1, scale_floor=1.0,
                     small_sample=True, interval: str = "wald") -> ModelFit:
    """Quasi-Poisson; with ``ar_order >= 1`` AR(p)-correlated working residuals (see module doc).

    ``interval="profile"`` (``ar_order = 0`` only) gives profile-likelihood intervals and
    likelihood-ratio p-values (:mod:`sveval.designs.its_profile`) instead of Wald t intervals.
    """
    sm = _sm()

    res = _glm(y, X, offset, sm.families.Poisson())
    n, k = X.shape
    pr = np.asarray(res.resid_pearson)
    disp = float(np.sum(pr**2) / (n - k))
    if interval == "profile" and ar_order:
        raise EstimationError("profile-likelihood intervals need ar_order: 0 (no AR working correlation)")
    if ar_order == 0:
        phi_hat = max(disp, scale_floor) if scale_floor else disp
        cov = np.asarray(res.cov_params()) * phi_hat
        profile = (PoissonProfile(y, X, offset, np.asarray(res.params), phi=phi_hat, df=n - k)
                   if interval == "profile" else None)
        return ModelFit(
            model="quasipoisson", link="log", params=np.asarray(res.params), cov=cov, df=n - k,
            scale=phi_hat, names=names, resid=pr, innovations=pr / math.sqrt(phi_hat), n=n,
            dispersion=disp, profile=profile,
            description="quasi-Poisson regression (log link, population offset), Pearson dispersion"
            + (" floored at 1" if scale_floor else "")
            + (", profile-likelihood intervals (F reference)" if profile else ", t intervals"),
        )
    beta = np.asarray(res.params)
    t = np.asarray(t, float)
    wh = ARWhitener(t, series_id)
    pacf = None
    out = None
    converged = False
    for _outer in range(20):
        # REML step for the AR parameters at the current mean ...
        eta = X @ beta + offset
        mu = np.exp(eta)
        out = gls_ar_reml(eta - offset + (y - mu) / mu, X, t, series_id, ar_order, weights=mu, start=pacf,
                          whitener=wh)
        new_pacf = out["pacf"]
        # ... then GLS-IRLS for the coefficients with the AR parameters held fixed
        beta = out["beta"]
        for _inner in range(100):
            eta = X @ beta + offset
            mu = np.exp(eta)
            fixed = gls_ar_fixed(eta - offset + (y - mu) / mu, X, t, series_id, out["phi"], weights=mu,
                                 whitener=wh)
            step = fixed["beta"] - beta
            beta = fixed["beta"]
            if np.max(np.abs(step)) < 1e-9:
                break
        out = fixed | {"pacf": new_pacf}
        if pacf is not None and np.max(np.abs(new_pacf - pacf)) < 1e-6:
            converged = True
            break
        pacf = new_pacf
    if not converged:  # pragma: no cover - rare
        raise EstimationError("the AR quasi-Poisson model did not converge")
    assert out is not None
    sigma2 = out["sigma2"]
    phi_hat = max(sigma2, scale_floor) if scale_floor else sigma2
    cov = out["cov"] / sigma2 * phi_hat
    eta = X @ beta + offset
    mu = np.exp(eta)
    pr = (y - mu) / np.sqrt(mu)
    dfc = None
    if small_sample:
        dfc, extra = satterthwaite_df(eta - offset + (y - mu) / mu, X, t, series_id, out["pacf"], sigma2,
                                      weights=mu, whitener=wh)
        cov = cov + extra / sigma2 * phi_hat
    return ModelFit(
        model="quasipoisson", link="log", params=beta, cov=cov, df=n - k, scale=phi_hat, names=names,
        resid=pr, innovations=out["innov"] / math.sqrt(sigma2), n=n, ar=tuple(out["phi"]),
        dispersion=disp, df_coef=dfc,
        description=f"quasi-Poisson regression (log link, population offset) with AR({ar_order}) "
        "working correlation estimated by REML (GLS-IRLS), dispersion"
        + (" floored at 1" if scale_floor else "")
        + (", Kackar-Harville variance and Satterthwaite df" if small_sample else ", t intervals"),
    )


def fit_negbin(y, X, offset, names) -> ModelFit:
    sm = _sm()
    from statsmodels.discrete.discrete_model import NegativeBinomial

    start = _glm(y, X, offset, sm.families.Poisson())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nb = NegativeBinomial(y, X, offset=offset, loglike_method="nb2")
        r = nb.fit(start_params=np.r_[start.params, 0.1], disp=0, maxiter=500, method="bfgs", gtol=1e-10)
        # Newton polishing needs polygamma(1/alpha): very slow and pointless near the boundary
        # (alpha -> 0, no overdispersion), which the profile likelihood below handles instead
        if np.isfinite(r.params[-1]) and r.params[-1] > 1e-3:
            try:
                r = nb.fit(start_params=r.params, disp=0, maxiter=100, method="newton", tol=1e-12)
            except Exception:  # noqa: BLE001 - keep the BFGS optimum
                pass
    alpha = float(r.params[-1])
    if not np.isfinite(alpha) or alpha < 1e-6 or not np.all(np.isfinite(r.params)):
        # boundary (no overdispersion) or failed optimiser: profile the likelihood over log(alpha)
        def nll(la):
            fam = sm.families.NegativeBinomial(alpha=math.exp(la))
            return -_glm(y, X, offset, fam, scale=1.0).llf

        opt = optimize.minimize_scalar(nll, bounds=(-14.0, 3.0), method="bounded", options={"xatol": 1e-7})
        alpha = math.exp(opt.x)
    if not np.isfinite(alpha):
        raise EstimationError("the negative binomial dispersion could not be estimated")
    res = _glm(y, X, offset, sm.families.NegativeBinomial(alpha=alpha), scale=1.0)
    # statsmodels' optimiser can fail without saying so (BFGS stuck at its start, then Newton
    # running off to alpha of 1e4-1e7 on series without overdispersion: about 1 in 15 Poisson
    # series): where the maximum found by negbin_ml is clearly higher, use its alpha instead
    try:
        a_ml, b_ml = negbin_ml(y, X, offset, np.asarray(start.params))
        better = (nb_loglike(y, X, offset, b_ml, a_ml)
                  > nb_loglike(y, X, offset, np.asarray(res.params), alpha) + NB_FAILED_LL)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        better = False
    if better:
        alpha = a_ml
        res = _glm(y, X, offset, sm.families.NegativeBinomial(alpha=alpha), scale=1.0)
    pr = np.asarray(res.resid_pearson)
    return ModelFit(
        model="negbin", link="log", params=np.asarray(res.params), cov=np.asarray(res.cov_params()),
        df=None, scale=1.0, names=names, resid=pr, innovations=pr, n=len(y), alpha=alpha,
        dispersion=float(np.sum(np.asarray(start.resid_pearson) ** 2) / start.df_resid),
        description="negative binomial (NB2) regression with the dispersion estimated by maximum "
        f"likelihood (alpha = {alpha:.3g}), log link, population offset",
    )


def fit_ols(y, X, names) -> ModelFit:
    sm = _sm()

    r = sm.OLS(y, X).fit()
    resid = np.asarray(r.resid)
    s = math.sqrt(r.scale)
    return ModelFit(
        model="ols", link="identity", params=np.asarray(r.params), cov=np.asarray(r.cov_params()),
        df=float(r.df_resid), scale=float(r.scale), names=names, resid=resid, innovations=resid / s,
        n=len(y), description="ordinary least squares, classical standard errors, t intervals",
    )


def newey_west_lag(n: int) -> int:
    """The usual Newey-West lag ``floor(4 (n/100)^(2/9))``."""
    return int(math.floor(4 * (n / 100.0) ** (2.0 / 9.0)))


def fit_newey_west(y, X, names, maxlags: int | None = None) -> ModelFit:
    sm = _sm()

    L = newey_west_lag(len(y)) if maxlags is None else maxlags
    r = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": L, "use_correction": True}, use_t=True)
    resid = np.asarray(r.resid)
    return ModelFit(
        model="newey_west", link="identity", params=np.asarray(r.params), cov=np.asarray(r.cov_params()),
        df=float(r.df_resid), scale=float(r.scale), names=names, resid=resid,
        innovations=resid / math.sqrt(r.scale), n=len(y), extra={"maxlags": L},
        description=f"OLS with Newey-West standard errors (Bartlett kernel, lag {L}, small-sample "
        "factor n/(n-k)), t intervals",
    )


def fit_gls_ar(y, X, names, t, series_id, ar_order=1, small_sample=True) -> ModelFit:
    wh = ARWhitener(t, series_id)
    out = gls_ar_reml(y, X, t, series_id, ar_order, whitener=wh)
    s = math.sqrt(out["sigma2"])
    dfc, cov = None, out["cov"]
    if small_sample:
        dfc, extra = satterthwaite_df(y, X, t, series_id, out["pacf"], out["sigma2"], whitener=wh)
        cov = cov + extra
    return ModelFit(
        model="gls_ar", link="identity", params=out["beta"], cov=cov, df=float(out["df"]),
        scale=out["sigma2"], names=names, resid=out["resid"], innovations=out["innov"] / s, n=len(y),
        ar=tuple(out["phi"]), df_coef=dfc,
        description=f"GLS with AR({ar_order}) errors estimated by REML (as nlme::gls), t intervals"
        + (" with Kackar-Harville variance and Satterthwaite df" if small_sample else " on n - k df"),
    )


def fit_arima(y_full, X_full, included, names, ar_order=1) -> ModelFit:
    """Regression with AR(p) errors by exact ML; excluded rows are passed as missing."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    y = np.where(included, y_full, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = SARIMAX(y, exog=X_full, order=(ar_order, 0, 0), trend="n")
        sm = _sm()

        ols = sm.OLS(y_full[included], X_full[included]).fit()
        start = np.r_[ols.params, np.zeros(ar_order), ols.scale]
        r = mod.fit(start_params=start, disp=False, method="lbfgs", maxiter=1000)
        r = mod.fit(start_params=r.params, disp=False, method="bfgs", maxiter=1000, gtol=1e-10,
                    cov_type="oim")
    k = X_full.shape[1]
    params = np.asarray(r.params)
    cov = np.asarray(r.cov_params())
    if not np.all(np.isfinite(cov[:k, :k])):
        raise EstimationError("the regression with ARIMA errors did not converge")
    resid = (y_full - X_full @ params[:k])[included]
    innov = np.asarray(r.resid)[included] / math.sqrt(params[-1])
    return ModelFit(
        model="arima", link="identity", params=params[:k], cov=cov[:k, :k], df=None,
        scale=float(params[-1]), names=names, resid=resid, innovations=innov, n=int(included.sum()),
        ar=tuple(params[k:k + ar_order]),
        description=f"regression with AR({ar_order}) errors by exact maximum likelihood, normal intervals",
    )


def fit_model(
    model: str,
    y: np.ndarray,
    X: np.ndarray,
    offset: np.ndarray,
    names: list[str],
    t: np.ndarray,
    series_id: np.ndarray,
    included: np.ndarray,
    ar_order: int = 1,
    newey_west_lags: int | None = None,
    interval: str = "wald",
) -> ModelFit:
    """Fit one ITS estimator on the included rows (see the module docstring for ``model``).

    ``interval`` is ``wald`` or ``profile`` (profile likelihood; poisson and quasipoisson with
    ``ar_order = 0`` only).
    """
    if interval == "profile" and not (model == "poisson" or (model == "quasipoisson" and ar_order == 0)):
        raise EstimationError(f"profile-likelihood intervals are available for poisson and for quasipoisson "
                              f"with ar_order: 0, not for model '{model}' with ar_order: {ar_order}")
    inc = np.asarray(included, bool)
    yi, Xi, oi, ti, si = y[inc], X[inc], offset[inc], t[inc], series_id[inc]
    if model in COUNT_MODELS and np.sum(yi) == 0:
        raise EstimationError("the series has no events at all: a count model cannot be fitted")
    try:
        if model == "poisson":
            return fit_poisson(yi, Xi, oi, names, interval=interval)
        if model == "quasipoisson":
            return fit_quasipoisson(yi, Xi, oi, names, ti, si, ar_order=ar_order, interval=interval)
        if model == "negbin":
            return fit_negbin(yi, Xi, oi, names)
        if model == "ols":
            return fit_ols(yi, Xi, names)
        if model == "newey_west":
            return fit_newey_west(yi, Xi, names, newey_west_lags)
        if model == "gls_ar":
            return fit_gls_ar(yi, Xi, names, ti, si, ar_order=max(ar_order, 1))
        if model == "arima":
            if len(np.unique(series_id)) > 1:
                raise EstimationError("model 'arima' takes one series; use gls_ar for controlled ITS")
            return fit_arima(y, X, inc, names, ar_order=max(ar_order, 1))
    except np.linalg.LinAlgError as exc:
        raise EstimationError(f"model '{model}' could not be fitted: {exc}") from exc
    raise OptionError(f"unknown ITS model {model!r}")
