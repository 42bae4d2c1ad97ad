"""Callaway-Sant'Anna against the published mpdta results of R's did package (README of did 2.x,
``att_gt(..., est_method = "reg")`` with never-treated controls). Point estimates must agree to the
4 printed decimals; the pre-test p-value (analytic) exactly; standard errors within 10% (the
published ones are multiplier-bootstrap draws, ours analytic)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs.did_panel import make_panel
from sveval.designs.staggered import callaway_santanna, staggered_from_panel
from sveval.errors import EstimationError

# a copy of shared/reference-data/mpdta.csv (see tests/reference/data/README.md)
MPDTA = Path(__file__).parent / "reference" / "data" / "mpdta.csv"

# group, time, ATT(g,t), bootstrap SE as published
PUBLISHED_GT = [
    (2004, 2004, -0.0105, 0.0241), (2004, 2005, -0.0704, 0.0313), (2004, 2006, -0.1373, 0.0380),
    (2004, 2007, -0.1008, 0.0337), (2006, 2004, 0.0065, 0.0223), (2006, 2005, -0.0028, 0.0196),
    (2006, 2006, -0.0046, 0.0188), (2006, 2007, -0.0412, 0.0202), (2007, 2004, 0.0305, 0.0154),
    (2007, 2005, -0.0027, 0.0168), (2007, 2006, -0.0311, 0.0190), (2007, 2007, -0.0261, 0.0182),
]
PUBLISHED_DYNAMIC = {-3: 0.0305, -2: -0.0006, -1: -0.0245, 0: -0.0199, 1: -0.0510, 2: -0.1373, 3: -0.1008}
PUBLISHED_GROUP = {2004: -0.0797, 2006: -0.0229, 2007: -0.0261}


@pytest.fixture(scope="module")
def cs():
    if not MPDTA.exists():
        pytest.skip("mpdta reference data not available")
    df = pd.read_csv(MPDTA)
    return callaway_santanna(df, "lemp", "countyreal", "year", "first.treat")


def test_group_time_atts_match_published(cs):
    gt = cs.gt.set_index(["group", "time"])
    assert len(gt) == 12
    for g, t, att, se in PUBLISHED_GT:
        assert round(gt.loc[(g, t), "estimate"], 4) == pytest.approx(att, abs=1e-4), (g, t)
        assert gt.loc[(g, t), "se"] == pytest.approx(se, rel=0.10), (g, t)


def test_pretest_p_value_matches_published(cs):
    assert cs.pretrend_p == pytest.approx(0.16812, abs=1e-5)
    assert cs.pretrend_df == 5


def test_group_aggregation_matches_published(cs):
    agg = cs.aggregate("group")
    assert round(agg.overall.estimate, 3) == pytest.approx(-0.031, abs=1e-3)
    assert agg.overall.se == pytest.approx(0.0123, rel=0.05)
    got = dict(zip(agg.table["key"], agg.table["estimate"], strict=True))
    for g, v in PUBLISHED_GROUP.items():
        assert round(got[g], 4) == pytest.approx(v, abs=1e-4)


def test_dynamic_aggregation_matches_published(cs):
    agg = cs.aggregate("dynamic", uniform_draws=499)
    assert round(agg.overall.estimate, 4) == pytest.approx(-0.0772, abs=1e-4)
    assert agg.overall.se == pytest.approx(0.0196, rel=0.05)
    got = dict(zip(agg.table["key"], agg.table["estimate"], strict=True))
    for e, v in PUBLISHED_DYNAMIC.items():
        assert round(got[e], 4) == pytest.approx(v, abs=1e-4)
    # simultaneous band is wider than pointwise, and near the published critical value (~2.5-2.7)
    assert 2.2 < agg.crit_uniform < 3.2
    assert (agg.table["band_high"] - agg.table["band_low"] > agg.table["ci_high"] - agg.table["ci_low"]).all()


def test_not_yet_treated_uses_later_cohorts_as_controls(cs):
    df = pd.read_csv(MPDTA)
    ny = callaway_santanna(df, "lemp", "countyreal", "year", "first.treat", control_group="not_yet_treated")
    row = ny.gt.set_index(["group", "time"]).loc[(2004, 2004)]
    # 2004 cohort in 2004: never-treated (309) + 2006 (40) + 2007 (131) cohorts are not yet treated
    assert row["n_control"] == 309 + 40 + 131
    assert row["estimate"] != pytest.approx(cs.gt.set_index(["group", "time"]).loc[(2004, 2004), "estimate"])


def _sim(seed=1, effect=(-2.0, -1.0, -0.5), n=60, T=48):
    rng = np.random.default_rng(seed)
    starts = {0: 20, 1: 30, 2: 38}
    rows, cohorts = [], {}
    for u in range(n):
        c = u % 4
        a = rng.normal()
        if c < 3:
            cohorts[f"u{u}"] = starts[c]
        for t in range(T):
            d = c < 3 and t >= starts[c]
            rows.append({"unit": f"u{u}", "period": f"{2015 + t // 12}-{t % 12 + 1:02d}",
                         "count": 10 + a + 0.1 * t + (effect[c] if d else 0) + rng.normal(0, 0.5)})
    from sveval.spec import period_from_index, period_index
    base = period_index("2015-01")
    return make_panel(pd.DataFrame(rows), {k: period_from_index(base + v) for k, v in cohorts.items()},
                      population=None, outcome="count"), effect


def test_recovers_cohort_effects_on_simulated_panel():
    panel, effect = _sim()
    cs = staggered_from_panel(panel)
    agg = cs.aggregate("group")
    got = agg.table["estimate"].to_numpy()
    assert np.allclose(got, effect, atol=0.25)
    # the intervals cover the truth
    assert ((agg.table["ci_low"] <= np.array(effect)) & (np.array(effect) <= agg.table["ci_high"])).all()


def test_errors_are_clear():
    df = pd.DataFrame({"u": [1, 1, 2], "t": [1, 2, 1], "y": [1.0, 2.0, 3.0], "g": [2, 2, 0]})
    with pytest.raises(EstimationError, match="balanced"):
        callaway_santanna(df, "y", "u", "t", "g")
    df = pd.DataFrame({"u": [1, 1, 2, 2], "t": [1, 2, 1, 2], "y": [1.0, 2.0, 3.0, 3.0], "g": [2, 2, 2, 2]})
    with pytest.raises(EstimationError, match="never-treated"):
        callaway_santanna(df, "y", "u", "t", "g")


# -- did2s (Gardner's two-stage DiD) ---------------------------------------------------------------
def _imputation_att(df: pd.DataFrame) -> float:
    """Average of y minus the unit + year effects fitted on untreated rows (iterative LSQR on the
    dummy matrix: an algorithm independent of the normal equations solved by the estimator)."""
    from scipy import sparse
    from scipy.sparse.linalg import lsqr

    u, t = (pd.factorize(df[c])[0] for c in ("countyreal", "year"))
    n = len(df)
    X = sparse.hstack([sparse.csr_matrix((np.ones(n), (np.arange(n), u))),
                       sparse.csr_matrix((np.ones(n), (np.arange(n), t)))[:, 1:]]).tocsr()
    m = df["D"].to_numpy() == 0
    g = lsqr(X[m], df["lemp"].to_numpy()[m], atol=1e-15, btol=1e-15, iter_lim=100_000)[0]
    return float((df["lemp"].to_numpy() - X @ g)[~m].mean())


@pytest.fixture(scope="module")
def mpdta():
    if not MPDTA.exists():
        pytest.skip("mpdta reference data not available")
    df = pd.read_csv(MPDTA)
    df["D"] = ((df["first.treat"] > 0) & (df["year"] >= df["first.treat"])).astype(int)
    return df


def _mpdta_panel(df):
    from sveval.spec import period_from_index, period_index

    base = period_index("2003-01")
    coh = {str(u): period_from_index(base + g - 2003)
           for u, g in df.groupby("countyreal")["first.treat"].first().items() if g > 0}
    f = df.assign(unit=df["countyreal"].astype(str), count=df["lemp"] + 10,
                  period=(df["year"] - 2003 + base).map(period_from_index))
    return make_panel(f, coh, population=None, outcome="count", unit_kind="county")


def test_did2s_on_mpdta(mpdta):
    """The 2004 cohort has one untreated year (a singleton in the first stage): pyfixest's did2s
    drops it and then fails on 2400 vs 2500 rows; ours keeps it, as R's did2s (fixest) does."""
    from sveval.designs import did_estimators as est

    fit = est.did2s(_mpdta_panel(mpdta))
    assert fit.n_obs == 2500 and fit.extra["dropped_units"] == 0
    assert fit.coef == pytest.approx(_imputation_att(mpdta), abs=1e-10)
    assert fit.ci_low < fit.coef < fit.ci_high < 0


