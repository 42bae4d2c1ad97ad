"""Agreement with R (glm, MASS::glm.nb, sandwich::NeweyWest, nlme::gls, arima) and the Sicily tutorial.

The R outputs are fixtures (tests/reference/its/its_reference.json, from its_reference.R run on
the committed design CSVs), so these tests do not need R.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs.its import fit_core, fit_its
from sveval.designs.its_models import fit_model
from sveval.spec import ITSOptions

REF = Path(__file__).parent / "reference" / "its"
SICILY = Path(__file__).parent / "reference" / "data" / "sicily.csv"  # copy of the tutorial data
R = json.loads((REF / "its_reference.json").read_text())


def sig4(a: float, b: float, rtol: float = 5e-5) -> bool:
    """Agreement to 4 significant figures (relative difference below 5e-5)."""
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def load(name):
    d = pd.read_csv(REF / f"{name}_design.csv")
    names = [c for c in d.columns if c not in ("y", "offset", "t")]
    return d, names


CASES = [
    ("counts", "poisson", "poisson", 0),
    ("counts", "quasipoisson", "quasipoisson", 0),
    ("counts", "negbin", "negbin", 0),
    ("gaussian", "ols", "ols", 0),
    ("gaussian", "newey_west", "newey_west", 0),
    ("gaussian", "gls_ar", "gls_ar1", 1),
    ("gaussian", "gls_ar", "gls_ar2", 2),
]


@pytest.mark.parametrize("data,model,key,ar", CASES)
def test_matches_r_to_4_significant_figures(data, model, key, ar):
    d, names = load(data)
    n = len(d)
    fit = fit_model(model, d["y"].to_numpy(float), d[names].to_numpy(float), d["offset"].to_numpy(float),
                    names, d["t"].to_numpy(float), np.zeros(n, int), np.ones(n, bool), ar_order=ar)
    ref = R[data][key]
    for term in ("level_1", "slope_1", "time", "sin1"):
        b, se, *_ = fit.coef(term)
        assert sig4(b, ref[term]["estimate"]), (term, b, ref[term]["estimate"])
        if model == "gls_ar":
            # the plug-in (nlme) standard error, before the small-sample correction
            from sveval.designs.its_models import fit_gls_ar

            plain = fit_gls_ar(d["y"].to_numpy(float), d[names].to_numpy(float), names, d["t"].to_numpy(float),
                               np.zeros(n, int), ar_order=ar, small_sample=False)
            se = plain.coef(term)[1]
        assert sig4(se, ref[term]["se"]), (term, se, ref[term]["se"])
    if key.startswith("gls_ar"):
        assert np.allclose(fit.ar, ref["phi"], rtol=5e-5, atol=1e-6)
    if key == "negbin":
        assert sig4(1 / fit.alpha, ref["theta"], rtol=5e-4)
    if key == "quasipoisson":
        assert sig4(fit.scale, ref["dispersion"])


def test_arima_matches_r_estimates():
    d, names = load("gaussian")
    n = len(d)
    fit = fit_model("arima", d["y"].to_numpy(float), d[names].to_numpy(float), np.zeros(n), names,
                    d["t"].to_numpy(float), np.zeros(n, int), np.ones(n, bool), ar_order=1)
    ref = R["gaussian"]["arima_ar1"]
    b, se, *_ = fit.coef("level_1")
    assert sig4(b, ref["level_1"]["estimate"], rtol=5e-4)
    assert math.isclose(fit.ar[0], ref["ar1"], rel_tol=5e-4)
    # standard errors: statsmodels' observed information vs R's numerical Hessian differ slightly
    assert math.isclose(se, ref["level_1"]["se"], rel_tol=1e-2)


def test_design_csv_is_what_build_design_makes():
    """The fixture's design matrix is sveval's own design of the committed series."""
    from sveval.designs.its_design import build_design

    series = pd.read_csv(REF / "counts_series.csv")
    start = (REF / "intervention_start.txt").read_text().strip()
    d = build_design(series, start, ITSOptions(covid="none", fourier_terms=2))
    ref, names = load("counts")
    assert [c.replace(":", "_") for c in d.columns] == names
    assert np.allclose(d.X, ref[names].to_numpy(float), atol=1e-10)
    assert np.allclose(d.frame["offset"], ref["offset"], atol=1e-9)


@pytest.fixture(scope="module")
def sicily():
    if not SICILY.exists():
        pytest.skip("reference data not available")
    s = pd.read_csv(SICILY)
    return pd.DataFrame({"period": [f"{y}-{m:02d}" for y, m in zip(s.year, s.month, strict=True)],
                         "count": s.aces.astype(float), "population": s.stdpop.astype(float)})


@pytest.mark.parametrize("key,model,seasonality,slope", [
    ("model1_poisson", "poisson", "none", False),
    ("model2_quasipoisson", "quasipoisson", "none", False),
    ("model3_quasipoisson_harmonic", "quasipoisson", "fourier", False),
])
def test_sicily_tutorial_models(sicily, key, model, seasonality, slope):
    opts = ITSOptions(model=model, ar_order=0, seasonality=seasonality, fourier_terms=2, slope_change=slope,
                      covid="none", power_sims=0, placebo=False, sensitivity_months=0)
    core = fit_core(sicily, "2005-01", opts)
    b, se, *_ = core.fit.coef("level_1")
    ref = R["sicily"][key]["smokban"]
    assert sig4(b, ref["log_rr"]) and sig4(se, ref["se"])
    # the tutorial's (normal-based, Epi::ci.exp) rate ratio and interval
    assert round(math.exp(b), 3) == round(ref["rr"], 3)
    assert round(math.exp(b - 1.959964 * se), 3) == round(ref["ci_low"], 3)
    assert round(math.exp(b + 1.959964 * se), 3) == round(ref["ci_high"], 3)
    if "dispersion" in R["sicily"][key]:
        assert sig4(core.fit.scale, R["sicily"][key]["dispersion"])


def test_sicily_published_headline(sicily):
    """The tutorial's seasonally adjusted quasi-Poisson model: about an 11-12% fall after the ban."""
    opts = ITSOptions(model="quasipoisson", ar_order=0, fourier_terms=2, slope_change=False, covid="none",
                      power_sims=0, placebo=False, sensitivity_months=0)
    res = fit_its(sicily, "2005-01", opts)
    h = res.headline
    assert 0.87 < h.estimate < 0.90 and h.ci_high < 1.0
    # published (Lopez Bernal et al. 2017, seasonally adjusted model): RR 0.885 (95% CI 0.839-0.933)
    ref = R["sicily"]["model3_quasipoisson_harmonic"]["smokban"]
    assert (round(ref["rr"], 3), round(ref["ci_low"], 3), round(ref["ci_high"], 3)) == (0.885, 0.839, 0.933)
    assert round(h.estimate, 3) == 0.885
    slope = R["sicily"]["model4_slope_change"]["slope"]
    core = fit_core(sicily, "2005-01", opts.model_copy(update={"slope_change": True}))
    b, se, *_ = core.fit.coef("slope_1")
    assert sig4(b, slope["log_rr"]) and sig4(se, slope["se"])
