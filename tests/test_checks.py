"""Diagnostics and robustness checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sveval.designs import checks
from sveval.designs.its import fit_core
from sveval.result import Effect
from sveval.spec import ITSOptions, add_months


def test_ljung_box_and_breusch_godfrey_match_statsmodels():
    import statsmodels.api as sm
    from statsmodels.stats.diagnostic import acorr_breusch_godfrey, acorr_ljungbox

    rng = np.random.default_rng(0)
    x = rng.standard_normal(80)
    q, p = checks.ljung_box(x, 10)
    ref = acorr_ljungbox(x, lags=[10])
    assert np.isclose(q, ref["lb_stat"].iloc[0]) and np.isclose(p, ref["lb_pvalue"].iloc[0])
    X = sm.add_constant(np.arange(80.0))
    y = X @ [1, 0.1] + np.convolve(rng.standard_normal(81), [1, 0.6], "valid")
    r = sm.OLS(y, X).fit()
    lm, pv = checks.breusch_godfrey(r.resid, X, 4)
    lm_ref, p_ref, *_ = acorr_breusch_godfrey(r, nlags=4)
    assert np.isclose(lm, lm_ref, rtol=1e-6) and np.isclose(pv, p_ref, rtol=1e-5)


def _series(y):
    return pd.DataFrame({"period": [add_months("2016-04", i) for i in range(len(y))], "count": y,
                         "population": np.nan})


def test_autocorrelation_flags_ignored_ar_and_accepts_modelled_ar():
    rng = np.random.default_rng(1)
    n = 120
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.7 * e[i - 1] + rng.standard_normal()
    df = _series(10 + e)
    ols = fit_core(df, "2023-04", ITSOptions(model="ols", covid="none"), kind="continuous")
    c = checks.autocorrelation(ols)
    assert c.passed is False and c.data["acf"][1] > 0.4
    gls = fit_core(df, "2023-04", ITSOptions(model="gls_ar", covid="none"), kind="continuous")
    c2 = checks.autocorrelation(gls)
    assert c2.passed is True and abs(c2.data["acf_whitened"][1]) < 0.25
    assert c2.data["lags"][0] == 0 and len(c2.data["acf"]) == len(c2.data["lags"])


def test_overdispersion_detected_and_handled():
    rng = np.random.default_rng(2)
    y = rng.poisson(rng.gamma(2.0, 20 / 2.0, size=96)).astype(float)  # NB, strong overdispersion
    df = _series(y)
    pois = fit_core(df, "2021-04", ITSOptions(model="poisson", covid="none"))
    c = checks.overdispersion(pois)
    assert c.statistic > 3 and c.passed is False
    qp = fit_core(df, "2021-04", ITSOptions(model="quasipoisson", covid="none"))
    assert checks.overdispersion(qp).passed is True
    ydisp = rng.poisson(20, size=96).astype(float)
    assert checks.overdispersion(fit_core(_series(ydisp), "2021-04", ITSOptions(model="poisson", covid="none"))).passed


def _eff(est, lo, hi):
    return Effect("level_change", "rate_ratio", est, lo, hi, 0.01)


def test_placebo_in_time_counts_false_positives():
    periods = [add_months("2016-04", i) for i in range(72)]
    calls = []

    def always_significant(date, *, end=None, **kw):
        calls.append((date, end, kw))
        return _eff(0.7, 0.6, 0.8)

    always_significant.periods = periods
    c = checks.placebo_in_time(always_significant, "2021-04", _eff(0.8, 0.7, 0.9))
    assert c.passed is False and c.statistic == 1.0
    assert all(end == "2021-03" for _, end, _ in calls)  # placebo fits use pre-period data only
    assert all(d < "2021-04" for d, _, _ in calls)

    def never(date, *, end=None, **kw):
        return _eff(1.0, 0.9, 1.1)

    c2 = checks.placebo_in_time(never, "2021-04", _eff(0.8, 0.7, 0.9), periods=periods)
    assert c2.passed is True and c2.p_value == pytest.approx(1 / (1 + len(c2.data["placebos"])))


def test_placebo_skipped_when_pre_period_short():
    periods = [add_months("2016-04", i) for i in range(30)]
    c = checks.placebo_in_time(lambda *a, **k: _eff(1, 0.9, 1.1), "2017-06", _eff(0.8, 0.7, 0.9), periods=periods)
    assert c.passed is None and "too short" in c.detail


def test_sensitivity_checks_detect_changed_conclusion():
    def by_date(date, **kw):
        return _eff(0.8, 0.7, 0.9) if date <= "2021-05" else _eff(0.95, 0.8, 1.1)

    c = checks.sensitivity_date(by_date, "2021-04", _eff(0.8, 0.7, 0.9), months=2)
    assert [r["shift"] for r in c.data["variants"]] == [-2, -1, 0, 1, 2]
    assert c.passed is False and "+2" in c.detail

    def stable(date, **kw):
        return _eff(0.82, 0.72, 0.93)

    s = checks.sensitivity_seasonality(stable, "2021-04", _eff(0.8, 0.7, 0.9))
    assert s.passed is True and len(s.data["variants"]) == 5
