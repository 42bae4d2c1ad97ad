"""DiD estimators, inference and the design front end, on simulated panels with known effects,
and clustered TWFE standard errors against R (clubSandwich / sandwich) fixtures."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs import did_estimators as est
from sveval.designs.did import evaluate_panel
from sveval.designs.did_inference import codes, randomisation_test, wild_cluster_bootstrap
from sveval.designs.did_panel import exclude_months, make_panel
from sveval.errors import DataError, EstimationError
from sveval.spec import DiDOptions, period_from_index, period_index

REF = Path(__file__).parent / "reference" / "did"


def simulate(n_units=12, n_treated=3, T=60, start=40, rr=0.7, seed=0, base=8.0, pop=True):
    """Poisson counts with unit and month effects; treated units' rate x ``rr`` from ``start``."""
    rng = np.random.default_rng(seed)
    t0 = period_index("2019-01")
    rows = []
    for u in range(n_units):
        a = rng.normal(0, 0.3)
        popu = 50_000 * (1 + u % 3)
        for t in range(T):
            mu = base * popu / 50_000 * np.exp(a + 0.15 * np.sin(t / 2))
            if u < n_treated and t >= start:
                mu *= rr
            rows.append({"unit": f"A{u:02d}", "period": period_from_index(t0 + t),
                         "count": float(rng.poisson(mu)), "population": float(popu)})
    cohorts = {f"A{u:02d}": period_from_index(t0 + start) for u in range(n_treated)}
    df = pd.DataFrame(rows)
    if not pop:
        df = df.drop(columns="population")
    return df, cohorts


# -- panel -----------------------------------------------------------------------------------------
def test_make_panel_codes_treatment_and_rates():
    df, coh = simulate()
    p = make_panel(df, coh)
    assert p.outcome == "rate" and p.n_units == 12 and p.n_treated_units == 3
    f = p.frame
    assert f.loc[f["unit"] == "A00", "D"].sum() == 20
    assert f.loc[f["unit"] == "A05", "D"].sum() == 0
    assert np.allclose(f["y"], f["count"] / f["population"] * 100_000)
    assert make_panel(df, coh, outcome="count").frame["y"].equals(f["count"])


def test_make_panel_refuses_gaps_and_unknown_units():
    df, coh = simulate()
    with pytest.raises(DataError, match="not balanced"):
        make_panel(df.drop(index=5), coh)
    with pytest.raises(DataError, match="no rows"):
        make_panel(df, {"ZZZ": "2020-01"})
    with pytest.raises(DataError, match="no comparison"):
        make_panel(df, {u: "2020-01" for u in df["unit"].unique()})
    filled = make_panel(df.drop(index=5), coh, fill_zero=True)
    assert filled.frame["count"].iloc[5] == 0


def test_exclude_months():
    df, coh = simulate()
    p = exclude_months(make_panel(df, coh), "2019-03", "2019-05")
    assert p.n_periods == 57


# -- clustered SEs against R ---------------------------------------------------------------------
def test_twfe_clustered_se_matches_r_clubsandwich():
    """vcov='CR1S' (every FE counted; selected explicitly since the default is now fixest's
    correction) == clubSandwich CR1S == sandwich::vcovCL(HC1); CR1 and CR2 (with its Satterthwaite
    df) against the same R fixture."""
    d = pd.read_csv(REF / "twfe_panel.csv")
    r = pd.read_csv(REF / "twfe_clubsandwich.csv").set_index("type")
    d["period"] = d["t"].map(lambda t: period_from_index(period_index("2020-01") + t))
    starts = d[d["D"] == 1].groupby("unit")["t"].min()
    coh = {u: period_from_index(period_index("2020-01") + int(t)) for u, t in starts.items()}
    # a constant shift keeps counts non-negative and changes neither coefficient nor SE (unit FE)
    p = make_panel(d.assign(count=d["y"] + 100), coh, population=None, outcome="count")
    fit = est.twfe(p, inference="cluster", vcov="CR1S")
    assert fit.coef == pytest.approx(r.loc["CR1S", "estimate"], rel=1e-8)
    assert fit.se == pytest.approx(r.loc["CR1S", "se"], rel=1e-6)
    assert fit.se == pytest.approx(r.loc["vcovCL_HC1", "se"], rel=1e-6)
    assert est.twfe(p, inference="cluster", vcov="CR1").se == pytest.approx(r.loc["CR1", "se"], rel=1e-6)
    cr2 = est.twfe(p, inference="cluster", vcov="CR2")
    assert cr2.se == pytest.approx(r.loc["CR2", "se"], rel=1e-6)
    assert cr2.extra["df"] == pytest.approx(r.loc["CR2", "df"], rel=1e-6)
    assert cr2.p_value == pytest.approx(r.loc["CR2", "p_value"], rel=1e-5)
    assert "Satterthwaite" in cr2.inference