def test_did2s_matches_pyfixest_on_unbalanced_panel(mpdta):
    """Unbalanced (5% of county-years missing at random) and without the 2004 cohort, where
    pyfixest's did2s runs: same estimate (to its demeaning tolerance) and GMM standard error."""
    import pyfixest as pf

    from sveval.designs.did_estimators import gardner_did2s

    rng = np.random.default_rng(1)
    sub = mpdta[mpdta["first.treat"] != 2004]
    sub = sub[rng.random(len(sub)) > 0.05].reset_index(drop=True)
    assert sub.groupby("countyreal").size().min() < 5  # missing unit-years
    r = gardner_did2s(sub["lemp"].to_numpy(), sub["countyreal"].to_numpy(), sub["year"].to_numpy(),
                      sub["D"].to_numpy())
    ref = pf.did2s(sub.copy(), yname="lemp", first_stage="~ 0 | countyreal + year", second_stage="~ D",
                   treatment="D", cluster="countyreal").tidy().loc["D"]
    assert r.coef[0] == pytest.approx(_imputation_att(sub), abs=1e-10)
    assert r.coef[0] == pytest.approx(ref["Estimate"], abs=1e-4)
    assert np.sqrt(r.vcov[0, 0]) == pytest.approx(ref["Std. Error"], rel=1e-3)


