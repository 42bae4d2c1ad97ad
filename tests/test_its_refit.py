"""The fast refit estimators (sveval.designs.its_refit) against the statsmodels fits of the main path.

``arima``: the exact-ML regression with AR(p) errors must find the SARIMAX optimum (never a lower
log-likelihood, coefficients within 1e-4 standard errors) and report the SARIMAX ``oim``
covariance (the formula to 1e-8 at the same parameters, also with excluded months and trailing
missing months as in the power study's pre-period fit). ``negbin``: the NB2 maximum likelihood
must equal statsmodels' where that optimiser converges.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from sveval.designs import its_models as m
from sveval.designs import its_refit as rf


def design(n: int = 120, start: int = 84, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    t = np.arange(n, dtype=float)
    post = (t >= start).astype(float)
    X = np.column_stack([np.ones(n), t, np.sin(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 12), post,
                         post * (t - start)])
    return X, ["const", "time", "sin1", "cos1", "level_1", "slope_1"]


def ar_series(X, phi, seed, sd=10.0):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(len(X) + 100) * sd
    u = lfilter([1.0], np.r_[1.0, -np.asarray(phi)], e)[100:]
    return X @ np.array([150.0, 0.8, -9.0, 6.0, -25.0, -0.5]) + u


def sarimax_loglike(y, X, inc, params, ar, sigma2) -> float:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = SARIMAX(np.where(inc, y, np.nan), exog=X, order=(len(ar), 0, 0), trend="n")
        return float(mod.loglike(np.r_[params, ar, sigma2]))


def masks(n):
    full = np.ones(n, bool)
    covid = full.copy()
    covid[60:75] = False  # an excluded window
    covid[90] = False
    trailing = full.copy()
    trailing[84:] = False  # the power study's pre-period fit: the post period missing
    return {"full": full, "excluded": covid, "trailing": trailing}


CASES = [(phi, mask, seed) for phi in ([0.4], [-0.3], [0.5, -0.25]) for mask in ("full", "excluded", "trailing")
         for seed in (1, 2)]


@pytest.mark.parametrize("phi,mask,seed", CASES)
def test_arima_refit_finds_the_sarimax_optimum(phi, mask, seed):
    X, names = design()
    y = ar_series(X, phi, seed)
    inc = masks(len(y))[mask]
    if mask == "trailing":  # no intervention terms in a pre-period fit
        X, names = X[:, :4], names[:4]
    p = len(phi)
    ref = m.fit_arima(y, X, inc, names, ar_order=p)
    new = rf.fit_arima_profile(y, X, inc, names, ar_order=p)
    ll_ref = sarimax_loglike(y, X, inc, ref.params, ref.ar, ref.scale)
    ll_new = sarimax_loglike(y, X, inc, new.params, new.ar, new.scale)
    assert ll_new >= ll_ref - 1e-9
    # the optimiser stops near the optimum: coefficients within 1e-4 of a standard error
    assert np.max(np.abs(new.params - ref.params) / ref.bse) < 1e-4
    np.testing.assert_allclose(new.bse, ref.bse, rtol=1e-4)
    np.testing.assert_allclose(new.ar, ref.ar, atol=1e-5)
    assert math.isclose(new.scale, ref.scale, rel_tol=1e-5)
    np.testing.assert_allclose(new.innovations, ref.innovations, atol=1e-4)
    assert new.n == ref.n and new.names == ref.names


@pytest.mark.parametrize("phi,mask,seed", CASES[::2])
def test_arima_covariance_is_the_sarimax_oim(phi, mask, seed):
    """At the same parameters the covariance formula reproduces statsmodels' (to 1e-8 of each
    entry's scale, sqrt(var_i var_j))."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    X, names = design()
    y = ar_series(X, phi, seed)
    inc = masks(len(y))[mask]
    if mask == "trailing":
        X, names = X[:, :4], names[:4]
    ref = m.fit_arima(y, X, inc, names, ar_order=len(phi))
    prm = np.r_[ref.params, ref.ar, ref.scale]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = SARIMAX(np.where(inc, y, np.nan), exog=X, order=(len(phi), 0, 0), trend="n")
        full = np.asarray(mod.smooth(prm, cov_type="oim").cov_params())
    cov = rf.arima_oim_cov(y[inc], X[inc], inc, ref.params, np.asarray(ref.ar), ref.scale)
    scale = np.sqrt(np.outer(np.diag(full), np.diag(full)))  # on the scale of the correlations
    assert np.max(np.abs(cov - full) / scale) < 1e-8, np.max(np.abs(cov - full) / scale)


def test_missing_prediction_variances_ar1():
    """AR(1) forecast variance d months after the last observation: 1 - phi^(2d)."""
    obs = np.ones(30, bool)
    obs[[0, 1]] = False  # leading missing: the marginal variance
    obs[10:14] = False
    v = rf._missing_prediction_variances(obs, np.array([0.6]))
    assert np.allclose(v[[0, 1]], 1.0)
    np.testing.assert_allclose(v[10:14], 1 - 0.6 ** (2 * np.arange(1, 5)), rtol=1e-12)
    assert np.all(np.isnan(v[obs]))


