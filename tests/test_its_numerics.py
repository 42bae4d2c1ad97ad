"""O(n) AR(p) numerics of the ITS models against dense n x n reference computations.

The fast path (:class:`sveval.designs.its_models.ARWhitener`: Prais-Winsten rows plus short
conditional windows at series starts and after excluded months) must equal the dense Cholesky
whitening of the AR correlation matrix of the observed rows, and the REML fits built on it must
equal fits computed with that dense whitening or with a dense GLS likelihood written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from statsmodels.tsa.arima_process import arma_acf

from sveval.designs import its_models as m


def dense_corr(t: np.ndarray, phi: np.ndarray) -> np.ndarray:
    acf = arma_acf(np.r_[1.0, -np.asarray(phi)], np.array([1.0]), lags=int(t.max() - t.min()) + 1)
    return acf[np.abs(t[:, None] - t[None, :]).astype(int)]


class DenseWhitener:
    """Reference: ``L^-1 Z`` with ``L`` the dense Cholesky factor of each series' correlation matrix."""

    def __init__(self, t, series_id):
        self.t, self.sid = np.asarray(t, float), np.asarray(series_id)

    def whiten(self, Z, phi):
        phi = np.asarray(phi, float)
        if len(phi) == 0:
            return Z, 0.0
        out, logdet = np.empty_like(Z, dtype=float), 0.0
        for s in np.unique(self.sid):
            b = np.flatnonzero(self.sid == s)
            L = np.linalg.cholesky(dense_corr(self.t[b], phi))
            out[b] = sla.solve_triangular(L, Z[b], lower=True)
            logdet += 2.0 * float(np.sum(np.log(np.diag(L))))
        return out, logdet


def gapped_times():
    """Two series: the first with a 4-month and a 1-month gap and an isolated month, the second
    starting with isolated months."""
    t1 = np.r_[np.arange(0, 20), np.arange(24, 40), [42], np.arange(44, 60)]
    t2 = np.r_[[0, 2], np.arange(5, 40)]
    t = np.r_[t1, t2].astype(float)
    sid = np.r_[np.zeros(len(t1), int), np.ones(len(t2), int)]
    return t, sid


@pytest.mark.parametrize("phi", [[0.6], [-0.4], [0.5, -0.3], [1.2, -0.5], [0.2, 0.3, 0.1]])
def test_whitening_equals_dense_cholesky_with_gaps(phi):
    t, sid = gapped_times()
    Z = np.random.default_rng(0).standard_normal((len(t), 4))
    fast, ld = m.ARWhitener(t, sid).whiten(Z, np.array(phi))
    ref, ld_ref = DenseWhitener(t, sid).whiten(Z, np.array(phi))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
    assert abs(ld - ld_ref) < 1e-11
    # a single vector and a single series without gaps (the plain Prais-Winsten branch)
    tt = np.arange(50.0)
    f1, l1 = m.ARWhitener(tt, np.zeros(50)).whiten(Z[:50, 0], np.array(phi))
    r1, lr1 = DenseWhitener(tt, np.zeros(50)).whiten(Z[:50, 0], np.array(phi))
    np.testing.assert_allclose(f1, r1, rtol=0, atol=1e-12)
    assert abs(l1 - lr1) < 1e-11


def test_acf_equals_statsmodels():
    for phi in ([0.5], [0.5, -0.3], [1.2, -0.5], [0.2, 0.3, 0.1], [0.9, 0.05]):
        np.testing.assert_allclose(m.ar_acf(np.array(phi), 60),
                                   arma_acf(np.r_[1.0, -np.array(phi)], [1.0], lags=61), atol=1e-13)


def dense_reml(y, X, R):
    """-2 x REML log-likelihood profiled over sigma2 (up to a constant), from dense matrices."""
    n, k = X.shape
    Ri = np.linalg.inv(R)
    A = X.T @ Ri @ X
    beta = np.linalg.solve(A, X.T @ Ri @ y)
    r = y - X @ beta
    rss = float(r @ Ri @ r)
    return ((n - k) * np.log(rss / (n - k)) + np.linalg.slogdet(R)[1] + np.linalg.slogdet(A)[1],
            beta, rss / (n - k) * np.linalg.inv(A))


def ar_series(t, sid, phi, seed):
    rng = np.random.default_rng(seed)
    n = len(t)
    X = np.column_stack([np.ones(n), t, np.sin(2 * np.pi * t / 12), (t >= 30).astype(float)])
    e = np.empty(n)
    for s in np.unique(sid):
        b = np.flatnonzero(sid == s)
        e[b] = np.linalg.cholesky(dense_corr(t[b], phi)) @ rng.standard_normal(len(b))
    return X @ np.array([5.0, 0.02, 0.5, -1.0]) + e, X


