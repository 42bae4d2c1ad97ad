"""Synthetic control: Proposition 99 (Abadie, Diamond & Hainmueller 2010) and simulated donors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs.synth import (
    Predictor,
    evaluate_wide,
    infer_frequency,
    period_label,
    placebo_in_space,
    predictor_table,
    predictor_weights,
    synth_fit,
    synth_fit_predictors,
    synth_weights,
)
from sveval.errors import EstimationError
from sveval.spec import SynthOptions

# a copy of shared/reference-data/california_prop99.csv (see tests/reference/data/README.md)
PROP99 = Path(__file__).parent / "reference" / "data" / "california_prop99.csv"
REF = Path(__file__).parent / "reference" / "synth"
SMOKING_ADH = Path("/work/shared/reference-data/smoking_adh.csv")
# Abadie, Diamond & Hainmueller (2010), Table 2: the states weighted in synthetic California
ADH_WEIGHTS = {"Utah": 0.334, "Nevada": 0.234, "Montana": 0.199, "Colorado": 0.164, "Connecticut": 0.069}


def test_weights_lie_on_the_simplex_and_reproduce_a_convex_combination():
    rng = np.random.default_rng(0)
    Y0 = rng.normal(size=(40, 6)).cumsum(axis=0) + 50
    w_true = np.array([0.5, 0.3, 0.2, 0, 0, 0])
    w = synth_weights(Y0 @ w_true, Y0)
    assert w.min() >= 0 and w.sum() == pytest.approx(1)
    assert np.allclose(w, w_true, atol=1e-4)


@pytest.fixture(scope="module")
def prop99():
    if not PROP99.exists():
        pytest.skip("reference data not available")
    df = pd.read_csv(PROP99)
    return df.pivot(index="State", columns="Year", values="PacksPerCapita")


def test_prop99_gap_and_donors(prop99):
    fit = synth_fit(prop99, "California", 1989)
    # ADH (2010): Utah, Nevada, Montana, Colorado, Connecticut carry the weight; pre-fit RMSPE ~1.8;
    # California smokes ~25 packs per capita less than its synthetic control by 2000.
    top = set(fit.weights.sort_values(ascending=False).index[:4])
    assert {"Utah", "Nevada", "Montana"} <= top
    assert fit.pre_rmspe < 2.5
    assert -32 < fit.gap.loc[2000] < -20
    assert -25 < fit.avg_post_gap < -12


def test_prop99_placebo_rank(prop99):
    donors = [s for s in prop99.index if s != "California"]
    pr = placebo_in_space(prop99, "California", 1989, donors)
    assert len(pr.table) == 39
    assert pr.p_value <= 0.1  # among the 4 most extreme RMSPE ratios of 39


def test_evaluate_wide_recovers_injected_effect():
    rng = np.random.default_rng(5)
    T, start = 60, 40
    f = rng.normal(size=(3, T)).cumsum(axis=1)
    donors = {f"D{j}": 100 + (rng.dirichlet(np.ones(3)) * 3) @ f + rng.normal(0, 0.5, T) for j in range(15)}
    treated = 0.6 * donors["D0"] + 0.4 * donors["D1"] + rng.normal(0, 0.5, T)
    treated[start:] -= 10
    wide = pd.DataFrame({**donors, "T": treated}).T
    wide.columns = range(24000, 24000 + T)
    r = evaluate_wide(wide, "T", 24000 + start, list(donors), SynthOptions(), unit_desc="count per month")
    e = r.headline
    assert e.ci_low < -10 < e.ci_high and e.estimate < -5
    assert r.check("pre_fit").passed
    assert r.check("placebo_in_space").p_value == pytest.approx(1 / 16)
    assert r.prevented is not None and r.prevented.estimate > 0
    assert any("donors" in w for w in r.warnings)
    assert set(r.tables) == {"weights", "placebos", "gaps"}


def test_too_few_donors_is_an_error():
    wide = pd.DataFrame(np.ones((2, 20)), index=["T", "D"], columns=range(20))
    with pytest.raises(EstimationError, match="at least 2 donor"):
        synth_fit(wide, "T", 10)


# ------------------------------------------------------------------------------------------------
# frequency-aware defaults
def test_frequency_is_inferred_from_the_period_index():
    assert infer_frequency(range(1970, 2001)) == "year"
    assert infer_frequency(range(4 * 2015, 4 * 2024)) == "quarter"
    assert infer_frequency(range(24000, 24060)) == "month"
    assert infer_frequency(range(20)) is None
    assert period_label(24000 + 3, "month") == "2000-04"
    assert period_label(4 * 2020 + 2, "quarter") == "2020-Q3"
    assert period_label(1989, "year") == "1989"


def test_yearly_prop99_is_not_smoothed_by_default(prop99):
    donors = [s for s in prop99.index if s != "California"]
    r = evaluate_wide(prop99, "California", 1989, donors, SynthOptions())
    # the ADH average post-period gap without covariates: -19.5 (12-year smoothing gave -8.2)
    assert r.details["frequency"] == "year" and r.details["smooth_periods"] == 1
    assert round(r.headline.estimate, 1) == -19.5
    assert r.series["period"].iloc[0] == "1970"
    # an explicit window still wins
    r12 = evaluate_wide(prop99, "California", 1989, donors, SynthOptions(), smooth=12, demean=True)
    assert r12.details["smooth_periods"] == 12 and round(r12.headline.estimate, 1) == -8.2


def _monthly_panel(T=60, start=40, seed=5):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(3, T)).cumsum(axis=1)
    donors = {f"D{j}": 100 + (rng.dirichlet(np.ones(3)) * 3) @ f + rng.normal(0, 0.5, T) for j in range(12)}
    treated = 0.6 * donors["D0"] + 0.4 * donors["D1"] + rng.normal(0, 0.5, T)
    treated[start:] -= 10
    return pd.DataFrame({**donors, "T": treated}).T, list(donors)


def test_monthly_default_equals_the_explicit_12_month_window():
    wide, donors = _monthly_panel()
    wide.columns = range(24000, 24060)
    explicit = evaluate_wide(wide, "T", 24040, donors, SynthOptions(), smooth=12, demean=True)
    for r in (evaluate_wide(wide, "T", 24040, donors, SynthOptions(), demean=True),
              evaluate_wide(wide, "T", 24040, donors, SynthOptions(), frequency="month", demean=True),
              evaluate_wide(wide, "T", 24040, donors, SynthOptions(frequency="month"), demean=True)):
        assert r.to_dict() == explicit.to_dict()
    assert explicit.series["period"].iloc[0] == "2000-01"


def test_quarterly_series_smooth_over_four_quarters():
    wide, donors = _monthly_panel(T=40, start=28)
    wide.columns = range(4 * 2010, 4 * 2010 + 40)
    r = evaluate_wide(wide, "T", 4 * 2017, donors, SynthOptions())
    assert r.details["frequency"] == "quarter" and r.details["smooth_periods"] == 4
    assert r.series["period"].iloc[0] == "2010-Q1" and "4-quarter" in r.method
    # explicit frequency beats the option, the option beats inference
    r1 = evaluate_wide(wide, "T", 4 * 2017, donors, SynthOptions(frequency="year"))
    assert r1.details["smooth_periods"] == 1
    r2 = evaluate_wide(wide, "T", 4 * 2017, donors, SynthOptions(frequency="year"), frequency="quarter")
    assert r2.details["smooth_periods"] == 4


# ------------------------------------------------------------------------------------------------
# covariates (Abadie, Diamond & Hainmueller 2010)
@pytest.fixture(scope="module")
def adh_x():
    return pd.read_csv(REF / "adh_predictors.csv", index_col="state")


@pytest.fixture(scope="module")
def adh_r():
    return pd.read_csv(REF / "adh_synth_r.csv")


def test_predictor_means_match_synth_dataprep(adh_x, adh_r):
    # California's predictors from R Synth's dataprep (adh_synth.R)
    x1 = adh_r[adh_r.kind == "x1"].value.to_numpy()
    np.testing.assert_allclose(adh_x.loc["California"].to_numpy(), x1, rtol=1e-8)
    if SMOKING_ADH.exists():  # the committed table is what make_adh_predictors.py computes
        d = pd.read_csv(SMOKING_ADH)
        panels = {v: d.pivot(index="state", columns="year", values=v)
                  for v in ["cigsale", "lnincome", "beer", "age15to24", "retprice"]}
        preds = [Predictor("lnincome", 1980, 1988), Predictor("retprice", 1980, 1988),
                 Predictor("age15to24", 1980, 1988), Predictor("beer", 1984, 1988), ("cigsale", 1975),
                 ("cigsale", 1980), ("cigsale", 1988)]
        X = predictor_table(panels, preds)
        assert list(X.columns) == list(adh_x.columns)
        np.testing.assert_allclose(X.loc[adh_x.index].to_numpy(), adh_x.to_numpy(), rtol=1e-8)


def _scaled(adh_x):
    units = ["California"] + [u for u in adh_x.index if u != "California"]
    Xs = adh_x.loc[units] / adh_x.loc[units].std(ddof=1)
    return Xs.iloc[0].to_numpy(), Xs.iloc[1:].to_numpy().T, units[1:]


def test_inner_problem_matches_synth_given_its_v(adh_x, adh_r):
    X1, X0, donors = _scaled(adh_x)
    v = adh_r[adh_r.kind == "v"].value.to_numpy()
    w = predictor_weights(X1, X0, v)
    w_r = adh_r[adh_r.kind == "w"].set_index("name").value.reindex(donors).to_numpy()
    assert np.abs(w - w_r).max() < 2e-3  # Synth's interior-point solver stops at margin 5e-4


def test_adh_weights_with_nested_v(prop99, adh_x, adh_r):
    fit = synth_fit_predictors(prop99, "California", 1989, None, adh_x, v_method="nested")
    w = fit.weights
    assert set(w[w > 0.01].index) == set(ADH_WEIGHTS)
    for state, published in ADH_WEIGHTS.items():
        assert w[state] == pytest.approx(published, abs=0.02), state
    # at least as good a pre-period fit as R Synth's optimiser reaches (MSPE 3.209)
    loss_r = adh_r.set_index("name").loc["loss_v", "value"]
    assert fit.pre_rmspe**2 <= loss_r + 1e-6
    assert fit.v_weights.sum() == pytest.approx(1)
    assert fit.v_weights[["cigsale 1975", "cigsale 1980"]].sum() > 0.5  # lagged outcomes dominate
    assert -22 < fit.avg_post_gap < -16


def test_evaluate_wide_with_predictors_uses_adh_inference(prop99, adh_x):
    donors = [s for s in prop99.index if s != "California"]
    r = evaluate_wide(prop99, "California", 1989, donors, SynthOptions(), predictors=adh_x,
                      v_method="regression")
    # ADH (2010): California's post/pre RMSPE ratio is the largest of the 39 states
    assert r.headline.p_value == pytest.approx(1 / 39)
    assert r.headline.ci_low < r.headline.estimate < r.headline.ci_high < 0
    assert r.details["v_method"] == "regression" and len(r.details["v_weights"]) == 7
    assert "predictors" in r.method and "conformal" not in r.headline.description


def test_missing_predictor_is_an_error(prop99, adh_x):
    X = adh_x.copy()
    X.loc["Utah", "beer 1984-1988"] = np.nan
    with pytest.raises(EstimationError, match="missing"):
        synth_fit_predictors(prop99, "California", 1989, None, X)
