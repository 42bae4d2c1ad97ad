"""Effects on the outcome's own scale: every effect states its unit; continuous and log outcomes get
no implied rate ratio and no events prevented (issue 13, item 6)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sveval.designs.did import evaluate_panel
from sveval.designs.did_panel import make_panel
from sveval.designs.its import fit_its
from sveval.errors import EstimationError
from sveval.periods import period_from_index, period_index
from sveval.report.prose import fmt_effect, plain_english
from sveval.result import DEFAULT_UNITS, Effect
from sveval.spec import DiDOptions, ITSOptions


def _panel(kind: str, seed: int = 3):
    """12 units x 48 months; 4 treated from month 30 with a known shift of -0.3 on the outcome."""
    rng = np.random.default_rng(seed)
    t0 = period_index("2019-01")
    rows = []
    for u in range(12):
        a = rng.normal(0, 0.5)
        for t in range(48):
            if kind == "log":
                y = math.exp(3 + a + 0.01 * t + rng.normal(0, 0.05) - (0.3 if u < 4 and t >= 30 else 0))
            else:
                y = a + 0.02 * t + rng.normal(0, 0.1) - (0.3 if u < 4 and t >= 30 else 0)  # may be < 0
            rows.append({"unit": f"U{u:02d}", "period": period_from_index(t0 + t), "count": y})
    coh = {f"U{u:02d}": period_from_index(t0 + 30) for u in range(4)}
    return make_panel(pd.DataFrame(rows), coh, population=None, outcome=kind, unit_kind="county")


@pytest.mark.parametrize("estimator", ["twfe", "2x2", "event_study", "staggered"])
@pytest.mark.parametrize("kind, unit_word", [("continuous", "outcome units"), ("log", "log points")])
def test_did_continuous_and_log_outcomes_state_their_unit(estimator, kind, unit_word):
    res = evaluate_panel(_panel(kind), DiDOptions(estimator=estimator, randomisation_draws=0))
    assert res.prevented is None
    assert all(e.scale != "rate_ratio" for e in res.effects), [e.name for e in res.effects]
    h = res.headline
    assert h.scale == "difference" and unit_word in h.unit
    assert h.ci_low < -0.3 < h.ci_high or abs(h.estimate + 0.3) < 0.1
    assert unit_word in fmt_effect(h)
    assert unit_word in plain_english(res, "the outcome")


def test_poisson_fe_refuses_a_continuous_outcome():
    with pytest.raises(EstimationError, match="poisson_fe"):
        evaluate_panel(_panel("continuous"), DiDOptions(estimator="poisson_fe", randomisation_draws=0))


def test_count_outcomes_keep_rate_ratios_and_prevented_events():
    rng = np.random.default_rng(1)
    t0 = period_index("2019-01")
    rows = [{"unit": f"U{u:02d}", "period": period_from_index(t0 + t),
             "count": float(rng.poisson(20 * (0.7 if u < 4 and t >= 30 else 1.0)))}
            for u in range(12) for t in range(48)]
    coh = {f"U{u:02d}": period_from_index(t0 + 30) for u in range(4)}
    p = make_panel(pd.DataFrame(rows), coh, population=None, outcome="count", unit_kind="area")
    res = evaluate_panel(p, DiDOptions(estimator="poisson_fe", randomisation_draws=0))
    assert res.headline.scale == "rate_ratio" and "% change" in res.headline.unit
    assert res.prevented is not None and res.prevented.estimate > 0
    twfe = res.effect("TWFE (static) effect")
    assert twfe.unit == "count per area per month"


def test_its_units():
    periods = [period_from_index(period_index("2016-01") + i) for i in range(72)]
    rng = np.random.default_rng(0)
    level = np.r_[np.zeros(48), np.full(24, -2.0)]
    cont = pd.DataFrame({"period": periods, "count": 10 + 0.01 * np.arange(72) + level + rng.normal(0, 0.5, 72)})
    opts = ITSOptions(covid="none", power_sims=0, placebo=False, sensitivity_months=0, seasonality="none")
    res = fit_its(cont, "2020-01", opts, kind="continuous")
    assert res.prevented is None
    assert {e.unit for e in res.effects} >= {"measure units per month", "measure units per month, change per year"}
    assert "measure units per month" in fmt_effect(res.headline)
    counts = cont.assign(count=rng.poisson(30 * np.exp(level / 10)).astype(float), population=100_000.0)
    res = fit_its(counts, "2020-01", opts, kind="count")
    assert res.headline.scale == "rate_ratio" and res.prevented is not None


def test_every_effect_has_a_unit_by_default():
    for scale in DEFAULT_UNITS:
        assert Effect("x", scale, 1.0, 0.5, 1.5).unit == DEFAULT_UNITS[scale]


@pytest.mark.parametrize("opts", [dict(placebo=False), dict(power_sims=0), dict(sensitivity_months=0),
                                  dict(placebo=False, power_sims=0, sensitivity_months=0)])
def test_documented_options_that_turn_checks_off_still_give_every_figure(opts):
    """`its: {placebo: false}` used to make every run fail (KeyError in the notebook's figures)."""
    import matplotlib

    matplotlib.use("Agg")
    from sveval.report import narrative, plots

    periods = [period_from_index(period_index("2016-01") + i) for i in range(72)]
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"period": periods, "count": rng.poisson(30, 72).astype(float), "population": 1e5})
    res = fit_its(df, "2020-01", ITSOptions(**opts))
    for fn in (plots.its.acf_plot, plots.its.placebo_plot, plots.its.sensitivity_plot, plots.its.power_curve):
        fig, ax = fn(res)
        assert fig is not None
    assert not narrative.diagnostics_table(res).empty
    assert narrative.power_paragraph(res)
