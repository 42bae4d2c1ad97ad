"""SPC rules and exact rate-ratio intervals against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from sveval.designs.spc import latest_variation, rate_ratio_ci, xmr


def test_xmr_limits_hand_worked():
    # mean 12, moving ranges 2,1,2,1,... -> mR-bar 1.5; limits 12 +/- 2.66*1.5 = 8.01, 15.99
    x = [11, 13, 12, 14, 13, 11, 12, 10, 11, 13]
    ch = xmr(x)
    assert ch["mean"].iloc[0] == pytest.approx(12.0)
    assert ch["mr_bar"].iloc[0] == pytest.approx(np.mean(np.abs(np.diff(x))))
    mrb = np.mean(np.abs(np.diff(x)))
    assert ch["ucl"].iloc[0] == pytest.approx(12 + 2.66 * mrb)
    assert ch["lcl"].iloc[0] == pytest.approx(12 - 2.66 * mrb)
    assert ch["upper_2s"].iloc[0] == pytest.approx(12 + 2 * mrb / 1.128)
    assert not ch["special_cause"].any()
    assert latest_variation(ch).startswith("Recent months show only common-cause")


def test_single_point_outside_limits():
    x = [10, 11, 10, 12, 11, 10, 11, 30, 11, 10]
    ch = xmr(x, better_if="lower")
    assert ch["outside"].tolist() == [False] * 7 + [True] + [False] * 2
    assert ch.loc[7, "variation"] == "concern"
    assert xmr(x, better_if="higher").loc[7, "variation"] == "improvement"


def test_run_of_seven_on_one_side():
    first = [9, 11, 9, 11, 9, 11, 9]  # alternating about the mean: no run
    x = first + [11, 12, 11, 12, 11, 12, 11]
    ch = xmr(x)
    m = ch["mean"].iloc[0]
    assert m == pytest.approx(149 / 14)
    assert (np.asarray(x[-7:]) > m).all()
    assert ch["shift"].tolist() == [False] * 7 + [True] * 7
    assert (ch["variation"].iloc[-7:] == "concern").all()
    # six on one side is not a shift
    ch6 = xmr(first + [9, 11, 12, 11, 12, 11, 12])
    assert ch6["mean"].iloc[0] == pytest.approx(10.5)
    assert not ch6["shift"].any()


def test_point_on_the_mean_breaks_a_run():
    ch = xmr([11, 11, 11, 10, 11, 11, 11, 9, 9, 9, 9, 9, 9, 10], run_length=7)
    assert ch["mean"].iloc[0] == pytest.approx(10.0)
    # 11,11,11 then a point on the mean then 11,11,11: no run of seven above
    assert not ch["shift"].any()
    # the same without the point on the mean is a run of seven
    ch2 = xmr([11, 11, 11, 11, 11, 11, 11, 9, 9, 9, 9, 9, 9, 8], run_length=7)
    assert ch2["shift"].iloc[:7].all()


def test_trend_of_seven():
    x = [7, 7, 7, 7, 7, 7, 6, 7, 8, 9, 10, 11, 12, 5, 5, 5]  # 6..12 is seven rising points
    ch = xmr(x, trend_length=7)
    assert ch["trend"].tolist() == [False] * 6 + [True] * 7 + [False] * 3
    # six rising points only: no trend (the seventh point falls back)
    assert not xmr([10, 10, 10, 1, 2, 3, 4, 5, 6, 3, 3], trend_length=7)["trend"].any()
    # falling trends count too
    assert xmr([9, 9, 9, 8, 7, 6, 5, 4, 3, 2, 9, 9], trend_length=7)["trend"].iloc[3:10].all()
    # a repeated value breaks the trend
    assert not xmr([1, 2, 3, 3, 4, 5, 6, 7, 5, 5], trend_length=7)["trend"].any()
    assert ch.loc[9, "side"] == "high" and ch.loc[9, "variation"] == "concern"


def test_two_of_three_beyond_two_sigma():
    # frozen limits from 12 points alternating 10/11: mean 10.5, mR-bar 1,
    # two sigma at 10.5 + 2/1.128 = 12.273, upper limit 10.5 + 2.66 = 13.16
    base = [10, 11] * 6
    x = base + [10.5, 12.8, 10.5, 12.8]
    ch = xmr(x, baseline_points=12)
    assert ch["upper_2s"].iloc[0] == pytest.approx(10.5 + 2 / 1.128)
    assert ch["ucl"].iloc[0] == pytest.approx(13.16)
    assert ch["two_of_three"].tolist()[-4:] == [False, True, False, True]
    assert not ch["outside"].any()
    # one point in three beyond two sigma is not a signal
    one = xmr(base + [10.5, 12.8, 10.5, 10.5], baseline_points=12)
    assert not one["two_of_three"].any()
    # low side
    low = xmr(base + [8.2, 10.5, 8.2], baseline_points=12, better_if="lower")
    assert low["two_of_three"].tolist()[-3:] == [True, False, True]
    assert low["variation"].iloc[-1] == "improvement"


def test_limits_recalculated_only_at_change_points():
    x = [10] * 5 + [11] * 5 + [20] * 5 + [21] * 5
    periods = [f"2023-{m:02d}" for m in range(1, 13)] + [f"2024-{m:02d}" for m in range(1, 9)]
    ch = xmr(x, periods, change_points=[periods[10]])
    assert ch["segment"].tolist() == [0] * 10 + [1] * 10
    assert ch["mean"].iloc[0] == pytest.approx(10.5) and ch["mean"].iloc[-1] == pytest.approx(20.5)
    # the jump across the change point is not a moving range of either segment
    assert ch["mr_bar"].iloc[-1] == pytest.approx(1 / 9)
    assert ch["mr_bar"].iloc[0] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="change points"):
        xmr(x, periods, change_points=["2030-01"])


def test_frozen_baseline_limits():
    x = [10, 11, 10, 11, 10, 11, 30, 30]
    ch = xmr(x, baseline_points=6)
    assert ch["mean"].iloc[0] == pytest.approx(10.5)
    assert ch["outside"].iloc[-2:].all()


def test_missing_values_refused():
    with pytest.raises(ValueError, match="missing"):
        xmr([1.0, np.nan, 2.0])


def test_rate_ratio_matches_r_poisson_test():
    # R: poisson.test(c(11, 6 + 8 + 7), c(800, 1083 + 1050 + 878))
    #    rate ratio 1.971488, 95% CI 0.8584264 4.2772659, p-value = 0.07967
    r = rate_ratio_ci(11, 800, 21, 3011)
    assert r.estimate == pytest.approx(1.971488, abs=1e-6)
    assert r.ci_low == pytest.approx(0.8584264, abs=1e-6)
    assert r.ci_high == pytest.approx(4.2772659, abs=1e-6)
    assert r.p_value == pytest.approx(0.07967, abs=1e-4)


def test_rate_ratio_hand_worked_edges():
    # equal exposure, 10 vs 20 events: p = 1/3; Clopper-Pearson bounds of p map to p/(1-p)
    from scipy.stats import beta

    r = rate_ratio_ci(10, 1.0, 20, 1.0)
    lo_p, hi_p = beta.ppf(0.025, 10, 21), beta.ppf(0.975, 11, 20)
    assert r.estimate == pytest.approx(0.5)
    assert r.ci_low == pytest.approx(lo_p / (1 - lo_p)) and r.ci_high == pytest.approx(hi_p / (1 - hi_p))
    # zero events now: estimate 0, lower bound 0, upper bound 1 - 0.025**(1/n) mapped
    z = rate_ratio_ci(0, 1.0, 5, 1.0)
    hp = 1 - 0.025 ** (1 / 5)
    assert z.estimate == 0 and z.ci_low == 0 and z.ci_high == pytest.approx(hp / (1 - hp))
    # nothing in either period: undefined
    assert np.isnan(rate_ratio_ci(0, 1.0, 0, 1.0).estimate)
    with pytest.raises(ValueError):
        rate_ratio_ci(2.5, 1.0, 3, 1.0)
    with pytest.raises(ValueError):
        rate_ratio_ci(2, 0.0, 3, 1.0)
