"""Every event-study and staggered DiD report carries Rambachan-Roth parallel-trends sensitivity
and the power of its pre-trend test (issue 13, items 3 and 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sveval.designs.did import evaluate_panel, sensitivity_checks
from sveval.designs.did_panel import make_panel
from sveval.designs.honest import honest_bounds
from sveval.designs.pretrends import slope_for_power
from sveval.designs.staggered import callaway_santanna
from sveval.periods import period_from_index, period_index
from sveval.result import CheckName
from sveval.spec import DiDOptions


def _panel(trend: float = 0.0, seed: int = 5, effect: float = -1.0):
    """40 units x 36 months, 12 treated from month 20 (and 8 from month 26): continuous outcome
    with an optional linear pre-existing divergence ``trend`` per month in the treated units."""
    rng = np.random.default_rng(seed)
    t0 = period_index("2020-01")
    rows = []
    starts = {u: (20 if u < 12 else 26 if u < 20 else None) for u in range(40)}
    for u in range(40):
        a = rng.normal(0, 1)
        for t in range(36):
            s = starts[u]
            y = a + 0.05 * t + rng.normal(0, 0.3)
            if s is not None:
                y += trend * (t - s) + (effect if t >= s else 0.0)
            rows.append({"unit": f"U{u:02d}", "period": period_from_index(t0 + t), "count": y})
    coh = {f"U{u:02d}": period_from_index(t0 + s) for u, s in starts.items() if s is not None}
    return make_panel(pd.DataFrame(rows), coh, population=None, outcome="continuous", unit_kind="unit")


@pytest.mark.parametrize("estimator", ["event_study", "twfe", "staggered"])
def test_reports_carry_sensitivity_and_pretrend_power(estimator):
    res = evaluate_panel(_panel(), DiDOptions(estimator=estimator, event_window=(-8, 8), randomisation_draws=0))
    sens = res.check(CheckName.PARALLEL_TRENDS_SENSITIVITY)
    power = res.check(CheckName.PRE_TREND_POWER)
    assert "Relative magnitudes" in sens.detail and "Smoothness" in sens.detail
    rm = sens.data["relative_magnitudes"]
    assert rm["method"] == "C-LF" and sens.data["smoothness"]["method"] == "FLCI"
    # a clear effect of -1 with exactly parallel trends: the conclusion survives some violation
    assert rm["original"]["ub"] < 0 and sens.statistic is not None and sens.statistic > 0
    s50, s80 = power.data["slope_50"], power.data["slope_80"]
    assert 0 < s50 < s80 and power.statistic == s80
    assert "80% probability" in power.detail and "bias" in power.detail


def test_sensitivity_agrees_with_the_modules_it_wraps():
    rng = np.random.default_rng(1)
    k = np.array([-6, -5, -4, -3, -2, 0, 1, 2, 3, 4, 5], float)
    A = rng.normal(size=(11, 11))
    V = 0.004 * (A @ A.T / 11 + np.eye(11))
    beta = np.where(k < 0, rng.normal(0, 0.03, 11), -0.4)
    sens, power = sensitivity_checks(beta, V, k, "units", source="test")
    l_vec = np.full(6, 1 / 6)
    direct = honest_bounds(beta, V, 5, 6, method="sd", l_vec=l_vec)
    assert sens.data["smoothness"]["breakdown"] == direct.breakdown
    assert power.data["slope_80"] == pytest.approx(slope_for_power(V, k, target_power=0.8, test="wald"))
    # the bias of a linear divergence s per period on the average of lags 0..5 is s x mean(k + 1)
    assert power.data["bias_at_slope_80"] == pytest.approx(power.data["slope_80"] * np.mean(k[5:] + 1))


def test_too_few_leads_says_so():
    sens, power = sensitivity_checks(np.array([0.1, -0.5]), np.eye(2) * 0.01, np.array([-2.0, 0.0]), "u", "x")
    assert sens.detail.startswith("not computed") and power.detail.startswith("not computed")


def test_universal_base_period_measures_leads_from_the_period_before_the_start():
    p = _panel(trend=0.1, effect=0.0, seed=2)
    f = p.frame.assign(g=np.where(p.frame["cohort"] >= 0, p.frame["cohort"], 0))
    uni = callaway_santanna(f, "y", "unit", "t", "g", base_period="universal")
    var = callaway_santanna(f, "y", "unit", "t", "g", base_period="varying")
    g = sorted(uni.gt["group"].unique())[0]
    cell = lambda cs, dt: cs.gt[(cs.gt["group"] == g) & (cs.gt["time"] == g + dt)]["estimate"].item()  # noqa: E731
    # universal: y(g-3) - y(g-1) gap ~ -2 x trend; varying: y(g-3) - y(g-4) gap ~ +1 x trend
    assert cell(uni, -3) == pytest.approx(-0.2, abs=0.08)
    assert cell(var, -3) == pytest.approx(0.1, abs=0.08)
    assert not ((uni.gt["group"] == g) & (uni.gt["time"] == g - 1)).any()  # the reference cell
    # post cells are the same under both base periods
    post_u = uni.gt[uni.gt["post"]].set_index(["group", "time"])["estimate"]
    post_v = var.gt[var.gt["post"]].set_index(["group", "time"])["estimate"]
    assert np.allclose(post_u.sort_index(), post_v.sort_index())