def test_did2s_leaves_out_units_never_observed_untreated(mpdta):
    from sveval.designs.did_estimators import gardner_did2s

    # drop the untreated 2003 rows of five 2004-cohort counties: they cannot be imputed
    five = mpdta.loc[mpdta["first.treat"] == 2004, "countyreal"].unique()[:5]
    sub = mpdta[~(mpdta["countyreal"].isin(five) & (mpdta["year"] == 2003))].reset_index(drop=True)
    r = gardner_did2s(sub["lemp"].to_numpy(), sub["countyreal"].to_numpy(), sub["year"].to_numpy(),
                      sub["D"].to_numpy())
    assert r.dropped_units == 5 and int((~r.used).sum()) == 20
    kept = sub[r.used]
    assert r.coef[0] == pytest.approx(_imputation_att(kept), abs=1e-10)


def test_staggered_evaluation_includes_did2s_on_mpdta(mpdta):
    from sveval.designs.did import evaluate_panel
    from sveval.spec import DiDOptions

    r = evaluate_panel(_mpdta_panel(mpdta), DiDOptions(estimator="staggered", randomisation_draws=0,
                                                       event_window=(-3, 3)))
    assert not any("did2s" in w for w in r.warnings)
    d2 = [e for e in r.effects if e.name.startswith("did2s")]
    assert len(d2) == 1 and d2[0].estimate == pytest.approx(_imputation_att(mpdta), abs=1e-8)
