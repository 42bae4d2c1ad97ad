"""Profile-likelihood intervals for (quasi-)Poisson ITS coefficients.

At low counts (a handful of events a month or fewer) the log-likelihood of a rate ratio is far from
quadratic, so Wald intervals ``b +/- t * se`` are poorly calibrated: the benchmark
(``benchmarks/its_coverage.py``, cell ``low05``) measured 97-99% coverage for nominal 95% Wald
intervals at half an event a month. The profile-likelihood interval inverts the likelihood-ratio
(deviance) test instead: it is the set of values ``b`` of one coefficient for which

    (D(b) - D(b_hat)) / phi  <=  F(0.95; 1, n - k)       (quasi-Poisson, phi estimated)
    (D(b) - D(b_hat))        <=  chi-square(0.95; 1)      (Poisson, phi = 1)

where ``D(b)`` is the Poisson deviance with the coefficient held at ``b`` and the others refitted.
This is the interval of R's ``confint()`` for a ``glm`` (MASS profiling) with the reference
distribution chosen as for the quasi-likelihood F test of ``anova(..., test = "F")``. When no
finite value crosses the cut-off (for example no events at all after the intervention) the bound
is infinite, which is the honest answer: the data put no limit on it.

The refits use a small iteratively reweighted least squares solver (the coefficient held fixed
enters the offset), warm-started from the previous point, so one interval costs a few dozen
least-squares solves of the n x k design.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

_CLIP = 30.0  # keep exp(eta) finite while the profile walks far into the tail
_LIMIT = 25.0  # |log rate ratio| beyond which a bound is reported as infinite (a ratio of e^25)


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Poisson deviance ``2 * sum(y log(y / mu) - (y - mu))`` (zero counts contribute ``2 mu``)."""
    safe = np.where(y > 0, y, 1.0)
    return float(2.0 * np.sum(np.where(y > 0, y * np.log(safe / mu), 0.0) - (y - mu)))


def poisson_irls(y: np.ndarray, X: np.ndarray, offset: np.ndarray, beta: np.ndarray | None = None,
                 tol: float = 1e-10, maxiter: int = 100) -> tuple[np.ndarray, float]:
    """Poisson GLM (log link) by IRLS; returns the coefficients and the deviance."""
    k = X.shape[1]
    if k == 0:
        mu = np.exp(np.clip(offset, -_CLIP, _CLIP))
        return np.zeros(0), poisson_deviance(y, mu)
    if beta is None:
        mu = y + 0.5
        w = np.sqrt(mu)
        beta = np.linalg.lstsq(X * w[:, None], (np.log(mu) - offset) * w, rcond=None)[0]
    dev_old = np.inf
    dev = np.inf
    for _ in range(maxiter):
        eta = np.clip(X @ beta + offset, -_CLIP, _CLIP)
        mu = np.exp(eta)
        w = np.sqrt(mu)
        z = eta - offset + (y - mu) / mu
        beta = np.linalg.lstsq(X * w[:, None], z * w, rcond=None)[0]
        mu = np.exp(np.clip(X @ beta + offset, -_CLIP, _CLIP))
        dev = poisson_deviance(y, mu)
        if abs(dev - dev_old) <= tol * (1.0 + abs(dev)):
            break
        dev_old = dev
    return beta, dev


class PoissonProfile:
    """Profile-likelihood intervals and likelihood-ratio p-values for one fitted Poisson GLM.

    ``phi`` is the dispersion the deviance is divided by (1 for Poisson) and ``df`` the
    denominator degrees of freedom of the F reference (None: chi-square, as for Poisson).
    Results are cached per coefficient.
    """

    def __init__(self, y, X, offset, beta_hat, phi: float = 1.0, df: float | None = None,
                 level: float = 0.95):
        self.y = np.asarray(y, float)
        self.X = np.asarray(X, float)
        self.offset = np.asarray(offset, float)
        self.beta_hat = np.asarray(beta_hat, float)
        self.phi = float(phi)
        self.df = df
        mu = np.exp(np.clip(self.X @ self.beta_hat + self.offset, -_CLIP, _CLIP))
        self.dev0 = poisson_deviance(self.y, mu)
        self.cut = float(stats.f.ppf(level, 1, df) if df else stats.chi2.ppf(level, 1))
        self._cache: dict[int, tuple[float, float, float]] = {}

    def _lr(self, j: int, b: float, warm: list[np.ndarray]) -> float:
        """Scaled deviance increase with coefficient ``j`` held at ``b``."""
        Xo = np.delete(self.X, j, axis=1)
        beta, dev = poisson_irls(self.y, Xo, self.offset + b * self.X[:, j], beta=warm[0])
        if np.all(np.isfinite(beta)):
            warm[0] = beta
        return max(dev - self.dev0, 0.0) / self.phi

    def p_value(self, j: int) -> float:
        stat = self._lr(j, 0.0, [np.delete(self.beta_hat, j)])
        return float(stats.f.sf(stat, 1, self.df) if self.df else stats.chi2.sf(stat, 1))

    def interval(self, j: int, se: float) -> tuple[float, float, float]:
        """``(low, high, p)`` of coefficient ``j``; ``se`` (Wald) sets the first search step."""
        if j in self._cache:
            return self._cache[j]
        b_hat = float(self.beta_hat[j])
        step0 = se if np.isfinite(se) and se > 0 else 0.5
        step0 = min(max(step0, 0.05), 5.0)
        bounds = []
        for sign in (-1.0, 1.0):
            warm = [np.delete(self.beta_hat, j)]

            def g(b, warm=warm):
                return self._lr(j, b, warm) - self.cut

            inner, outer, step = b_hat, b_hat + sign * step0, step0
            found = False
            while sign * outer <= _LIMIT:
                if g(outer) >= 0:
                    found = True
                    break
                inner, step = outer, step * 2.0
                outer = inner + sign * step
            if not found:
                bounds.append(-math.inf if sign < 0 else math.inf)
                continue
            warm[0] = np.delete(self.beta_hat, j)
            lo, hi = sorted((inner, outer))
            bounds.append(float(optimize.brentq(g, lo, hi, xtol=1e-9, rtol=1e-10)))
        out = (bounds[0], bounds[1], self.p_value(j))
        self._cache[j] = out
        return out


__all__ = ["PoissonProfile", "poisson_irls", "poisson_deviance"]
