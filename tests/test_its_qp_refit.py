"""The quasi-Poisson refits, made fast, give the results they gave before (issue 15, "Fast").

``tests/reference/its_qp/its_qp_reference.json`` holds every number of the results of the default
ITS evaluation (quasi-Poisson with an AR(1) working correlation), the classic quasi-Poisson
variant and the homicide ITS (Poisson), and every power simulation's level-change estimate,
standard error and critical value, recorded by ``record_its_qp.py`` beside it with the code before
the speed-up. Everything must equal them to 1e-8 relative, the power results exactly.

The refit estimator (:func:`sveval.designs.its_refit.fit_quasipoisson_lean`) is also compared with
the main fit's (:func:`sveval.designs.its_models.fit_quasipoisson`, statsmodels IRLS) on simulated
series, with and without excluded months, one and two series.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sveval.designs.its_models import fit_quasipoisson
from sveval.designs.its_refit import fit_quasipoisson_lean, poisson_irls_sm

REF_DIR = Path(__file__).parent / "reference" / "its_qp"
_spec = importlib.util.spec_from_file_location("record_its_qp", REF_DIR / "record_its_qp.py")
_record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_record)

REF = json.loads((REF_DIR / "its_qp_reference.json").read_text())["evaluations"]
RTOL = 1e-8


def compare(new, ref, where: str) -> None:
    if isinstance(ref, dict):
        assert set(new) == set(ref), where
        for k in ref:
            compare(new[k], ref[k], f"{where}.{k}")
    elif isinstance(ref, list):
        assert len(new) == len(ref), where
        for i, (a, b) in enumerate(zip(new, ref, strict=True)):
            compare(a, b, f"{where}[{i}]")
    elif isinstance(ref, float) and isinstance(new, float):
        assert math.isclose(new, ref, rel_tol=RTOL, abs_tol=1e-13), f"{where}: {new!r} != {ref!r}"
    else:
        assert new == ref, f"{where}: {new!r} != {ref!r}"


@pytest.fixture(scope="module")
def results(tmp_path_factory, example_data):
    from conftest import make_project

    project = make_project(tmp_path_factory.mktemp("its_qp") / "project", example_data)
    return {eid: _record.record(project, eid) for eid in _record.EVALUATIONS}


@pytest.mark.parametrize("eid", _record.EVALUATIONS)
def test_results_unchanged(results, eid):
    new, ref = results[eid], REF[eid]
    for part in ("effects", "coefficients", "series", "prevented", "checks", "details", "sims"):
        compare(new[part], ref[part], f"{eid}.{part}")
    # power: the same detections, so exactly the same numbers
    assert new["power"] == ref["power"]


def _series(rng, n=132, n_series=1, excluded=False, harmonics=1):
    t = np.tile(np.arange(n, dtype=float), n_series)
    sid = np.repeat(np.arange(n_series), n)
    start = float(int(0.6 * n))
    post = (t >= start).astype(float)
    X = np.column_stack([np.ones_like(t), t / 12, np.sin(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 12),
                         post, post * (t - start) / 12])
    for h in range(2, harmonics + 1):
        X = np.column_stack([X, np.sin(2 * np.pi * h * t / 12), np.cos(2 * np.pi * h * t / 12)])
    if n_series > 1:
        X = np.column_stack([X, (sid == 1).astype(float), (sid == 1) * post])
    offset = np.log(np.full(len(t), 2.5e5)) - np.log(1e5)
    u = np.zeros(len(t))
    e = rng.standard_normal(len(t)) * 0.12
    for i in range(1, len(t)):
        u[i] = e[i] + (0.5 * u[i - 1] if sid[i] == sid[i - 1] else 0.0)
    level = rng.uniform(0.5, 60)
    y = rng.poisson(level * np.exp(0.02 * t / 12 + 0.1 * X[:, 2] - 0.15 * post + u)).astype(float)
    inc = np.ones(len(t), bool)
    if excluded:
        inc[(t >= start - 10) & (t < start - 4)] = False
    names = [f"x{j}" for j in range(X.shape[1])]
    return y, X, offset, t, sid, inc, names


@pytest.mark.parametrize("case", range(24))
def test_lean_equals_main_fit(case):
    rng = np.random.default_rng(1000 + case)
    n_series = 2 if case % 4 == 3 else 1
    y, X, off, t, sid, inc, names = _series(rng, n=60 + 9 * case, n_series=n_series, excluded=case % 3 == 1)
    ar_order = 0 if case % 6 == 5 else (2 if case % 8 == 6 else 1)
    a = fit_quasipoisson(y[inc], X[inc], off[inc], names, t[inc], sid[inc], ar_order=ar_order)
    b = fit_quasipoisson_lean(y[inc], X[inc], off[inc], names, t[inc], sid[inc], ar_order=ar_order)
    for attr in ("params", "cov", "resid", "innovations"):
        np.testing.assert_allclose(getattr(b, attr), getattr(a, attr), rtol=RTOL, atol=1e-12, err_msg=attr)
    for attr in ("scale", "dispersion", "df", "n"):
        assert math.isclose(getattr(b, attr), getattr(a, attr), rel_tol=RTOL), attr
    np.testing.assert_allclose(b.ar, a.ar, rtol=RTOL, atol=1e-12)
    if a.df_coef is None:
        assert b.df_coef is None
    else:
        np.testing.assert_allclose(b.df_coef, a.df_coef, rtol=RTOL)
    for i in range(len(names)):
        assert math.isclose(b.crit(i=i), a.crit(i=i), rel_tol=RTOL)
    assert b.description == a.description


@pytest.mark.parametrize("case", range(8))
def test_poisson_irls_same_iterate_as_statsmodels(case):
    import statsmodels.api as sm

    from sveval.designs.its_models import _glm

    rng = np.random.default_rng(77 + case)
    y, X, off, *_ = _series(rng, n=40 + 20 * case)
    if case == 7:  # no events after the intervention: a coefficient running off
        y[X[:, 4] > 0] = 0.0
    res = _glm(y, X, off, sm.families.Poisson())
    beta, n_iter = poisson_irls_sm(y, X, off)
    assert n_iter == res.fit_history["iteration"]
    np.testing.assert_allclose(beta, res.params, rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize("df", [1.0, 2.5, 7.0, 30.3, 119.0, 126.0, None])
def test_crit_equals_scipy_quantile(df):
    from scipy import stats

    from sveval.designs.its_models import ModelFit

    fit = ModelFit(model="x", link="log", params=np.zeros(2), cov=np.eye(2), df=df, scale=1.0, names=["a", "b"],
                   resid=np.zeros(3), innovations=np.zeros(3), n=3,
                   df_coef=None if df is None else np.array([df, df / 2]))
    for level in (0.9, 0.95, 0.99):
        q = 0.5 + level / 2
        want = float(stats.t.ppf(q, df)) if df else float(stats.norm.ppf(q))
        assert fit.crit(level) == want
        if df:
            assert fit.crit(level, i=1) == float(stats.t.ppf(q, df / 2))


@pytest.mark.parametrize("n_series,excluded,harmonics", [(1, False, 1), (1, True, 1), (2, False, 1), (1, False, 3),
                                                        (1, False, 6)])
def test_many_in_lockstep_equal_one_by_one(n_series, excluded, harmonics):
    """Bit-identical, also with 9 and more terms (where a numpy reduction over rows can add in
    another order than one row at a time)."""
    from sveval.designs.its_refit import fit_quasipoisson_many

    rows = [_series(np.random.default_rng(300 + j), n=96, n_series=n_series, excluded=excluded,
                    harmonics=harmonics) for j in range(30)]
    _, X, off, t, sid, inc, names = rows[0]
    Y = np.array([r[0][inc] for r in rows])
    Y[3] = 0.0  # no events: its own error, in its place
    many = fit_quasipoisson_many(Y, X[inc], off[inc], names, t[inc], sid[inc])
    for y, got in zip(Y, many, strict=True):
        try:
            want = fit_quasipoisson_lean(y, X[inc], off[inc], names, t[inc], sid[inc])
        except Exception as exc:  # noqa: BLE001
            assert type(got) is type(exc) and str(got) == str(exc)
            continue
        for attr in ("params", "cov", "resid", "innovations", "df_coef"):
            assert np.array_equal(getattr(got, attr), getattr(want, attr)), attr
        assert got.ar == want.ar and got.scale == want.scale


@pytest.mark.parametrize("k", [6, 9, 12])
def test_reml_searches_in_lockstep_equal_one_by_one(k):
    from sveval.designs.its_models import ARWhitener
    from sveval.designs.its_refit import _AR1Work, _reml_many

    rng = np.random.default_rng(k)
    n = 132
    work = _AR1Work(n, k, ARWhitener(np.arange(n, dtype=float), np.zeros(n, int)))
    Ws = [rng.standard_normal((n, k + 1)) * rng.uniform(0.1, 50, k + 1) for _ in range(30)]
    for got, W in zip(_reml_many(Ws, work), Ws, strict=True):
        assert np.array_equal(got, work.search(W))
