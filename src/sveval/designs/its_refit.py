"""Fast exact estimators for the refits of an ITS evaluation's checks and power study.

An evaluation refits its model many times: placebo dates, date and seasonality sensitivity and
every power simulation. Only each refit's coefficients and their covariance are used. For two
models the statsmodels optimiser of the main fit is slow, so :func:`refit_model` fits them with
an estimator of the same maximum-likelihood point written for the purpose, and the AR(1)
quasi-Poisson model (the default for counts) by a lean copy of its own algorithm; every other model
goes to :func:`sveval.designs.its_models.fit_model` unchanged. The main fit itself always uses
``fit_model`` (statsmodels), so the headline results are those of the reference implementation.

``arima``   regression with AR(p) errors by exact maximum likelihood. The likelihood is profiled
            over the coefficients and the variance (GLS given the AR parameters, by the O(n)
            whitening of :class:`~sveval.designs.its_models.ARWhitener`, excluded months as gaps),
            leaving a search over the p partial autocorrelations (Brent for AR(1)). The covariance
            is the inverse of the information matrix statsmodels reports for SARIMAX with
            ``cov_type="oim"`` (Harvey 1989, eq. 3.4.69: the forecast errors and their variances
            and their derivatives; excluded months, which statsmodels keeps as missing rows,
            contribute their forecast-variance term as there), over the coefficients, the AR
            parameters and the innovation variance. About 1 ms a fit instead of 0.3-0.6 s.
``negbin``  negative binomial (NB2) by maximum likelihood with
            :func:`~sveval.designs.its_models.negbin_ml` (which the main fit also uses to check
            statsmodels' optimiser): a safeguarded Newton search over ``log(alpha)`` on the
            likelihood profiled over the coefficients (Newton steps with the observed
            information), analytic derivatives, from the main fit's start ``alpha = 0.1``;
            ``alpha`` held at ``exp(-14)`` when the likelihood still increases towards no
            overdispersion there (the lower bound of the main fit's own boundary search);
            standard errors at the estimated ``alpha`` from the GLM expected information, as the
            main fit. About 2 ms a fit instead of 15-60 ms.

Both find the optimum more tightly than the statsmodels optimisers (tests/test_its_refit.py:
the log-likelihood is never lower, the coefficients agree to well under 1e-4 standard errors).

``quasipoisson`` (``ar_order`` 0 or 1) by :func:`fit_quasipoisson_lean`: the main fit's own
            algorithm with the same floating-point operations (statsmodels' Poisson IRLS, the
            REML bounded Brent search of scipy, the GLS-IRLS steps, the Satterthwaite df), so
            bit-identical results, without the libraries' per-call overhead: about 1.5 ms a fit
            instead of 4-5 ms. The power study's simulated series (one design) are refitted in
            lockstep by :func:`refit_many`: the IRLS starts and the REML searches of all series
            together (a vectorised bounded Brent search, element by element the same iterates),
            the rest one series at a time. Exactness matters here: the REML search's last
            comparisons are at rounding level, and any other formula (normal equations, another
            QR, even a sum over an array's rows instead of one row at a time) moves the estimates
            and standard errors by up to 1e-7 relative (tests/test_its_qp_refit.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy.linalg import lapack

from sveval.designs.its_models import (
    COUNT_MODELS,
    ARWhitener,
    ModelFit,
    _gls_solution,
    _qr,
    _solve,
    ar_acf,
    fit_model,
    fit_quasipoisson,
    negbin_ml,
    newton_converged,
    pacf_to_ar,
    satterthwaite_from_parts,
)
from sveval.errors import EstimationError

_H = 1e-6  # step of the central differences in the AR parameters (error about 1e-10)


# ------------------------------------------------------------------------------------------------
# arima: regression with AR(p) errors by exact ML
# ------------------------------------------------------------------------------------------------
def _missing_prediction_variances(observed: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Variance of each missing position given the observed positions before it, for an AR(p)
    process of unit marginal variance observed at ``observed`` (a mask over consecutive periods).

    These are the Kalman filter's forecast variances at missing rows. By the Markov property only
    the observed rows since the last p consecutive observed periods matter.
    """
    N, p = len(observed), len(phi)
    out = np.full(N, np.nan)
    miss = np.flatnonzero(~observed)
    if len(miss) == 0:
        return out
    rho = ar_acf(phi, N)
    obs_idx = np.flatnonzero(observed)
    csum = np.r_[0, np.cumsum(observed)]
    # full[i]: periods i-p+1..i all observed (the AR state at i is known)
    full = np.zeros(N, bool)
    ii = np.arange(p - 1, N)
    full[ii] = (csum[ii + 1] - csum[ii + 1 - p]) == p
    full_idx = np.flatnonzero(full)
    for j in miss:
        before = full_idx[full_idx < j]
        lo = before[-1] - p + 1 if len(before) else 0
        S = obs_idx[(obs_idx >= lo) & (obs_idx < j)]
        if len(S) == 0:
            out[j] = 1.0
            continue
        R = rho[np.abs(S[:, None] - S[None, :])]
        r = rho[j - S]
        out[j] = 1.0 - float(r @ np.linalg.solve(R, r))
    return out