# -- estimators recover effects --------------------------------------------------------------------
@pytest.fixture(scope="module")
def panel():
    df, coh = simulate(n_units=40, n_treated=10, seed=3)
    return make_panel(df, coh)


def test_poisson_fe_recovers_rate_ratio(panel):
    fit = est.poisson_fe(panel)
    lo, hi = fit.interval
    assert fit.effect_scale == "rate_ratio"
    assert lo < 0.7 < hi and abs(fit.estimate - 0.7) < 0.05


def test_twfe_and_2x2_and_event_study_agree_on_simple_design(panel):
    tw, tt, es = est.twfe(panel), est.two_by_two(panel), est.event_study(panel, (-6, 6))
    # true difference: treated pre-mean rate x (rr - 1)
    f = panel.frame
    truth = f.loc[f["treated"] & (f["D"] == 0), "y"].mean() * (0.7 - 1)
    for fit in (tw, tt, es):
        assert fit.ci_low < truth < fit.ci_high, fit.name
    assert es.table["event_time"].min() == -6 and es.table["binned"].sum() == 2
    assert es.extra["pre_trend"]["p_value"] > 0.01


def test_event_study_detects_a_pre_trend():
    df, coh = simulate(n_units=40, n_treated=10, seed=4, rr=1.0)
    t = df["period"].map(period_index)
    tr = df["unit"].isin(coh)
    df.loc[tr, "count"] = df.loc[tr, "count"] * (1 + 0.02 * (t[tr] - t.min()))  # diverging trend
    fit = est.event_study(make_panel(df, coh), (-12, 6))
    assert fit.extra["pre_trend"]["p_value"] < 0.01


def _feols_event_study(panel, window, vcov, covid):
    """Reference: pyfixest's feols with one float dummy column per lead/lag (the former path)."""
    import pyfixest as pf

    f = panel.frame.copy()
    rel = np.clip(np.where(f["treated"], f["t"] - f["cohort"], -1), *window)
    ok = f["y"].notna().to_numpy()
    ks = [k for k in range(window[0], window[1] + 1) if k != -1 and (ok & (rel == k)).any()]
    names = [f"k{i}" for i in range(len(ks))]
    for n, k in zip(names, ks, strict=True):
        f[n] = (rel == k).astype(float)
    fes = "unit + t"
    if covid is not None:
        t = f["t"]
        f["covid_grp"] = (f["treated"] & t.between(*map(period_index, covid))).astype(np.int64)
        fes += " + covid_grp"
    fit = pf.feols(f"y ~ {' + '.join(names)} | {fes}", data=f, vcov={"CRV1": "unit"},
                   ssc=pf.ssc(**est.SSC_OPTIONS[vcov]))
    return fit, names


@pytest.mark.parametrize("vcov", ["fixest", "CR1", "CR1S"])
@pytest.mark.parametrize("covid", [None, ("2020-03", "2020-12")])
def test_event_study_equals_feols_with_dummy_columns(panel, vcov, covid):
    # the event study demeans an integer event-time column's dummies a few at a time (memory at
    # LSOA scale) instead of calling feols on a frame of dummies: same numbers
    fit = est.event_study(panel, (-6, 6), vcov=vcov, covid=covid)
    ref, names = _feols_event_study(panel, (-6, 6), vcov, covid)
    tab = fit.table[fit.table["event_time"] != -1]
    np.testing.assert_allclose(tab["estimate"], ref.coef()[names], rtol=1e-8)
    np.testing.assert_allclose(tab["se"], ref.se()[names], rtol=1e-8)
    # fitted values carry the demeaner's tolerance (1e-6), not the coefficients
    np.testing.assert_allclose(fit.fitted, ref.predict(), rtol=1e-6)
    assert fit.n_obs == ref._N