def nb_series(alpha, seed, n=120):
    X, names = design(n)
    rng = np.random.default_rng(seed)
    off = np.log(np.full(n, 40_000.0))
    mu = np.exp(X @ np.array([-7.5, 0.004, 0.1, -0.05, -0.2, -0.002]) + off)
    lam = rng.gamma(1 / alpha, alpha * mu) if alpha > 0 else mu
    return rng.poisson(lam).astype(float), X, off, names


def nb_loglike(y, X, off, b, alpha):
    from scipy import special

    mu = np.exp(X @ b + off)
    r = 1 / alpha
    return float(np.sum(special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
                        + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu))))


@pytest.mark.parametrize("alpha,seed", [(0.02, 1), (0.05, 2), (0.2, 3), (1.0, 4), (0.0, 5), (0.0, 6)])
def test_negbin_refit_equals_statsmodels(alpha, seed):
    y, X, off, names = nb_series(alpha, seed)
    ref = m.fit_negbin(y, X, off, names)
    new = rf.fit_negbin_newton(y, X, off, names)
    assert nb_loglike(y, X, off, new.params, new.alpha) >= nb_loglike(y, X, off, ref.params, ref.alpha) - 1e-6
    assert np.max(np.abs(new.params - ref.params) / ref.bse) < 1e-4
    np.testing.assert_allclose(new.bse, ref.bse, rtol=1e-4)
    if ref.alpha > 1e-3:  # interior optimum, polished by Newton in statsmodels
        assert math.isclose(new.alpha, ref.alpha, rel_tol=1e-5)
    else:  # no overdispersion: both at the boundary of the search
        assert new.alpha < 1e-5 and ref.alpha < 1e-5
    assert math.isclose(new.dispersion, ref.dispersion, rel_tol=1e-9)
    np.testing.assert_allclose(new.resid, ref.resid, rtol=1e-4, atol=1e-6)


def test_negbin_profile_score_is_zero_at_the_estimate():
    y, X, off, names = nb_series(0.1, 7)
    fit = rf.fit_negbin_newton(y, X, off, names)
    nb = m._NB(y, X, off)
    g, h = nb.profile_derivs(math.log(fit.alpha), fit.params)
    assert abs(g) < 1e-8 and h < 0


def test_refit_model_passes_other_models_through():
    X, names = design()
    y = ar_series(X, [0.3], 3)
    n = len(y)
    args = (y, X, np.zeros(n), names, np.arange(n, dtype=float), np.zeros(n, int), np.ones(n, bool))
    for model in ("ols", "gls_ar"):
        a, b = m.fit_model(model, *args, ar_order=1), rf.refit_model(model, *args, ar_order=1)
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.cov, b.cov)


def test_refit_model_refuses_what_fit_model_refuses():
    from sveval.errors import EstimationError

    X, names = design()
    n = len(X)
    args = (np.zeros(n), X, np.zeros(n), names, np.arange(n, dtype=float), np.zeros(n, int), np.ones(n, bool))
    with pytest.raises(EstimationError, match="no events"):
        rf.refit_model("negbin", *args)
    y = ar_series(X, [0.3], 3)
    two = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    with pytest.raises(EstimationError, match="one series"):
        rf.refit_model("arima", y, X, np.zeros(n), names, np.arange(n, dtype=float), two, np.ones(n, bool))


@pytest.mark.parametrize("seed", [4, 14, 21, 31])
def test_negbin_main_fit_survives_statsmodels_failures(seed, monkeypatch):
    """On these Poisson series statsmodels' NB optimiser runs off to alpha > 1e4 (log-likelihood
    over 1,000 below the maximum); the main fit notices and uses the maximum."""
    y, X, off, names = nb_series(0.0, seed)
    best = rf.fit_negbin_newton(y, X, off, names)
    fit = m.fit_negbin(y, X, off, names)
    assert fit.alpha == best.alpha < 1e-5
    assert np.max(np.abs(fit.params - best.params) / best.bse) < 1e-4
    np.testing.assert_allclose(fit.bse, best.bse, rtol=1e-4)
    monkeypatch.setattr(m, "NB_FAILED_LL", math.inf)  # without the check: the failure
    failed = m.fit_negbin(y, X, off, names)
    assert failed.alpha > 1e4
    assert nb_loglike(y, X, off, failed.params, failed.alpha) < nb_loglike(y, X, off, fit.params, fit.alpha) - 100


def test_negbin_with_no_events_after_the_intervention():
    """Separation: the level coefficient runs off to minus infinity. Neither fit raises, neither
    bounds the effect (standard error far above its.UNBOUNDED_SE), no floating-point warnings."""
    from sveval.designs.its import UNBOUNDED_SE

    y, X, off, names = nb_series(0.3, 3)
    y[84:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = rf.fit_negbin_newton(y, X, off, names)
    ref = m.fit_negbin(y, X, off, names)
    i = names.index("level_1")
    assert new.params[i] < -20 and ref.params[i] < -20
    assert new.bse[i] > UNBOUNDED_SE and ref.bse[i] > UNBOUNDED_SE
    assert math.isclose(new.alpha, ref.alpha, rel_tol=1e-6)