def _arima_variances(wh: ARWhitener, observed: np.ndarray, u: np.ndarray, phi: np.ndarray):
    """Forecast errors of ``u`` at observed rows and forecast variances (over the innovation
    variance) at every position."""
    E, c = wh.innovations(u, phi)
    v = 1.0 - float(np.dot(phi, ar_acf(phi, len(phi))[1:]))  # innovation / marginal variance
    g = np.empty(len(observed))
    g[observed] = c / v
    if not observed.all():
        g[~observed] = _missing_prediction_variances(observed, phi)[~observed] / v
    return E, g


def arima_oim_cov(y, X, observed, beta, phi, sigma2, wh: ARWhitener | None = None) -> np.ndarray:
    """Inverse of statsmodels' SARIMAX ``oim`` information over ``(beta, phi, sigma2)``.

    ``y``, ``X`` are the observed rows; ``observed`` the mask over all consecutive periods.
    Information = sum over periods of ``0.5 (dF/F)(dF/F)' + dv dv' / F`` with ``v`` the forecast
    error and ``F`` its variance (missing periods: ``v`` absent, ``F`` their forecast variance).
    """
    observed = np.asarray(observed, bool)
    n, k = X.shape
    p = len(phi)
    wh = wh or ARWhitener(np.flatnonzero(observed).astype(float), np.zeros(n, int))
    u = y - X @ beta
    EX, _ = wh.innovations(X, phi)
    _, g = _arima_variances(wh, observed, u, phi)
    m = k + p + 1
    N = len(observed)
    dv = np.zeros((n, m))
    dF = np.zeros((N, m))
    dv[:, :k] = -EX
    for j in range(p):
        e = np.zeros(p)
        e[j] = _H
        Ep, gp = _arima_variances(wh, observed, u, phi + e)
        Em, gm = _arima_variances(wh, observed, u, phi - e)
        dv[:, k + j] = (Ep - Em) / (2 * _H)
        dF[:, k + j] = sigma2 * (gp - gm) / (2 * _H)
    dF[:, -1] = g
    F = sigma2 * g
    A = dF / F[:, None]
    B = dv / np.sqrt(F[observed])[:, None]
    info = 0.5 * (A.T @ A) + B.T @ B
    return np.linalg.pinv(info)


def fit_arima_profile(y_full, X_full, included, names, ar_order=1) -> ModelFit:
    """Regression with AR(p) errors by exact ML (see the module docstring); excluded rows are gaps.

    Same estimates and covariance as :func:`sveval.designs.its_models.fit_arima` (statsmodels
    SARIMAX, ``cov_type="oim"``) up to that optimiser's convergence.
    """
    observed = np.asarray(included, bool)
    y, X = np.asarray(y_full, float)[observed], np.asarray(X_full, float)[observed]
    n, k = X.shape
    p = max(int(ar_order), 1)
    wh = ARWhitener(np.flatnonzero(observed).astype(float), np.zeros(n, int))
    W = np.column_stack([X, y])

    def objective(z) -> float:  # -2 x profile log-likelihood, up to a constant
        phi = pacf_to_ar(np.tanh(np.atleast_1d(z)))
        Ww, logdet = wh.whiten(W, phi)
        d = abs(float(_qr(Ww)[k, k]))
        return n * math.log(max(d * d, 1e-300) / n) + logdet

    if p == 1:
        res = optimize.minimize_scalar(objective, bounds=(-3.8, 3.8), method="bounded",
                                       options={"xatol": 1e-10})
        pacf = np.tanh(np.array([res.x]))
    else:
        res = optimize.minimize(objective, np.zeros(p), method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 8000})
        pacf = np.tanh(np.clip(res.x, -3.8, 3.8))
    phi = pacf_to_ar(pacf)
    Ww, _ = wh.whiten(W, phi)
    beta, rss, _ = _gls_solution(Ww, k)
    v = 1.0 - float(np.dot(phi, ar_acf(phi, p)[1:]))
    sigma2 = rss / n * v  # innovation variance (ML)
    cov = arima_oim_cov(y, X, observed, beta, phi, sigma2, wh)
    if not np.all(np.isfinite(cov[:k, :k])):
        raise EstimationError("the regression with ARIMA errors did not converge")
    resid = y - X @ beta
    E, _ = wh.innovations(resid, phi)
    return ModelFit(
        model="arima", link="identity", params=beta, cov=cov[:k, :k], df=None, scale=float(sigma2),
        names=names, resid=resid, innovations=E / math.sqrt(sigma2), n=n, ar=tuple(phi),
        description=f"regression with AR({p}) errors by exact maximum likelihood, normal intervals",
    )


# ------------------------------------------------------------------------------------------------
# negbin: NB2 by maximum likelihood
# ------------------------------------------------------------------------------------------------
def _poisson_irls(y, X, offset) -> np.ndarray:
    b = np.linalg.lstsq(X, np.log(y + 0.5) - offset, rcond=None)[0]
    for _ in range(100):
        mu = np.exp(np.clip(X @ b + offset, -700, 700))
        score = X.T @ (y - mu)
        step = _solve(X.T @ (mu[:, None] * X), score)
        b = b + step
        if newton_converged(step, score, b):
            break
    return b