@pytest.mark.parametrize("phi", [[0.5], [0.6, -0.2]])
def test_gls_reml_equals_dense_likelihood(phi):
    t, sid = gapped_times()
    y, X = ar_series(t, sid, phi, seed=3)
    p = len(phi)
    fit = m.gls_ar_reml(y, X, t, sid, p)
    # the objective the optimiser minimised equals the dense REML criterion at several points
    W = np.column_stack([X, y])
    wh = m.ARWhitener(t, sid)
    for trial in ([0.3], [-0.5], [0.8], [0.4, 0.2], [-0.3, -0.6]):
        if len(trial) != p:
            continue
        ph = m.pacf_to_ar(np.array(trial))
        Ww, lw = wh.whiten(W, ph)
        R = sla.block_diag(*[dense_corr(t[sid == s], ph) for s in np.unique(sid)])
        assert abs(m._reml_value(Ww, X.shape[1], lw) - dense_reml(y, X, R)[0]) < 1e-9
    # the fitted coefficients and covariance are the dense GLS ones at the fitted AR parameters
    R = sla.block_diag(*[dense_corr(t[sid == s], fit["phi"]) for s in np.unique(sid)])
    _, beta, cov = dense_reml(y, X, R)
    np.testing.assert_allclose(fit["beta"], beta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit["cov"], cov, rtol=1e-8, atol=1e-14)
    # and the REML optimum is a minimum of the dense criterion
    def crit(pacf):
        ph = m.pacf_to_ar(np.asarray(pacf))
        return dense_reml(y, X, sla.block_diag(*[dense_corr(t[sid == s], ph) for s in np.unique(sid)]))[0]
    f0 = crit(fit["pacf"])
    for j in range(p):
        for h in (-1e-3, 1e-3):
            q = fit["pacf"].copy()
            q[j] += h
            assert crit(q) >= f0 - 1e-9


def _fit_with(monkeypatch, whitener_cls, *args, **kw):
    monkeypatch.setattr(m, "ARWhitener", whitener_cls)
    return m.fit_model(*args, **kw)


@pytest.mark.parametrize("case", ["gauss_ar1", "gauss_ar2", "counts_ar1", "counts_ar2"])
def test_fits_equal_dense_reference_with_excluded_window(monkeypatch, case):
    """Whole fits (REML, GLS-IRLS, Kackar-Harville and Satterthwaite) with an excluded COVID-like
    window (rows with ``included == False``): fast path equals the dense whitening."""
    n = 96
    t = np.arange(n, dtype=float)
    sid = np.zeros(n, int)
    included = ~((t >= 48) & (t < 57))
    rng = np.random.default_rng(11)
    X = np.column_stack([np.ones(n), t / 12, np.cos(2 * np.pi * t / 12), np.sin(2 * np.pi * t / 12),
                         (t >= 70).astype(float), np.where(t >= 70, t - 70, 0.0)])
    names = ["const", "time", "cos1", "sin1", "level_1", "slope_1"]
    p = 2 if case.endswith("ar2") else 1
    u = np.linalg.cholesky(dense_corr(t, [0.5] if p == 1 else [0.5, -0.25])) @ rng.standard_normal(n)
    if case.startswith("gauss"):
        y = X @ np.array([10.0, 0.2, 0.5, 0.3, -1.0, 0.01]) + u
        model, off = "gls_ar", np.zeros(n)
    else:
        y = rng.poisson(np.exp(X @ np.array([np.log(30.0), 0.02, 0.15, 0.1, -0.2, 0.0]) + 0.1 * u)).astype(float)
        model, off = "quasipoisson", np.full(n, np.log(1e5))  # a population offset
    args = (model, y, X, off, names, t, sid, included)
    fast = m.fit_model(*args, ar_order=p)
    ref = _fit_with(monkeypatch, DenseWhitener, *args, ar_order=p)
    assert fast.n == int(included.sum()) == ref.n
    np.testing.assert_allclose(fast.params, ref.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.sqrt(np.diag(fast.cov)), np.sqrt(np.diag(ref.cov)), rtol=1e-6)
    np.testing.assert_allclose(fast.df_coef, ref.df_coef, rtol=1e-5)
    np.testing.assert_allclose(fast.ar, ref.ar, rtol=1e-5, atol=1e-8)
    for name in ("level_1", "slope_1"):
        np.testing.assert_allclose(fast.coef(name)[2:4], ref.coef(name)[2:4], rtol=1e-6, atol=1e-9)
