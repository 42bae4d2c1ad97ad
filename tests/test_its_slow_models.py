"""The slow ITS models of the example, made fast, give the results they gave before (issue 15).

``tests/reference/its_slow/its_slow_reference.json`` holds every number of the results of
``focused-deterrence-violence-arima`` (regression with AR(1) errors by exact ML) and
``youth-navigators-fte-its`` (negative binomial), recorded by ``record_its_slow.py`` beside it with
the code before the speed-ups. The main fit (effects, coefficients, series, prevented events) must
equal them to 1e-6 relative.

The checks' refits now use the exact estimators of ``sveval.designs.its_refit``, which stop
closer to the optimum than the statsmodels optimisers did: their estimates and interval ends must
be within ``CHECK_SE_TOL`` (1e-4) standard errors of the reference (the largest difference seen
is 8.5e-6 standard errors, where SARIMAX stopped short), their p-values within 1e-4, and every
conclusion (significance, passed, rank p-value, share significant) identical.

Power: the arima study must be identical (same simulations, same detections). For the negative
binomial, statsmodels' optimiser failed on 4 of the 150 simulated series of the reference (alpha
of 5e5-2e7, log-likelihood 1,700-2,200 below the maximum, standard errors 2,500 times too large),
so those series could never count as detections; the new study must equal the reference
procedure (statsmodels per series) with exactly those failures replaced by the maximum.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sveval.pipeline.api import fit, prepare

REF_DIR = Path(__file__).parent / "reference" / "its_slow"
_spec = importlib.util.spec_from_file_location("record_its_slow", REF_DIR / "record_its_slow.py")
_record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_record)
EVALUATIONS, result_record = _record.EVALUATIONS, _record.result_record

REF = json.loads((REF_DIR / "its_slow_reference.json").read_text())["evaluations"]
MAIN_RTOL = 1e-6
CHECK_SE_TOL = 1e-4  # refit estimates and interval ends: standard errors
CHECK_P_TOL = 1e-4  # refit p-values: absolute


def close(a, b, rtol: float, where: str) -> None:
    if isinstance(b, (str, bool)) or b is None or isinstance(a, (str, bool)) or a is None:
        assert a == b, where
        return
    assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12), f"{where}: {a!r} != {b!r}"


def compare(new, ref, rtol: float, where: str) -> None:
    if isinstance(ref, dict):
        assert set(new) == set(ref), where
        for k in ref:
            compare(new[k], ref[k], rtol, f"{where}.{k}")
    elif isinstance(ref, list):
        assert len(new) == len(ref), where
        for i, (a, b) in enumerate(zip(new, ref, strict=True)):
            compare(a, b, rtol, f"{where}[{i}]")
    else:
        close(new, ref, rtol, where)


@pytest.fixture(scope="module")
def results(tmp_path_factory, example_data):
    from conftest import make_project

    project = make_project(tmp_path_factory.mktemp("its_slow") / "project", example_data)
    out = {}
    for eid in EVALUATIONS:
        ctx = prepare(project / "parameters" / "evaluations" / f"{eid}.yaml", root=project)
        out[eid] = result_record(fit(ctx))
    return out


@pytest.mark.parametrize("eid", EVALUATIONS)
def test_main_fit_unchanged(results, eid):
    new, ref = results[eid], REF[eid]
    for part in ("effects", "coefficients", "series", "prevented", "details"):
        compare(new[part], ref[part], MAIN_RTOL, f"{eid}.{part}")


LOG_SCALE = {"focused-deterrence-violence-arima": False, "youth-navigators-fte-its": True}  # rate ratios


@pytest.mark.parametrize("eid", EVALUATIONS)
def test_checks_unchanged(results, eid):
    new, ref = results[eid]["checks"], REF[eid]["checks"]
    assert set(new) == set(ref)
    for name, rc in ref.items():
        nc = new[name]
        assert nc["passed"] == rc["passed"], name
        assert len(nc["rows"]) == len(rc["rows"]), name
        tr = math.log if LOG_SCALE[eid] else (lambda v: v)
        ses = []
        for a, b in zip(nc["rows"], rc["rows"], strict=True):
            where = f"{eid}.{name}.{b['label']}"
            assert (a["label"], a["significant"], a["error"]) == (b["label"], b["significant"], b["error"]), where
            if b["estimate"] is None:
                assert a["estimate"] is None, where
                continue
            se = (tr(b["ci_high"]) - tr(b["ci_low"])) / (2 * 1.959963984540054)
            ses.append(se)
            for k in ("estimate", "ci_low", "ci_high"):
                assert abs(tr(a[k]) - tr(b[k])) <= CHECK_SE_TOL * se, (where, k, a[k], b[k])
            assert abs(a["p_value"] - b["p_value"]) <= CHECK_P_TOL, (where, a["p_value"], b["p_value"])
        if name == "placebo_in_time":  # share significant and rank p-value: counts, identical
            close(nc["statistic"], rc["statistic"], 1e-12, f"{eid}.{name}.statistic")
            close(nc["p_value"], rc["p_value"], 1e-12, f"{eid}.{name}.p_value")
        elif rc["statistic"] is not None and name.startswith("sensitivity"):
            # the spread of the estimates (max - min): within two rows' tolerance
            scale = max(ses) * (max(r["estimate"] for r in rc["rows"] if r["estimate"]) if tr is math.log else 1)
            assert abs(nc["statistic"] - rc["statistic"]) <= 2 * CHECK_SE_TOL * scale, name
        else:
            close(nc["statistic"], rc["statistic"], MAIN_RTOL, f"{eid}.{name}.statistic")
            close(nc["p_value"], rc["p_value"], MAIN_RTOL, f"{eid}.{name}.p_value")


def test_arima_power_unchanged(results):
    eid = "focused-deterrence-violence-arima"
    new, ref = results[eid]["power"], REF[eid]["power"]
    assert (new["n_sim"], new["power_at"], new["underpowered"]) == (ref["n_sim"], ref["power_at"], ref["underpowered"])
    close(new["mc_se"], ref["mc_se"], 1e-12, "mc_se")
    close(new["mde"], ref["mde"], MAIN_RTOL, "mde")


def test_negbin_power_is_the_reference_procedure_without_its_failed_fits(results, tmp_path_factory, example_data,
                                                                         monkeypatch):
    """Rerun the power study fitting every simulated series with statsmodels (the reference
    code), replacing a fit only where it failed (log-likelihood more than 1 below the fast fit's,
    which is the maximum): the power must equal the new study's."""
    from conftest import make_project

    from sveval.designs import its_models, power
    from sveval.designs.its_refit import refit_model

    eid = "youth-navigators-fte-its"
    failed = []

    def reference_fit(model, y, X, offset, names, t, series_id, included, **kw):
        old = its_models.fit_model(model, y, X, offset, names, t, series_id, included, **kw)
        fast = refit_model(model, y, X, offset, names, t, series_id, included, **kw)
        inc = np.asarray(included, bool)
        if nb_loglike(y[inc], X[inc], offset[inc], old) < nb_loglike(y[inc], X[inc], offset[inc], fast) - 1.0:
            failed.append(old.alpha)
            return fast
        return old

    monkeypatch.setattr(power, "refit_model", reference_fit)
    monkeypatch.setattr(its_models, "NB_FAILED_LL", math.inf)  # the reference code had no check
    project = make_project(tmp_path_factory.mktemp("its_slow_power") / "project", example_data)
    ctx = prepare(project / "parameters" / "evaluations" / f"{eid}.yaml", root=project)
    ctx.spec = ctx.spec.model_copy(update={"its": ctx.spec.its.model_copy(
        update={"placebo": False, "sensitivity_months": 0})})
    reference = result_record(fit(ctx))["power"]
    assert failed and all(a > 1e4 for a in failed)  # the failures of the reference run: absurd alphas
    new = results[eid]["power"]
    assert (new["n_sim"], new["power_at"], new["underpowered"]) == (
        reference["n_sim"], reference["power_at"], reference["underpowered"])
    close(new["mde"], reference["mde"], MAIN_RTOL, "mde")


def nb_loglike(y, X, offset, fit) -> float:
    from scipy import special

    mu = np.exp(X @ fit.params + offset)
    r = 1.0 / fit.alpha
    return float(np.sum(special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
                        + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu))))
