"""Synthetic control: Proposition 99 (Abadie, Diamond & Hainmueller 2010) and simulated donors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs.synth import evaluate_wide, placebo_in_space, synth_fit, synth_weights
from sveval.errors import EstimationError
from sveval.spec import SynthOptions

# a copy of shared/reference-data/california_prop99.csv (see tests/reference/data/README.md)
PROP99 = Path(__file__).parent / "reference" / "data" / "california_prop99.csv"


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
