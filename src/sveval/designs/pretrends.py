"""Power of pre-trend tests and the distortion from pre-testing: Roth (2022), "Pretest with
Caution: Event-Study Estimates after Testing for Parallel Trends" (AER: Insights), as in the R
package pretrends.

Input: event-study coefficients ``betahat``, their covariance ``sigma`` and their relative times
``rel_times`` (the reference period, normalised to 0, omitted). Coefficients before the reference
period are the pre-period ones. A hypothesised violation of parallel trends is a vector ``delta``
(the expected coefficients with no treatment effect); a linear one with slope ``s`` is
``delta = s * (rel_times - reference)``.

Two pre-tests ("the event study passes the pre-test"):

* ``"wald"``: the joint Wald test of all pre-period coefficients = 0,
  ``betahat_pre' sigma_pre^{-1} betahat_pre > chi2_{1-alpha}(K)`` (the test sveval's event study
  reports). Its power against ``delta`` is the non-central chi-square tail with non-centrality
  ``delta_pre' sigma_pre^{-1} delta_pre`` (exact);
* ``"any_t"``: rejects when any pre-period t-statistic exceeds ``z_{1-alpha/2}`` in absolute value
  (the pretrends package's test). Its power is one minus a multivariate normal rectangle
  probability (Genz's algorithm, as ``mvtnorm::pmvnorm``; accurate to about 1e-6).

For a hypothesised ``delta`` (:func:`pretrend_power`):

* power, and the slope the test detects with a given power (:func:`slope_for_power`; a magnitude);
* ``mean_after_pretest``: ``E[betahat | pass]`` when ``delta`` is the truth and the effect is 0 (the
  package's ``meanAfterPretesting``); for post periods this is the expected bias of the estimates
  that survive the pre-test (the treatment effect cancels), to compare with ``delta_post``, the
  bias without pre-testing. Pre-period means are those of a normal vector truncated to the
  acceptance region: for ``any_t`` a rectangle (Tallis 1961 / Manjunath & Wilhelm 2009, the
  formula ``tmvtnorm::mtmvnorm`` uses), for ``wald`` an ellipsoid (a one-dimensional integral after
  whitening); post periods follow by regression on the pre periods as in the package;
* Bayes factor ``P(pass | delta) / P(pass | parallel trends)`` and likelihood ratio
  ``f(betahat_pre | delta) / f(betahat_pre | 0)``, as the package reports.

The package fixes the t threshold at 1.96; here it is ``z_{1-alpha/2}`` (1.959964 for
``alpha = 0.05``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import integrate, optimize, stats

from sveval.errors import DataError, EstimationError

Test = Literal["wald", "any_t"]

TEST_DESCRIPTIONS = {
    "wald": "joint Wald (chi-square) test that all pre-period coefficients are 0",
    "any_t": "rejects if any pre-period coefficient's |t| exceeds the two-sided critical value",
}


@dataclass(frozen=True)
class PretrendPower:
    """Power of a pre-trend test against a hypothesised violation, and what passing it implies.

    Attributes
    ----------
    test : ``"wald"`` or ``"any_t"``; ``test_description`` says which in words
    alpha : size of each test (``any_t``: of each t-test; its overall size is ``size``)
    slope : slope of the hypothesised linear violation (``None`` when ``delta`` was given)
    power : probability the pre-test rejects under ``delta``
    size : probability it rejects under parallel trends (``alpha`` for ``wald``)
    bayes_factor : ``(1 - power) / (1 - size)``: passing is this many times as likely under
        ``delta`` as under parallel trends
    likelihood_ratio : ``f(betahat_pre | delta) / f(betahat_pre | 0)`` (``None`` without betahat)
    rel_times : relative times of the coefficients; ``reference``: the omitted period
    delta : the hypothesised violation at ``rel_times``
    mean_after_pretest : ``E[betahat | pass]`` under ``delta`` with no effect, at ``rel_times``
    bias_after_pretest : the post-period entries of ``mean_after_pretest`` (expected bias of the
        post-period estimates given that the pre-test passed)
    bias_without_pretest : the post-period entries of ``delta``
    """

    test: str
    test_description: str
    alpha: float
    slope: float | None
    power: float
    size: float
    bayes_factor: float
    likelihood_ratio: float | None
    reference: float
    rel_times: tuple[float, ...]
    delta: tuple[float, ...]
    mean_after_pretest: tuple[float, ...]
    post_times: tuple[float, ...]
    bias_after_pretest: tuple[float, ...]
    bias_without_pretest: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (NaN and infinities become ``None``)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if isinstance(value, tuple):
                out[key] = [_num(v) for v in value]
            elif isinstance(value, str) or value is None:
                out[key] = value
            else:
                out[key] = _num(value)
        return out


def _num(x):
    v = float(x)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# Input handling


def _split(sigma, rel_times, reference, betahat=None):
    s = np.asarray(sigma, dtype=float)
    t = np.asarray(rel_times, dtype=float).ravel()
    if s.ndim != 2 or s.shape != (t.size, t.size):
        raise DataError(f"sigma has shape {s.shape}, expected ({t.size}, {t.size}) to match "
                        "rel_times")
    if betahat is not None:
        b = np.asarray(betahat, dtype=float).ravel()
        if b.size != t.size:
            raise DataError(f"betahat has {b.size} coefficients but rel_times has {t.size}")
    else:
        b = None
    if not np.all(np.isfinite(s)) or not np.allclose(s, s.T, rtol=1e-6, atol=0):
        raise DataError("sigma must be a finite symmetric matrix")
    if np.any(t == reference):
        raise DataError(f"rel_times includes the reference period {reference}: omit it")
    pre = np.flatnonzero(t < reference)
    post = np.flatnonzero(t > reference)
    if pre.size == 0:
        raise DataError(f"no pre-period coefficient (rel_times < {reference})")
    s_pre = (s[np.ix_(pre, pre)] + s[np.ix_(pre, pre)].T) / 2
    if np.linalg.eigvalsh(s_pre).min() <= 0:
        raise DataError("the pre-period covariance must be positive definite")
    return s, t, pre, post, b


def _check_test(test: str, alpha: float) -> None:
    if test not in TEST_DESCRIPTIONS:
        raise DataError(f"test must be 'wald' or 'any_t', got {test!r}")
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1), got {alpha!r}")


# ---------------------------------------------------------------------------------------------
# Rejection probabilities


def _rect_prob(mean, cov, lo, hi) -> float:
    """P(lo <= X <= hi) for X ~ N(mean, cov)."""
    mean = np.atleast_1d(mean)
    if mean.size == 1:
        sd = math.sqrt(float(np.atleast_2d(cov)[0, 0]))
        return float(stats.norm.cdf((hi[0] - mean[0]) / sd) - stats.norm.cdf((lo[0] - mean[0]) / sd))
    return float(stats.multivariate_normal.cdf(hi, mean=mean, cov=cov, lower_limit=lo,
                                               abseps=1e-7, releps=1e-7, maxpts=100000 * mean.size,
                                               rng=np.random.default_rng(0)))


def rejection_probability(delta_pre, sigma_pre, *, test: Test = "wald",
                          alpha: float = 0.05) -> float:
    """Probability that the pre-test rejects when ``betahat_pre ~ N(delta_pre, sigma_pre)``."""
    _check_test(test, alpha)
    d = np.asarray(delta_pre, dtype=float).ravel()
    s = np.atleast_2d(np.asarray(sigma_pre, dtype=float))
    k = d.size
    if test == "wald":
        nc = float(d @ np.linalg.solve(s, d))
        crit = stats.chi2.ppf(1 - alpha, k)
        return float(stats.ncx2.sf(crit, k, nc)) if nc > 0 else float(alpha)
    z = stats.norm.ppf(1 - alpha / 2)
    ub = z * np.sqrt(np.diag(s))
    return 1.0 - _rect_prob(d, s, -ub, ub)


def slope_for_power(
    sigma,
    rel_times,
    *,
    target_power: float = 0.5,
    reference: float = -1,
    alpha: float = 0.05,
    test: Test = "wald",
) -> float:
    """Slope (a magnitude) of the linear violation ``slope * (t - reference)`` that the pre-test
    detects with probability ``target_power`` (the package's ``slope_for_power``)."""
    _check_test(test, alpha)
    s, t, pre, _, _ = _split(sigma, rel_times, reference)
    s_pre = s[np.ix_(pre, pre)]
    r = t[pre] - reference
    size = rejection_probability(np.zeros(pre.size), s_pre, test=test, alpha=alpha)
    if not size < target_power < 1:
        raise DataError(f"target_power must be between the test's size ({size:.3g}) and 1, "
                        f"got {target_power!r}")
    if test == "wald":
        k = pre.size
        crit = stats.chi2.ppf(1 - alpha, k)
        hi = 1.0
        while stats.ncx2.sf(crit, k, hi) < target_power:
            hi *= 2
        nc = optimize.brentq(lambda x: stats.ncx2.sf(crit, k, x) - target_power, 0.0, hi,
                             xtol=1e-14, rtol=1e-13)
        return math.sqrt(nc / float(r @ np.linalg.solve(s_pre, r)))

    def gap(slope):
        return rejection_probability(slope * r, s_pre, test=test, alpha=alpha) - target_power

    hi = 8 * float(np.sqrt(np.diag(s_pre)).max())
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12 * hi, rtol=1e-10))


