"""ITS design: recovery of known effects, design terms, variants and the Result contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sveval.designs.its import fit_its, resolve_model
from sveval.designs.its_design import build_design, effect_weights, seasonal_terms
from sveval.errors import DataError, SpecError
from sveval.spec import EvaluationSpec, ITSOptions, add_months, load_model

FAST = dict(power_sims=0, placebo=False, sensitivity_months=0, covid="none")


def count_series(n=96, k=60, rr=0.7, base=40.0, seed=1, pop=500_000.0, start="2016-04", slope=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    months = (t + 3) % 12 + 1
    lam = base * np.exp(0.002 * t + 0.15 * np.sin(2 * np.pi * months / 12)
                        + math.log(rr) * (t >= k) + slope * np.where(t >= k, t - k, 0))
    periods = [add_months(start, i) for i in range(n)]
    return pd.DataFrame({"period": periods, "count": rng.poisson(lam).astype(float), "population": pop}), periods[k]


def gauss_series(n=96, k=60, delta=-2.0, seed=2, rho=0.3):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    e = np.zeros(n)
    z = rng.standard_normal(n)
    e[0] = z[0]
    for i in range(1, n):
        e[i] = rho * e[i - 1] + z[i]
    y = 20 + 0.03 * t + delta * (t >= k) + e
    periods = [add_months("2016-04", i) for i in range(n)]
    return pd.DataFrame({"period": periods, "count": y, "population": np.nan}), periods[k]


def test_count_level_change_recovered_and_result_contract():
    df, start = count_series(rr=0.7)
    res = fit_its(df, start, ITSOptions(**FAST))
    h = res.headline
    assert h.name == "level_change" and h.scale == "rate_ratio"
    assert h.ci_low <= 0.7 <= h.ci_high
    assert h.significant and h.improved is True
    assert [e.name for e in res.effects] == ["level_change", "slope_change", "average_post_effect"]
    assert set(["period", "observed", "fitted", "counterfactual", "cf_low", "cf_high", "post"]) <= set(res.series.columns)
    post = res.series[res.series["post"]]
    assert (post["cf_low"] <= post["counterfactual"]).all() and (post["counterfactual"] <= post["cf_high"]).all()
    # prevented = counterfactual - observed, positive for a fall
    assert res.prevented is not None and res.prevented.estimate > 0
    assert res.prevented.ci_low < res.prevented.estimate < res.prevented.ci_high
    assert res.prevented.months == 36
    json.dumps(res.to_dict(), allow_nan=False)
    assert res.design == "its" and res.n_obs == 96


def test_no_effect_is_not_significant_and_null_covered():
    df, start = count_series(rr=1.0, seed=5)
    res = fit_its(df, start, ITSOptions(**FAST))
    assert res.headline.ci_low <= 1.0 <= res.headline.ci_high


def test_gaussian_continuous_difference_recovered():
    df, start = gauss_series(delta=-2.0)
    res = fit_its(df, start, ITSOptions(**FAST), kind="continuous")
    h = res.headline
    assert h.scale == "difference"
    assert h.ci_low <= -2.0 <= h.ci_high and h.ci_high < 0
    assert res.details["model"] == "gls_ar"
    assert res.prevented is None


@pytest.mark.parametrize("model", ["poisson", "quasipoisson", "negbin", "ols", "newey_west", "gls_ar", "arima"])
def test_every_model_selectable(model):
    df, start = count_series(rr=0.6, n=72, k=48, base=60)
    res = fit_its(df, start, ITSOptions(model=model, **FAST))
    assert res.details["model"] == model
    h = res.headline
    if model in ("poisson", "quasipoisson", "negbin"):
        assert h.scale == "rate_ratio" and h.ci_low <= 0.6 <= h.ci_high
    else:  # Gaussian model on the count: difference of about 60 * 0.4 = 24 (times the trend)
        assert h.scale == "difference" and h.estimate < -10


def test_auto_model_by_kind():
    assert resolve_model(ITSOptions(), "count") == "quasipoisson"
    assert resolve_model(ITSOptions(), "rate") == "quasipoisson"
    assert resolve_model(ITSOptions(), "continuous") == "gls_ar"
    assert resolve_model(ITSOptions(model="negbin"), "count") == "negbin"


def test_count_model_refused_for_continuous_measure():
    df, start = gauss_series()
    with pytest.raises(DataError, match="count model"):
        fit_its(df, start, ITSOptions(model="poisson", **FAST), kind="continuous")


def test_options_validated_from_parameter_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\ntitle: t\nintervention: i\nmeasure: m\nareas: [E06000047]\ndesign: its\n"
                 "its: {model: lognormal}\n")
    with pytest.raises(SpecError, match="its.model"):
        load_model(EvaluationSpec, p)
    p.write_text("id: x\ntitle: t\nintervention: i\nmeasure: m\nareas: [E06000047]\ndesign: its\n"
                 "its: {model: negbin, seasonality: month, ar_order: 2, covid: exclude, phase_in_months: 6}\n")
    spec = load_model(EvaluationSpec, p)
    assert spec.its.model == "negbin" and spec.its.ar_order == 2


def test_phase_in_and_lag_weights():
    t = np.arange(10)
    lvl, slope = effect_weights(t, start=4, lag=1, phase_in=3)
    assert lvl.tolist() == [0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1]
    assert slope.tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    lvl0, _ = effect_weights(t, start=4, lag=0, phase_in=0)
    assert lvl0.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_phase_in_effect_recovered():
    rng = np.random.default_rng(9)
    n, k, P = 96, 60, 6
    t = np.arange(n)
    ramp = np.clip((t - k + 1) / P, 0, 1)
    lam = 50 * np.exp(math.log(0.7) * ramp)
    df = pd.DataFrame({"period": [add_months("2016-04", i) for i in range(n)],
                       "count": rng.poisson(lam).astype(float), "population": np.nan})
    res = fit_its(df, df["period"][k], ITSOptions(phase_in_months=P, slope_change=False, seasonality="none", **FAST))
    assert res.headline.ci_low <= 0.7 <= res.headline.ci_high


def test_seasonal_terms():
    S, names = seasonal_terms(np.arange(1, 13), "fourier", 6)
    assert names[-1] == "cos6" and "sin6" not in names and S.shape == (12, 11)
    M, mn = seasonal_terms(np.arange(1, 13), "month", 2)
    assert M.shape == (12, 11) and M[0].sum() == 0
    assert seasonal_terms(np.arange(1, 13), "none", 2)[0].shape == (12, 0)


def test_covid_indicator_and_exclusion():
    df, start = count_series(n=120, k=96, start="2015-04")  # covers 2020-03..2021-06
    ind = build_design(df, start, ITSOptions(covid="indicator"))
    assert "covid" in ind.columns and ind.included.all()
    exc = build_design(df, start, ITSOptions(covid="exclude"))
    assert "covid" not in exc.columns and (~exc.included).sum() == 16
    res = fit_its(df, start, ITSOptions(**(FAST | {"covid": "exclude"})))
    assert res.n_obs == 104 and res.headline.ci_low <= 0.7 <= res.headline.ci_high


def test_recording_break_and_change_points():
    df, start = count_series(n=120, k=84, start="2015-04")
    d = build_design(df, start, ITSOptions(change_points=["2024-01"], covid="none"),
                     breaks=(("2021-04", "NDQIS"),))
    assert "break:NDQIS" in d.columns and "level_2" in d.columns and "slope_2" in d.columns
    res = fit_its(df, start, ITSOptions(change_points=["2024-01"], **FAST), breaks=[{"period": "2021-04", "name": "NDQIS"}])
    names = [e.name for e in res.effects]
    assert "level_change_2" in names and "slope_change_2" in names
    assert any("NDQIS" in res.method for _ in [0])


def test_controlled_its_recovers_extra_change():
    rng = np.random.default_rng(4)
    n, k = 96, 60
    t = np.arange(n)
    periods = [add_months("2016-04", i) for i in range(n)]
    common = np.exp(0.2 * (t >= k))  # something hit both series at the same time
    treated = pd.DataFrame({"period": periods, "count": rng.poisson(40 * common * np.exp(math.log(0.75) * (t >= k))).astype(float),
                            "population": 200_000.0})
    comp = pd.DataFrame({"period": periods, "count": rng.poisson(120 * common).astype(float), "population": 600_000.0})
    res = fit_its(treated, periods[k], ITSOptions(**FAST), comparison=comp)
    assert res.design == "cits"
    assert res.headline.ci_low <= 0.75 <= res.headline.ci_high
    assert set(res.series["group"]) == {"treated", "comparison"}
    # without the comparison the common shock contaminates the estimate
    single = fit_its(treated, periods[k], ITSOptions(**FAST))
    assert abs(math.log(single.headline.estimate) - math.log(0.75)) > abs(math.log(res.headline.estimate) - math.log(0.75))


def test_data_errors_name_the_problem():
    df, start = count_series()
    with pytest.raises(DataError, match="outside the series"):
        fit_its(df, "2030-01", ITSOptions(**FAST))
    gap = df.drop(index=10)
    with pytest.raises(DataError, match="gaps"):
        fit_its(gap, start, ITSOptions(**FAST))
    neg = df.copy()
    neg.loc[3, "count"] = -1
    with pytest.raises(DataError, match="non-negative"):
        fit_its(neg, start, ITSOptions(**FAST))


def test_full_report_has_diagnostics_placebo_and_power():
    df, start = count_series(n=96, k=66, rr=0.7)
    res = fit_its(df, start, ITSOptions(power_sims=40, sensitivity_months=2, covid="none"))
    names = [c.name for c in res.diagnostics]
    assert names == ["autocorrelation", "overdispersion", "placebo_in_time", "sensitivity_date",
                     "sensitivity_seasonality"]
    assert len(res.check("sensitivity_date").data["variants"]) == 5
    assert len(res.check("placebo_in_time").data["placebos"]) > 5
    assert res.power is not None and res.power.n_sim == 40 and res.power.mde is not None
    from sveval.report.plots import its as its_plots

    for fn in (its_plots.acf_plot, its_plots.placebo_plot, its_plots.sensitivity_plot, its_plots.power_curve):
        fig, ax = fn(res)
        assert ax.has_data()
    json.dumps(res.to_dict(), allow_nan=False)
