"""The slow ITS models of the example, made fast, give the results they gave before (issue 15).

``tests/reference/its_slow/its_slow_reference.json`` holds every number of the results of
``focused-deterrence-violence-arima`` (regression with AR(1) errors by exact ML) and
``youth-navigators-fte-its`` (negative binomial), recorded by ``record_its_slow.py`` beside it with
the code before the speed-ups. The main fit (effects, coefficients, series, prevented events) must
equal them to 1e-6 relative; the placebo, sensitivity and power outputs to the tolerances below.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from sveval.pipeline.api import fit, prepare

REF_DIR = Path(__file__).parent / "reference" / "its_slow"
_spec = importlib.util.spec_from_file_location("record_its_slow", REF_DIR / "record_its_slow.py")
_record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_record)
EVALUATIONS, result_record = _record.EVALUATIONS, _record.result_record

REF = json.loads((REF_DIR / "its_slow_reference.json").read_text())["evaluations"]
MAIN_RTOL = 1e-6
CHECK_RTOL = 1e-6


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


@pytest.mark.parametrize("eid", EVALUATIONS)
def test_checks_unchanged(results, eid):
    new, ref = results[eid], REF[eid]
    compare(new["checks"], ref["checks"], CHECK_RTOL, f"{eid}.checks")


@pytest.mark.parametrize("eid", EVALUATIONS)
def test_power_unchanged(results, eid):
    new, ref = results[eid], REF[eid]
    compare(new["power"], ref["power"], CHECK_RTOL, f"{eid}.power")