def fit_negbin_newton(y, X, offset, names) -> ModelFit:
    """NB2 with alpha by ML (see the module docstring); the same fit as
    :func:`sveval.designs.its_models.fit_negbin` up to that optimiser's convergence."""
    y, X, offset = np.asarray(y, float), np.asarray(X, float), np.asarray(offset, float)
    n, k = X.shape
    b0 = _poisson_irls(y, X, offset)
    mu0 = np.exp(X @ b0 + offset)
    dispersion = float(np.sum((y - mu0) ** 2 / mu0) / (n - k))
    alpha, beta = negbin_ml(y, X, offset, b0)
    if not (np.isfinite(alpha) and np.all(np.isfinite(beta))):
        raise EstimationError("the negative binomial dispersion could not be estimated")
    mu = np.exp(X @ beta + offset)
    cov = np.linalg.inv(X.T @ ((mu / (1.0 + alpha * mu))[:, None] * X))
    pr = (y - mu) / np.sqrt(mu + alpha * mu**2)
    return ModelFit(
        model="negbin", link="log", params=beta, cov=cov, df=None, scale=1.0, names=names, resid=pr,
        innovations=pr, n=n, alpha=alpha, dispersion=dispersion,
        description="negative binomial (NB2) regression with the dispersion estimated by maximum "
        f"likelihood (alpha = {alpha:.3g}), log link, population offset",
    )


# ------------------------------------------------------------------------------------------------
# quasipoisson: the main fit's own arithmetic without its overhead
# ------------------------------------------------------------------------------------------------
_EPS = np.finfo(float).eps
_SQRT_EPS = math.sqrt(2.2e-16)  # as scipy's bounded Brent search
_GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))


def _poisson_sm(y, X, offset, tol=1e-10, maxiter=200):
    """statsmodels' GLM IRLS for a Poisson model with offset, operation for operation.

    Same start (``mu = (y + mean(y)) / 2``), same weighted least squares (``lstsq`` in the
    iterations, then ``pinv`` on the last working response for the reported coefficients), same
    stopping rule (consecutive deviances within ``tol``), so the same floating-point result as
    ``sm.GLM(y, X, family=Poisson(), offset=offset).fit(tol=tol, maxiter=maxiter)``. Returns the
    coefficients, their normalised covariance (``pinv pinv'``), the fitted means and the number
    of iterations.
    """
    from statsmodels.tools.tools import pinv_extended

    mu = (y + y.mean()) / 2.0
    lin_pred = np.log(np.clip(mu, _EPS, np.inf))
    resid = y * np.log(np.clip(y / mu, _EPS, np.inf)) - (y - mu)
    dev_old = np.sum(2 * resid)
    iteration = 0
    weights = wlsendog = None
    for iteration in range(maxiter):  # noqa: B007 - the count is returned
        deriv = 1.0 / np.clip(mu, _EPS, np.inf)
        weights = 1.0 / (deriv**2 * np.power(np.fabs(mu), 1.0))
        wlsendog = lin_pred + deriv * (y - mu) - offset
        w_half = np.sqrt(weights)
        for what, v in (("weights", w_half), ("endog", wlsendog)):  # statsmodels' checks and words
            if not np.all(np.isfinite(v)):
                raise EstimationError(f"NaN, inf or invalid value detected in {what}, estimation infeasible.")
        params = np.linalg.lstsq(w_half[:, None] * X, w_half * wlsendog, rcond=-1)[0]
        lin_pred = np.dot(X, params)
        lin_pred += offset
        mu = np.exp(lin_pred)
        resid = y * np.log(np.clip(y / mu, _EPS, np.inf)) - (y - mu)
        dev = np.sum(2 * resid)
        if abs(dev - dev_old) <= tol:  # np.allclose(dev_old, dev, atol=tol, rtol=0)
            break
        dev_old = dev
    w_half = np.sqrt(weights)
    pinv, _ = pinv_extended(w_half[:, None] * X)
    ncov = np.dot(pinv, np.transpose(pinv))
    beta = np.dot(pinv, wlsendog * w_half)
    mu = np.exp(np.dot(X, beta) + offset)
    return beta, ncov, mu, iteration + 1