def test_event_study_leaves_out_missing_outcomes_and_refuses_collinear_lags(panel):
    f = panel.frame.copy()
    f.loc[[3, 500, 501], "y"] = np.nan
    last = f.index[f["unit"] == f["unit"].iloc[-1]]
    f.loc[last[1:], "y"] = np.inf  # one finite month left: a singleton, which feols drops
    holes = est.DidPanel(f, panel.outcome, panel.unit_kind)
    fit = est.event_study(holes, (-6, 6))
    ref, names = _feols_event_study(holes, (-6, 6), "fixest", None)
    tab = fit.table[fit.table["event_time"] != -1]
    np.testing.assert_allclose(tab["estimate"], ref.coef()[names], rtol=1e-8)
    np.testing.assert_allclose(tab["se"], ref.se()[names], rtol=1e-8)
    assert fit.n_obs == ref._N == len(f) - 3 - len(last)
    assert np.isnan(fit.fitted[[3, 500, 501, *last]]).all()
    # one cohort and no never-treated units: the lags are collinear with the month effects
    with pytest.raises(EstimationError, match="collinear"):
        est.event_study(panel.restrict(panel.frame["treated"]), (-6, 6))


# -- inference ---------------------------------------------------------------------------------------
def _design(seed, G=10, T=24, effect=0.0):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(G), T)
    t = np.tile(np.arange(T), G)
    d = ((u < 3) & (t >= 12)).astype(float)
    y = rng.normal(size=G)[u] + rng.normal(size=T)[t] + effect * d + rng.normal(size=G)[u] * (t >= 12) \
        + rng.normal(size=G * T)
    return y, d, np.column_stack([codes(u), codes(t)]), u, t


def test_wild_bootstrap_interval_contains_estimate_and_is_deterministic():
    y, d, fe, u, _ = _design(1, effect=1.0)
    a = wild_cluster_bootstrap(y, d, fe, u, draws=399)
    b = wild_cluster_bootstrap(y, d, fe, u, draws=399)
    assert a == b
    assert a.ci_low < a.estimate < a.ci_high and a.weights == "webb" and a.exact
    # at the interval ends the bootstrap p-value is about alpha
    with pytest.raises(ValueError, match="at least 3 clusters"):
        wild_cluster_bootstrap(y[:48], d[:48], fe[:48], u[:48])


def test_wild_bootstrap_size_and_power_with_few_clusters():
    """10 clusters (3 treated) with cluster-level post shocks: the WCR bootstrap keeps its size
    near 5% under the null and still detects a large effect."""
    n = 60
    null = [wild_cluster_bootstrap(*_design(100 + s)[:3], _design(100 + s)[3], draws=199, seed=s).p_value
            for s in range(n)]
    assert np.mean(np.array(null) < 0.05) <= 0.12
    alt = [wild_cluster_bootstrap(*_design(500 + s, effect=4.0)[:3], _design(500 + s)[3], draws=199,
                                  seed=s).p_value for s in range(20)]
    assert np.mean(np.array(alt) < 0.05) >= 0.6


def test_randomisation_test_is_exact_when_few_assignments():
    y, d, fe, u, t = _design(5, G=8, effect=3.0)
    r = randomisation_test(y, u, t, {0: 12, 1: 12, 2: 12}, fe, draws=500)
    assert r.exhaustive and r.draws == 56  # C(8, 3)
    assert r.p_value == pytest.approx(1 / 56)


# -- the design front end ---------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["2x2", "twfe", "poisson_fe", "event_study", "staggered"])
def test_evaluate_panel_every_estimator(estimator):
    df, coh = simulate(n_units=16, n_treated=4, seed=11)
    p = make_panel(df, coh)
    r = evaluate_panel(p, DiDOptions(estimator=estimator, randomisation_draws=50, bootstrap_draws=199))
    names = {c.name for c in r.diagnostics}
    assert {"placebo_in_time", "placebo_in_space", "balance"} <= names
    if estimator != "2x2":
        assert "pre_trend" in names
    assert r.series is not None and set(["period", "observed", "fitted", "counterfactual", "cf_low",
                                         "cf_high", "post"]) <= set(r.series.columns)
    e = r.headline
    assert e.scale == ("rate_ratio" if estimator == "poisson_fe" else "difference")
    assert e.ci_low <= e.estimate <= e.ci_high
    assert r.power is not None and r.power.mde is not None and r.prevented is not None
    assert r.prevented.ci_low <= r.prevented.estimate <= r.prevented.ci_high
    assert any("clusters" in w for w in r.warnings)  # 16 units < 30
    import json

    json.dumps(r.to_dict(), allow_nan=False)