# ---------------------------------------------------------------------------------------------
# Means after pre-testing


def _truncated_mean_rect(mean, cov, lo, hi) -> np.ndarray:
    """E[X | lo <= X <= hi], X ~ N(mean, cov) (Tallis; Manjunath & Wilhelm 2009)."""
    k = mean.size
    p_all = _rect_prob(mean, cov, lo, hi)
    if p_all <= 1e-14:
        raise EstimationError("the pre-test passes with probability ~0 under this trend")
    f_lo = np.zeros(k)
    f_hi = np.zeros(k)
    for j in range(k):
        sd = math.sqrt(cov[j, j])
        others = [i for i in range(k) if i != j]
        for bound, store in ((lo[j], f_lo), (hi[j], f_hi)):
            dens = stats.norm.pdf(bound, mean[j], sd)
            if others:
                c_oj = cov[others, j]
                m_c = mean[others] + c_oj / cov[j, j] * (bound - mean[j])
                s_c = cov[np.ix_(others, others)] - np.outer(c_oj, c_oj) / cov[j, j]
                dens *= _rect_prob(m_c, s_c, lo[others], hi[others])
            store[j] = dens / p_all
    return mean + cov @ (f_lo - f_hi)


def _truncated_mean_ellipse(mean, cov, crit) -> np.ndarray:
    """E[X | X' cov^{-1} X <= crit], X ~ N(mean, cov): after whitening W = L^{-1} X ~ N(m, I), the
    conditional mean is along m, and its length a one-dimensional integral."""
    k = mean.size
    chol = np.linalg.cholesky(cov)
    m = np.linalg.solve(chol, mean)
    mu = float(np.linalg.norm(m))
    if mu == 0:
        return np.zeros(k)
    root = math.sqrt(crit)

    def rest(w):  # P(chi2_{k-1} <= crit - w^2)
        return 1.0 if k == 1 else float(stats.chi2.cdf(max(crit - w * w, 0.0), k - 1))

    def dens(w):
        return stats.norm.pdf(w - mu) * rest(w)

    p_pass = integrate.quad(dens, -root, root, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
    if p_pass <= 1e-14:
        raise EstimationError("the pre-test passes with probability ~0 under this trend")
    first = integrate.quad(lambda w: w * dens(w), -root, root, epsabs=1e-13, epsrel=1e-11,
                           limit=200)[0]
    return mean * (first / p_pass) / mu


def mean_after_pretest(delta, sigma, rel_times, *, reference: float = -1, alpha: float = 0.05,
                       test: Test = "wald") -> np.ndarray:
    """``E[betahat | pre-test passes]`` when ``betahat ~ N(delta, sigma)`` (``meanAfterPretesting``)."""
    _check_test(test, alpha)
    s, t, pre, post, d = _split(sigma, rel_times, reference, delta)
    s_pre = s[np.ix_(pre, pre)]
    if test == "wald":
        m_pre = _truncated_mean_ellipse(d[pre], s_pre, stats.chi2.ppf(1 - alpha, pre.size))
    else:
        ub = stats.norm.ppf(1 - alpha / 2) * np.sqrt(np.diag(s_pre))
        m_pre = _truncated_mean_rect(d[pre], s_pre, -ub, ub)
    out = d.copy()
    out[pre] = m_pre
    if post.size:
        out[post] = d[post] + s[np.ix_(post, pre)] @ np.linalg.solve(s_pre, m_pre - d[pre])
    return out


# ---------------------------------------------------------------------------------------------
# Main entry point


def pretrend_power(
    betahat,
    sigma,
    rel_times,
    *,
    reference: float = -1,
    alpha: float = 0.05,
    test: Test = "wald",
    slope: float | None = None,
    delta=None,
) -> PretrendPower:
    """Power of the pre-test against a hypothesised violation, and the distortion from passing it.

    Parameters
    ----------
    betahat : event-study coefficients (for the likelihood ratio; may be ``None``)
    sigma : their covariance
    rel_times : relative time of each coefficient (the reference period omitted)
    reference : the omitted reference period (default -1)
    alpha : size of the (each) test
    test : ``"wald"`` (joint chi-square test, sveval's event study) or ``"any_t"`` (any significant
        pre-period coefficient, the pretrends package)
    slope : slope of a linear violation ``slope * (rel_times - reference)``
    delta : or any hypothesised violation at ``rel_times``; with neither, the slope that the test
        detects with 50% power (as the package's README illustrates)

    Returns
    -------
    PretrendPower
    """
    _check_test(test, alpha)
    s, t, pre, post, b = _split(sigma, rel_times, reference, betahat)
    if slope is not None and delta is not None:
        raise DataError("give slope or delta, not both")
    if delta is None:
        if slope is None:
            slope = slope_for_power(s, t, target_power=0.5, reference=reference, alpha=alpha,
                                    test=test)
        d = float(slope) * (t - reference)
    else:
        d = np.asarray(delta, dtype=float).ravel()
        if d.size != t.size:
            raise DataError(f"delta has {d.size} values but rel_times has {t.size}")
    s_pre = s[np.ix_(pre, pre)]
    power = rejection_probability(d[pre], s_pre, test=test, alpha=alpha)
    size = rejection_probability(np.zeros(pre.size), s_pre, test=test, alpha=alpha)
    lr = None
    if b is not None:
        inv = np.linalg.solve(s_pre, np.column_stack([b[pre], d[pre]]))
        log_lr = float(b[pre] @ inv[:, 1] - 0.5 * d[pre] @ inv[:, 1])
        lr = math.exp(log_lr)
    means = mean_after_pretest(d, s, t, reference=reference, alpha=alpha, test=test)
    return PretrendPower(
        test=test,
        test_description=TEST_DESCRIPTIONS[test],
        alpha=float(alpha),
        slope=None if slope is None else float(slope),
        power=power,
        size=size,
        bayes_factor=(1 - power) / (1 - size),
        likelihood_ratio=lr,
        reference=float(reference),
        rel_times=tuple(float(x) for x in t),
        delta=tuple(float(x) for x in d),
        mean_after_pretest=tuple(float(x) for x in means),
        post_times=tuple(float(x) for x in t[post]),
        bias_after_pretest=tuple(float(x) for x in means[post]),
        bias_without_pretest=tuple(float(x) for x in d[post]),
    )