def _poisson_sm_many(Y, X, offset, tol=1e-10, maxiter=200) -> list:
    """:func:`_poisson_sm` of every row of ``Y`` (the same ``X`` and ``offset``), the IRLS
    iterations of all rows in lockstep: the elementwise steps over all rows at once, each row's
    least squares, products with ``X`` and sums on their own (as one at a time, so the same
    results). Each row's result, or the exception it raised, in order."""
    from statsmodels.tools.tools import pinv_extended

    m = len(Y)
    out: list = [None] * m
    with np.errstate(all="ignore"):
        mean = np.array([y.mean() for y in Y])
        mu = (Y + mean[:, None]) / 2.0
        lin_pred = np.log(np.clip(mu, _EPS, np.inf))
        resid = Y * np.log(np.clip(Y / mu, _EPS, np.inf)) - (Y - mu)
        two = 2 * resid
        dev_old = np.array([np.sum(two[j]) for j in range(m)])
        weights = np.empty_like(Y)
        wlsendog = np.empty_like(Y)
        live = np.arange(m)
        for _ in range(maxiter):
            if len(live) == 0:
                break
            mu_l, y_l = mu[live], Y[live]
            deriv = 1.0 / np.clip(mu_l, _EPS, np.inf)
            w = 1.0 / (deriv**2 * np.power(np.fabs(mu_l), 1.0))
            z = lin_pred[live] + deriv * (y_l - mu_l) - offset
            weights[live], wlsendog[live] = w, z
            w_half = np.sqrt(w)
            lp = np.empty((len(live), X.shape[0]))
            ok = np.ones(len(live), bool)
            for j, i in enumerate(live):
                bad = next((what for what, v in (("weights", w_half[j]), ("endog", z[j]))
                            if not np.all(np.isfinite(v))), None)
                if bad is not None:
                    out[i] = EstimationError(f"NaN, inf or invalid value detected in {bad}, estimation infeasible.")
                    ok[j] = False
                    continue
                params = np.linalg.lstsq(w_half[j][:, None] * X, w_half[j] * z[j], rcond=-1)[0]
                lp[j] = np.dot(X, params)
                lp[j] += offset
            live, lp, y_l = live[ok], lp[ok], y_l[ok]
            mu_new = np.exp(lp)
            two = 2 * (y_l * np.log(np.clip(y_l / mu_new, _EPS, np.inf)) - (y_l - mu_new))
            lin_pred[live], mu[live] = lp, mu_new
            still = np.ones(len(live), bool)
            for j, i in enumerate(live):
                dev = np.sum(two[j])
                if abs(dev - dev_old[i]) <= tol:
                    still[j] = False
                else:
                    dev_old[i] = dev
            live = live[still]
        for i in range(m):
            if out[i] is not None:
                continue
            w_half = np.sqrt(weights[i])
            pinv, _ = pinv_extended(w_half[:, None] * X)
            beta = np.dot(pinv, wlsendog[i] * w_half)
            out[i] = (beta, np.dot(pinv, np.transpose(pinv)), np.exp(np.dot(X, beta) + offset), None)
    return out


def poisson_irls_sm(y, X, offset) -> tuple[np.ndarray, int]:
    """Coefficients and iteration count of :func:`_poisson_sm` (the main fit's GLM settings)."""
    beta, _, _, it = _poisson_sm(np.asarray(y, float), np.asarray(X, float), np.asarray(offset, float))
    return beta, it


def _brent_bounded(func, x1, x2, xatol, maxiter=500):
    """scipy's ``minimize_scalar(method="bounded")`` (``_minimize_scalar_bounded``), the same
    iterates without its overhead; returns the minimiser ``xf``."""
    a, b = x1, x2
    fulc = a + _GOLDEN * (b - a)
    nfc, xf = fulc, fulc
    rat = e = 0.0
    x = xf
    fx = func(x)
    num = 1
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = 1
        if abs(e) > tol1:
            golden = 0
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r = e
            e = rat
            if (abs(p) < abs(0.5 * q * r)) and (p > q * (a - xf)) and (p < q * (b - xf)):
                rat = (p + 0.0) / q
                x = xf + rat
                if ((x - a) < tol2) or ((b - x) < tol2):
                    d = xm - xf
                    rat = tol1 * ((1.0 if d > 0 else -1.0) if d != 0 else 1.0)
            else:
                golden = 1
        if golden:
            e = (a - xf) if xf >= xm else (b - xf)
            rat = _GOLDEN * e
        ar = abs(rat)
        x = xf + (1.0 if rat >= 0 else -1.0) * (ar if ar > tol1 else tol1)
        fu = func(x)
        num += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = x, fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if (fu <= fnfc) or (nfc == xf):
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = x, fu
            elif (fu <= ffulc) or (fulc == xf) or (fulc == nfc):
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxiter:
            break
    return xf