def test_staggered_warns_when_twfe_disagrees():
    """Effects growing with exposure + early cohort: TWFE is biased (forbidden comparisons)."""
    rng = np.random.default_rng(7)
    t0 = period_index("2018-01")
    rows, coh = [], {}
    starts = {0: 12, 1: 36}
    for u in range(45):
        c = u % 3
        if c < 2:
            coh[f"u{u}"] = period_from_index(t0 + starts[c])
        a = rng.normal()
        for t in range(60):
            e = t - starts[c] if c < 2 and t >= starts[c] else None
            eff = -0.3 * (e + 1) if e is not None else 0.0
            rows.append({"unit": f"u{u}", "period": period_from_index(t0 + t), "count": 30 + a + eff + rng.normal(0, 0.3)})
    p = make_panel(pd.DataFrame(rows), coh, population=None)
    r = evaluate_panel(p, DiDOptions(estimator="staggered", randomisation_draws=20))
    assert r.check("estimator_agreement").passed is False
    assert any("disagree" in w for w in r.warnings)
    assert "by_cohort" in r.tables and len(r.tables["by_cohort"]) == 2


# -- figures -------------------------------------------------------------------------------------------
def test_figures_draw_from_result_tables():
    from sveval.report.plots import did as did_plots

    df, coh = simulate(n_units=16, n_treated=4, seed=12)
    r = evaluate_panel(make_panel(df, coh), DiDOptions(estimator="staggered", randomisation_draws=20))
    fig, ax = did_plots.trends(r)
    assert len(ax.lines) >= 4
    fig, ax = did_plots.event_study(r)
    assert ax.get_xlabel() == "months since start"
    fig, ax = did_plots.cohorts(r)
    assert len(ax.get_yticklabels()) == len(r.tables["by_cohort"]) + sum(e.scale == "difference" for e in r.effects)
    assert set(did_plots.diagnostics_table(r)["check"]) >= {"pre_trend", "balance", "placebo_in_space"}
    with pytest.raises(ValueError, match="gaps"):
        did_plots.gap(r)


# -- one treated unit: time-permutation (conformal) inference --------------------------------------
def simulate_one_treated(seed, rr=0.7, n_units=8, T=96, start=66, base=3.0, phi=0.5, sigma=0.1):
    """One treated unit among ``n_units``: Poisson counts with unit, month and AR(1) unit-month noise."""
    rng = np.random.default_rng(seed)
    t0 = period_index("2017-04")
    season = 0.2 * np.sin(2 * np.pi * np.arange(T) / 12)
    rows = []
    for u in range(n_units):
        e = np.zeros(T)
        for t in range(1, T):
            e[t] = phi * e[t - 1] + rng.normal(0, sigma)
        mu = base * (1 + u % 3) * np.exp(season + e) * np.where((u == 0) & (np.arange(T) >= start), rr, 1.0)
        for t in range(T):
            rows.append({"unit": f"A{u}", "period": period_from_index(t0 + t), "count": float(rng.poisson(mu[t])),
                         "population": 100_000.0 * (1 + u % 3)})
    return make_panel(pd.DataFrame(rows), {"A0": period_from_index(t0 + start)})


def test_ipf_poisson_means_match_pyfixest():
    import pyfixest as pf

    from sveval.designs.did_inference import poisson_fe_means

    p = simulate_one_treated(1)
    f = p.frame.assign(log_pop=np.log(p.frame["population"]))
    ref = pf.fepois("count ~ 1 | unit + t", data=f, offset="log_pop").predict(type="response")
    fe = np.column_stack([codes(f["unit"]), codes(f["t"])])
    mu = poisson_fe_means(f["count"].to_numpy(), fe, f["log_pop"].to_numpy())
    assert np.allclose(mu, np.asarray(ref), rtol=1e-6)


def test_time_permutation_interval_covers_with_one_treated_unit():
    """Cluster-robust intervals with one treated cluster under-cover badly; the time-permutation
    interval covers the true rate ratio in (about) 95% of simulated panels."""
    rr = 0.7
    cover_tp = cover_cr = 0
    n = 40
    for seed in range(n):
        p = simulate_one_treated(100 + seed, rr=rr)
        fit = est.poisson_fe(p)
        cover_cr += fit.ci_low <= np.log(rr) <= fit.ci_high
        tp = est.with_time_permutation(p, fit)
        assert tp.ci_low <= tp.coef <= tp.ci_high and tp.coef == fit.coef
        cover_tp += tp.ci_low <= np.log(rr) <= tp.ci_high
    assert cover_tp / n >= 0.85
    assert cover_cr / n < cover_tp / n


def test_evaluate_panel_one_treated_area_uses_time_permutation():
    p = simulate_one_treated(7)
    r = evaluate_panel(p, DiDOptions(estimator="poisson_fe", randomisation_draws=50))
    assert r.details["inference"] == "time_permutation"
    assert "moving-block permutations" in r.headline.description
    assert "heteroskedasticity-robust" in r.check("pre_trend").description
    assert r.check("pre_trend").passed is not None and r.check("placebo_in_time").p_value is not None
    assert any("time-permutation" in w for w in r.warnings)
