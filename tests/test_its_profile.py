"""Profile-likelihood intervals (the low-count default): agreement with R, edge cases, calibration.

The R values are fixtures (tests/reference/its/its_reference.json, ``lowcounts``), computed by
its_reference.R with uniroot on glm deviances and with R's own confint().
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sveval.designs.its import fit_core, fit_its, resolve_inference
from sveval.designs.its_design import build_design
from sveval.designs.its_models import fit_model
from sveval.designs.its_profile import PoissonProfile, poisson_irls
from sveval.errors import DataError, EstimationError
from sveval.spec import ITSOptions, add_months

REF = Path(__file__).parent / "reference" / "its"
R = json.loads((REF / "its_reference.json").read_text())["lowcounts"]
FAST = dict(power_sims=0, placebo=False, sensitivity_months=0, covid="none")


def low_design():
    d = pd.read_csv(REF / "lowcounts_design.csv")
    names = [c for c in d.columns if c not in ("y", "offset", "t")]
    return d, names


def fit_low(model, **kw):
    d, names = low_design()
    n = len(d)
    return fit_model(model, d["y"].to_numpy(float), d[names].to_numpy(float), d["offset"].to_numpy(float),
                     names, d["t"].to_numpy(float), np.zeros(n, int), np.ones(n, bool), ar_order=0,
                     interval="profile", **kw)


def close4(a, b):
    return math.isclose(a, b, rel_tol=5e-5, abs_tol=1e-9)


@pytest.mark.parametrize("model", ["poisson", "quasipoisson"])
@pytest.mark.parametrize("term", ["level_1", "slope_1"])
def test_profile_interval_matches_r(model, term):
    if model == "quasipoisson":
        # R's dispersion is the plain Pearson estimate: compare with the floor switched off
        from sveval.designs.its_models import fit_quasipoisson

        d, names = low_design()
        n = len(d)
        fit = fit_quasipoisson(d["y"].to_numpy(float), d[names].to_numpy(float), d["offset"].to_numpy(float),
                               names, d["t"].to_numpy(float), np.zeros(n, int), ar_order=0, scale_floor=0,
                               interval="profile")
        assert close4(fit.scale, R["dispersion"])
        ref_p = float(stats.f.sf(R[model][term]["lr_stat_at_0"], 1, R["n"] - R["p"]))
    else:
        fit = fit_low(model)
        ref_p = float(stats.chi2.sf(R[model][term]["lr_stat_at_0"], 1))
    b, se, lo, hi, p = fit.coef(term)
    ref = R[model][term]
    assert close4(b, ref["estimate"])
    assert close4(lo, ref["low"]), (lo, ref["low"])
    assert close4(hi, ref["high"]), (hi, ref["high"])
    assert math.isclose(p, ref_p, rel_tol=1e-4)
    # the profile interval is not the Wald one (the likelihood is skewed at low counts)
    wald = fit.params[fit.names.index(term)] + np.array([-1, 1]) * 1.96 * se
    assert not np.allclose([lo, hi], wald, rtol=1e-3)


def test_poisson_profile_agrees_with_r_confint():
    # R's confint() interpolates a spline through the profile: agreement to about 4 figures
    fit = fit_low("poisson")
    for term in ("level_1", "slope_1"):
        _, _, lo, hi, _ = fit.coef(term)
        rlo, rhi = R["poisson_confint"][term]
        assert math.isclose(lo, rlo, rel_tol=2e-4) and math.isclose(hi, rhi, rel_tol=2e-4)


def test_irls_matches_statsmodels():
    import statsmodels.api as sm

    d, names = low_design()
    X, y, off = d[names].to_numpy(float), d["y"].to_numpy(float), d["offset"].to_numpy(float)
    beta, dev = poisson_irls(y, X, off)
    ref = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit(tol=1e-12)
    assert np.allclose(beta, ref.params, rtol=1e-7, atol=1e-9)
    assert math.isclose(dev, ref.deviance, rel_tol=1e-9)


def low_series(n=60, k=40, base=0.6, rr=0.5, seed=3, zero_post=False):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    lam = base * np.exp(math.log(rr) * (t >= k))
    y = rng.poisson(lam).astype(float)
    if zero_post:
        y[k:] = 0.0
    periods = [add_months("2018-04", i) for i in range(n)]
    return pd.DataFrame({"period": periods, "count": y, "population": np.nan}), periods[k]


def test_no_events_after_intervention_gives_open_lower_bound():
    df, start = low_series(zero_post=True)
    res = fit_its(df, start, ITSOptions(**FAST))
    h = res.headline
    assert h.ci_low == 0.0  # exp(-inf): the data set no lower limit on the rate ratio
    assert math.isfinite(h.ci_high) and h.ci_high > 0
    # the average post-period effect cannot be bounded from coefficient draws here: said, not faked
    avg = next(e for e in res.effects if e.name == "average_post_effect")
    assert (avg.ci_low, avg.ci_high) == (0.0, math.inf) and "too few events" in avg.description
    from sveval.report.prose import fmt_effect

    assert fmt_effect(avg).endswith("to no upper limit)")
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    from sveval.report.prose import effect_text
    from sveval.result import Effect

    e = Effect(**{k: v for k, v in next(x for x in d["effects"] if x["name"] == "average_post_effect").items()
                  if k in Effect.__dataclass_fields__})
    assert e.ci_high is None and effect_text(e).endswith("-100.0% to no upper limit)")


def test_auto_uses_profile_at_low_counts_and_ar_wald_otherwise():
    df, start = low_series()
    core = fit_core(df, start, ITSOptions(**FAST))
    assert core.fit.profile is not None and core.fit.ar == ()
    assert "profile-likelihood" in core.fit.description
    busy = df.assign(count=np.random.default_rng(1).poisson(30.0, len(df)).astype(float))
    core = fit_core(busy, start, ITSOptions(**FAST))
    assert core.fit.profile is None and len(core.fit.ar) == 1


def test_explicit_choices_win():
    df, start = low_series()
    design = build_design(df, start, ITSOptions(**FAST), count_model=True)
    # ar_order set in the parameter file: AR quasi-Poisson with Wald intervals even at low counts
    assert resolve_inference(ITSOptions(ar_order=1, **FAST), "quasipoisson", design)[:2] == (1, "wald")
    assert resolve_inference(ITSOptions(interval="wald", **FAST), "quasipoisson", design)[:2] == (0, "wald")
    assert resolve_inference(ITSOptions(model="poisson", **FAST), "poisson", design)[:2] == (1, "profile")
    assert resolve_inference(ITSOptions(model="negbin", **FAST), "negbin", design)[1] == "wald"
    with pytest.raises(DataError, match="count models"):
        resolve_inference(ITSOptions(interval="profile", **FAST), "gls_ar", design)
    with pytest.raises(DataError, match="ar_order 0"):
        resolve_inference(ITSOptions(interval="profile", ar_order=1, **FAST), "quasipoisson", design)
    with pytest.raises(EstimationError, match="profile"):
        fit_low("negbin")


def test_interval_option_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ITSOptions(interval="bootstrap")


def test_profile_coverage_at_low_counts():
    """A small Monte Carlo check (the full one is benchmarks/its_coverage.py, cell low05)."""
    rng = np.random.default_rng(20240601)
    n, k, truth = 60, 36, math.log(0.5)
    t = np.arange(n)
    X = np.column_stack([np.ones(n), t / 12, (t >= k).astype(float)])
    off = np.zeros(n)
    cover = []
    for _ in range(300):
        y = rng.poisson(0.8 * np.exp(truth * (t >= k))).astype(float)
        beta, _ = poisson_irls(y, X, off)
        lo, hi, _ = PoissonProfile(y, X, off, beta).interval(2, 0.3)
        cover.append(lo <= truth <= hi)
    # 300 replications: Monte Carlo SE about 0.013
    assert 0.91 <= np.mean(cover) <= 0.985


def test_full_low_count_report_uses_one_inference_throughout():
    df, start = low_series(n=72, k=48, base=0.8, seed=9)
    res = fit_its(df, start, ITSOptions(covid="none", power_sims=20, sensitivity_months=2))
    assert res.details["interval"] == "profile likelihood" and res.details["ar_order"] == 0
    # the checks and power were refitted with the same (pinned) choice
    assert res.details["options"]["interval"] == "profile" and res.details["options"]["ar_order"] == 0
    names = {d.name for d in res.diagnostics}
    assert {"placebo_in_time", "sensitivity_date", "sensitivity_seasonality"} <= names
    assert res.power is not None
    json.dumps(res.to_dict(), allow_nan=False)


def test_profile_refused_in_parameter_file_for_models_without_it(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not for model 'gls_ar'"):
        ITSOptions(model="gls_ar", interval="profile")
    with pytest.raises(ValidationError, match="needs ar_order 0"):
        ITSOptions(model="quasipoisson", ar_order=2, interval="profile")
    # quasipoisson + profile without an ar_order: no AR terms
    df, start = low_series()
    design = build_design(df, start, ITSOptions(**FAST), count_model=True)
    opts = ITSOptions(model="quasipoisson", interval="profile", **FAST)
    assert resolve_inference(opts, "quasipoisson", design)[:2] == (0, "profile")
