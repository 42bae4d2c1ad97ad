"""Residual diagnostics of a fitted time-series model: autocorrelation and overdispersion."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from sveval.result import Check


def acf(x: np.ndarray, nlags: int) -> np.ndarray:
    """Sample autocorrelations at lags 0..nlags (the usual biased estimator, as R's ``acf``)."""
    from statsmodels.tsa.stattools import acf as _acf

    return np.asarray(_acf(np.asarray(x, float), nlags=nlags, fft=False))


def ljung_box(x: np.ndarray, lags: int, fitted_params: int = 0) -> tuple[float, float]:
    """Ljung-Box Q statistic up to ``lags`` and its p-value (df reduced by ``fitted_params``)."""
    n = len(x)
    r = acf(x, lags)[1:]
    q = float(n * (n + 2) * np.sum(r**2 / (n - np.arange(1, lags + 1))))
    df = max(lags - fitted_params, 1)
    return q, float(stats.chi2.sf(q, df))


def breusch_godfrey(resid: np.ndarray, X: np.ndarray, lags: int) -> tuple[float, float]:
    """Breusch-Godfrey LM test: n R^2 of residuals on X and ``lags`` lagged residuals ~ chi2(lags)."""
    e = np.asarray(resid, float)
    n = len(e)
    L = np.column_stack([np.r_[np.zeros(k), e[:-k]] for k in range(1, lags + 1)])
    Z = np.column_stack([X, L])
    beta, *_ = np.linalg.lstsq(Z, e, rcond=None)
    u = e - Z @ beta
    r2 = 1.0 - float(u @ u) / float(((e - e.mean()) ** 2).sum())
    lm = n * r2
    return lm, float(stats.chi2.sf(lm, lags))


def autocorrelation(core, max_lag: int | None = None) -> Check:
    """Residual autocorrelation of an ITS fit.

    Reports the ACF of the model residuals (Pearson residuals for counts) and of the innovations
    (residuals whitened by the fitted AR process, which is what the intervals rely on), the
    Ljung-Box test on both and the Breusch-Godfrey test on the residuals. ``passed`` is False when
    the Ljung-Box test on the innovations rejects at 5%: autocorrelation the model has not captured.
    """
    fit, design = core.fit, core.design
    inc = design.included
    treated = (design.frame["group"] == "treated").to_numpy()[inc]
    res = np.asarray(fit.resid)[treated]
    inn = np.asarray(fit.innovations)[treated]
    n = len(res)
    L = max_lag or int(min(24, max(6, n // 4)))
    L = min(L, n - 2)
    lb_q, lb_p = ljung_box(res, min(12, L))
    p_ar = len(fit.ar)
    lbi_q, lbi_p = ljung_box(inn, min(12, L), fitted_params=p_ar)
    bg_lm, bg_p = breusch_godfrey(res, design.X[inc][treated], min(12, max(1, n // 10)))
    bound = 1.96 / math.sqrt(n)
    ar_txt = f"AR({p_ar}) errors, coefficient(s) {', '.join(f'{a:.2f}' for a in fit.ar)}" if p_ar else "no AR term"
    if lbi_p < 0.05:
        detail = (f"autocorrelation remains after the model ({ar_txt}): Ljung-Box p = {lbi_p:.3f} on the "
                  "whitened residuals; intervals may be too narrow (consider a higher ar_order)")
    elif lb_p < 0.05 and p_ar:
        detail = (f"the residuals are autocorrelated (Ljung-Box p = {lb_p:.3f}) and the model accounts for "
                  f"it ({ar_txt}; whitened residuals p = {lbi_p:.3f})")
    elif lb_p < 0.05:
        detail = f"the residuals are autocorrelated (Ljung-Box p = {lb_p:.3f}), which the model ignores"
    else:
        detail = f"no evidence of residual autocorrelation (Ljung-Box p = {lb_p:.3f}; {ar_txt})"
    passed = bool(lbi_p >= 0.05) and not (lb_p < 0.05 and p_ar == 0 and core.model not in ("newey_west",))
    return Check(
        name="autocorrelation",
        description="Residual autocorrelation: ACF, Ljung-Box (residuals and whitened residuals) and "
        "Breusch-Godfrey tests",
        statistic=lbi_q, p_value=lbi_p, passed=passed, detail=detail,
        data={
            "lags": list(range(L + 1)),
            "acf": acf(res, L).tolist(),
            "acf_whitened": acf(inn, L).tolist(),
            "bound": bound,
            "ljung_box": {"lags": min(12, L), "q": lb_q, "p": lb_p},
            "ljung_box_whitened": {"lags": min(12, L), "q": lbi_q, "p": lbi_p},
            "breusch_godfrey": {"lags": min(12, max(1, n // 10)), "lm": bg_lm, "p": bg_p},
            "ar": list(fit.ar),
            "residuals": res.tolist(),
            "periods": design.frame["period"].to_numpy()[inc][treated].tolist(),
        },
    )


def overdispersion(core) -> Check:
    """Overdispersion of counts: Pearson chi-square / residual df of the Poisson mean model.

    ``passed`` is False only when the counts are overdispersed (ratio > 1.5 with p < 0.05) and the
    model assumes Poisson variance; quasi-Poisson and negative binomial models account for it.
    """
    fit, design = core.fit, core.design
    ratio = float(fit.dispersion) if fit.dispersion is not None else float("nan")
    df = int(design.included.sum() - design.X.shape[1])
    chi2 = ratio * df
    p = float(stats.chi2.sf(chi2, df)) if np.isfinite(chi2) else None
    handled = core.model in ("quasipoisson", "negbin")
    over = ratio > 1.5 and (p is not None and p < 0.05)
    if not over:
        detail = f"dispersion ratio {ratio:.2f}: no material overdispersion"
    elif handled:
        how = (f"the dispersion parameter ({fit.scale:.2f})" if core.model == "quasipoisson"
               else f"the negative binomial alpha ({fit.alpha:.3g})")
        detail = f"dispersion ratio {ratio:.2f}: overdispersed counts, accounted for by {how}"
    else:
        detail = f"dispersion ratio {ratio:.2f}: overdispersed counts that the Poisson model ignores"
    return Check(
        name="overdispersion",
        description="Pearson chi-square / residual degrees of freedom of the Poisson mean model",
        statistic=ratio, p_value=p, passed=not (over and not handled), detail=detail,
        data={"ratio": ratio, "df": df, "model": core.model, "scale": fit.scale, "nb_alpha": fit.alpha},
    )