class _AR1Work:
    """The AR(1) pieces of one quasi-Poisson fit with the arithmetic of
    :func:`~sveval.designs.its_models.gls_ar_reml`, ``gls_ar_fixed`` and ``satterthwaite_df``
    (same whitening, LAPACK QR, triangular factor, objective, bounded Brent search): the
    whitened design is written into one reused buffer, the QR's diagonal taken by index and the
    triangular factor copied through a fixed mask instead of ``np.triu``."""

    def __init__(self, n: int, k: int, wh: ARWhitener):
        self.n, self.k, self.wh = n, k, wh
        self.simple = wh._single_no_gap and n > 1
        self.buf = np.empty((n, k + 1))  # C order like W: whitening is fastest with one layout
        self.tmp = np.empty((max(n - 1, 0), k + 1))
        self.rest = self.buf[1:]
        self.n1 = n - 1
        self.diag_idx = np.arange(k + 1) * (n + 1)
        self.d = np.empty(k + 1)
        self.logd = np.empty(k)
        self.zin = np.empty(1)
        self.rout = np.empty(1)
        self.upper = np.triu(np.ones((k + 1, k + 1), bool))
        self.R = np.zeros((k + 1, k + 1))

    def whiten_qr(self, W: np.ndarray, r, views: tuple | None = None) -> tuple[np.ndarray, float]:
        """LAPACK QR of ``whiten(W, [r])`` (``geqrf``'s packed output) and ``log|R|``; ``views``
        are ``(W[0], W[1:], W[:-1])`` when the caller keeps them."""
        if self.simple:
            buf, tmp, rest = self.buf, self.tmp, self.rest
            W0, Wa, Wb = views or (W[0], W[1:], W[:-1])
            s1 = math.sqrt(1.0 - r * r)
            buf[0] = W0
            np.multiply(r, Wb, out=tmp)
            np.subtract(Wa, tmp, out=rest)
            rest /= s1
            logdet = self.n1 * math.log(s1 * s1)
            qr, _, _, info = lapack.dgeqrf(buf)  # a Fortran-ordered copy
        else:
            Ww, logdet = self.wh.whiten(W, np.array([r]))
            qr, _, _, info = lapack.dgeqrf(Ww)
        if info != 0:  # pragma: no cover - only on invalid input
            raise np.linalg.LinAlgError(f"QR factorisation failed (info {info})")
        return qr, logdet

    def whiten(self, W: np.ndarray, r) -> np.ndarray:
        """``whiten(W, [r])[0]`` (a new array)."""
        return self.wh.whiten(W, np.array([r]))[0]

    def triangle(self, qr: np.ndarray) -> np.ndarray:
        """``np.triu(qr[:k + 1])`` into a reused array."""
        np.copyto(self.R, qr[: self.k + 1], where=self.upper)
        return self.R

    def objective(self, W: np.ndarray):
        """``gls_ar_reml``'s REML objective of ``W`` as a function of ``z = atanh(r)``."""
        n, k = self.n, self.k
        nk = n - k
        zin, rout, d, logd, diag_idx = self.zin, self.rout, self.d, self.logd, self.diag_idx
        whiten_qr = self.whiten_qr
        views = (W[0], W[1:], W[:-1])

        def value(z) -> float:
            zin[0] = z
            np.tanh(zin, out=rout)
            qr, logdet = whiten_qr(W, rout[0], views)
            np.take(qr.reshape(-1, order="F"), diag_idx, out=d)  # qr is Fortran-ordered
            np.abs(d, out=d)
            rss = float(d[k] ** 2)
            np.log(d[:k], out=logd)
            return nk * math.log(max(rss, 1e-300) / nk) + logdet + 2.0 * float(np.add.reduce(logd))

        return value

    def search(self, W: np.ndarray) -> np.ndarray:
        """The REML AR(1) coefficient (as ``pacf``, an array of one) of ``W``."""
        return np.tanh(np.array([_brent_bounded(self.objective(W), -3.8, 3.8, 1e-9)]))

    def gls(self, W: np.ndarray, r) -> tuple[np.ndarray, float, np.ndarray]:
        """``_gls_solution(whiten(W, [r]), k)`` without ``(X'X)^-1``: ``beta``, ``rss``, ``R^-1``."""
        k = self.k
        qr, _ = self.whiten_qr(W, r)
        R = self.triangle(qr)
        Rinv = np.linalg.inv(R[:k, :k])
        return Rinv @ R[:k, k], float(R[k, k] ** 2), Rinv

    def satterthwaite(self, W: np.ndarray, pacf: np.ndarray, sigma2: float):
        """:func:`~sveval.designs.its_models.satterthwaite_df` (AR(1)) of weighted ``W``."""
        n, k = self.n, self.k
        # of the nine points of the numerical derivatives only three differ in the AR parameter
        # (the others in log sigma2 alone): the whitening and QR are done once for each of them
        at_r: dict[float, tuple] = {}

        def parts(theta):
            s2 = math.exp(theta[0])
            key = float(theta[1])
            if key not in at_r:
                phi = pacf_to_ar(np.tanh(theta[1:]))
                qr, lw = self.whiten_qr(W, phi[0])
                R = self.triangle(qr)
                rss = float(R[k, k] ** 2)
                rinv = np.linalg.inv(R[:k, :k])
                at_r[key] = (lw, rss, rinv, rinv @ R[:k, k], 2 * np.sum(np.log(np.abs(np.diag(R)[:k]))),
                             np.sum(rinv**2, axis=1))
            lw, rss, rinv, beta, logdet_x, rinv2 = at_r[key]
            ll = -0.5 * ((n - k) * theta[0] + lw + logdet_x + rss / s2)
            return ll, s2 * rinv2, beta

        return _satterthwaite_from(parts, n, k, pacf, sigma2)


_satterthwaite_from = satterthwaite_from_parts  # the main fit's own computation


