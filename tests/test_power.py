"""Power, minimum detectable effect and planning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs.power import analytic_mde, its_power, months_to_detect
from sveval.spec import ITSOptions, add_months

OPTS = ITSOptions(covid="none", seasonality="none", slope_change=False)


def counts(base, n=96, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"period": [add_months("2016-04", i) for i in range(n)],
                         "count": rng.poisson(base, size=n).astype(float), "population": np.nan})


def test_power_large_counts_detects_small_changes():
    p = its_power(counts(200.0), "2022-04", OPTS, n_sim=40)
    assert p.n_sim == 40 and p.post_months == 24
    assert p.mde is not None and p.mde < 0.12 and not p.underpowered
    # power increases with the size of the change
    vals = [p.power_at[k] for k in sorted(p.power_at, key=float)]
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    assert p.power_at["0.3"] == 1.0


def test_power_low_counts_is_underpowered():
    p = its_power(counts(0.5), "2022-04", OPTS, n_sim=40)
    assert p.underpowered and (p.mde is None or p.mde > 0.3)
    assert p.power_at["0.2"] < 0.3


def test_power_agrees_with_normal_approximation():
    """For Poisson counts around 50 the simulated MDE is close to the analytic one."""
    from sveval.designs.its import fit_core

    df = counts(50.0, seed=3)
    p = its_power(df, "2022-04", OPTS.model_copy(update={"model": "poisson"}), n_sim=60)
    se = fit_core(df, "2022-04", OPTS.model_copy(update={"model": "poisson"})).fit.coef("level_1")[1]
    assert p.mde == pytest.approx(analytic_mde(se), abs=0.03)


def test_power_continuous_and_higher_is_better():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"period": [add_months("2016-04", i) for i in range(72)],
                       "count": 50 + rng.standard_normal(72), "population": np.nan})
    p = its_power(df, "2020-04", OPTS, kind="continuous", better_if="higher", n_sim=40)
    assert p.mde is not None and p.mde < 0.1


def test_months_to_detect_planning():
    pre = counts(40.0, n=60, seed=1)
    launch = add_months(pre["period"].iloc[-1], 1)
    big = months_to_detect(pre, launch, 0.3, options=OPTS, n_sim=25, max_months=24)
    assert big.months is not None
    assert big.power_by_months[big.months] >= 0.8
    if big.months > 6:
        assert big.power_by_months.get(big.months - 1, 0.0) < 0.8
    assert "months after launch" in big.text("knife crime")
    rare = months_to_detect(counts(0.4, n=60), launch, 0.2, options=OPTS, n_sim=25, max_months=12)
    assert rare.months is None and "would not be detectable" in rare.text()


def test_months_to_detect_needs_data_up_to_launch():
    from sveval.errors import DataError

    with pytest.raises(DataError, match="month before launch"):
        months_to_detect(counts(40.0, n=60), "2030-01", 0.2, options=OPTS, n_sim=20)


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "cov.md"
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "its_coverage.py"), "--smoke",
                        "--lengths", "48", "--only", "gauss_rho0.3,low05", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "| gauss_rho0.3 | 48 | gls_ar* |" in text and "| low05 | 48 | auto* |" in text and "| low05 | 48 | quasipoisson_profile |" in text


def test_clopper_pearson_matches_scipy():
    from scipy.stats import binomtest

    from sveval.designs.power import clopper_pearson

    for x, n in ((0, 50), (3, 50), (40, 75), (75, 75), (160, 200)):
        ci = binomtest(x, n).proportion_ci(confidence_level=0.99, method="exact")
        assert clopper_pearson(x, n, 0.01) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_sequential_power_stops_early_and_equals_the_truncated_run():
    # large counts: every reported power is far from 0.8 except possibly one; the rule must stop at a
    # look (50, 75, ...) and give exactly the non-sequential result on that many simulations
    data = counts(200.0)
    seq = its_power(data, "2022-04", OPTS, n_sim=150)
    full = its_power(data, "2022-04", OPTS, n_sim=150, sequential=False)
    assert full.n_sim == 150
    assert seq.n_sim in (50, 75, 100, 125, 150)
    same = its_power(data, "2022-04", OPTS, n_sim=seq.n_sim, sequential=False)
    assert seq.power_at == same.power_at and seq.mde == same.mde
    expect_se = max(np.sqrt(p * (1 - p) / seq.n_sim) for p in seq.power_at.values())
    assert seq.mc_se == pytest.approx(expect_se)
    if seq.n_sim < 150:
        from sveval.designs.power import clopper_pearson

        for p in seq.power_at.values():
            lo, hi = clopper_pearson(round(p * seq.n_sim), seq.n_sim)
            assert hi < 0.8 or lo > 0.8
        assert "stopped early" in seq.method
    assert "mc_se" in seq.to_dict()