def _weighted(X: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    sw = np.sqrt(weights)
    return np.column_stack([X * sw[:, None], y * sw])


def _brent_bounded_many(func, m: int, x1: float, x2: float, xatol: float, maxiter: int = 500) -> np.ndarray:
    """:func:`_brent_bounded` for ``m`` independent problems in lockstep: ``func(idx, x)`` returns
    the objective of problems ``idx`` at ``x`` (arrays). Each problem takes exactly the iterates
    it would take alone (the same floating-point operations, element by element)."""
    a = np.full(m, float(x1))
    b = np.full(m, float(x2))
    fulc = a + _GOLDEN * (b - a)
    nfc, xf = fulc.copy(), fulc.copy()
    rat = np.zeros(m)
    e = np.zeros(m)
    fx = func(np.arange(m), xf.copy())
    num = np.ones(m, int)
    ffulc, fnfc = fx.copy(), fx.copy()
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * np.abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    with np.errstate(all="ignore"):
        while True:
            act = (np.abs(xf - xm) > (tol2 - 0.5 * (b - a))) & (num < maxiter)
            idx = np.flatnonzero(act)
            if len(idx) == 0:
                break
            A, B, XF, XM, T1, T2 = a[idx], b[idx], xf[idx], xm[idx], tol1[idx], tol2[idx]
            FX, E, RAT = fx[idx], e[idx], rat[idx]
            NFC, FULC, FNFC, FFULC = nfc[idx], fulc[idx], fnfc[idx], ffulc[idx]
            para = np.abs(E) > T1
            r = (XF - NFC) * (FX - FFULC)
            q = (XF - FULC) * (FX - FNFC)
            p = (XF - FULC) * q - (XF - NFC) * r
            q = 2.0 * (q - r)
            p = np.where(q > 0.0, -p, p)
            q = np.abs(q)
            r = E
            E1 = np.where(para, RAT, E)
            accept = para & (np.abs(p) < np.abs(0.5 * q * r)) & (p > q * (A - XF)) & (p < q * (B - XF))
            rat_p = (p + 0.0) / q
            x_p = XF + rat_p
            d = XM - XF
            si = np.where(d > 0, 1.0, np.where(d < 0, -1.0, 1.0))
            rat_p = np.where(((x_p - A) < T2) | ((B - x_p) < T2), T1 * si, rat_p)
            e_g = np.where(XF >= XM, A - XF, B - XF)
            E2 = np.where(accept, E1, e_g)
            RAT2 = np.where(accept, rat_p, _GOLDEN * e_g)
            sr = np.where(RAT2 >= 0, 1.0, -1.0)
            X = XF + sr * np.maximum(np.abs(RAT2), T1)
            FU = func(idx, X)
            better = FU <= FX
            # better: a = xf if x >= xf else b = xf; worse: a = x if x < xf else b = x
            A2 = np.where(better, np.where(X >= XF, XF, A), np.where(X < XF, X, A))
            B2 = np.where(better, np.where(X >= XF, B, XF), np.where(X < XF, B, X))
            c1 = ~better & ((FU <= FNFC) | (NFC == XF))
            c2 = ~better & ~c1 & ((FU <= FFULC) | (FULC == XF) | (FULC == NFC))
            fulc[idx] = np.where(better | c1, NFC, np.where(c2, X, FULC))
            ffulc[idx] = np.where(better | c1, FNFC, np.where(c2, FU, FFULC))
            nfc[idx] = np.where(better, XF, np.where(c1, X, NFC))
            fnfc[idx] = np.where(better, FX, np.where(c1, FU, FNFC))
            xf[idx] = np.where(better, X, XF)
            fx[idx] = np.where(better, FU, FX)
            a[idx], b[idx], e[idx], rat[idx] = A2, B2, E2, RAT2
            xm[idx] = 0.5 * (A2 + B2)
            tol1[idx] = _SQRT_EPS * np.abs(xf[idx]) + xatol / 3.0
            tol2[idx] = 2.0 * tol1[idx]
            num[idx] += 1
    return xf


def _reml_many(Ws: list, work: _AR1Work) -> list:
    """The REML AR(1) coefficients (``pacf`` arrays of one) of several weighted designs at once:
    :meth:`_AR1Work.search` of each, in lockstep (whitening and the objective's vector operations
    over all designs together, one LAPACK QR per design and step)."""
    m = len(Ws)
    n, k = work.n, work.k
    nk = n - k
    n1 = n - 1
    # each design transposed, (k + 1) x n: the whitening runs along the months, and each design
    # is a Fortran-ordered n x (k + 1) matrix that LAPACK factorises in place
    WT = np.ascontiguousarray(np.stack(Ws).transpose(0, 2, 1))
    buf = np.empty_like(WT)
    diag = np.arange(k + 1)
    per = (k + 1) * n
    geqrf = lapack.dgeqrf

    def func(idx, z):
        L = len(idx)
        r = np.tanh(z)
        if work.simple:
            s1 = np.sqrt(1.0 - r * r)
            src = WT if L == m else WT[idx]
            sub = buf[:L]
            # (W[t] - r W[t-1]) / s1 on each flattened design (one long contiguous row per
            # design), each design's first month of every column (which that gets wrong) copied after
            flat, out = src.reshape(L, per), sub.reshape(L, per)
            np.multiply(r[:, None], flat[:, :-1], out=out[:, 1:])
            np.subtract(flat[:, 1:], out[:, 1:], out=out[:, 1:])
            out[:, 1:] /= s1[:, None]
            sub[:, :, 0] = src[:, :, 0]
            for j in range(L):
                info = geqrf(sub[j].T, overwrite_a=1)[3]
                if info != 0:  # pragma: no cover - only on invalid input
                    raise np.linalg.LinAlgError(f"QR factorisation failed (info {info})")
            D = np.abs(np.ascontiguousarray(sub[:, diag, diag]))  # rows contiguous, as one at a time
            logdet = [n1 * math.log(s * s) for s in s1]
        else:
            D = np.empty((L, k + 1))
            logdet = []
            for j, i in enumerate(idx):
                qr, ld = work.whiten_qr(WT[i].T, r[j])
                D[j] = np.abs(np.diagonal(qr)[: k + 1])
                logdet.append(ld)
        logs = np.log(D[:, :k])
        out = np.empty(L)
        for j, (dk, ld) in enumerate(zip(D[:, k], logdet, strict=True)):
            rss = float(dk**2)
            # the sum of each row on its own: a reduction over axis 1 may add in another order
            out[j] = nk * math.log(max(rss, 1e-300) / nk) + ld + 2.0 * float(np.add.reduce(logs[j]))
        return out

    xf = _brent_bounded_many(func, m, -3.8, 3.8, 1e-9)
    return [np.tanh(np.array([x])) for x in xf]


def _qp_steps(y, X, offset, names, work, ar_order=1, scale_floor=1.0, small_sample=True, glm=None):
    """The fit of :func:`fit_quasipoisson_lean` as a generator: it yields the weighted design of
    each REML search, is sent the search's ``pacf`` and returns the :class:`ModelFit`; ``work``
    is the :class:`_AR1Work` of the design (None for ``ar_order = 0``); ``glm`` the result of
    :func:`_poisson_sm` when already computed."""
    y, X, offset = np.asarray(y, float), np.asarray(X, float), np.asarray(offset, float)
    if glm is None:
        with np.errstate(all="ignore"):
            glm = _poisson_sm(y, X, offset)
    params, ncov, mu_glm, _ = glm
    if not np.all(np.isfinite(params)):
        raise EstimationError("the count model did not converge (non-finite coefficients)")
    n, k = X.shape
    pr = (y - mu_glm) / np.sqrt(np.power(np.fabs(mu_glm), 1.0))
    disp = float(np.sum(pr**2) / (n - k))
    if ar_order == 0:
        phi_hat = max(disp, scale_floor) if scale_floor else disp
        return ModelFit(
            model="quasipoisson", link="log", params=params, cov=ncov * phi_hat, df=n - k,
            scale=phi_hat, names=names, resid=pr, innovations=pr / math.sqrt(phi_hat), n=n,
            dispersion=disp,
            description="quasi-Poisson regression (log link, population offset), Pearson dispersion"
            + (" floored at 1" if scale_floor else "") + ", t intervals",
        )
    beta = params
    pacf = None
    converged = False
    last = None
    for _outer in range(20):
        # REML step for the AR parameter at the current mean ...
        eta = X @ beta + offset
        mu = np.exp(eta)
        W = _weighted(X, eta - offset + (y - mu) / mu, mu)
        new_pacf = yield W
        phi = pacf_to_ar(new_pacf)
        r = phi[0]
        beta = work.gls(W, r)[0]
        # ... then GLS-IRLS for the coefficients with the AR parameter held fixed
        for _inner in range(100):
            eta = X @ beta + offset
            mu = np.exp(eta)
            W = _weighted(X, eta - offset + (y - mu) / mu, mu)
            new_beta, rss, Rinv = work.gls(W, r)
            step = new_beta - beta
            beta = new_beta
            if np.max(np.abs(step)) < 1e-9:
                break
        last = (W, rss, Rinv, phi, new_pacf)
        if pacf is not None and np.max(np.abs(new_pacf - pacf)) < 1e-6:
            converged = True
            break
        pacf = new_pacf
    if not converged:  # pragma: no cover - rare
        raise EstimationError("the AR quasi-Poisson model did not converge")
    W, rss, Rinv, phi, pacf = last
    sigma2 = rss / (n - k)
    phi_hat = max(sigma2, scale_floor) if scale_floor else sigma2
    cov = sigma2 * (Rinv @ Rinv.T) / sigma2 * phi_hat
    Ww = work.whiten(W, phi[0])
    innov = Ww[:, k] - Ww[:, :k] @ beta
    eta = X @ beta + offset
    mu = np.exp(eta)
    resid = (y - mu) / np.sqrt(mu)
    dfc = None
    if small_sample:
        dfc, extra = work.satterthwaite(_weighted(X, eta - offset + (y - mu) / mu, mu), pacf, sigma2)
        cov = cov + extra / sigma2 * phi_hat
    return ModelFit(
        model="quasipoisson", link="log", params=beta, cov=cov, df=n - k, scale=phi_hat, names=names,
        resid=resid, innovations=innov / math.sqrt(sigma2), n=n, ar=tuple(phi), dispersion=disp,
        df_coef=dfc,
        description=f"quasi-Poisson regression (log link, population offset) with AR({ar_order}) "
        "working correlation estimated by REML (GLS-IRLS), dispersion"
        + (" floored at 1" if scale_floor else "")
        + (", Kackar-Harville variance and Satterthwaite df" if small_sample else ", t intervals"),
    )


def fit_quasipoisson_lean(y, X, offset, names, t, series_id, ar_order=1, scale_floor=1.0,
                          small_sample=True) -> ModelFit:
    """:func:`sveval.designs.its_models.fit_quasipoisson` (Wald intervals, ``ar_order`` 0 or 1)
    with the same floating-point operations and results, at a fraction of the cost: statsmodels'
    IRLS done by :func:`_poisson_sm`, the AR(1) pieces by :class:`_AR1Work`."""
    if ar_order not in (0, 1):
        return fit_quasipoisson(y, X, offset, names, t, series_id, ar_order=ar_order,
                                scale_floor=scale_floor, small_sample=small_sample)
    X = np.asarray(X, float)
    work = _AR1Work(*X.shape, ARWhitener(np.asarray(t, float), series_id)) if ar_order else None
    steps = _qp_steps(y, X, offset, names, work, ar_order, scale_floor, small_sample)
    try:
        W = next(steps)
        while True:
            W = steps.send(work.search(W))
    except StopIteration as done:
        return done.value


def fit_quasipoisson_many(Y, X, offset, names, t, series_id, ar_order=1) -> list:
    """:func:`fit_quasipoisson_lean` of every row of ``Y`` (the same design), the REML searches of
    all rows in lockstep (:func:`_reml_many`); each row's :class:`ModelFit`, or the exception its
    fit raised, in order. Every row's result is the one :func:`fit_quasipoisson_lean` gives it."""
    X = np.asarray(X, float)
    if ar_order != 1:
        out = []
        for y in Y:
            try:
                out.append(fit_quasipoisson_lean(y, X, offset, names, t, series_id, ar_order=ar_order))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller, in order
                out.append(exc)
        return out
    work = _AR1Work(*X.shape, ARWhitener(np.asarray(t, float), series_id))
    out: list = [None] * len(Y)
    steps: dict[int, object] = {}
    pending: dict[int, np.ndarray] = {}

    def advance(i: int, value) -> None:
        try:
            pending[i] = steps[i].send(value)
        except StopIteration as done:
            out[i] = done.value
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, in order
            out[i] = exc

    offset = np.asarray(offset, float)
    glms = _poisson_sm_many(np.asarray(Y, float), X, offset)
    for i, y in enumerate(Y):
        if isinstance(glms[i], Exception):
            out[i] = glms[i]
            continue
        steps[i] = _qp_steps(y, X, offset, names, work, glm=glms[i])
        advance(i, None)
    while pending:
        idx = sorted(pending)
        Ws = [pending.pop(i) for i in idx]
        try:
            pacfs = _reml_many(Ws, work)
        except np.linalg.LinAlgError:  # pragma: no cover - only on invalid input: one by one
            pacfs = []
            for W in Ws:
                try:
                    pacfs.append(work.search(W))
                except np.linalg.LinAlgError as exc:
                    pacfs.append(exc)
        for i, pacf in zip(idx, pacfs, strict=True):
            if isinstance(pacf, Exception):
                steps[i].close()
                out[i] = pacf
            else:
                advance(i, pacf)
    return out


def refit_model(
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
    """:func:`~sveval.designs.its_models.fit_model` for a refit: ``arima``, ``negbin`` and
    ``quasipoisson`` by the fast estimators of this module, every other model by ``fit_model``
    itself."""
    lean_qp = model == "quasipoisson" and ar_order in (0, 1)
    if (model not in ("arima", "negbin") and not lean_qp) or interval != "wald":
        return fit_model(model, y, X, offset, names, t, series_id, included, ar_order=ar_order,
                         newey_west_lags=newey_west_lags, interval=interval)
    inc = np.asarray(included, bool)
    if model in COUNT_MODELS and np.sum(y[inc]) == 0:
        raise EstimationError("the series has no events at all: a count model cannot be fitted")
    try:
        if model == "negbin":
            return fit_negbin_newton(y[inc], X[inc], offset[inc], names)
        if model == "quasipoisson":
            return fit_quasipoisson_lean(y[inc], X[inc], offset[inc], names, t[inc], series_id[inc],
                                         ar_order=ar_order)
        if len(np.unique(series_id)) > 1:
            raise EstimationError("model 'arima' takes one series; use gls_ar for controlled ITS")
        return fit_arima_profile(y, X, inc, names, ar_order=max(ar_order, 1))
    except np.linalg.LinAlgError as exc:
        raise EstimationError(f"model '{model}' could not be fitted: {exc}") from exc


def refit_many(
    model: str,
    Y: np.ndarray,
    X: np.ndarray,
    offset: np.ndarray,
    names: list[str],
    t: np.ndarray,
    series_id: np.ndarray,
    included: np.ndarray,
    ar_order: int = 1,
) -> list:
    """:func:`refit_model` (Wald intervals) of every row of ``Y`` on the same design: each row's
    :class:`ModelFit`, or the exception its refit raised, in order. The AR(1) quasi-Poisson refits
    run in lockstep (:func:`fit_quasipoisson_many`, the same results), every other model one by
    one."""
    inc = np.asarray(included, bool)
    if model != "quasipoisson" or ar_order != 1:
        out: list = []
        for y in Y:
            try:
                out.append(refit_model(model, y, X, offset, names, t, series_id, included, ar_order=ar_order))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller, in order
                out.append(exc)
        return out
    Yi = np.asarray(Y, float)[:, inc]
    fits = fit_quasipoisson_many(Yi, X[inc], offset[inc], names, t[inc], series_id[inc], ar_order=1)
    for j, y in enumerate(Yi):
        if np.sum(y) == 0:
            fits[j] = EstimationError("the series has no events at all: a count model cannot be fitted")
        elif isinstance(fits[j], np.linalg.LinAlgError):
            fits[j] = EstimationError(f"model '{model}' could not be fitted: {fits[j]}")
    return fits
