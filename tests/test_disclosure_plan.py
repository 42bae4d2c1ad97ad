"""The plan of controlled cells (sveval.pipeline.disclosure.plan_cells) on the example data: the
same cells and statistics as the committed reference (computed by the audit before it was sped
up), and the persistent plan cache (a hit gives the same plan; a damaged or tampered file is
recomputed; other data, another key).

Regenerate the references (only when the plan is meant to change) with
``python tests/test_disclosure_plan.py DATA_DIR`` where DATA_DIR holds the generated example.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import small_counts_copy

REFERENCE = Path(__file__).resolve().parent / "reference" / "disclosure"
MEASURES = ["knife_admissions", "knife_admissions_u25"]


def _project(dest: Path, data: Path) -> Path:
    repo = Path(__file__).resolve().parents[1]
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "parameters", dest / "parameters")
    (dest / "data").mkdir()
    (dest / "data" / "example").symlink_to(data.resolve(), target_is_directory=True)
    spec = dest / "parameters" / "tracking" / "partnership.yaml"
    doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
    doc["measures"] = MEASURES  # the protected measures only: the same plan, faster
    spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def plan_inputs(root: Path):
    """(monthly table, rules, parents) of the project's tracking report."""
    from sveval.pipeline.disclosure import load_rules
    from sveval.pipeline.tracking import track

    tr = track(root / "parameters" / "tracking" / "partnership.yaml", root=root)
    parents = {m.id: m.parent for m in tr.measures if m.parent}
    return tr.monthly, load_rules(root / "parameters"), parents


def plan_doc(plan) -> dict:
    """Every shown cell (``measure|unit|first month|months``: value) and the statistics."""
    cells = {f"{m}|{code}|{w[0]}|{len(w)}": v for (m, code, w), v in plan._shown.items()}
    return {"stats": dict(plan.stats), "measures": sorted(plan.measures),
            "cells": dict(sorted(cells.items()))}


def fresh_plan(monthly, rules, parents, **kwargs):
    from sveval.pipeline import disclosure

    disclosure._PLAN_CACHE.clear()
    return disclosure.plan_cells(monthly, rules, parents, **kwargs)


VARIANTS = ("example", "small_counts")


@pytest.fixture(scope="module", params=VARIANTS)
def inputs(request, tmp_path_factory, example_data):
    tmp = tmp_path_factory.mktemp(f"plan-{request.param}")
    data = example_data if request.param == "example" else small_counts_copy(example_data, tmp / "small")
    root = _project(tmp / "project", data)
    return request.param, root, plan_inputs(root)


def test_plan_equals_reference(inputs):
    """Every shown cell and every statistic equal the reference computed before the audit was sped
    up (tests/reference/disclosure/plan_<variant>.json)."""
    variant, _, (monthly, rules, parents) = inputs
    ref = json.loads((REFERENCE / f"plan_{variant}.json").read_text(encoding="utf-8"))
    got = plan_doc(fresh_plan(monthly, rules, parents))
    assert got["stats"] == ref["stats"]
    assert got["measures"] == ref["measures"]
    assert got["cells"].keys() == ref["cells"].keys()
    diff = {k: (v, ref["cells"][k]) for k, v in got["cells"].items() if v != ref["cells"][k]}
    assert diff == {}


def _synthetic(seed: int) -> pd.DataFrame:
    """Two areas, their partnership and the pooled comparison areas over two financial years of
    small counts, all ages and under 25."""
    from sveval.periods import fy_months

    rng = np.random.default_rng(seed)
    periods = fy_months("2023/24") + fy_months("2024/25")
    rows = []
    for area in ("A1", "A2", "CMP"):
        allages = rng.poisson(4.0 if area != "CMP" else 20.0, len(periods))
        u25 = rng.binomial(allages, 0.4)
        for ms, counts in (("m", allages), ("m_u25", u25)):
            rows += [{"measure": ms, "disclosure": "hospital", "area_code": area, "period": p,
                      "area_type": "comparison" if area == "CMP" else "area", "count": float(c)}
                     for p, c in zip(periods, counts, strict=True)]
    df = pd.DataFrame(rows)
    part = df[df["area_type"] == "area"].groupby(["measure", "disclosure", "period"], as_index=False)["count"].sum()
    part = part.assign(area_code="P", area_type="partnership")
    return pd.concat([df, part], ignore_index=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_audit_solves_as_linprog(seed, monkeypatch):
    """The audit's direct HiGHS calls give the plan that scipy.optimize.linprog gives."""
    from sveval.pipeline import disclosure

    rules = disclosure.DisclosureRules(source="t", rules={
        "hospital": disclosure.SourceRule(suppress_min=1, suppress_max=7, round_to=5, secondary=True),
        "police": disclosure.SourceRule(), "none": disclosure.SourceRule(exempt=True)})
    monthly = _synthetic(seed)
    fast = plan_doc(fresh_plan(monthly, rules, {"m_u25": "m"}))
    assert disclosure._LAST_AUDIT and fast["stats"]["secondary"] > 0
    monkeypatch.setattr(disclosure, "_HIGHS", ())  # as without SciPy's HiGHS bindings: linprog
    assert plan_doc(fresh_plan(monthly, rules, {"m_u25": "m"})) == fast


def test_project_plan_is_the_tracking_plan(inputs):
    """project_plan (records of protected measures, inside the evaluations' kernels) builds only the
    monthly tables it needs, and gets the tracking report's plan, kept in the project's cache."""
    from sveval.pipeline import disclosure
    from sveval.pipeline.tracking import project_plan

    variant, root, (monthly, rules, parents) = inputs
    expected = plan_doc(fresh_plan(monthly, rules, parents))
    disclosure._PLAN_CACHE.clear()
    got = project_plan(root / "parameters", rules, "knife_admissions")
    assert plan_doc(got) == expected
    assert len(list(disclosure.plan_cache_dir(root).glob("*.json"))) == 1
    assert project_plan(root / "parameters", rules, "knife_crime") is None  # not a protected measure


def _apply_plan_loop(controlled, raw, plan, rules, count_column, months, rate_columns=None):
    """The oracle: sveval.pipeline.disclosure.apply_plan before it was sped up (row by row)."""
    out = controlled.reset_index(drop=True).copy()
    src = raw.reset_index(drop=True)
    for col in [count_column, *(rate_columns or {})]:
        out[col] = out[col].astype(object)
    for i, row in src.iterrows():
        if not plan.covers(str(row["measure"])):
            continue
        x = pd.to_numeric(row[count_column], errors="coerce")
        if x is None or not np.isfinite(x):
            continue
        symbol = rules.rule(str(row["disclosure"])).symbol
        shown = plan.shown(str(row["measure"]), str(row["area_code"]), months(row), symbol)
        out.at[i, count_column] = shown
        for rc, cc in (rate_columns or {}).items():
            if cc != count_column:
                continue
            rate = pd.to_numeric(row[rc], errors="coerce")
            if shown is None or shown == symbol:
                out.at[i, rc] = shown
            elif rate is None or not np.isfinite(rate):
                out.at[i, rc] = None
            else:
                out.at[i, rc] = 0.0 if x == 0 else float(rate * float(shown) / x)
    return out


def test_apply_plan_equals_the_loop(inputs):
    """apply_plan gives the tracking tables (months with rates, financial years) exactly as the
    row-by-row implementation did."""
    from sveval.periods import fy_months
    from sveval.pipeline.disclosure import apply_plan, apply_to_frame
    from sveval.pipeline.tracking import track

    _, root, (_, rules, _) = inputs
    tr = track(root / "parameters" / "tracking" / "partnership.yaml", root=root)
    plan = tr.cell_plan(rules)
    m = tr.monthly[tr.monthly["area_type"] != "comparison_area"]
    ctl = apply_to_frame(m, "disclosure", rules, ["count", "rolling_12m"],
                         rate_columns={"rate": "count", "rolling_12m_rate": "rolling_12m"},
                         group_by=["measure", "period"])
    args = (plan, rules, "count", lambda r: [r["period"]], {"rate": "count", "rolling_12m_rate": "rolling_12m"})
    got = apply_plan(ctl, m, *args)
    pd.testing.assert_frame_equal(got, _apply_plan_loop(ctl, m, *args), check_exact=True)
    assert (got["count"] == "*").any() and got["count"].isna().any()  # suppressed and withheld cells
    a = tr.annual[tr.annual["area_type"] != "comparison_area"].reset_index(drop=True)
    windows = {fy: fy_months(fy) for fy in a["financial_year"].unique()}
    ctl = apply_to_frame(a, "disclosure", rules, ["fy_count"], group_by=["measure", "financial_year"])
    args = (plan, rules, "fy_count", lambda r: windows[r["financial_year"]])
    got = apply_plan(ctl, a, *args)
    pd.testing.assert_frame_equal(got, _apply_plan_loop(ctl, a, *args), check_exact=True)


def test_published_tables_are_computed_once(inputs, monkeypatch):
    """The controlled tables are computed once per rules (the notebook, the readings and save ask
    for them): every call gets its own copy, equal to a fresh computation."""
    from sveval.pipeline import tracking

    _, root, (_, rules, _) = inputs
    tr = tracking.track(root / "parameters" / "tracking" / "partnership.yaml", root=root)
    calls = []
    real = tracking.TrackingResult._published
    monkeypatch.setattr(tracking.TrackingResult, "_published", lambda self, r: calls.append(1) or real(self, r))
    first = tr.published(rules)
    first["monthly"].loc[0, "count"] = "changed"
    tr.readings(rules)
    again = tr.published(rules)
    assert calls == [1]
    fresh = real(tr, rules)
    for name in ("monthly", "annual"):
        pd.testing.assert_frame_equal(again[name], fresh[name], check_exact=True)


def _rules():
    from sveval.pipeline.disclosure import DisclosureRules, SourceRule

    return DisclosureRules(source="t", rules={
        "hospital": SourceRule(suppress_min=1, suppress_max=7, round_to=5, secondary=True),
        "police": SourceRule(), "none": SourceRule(exempt=True)})


def _full(plan) -> tuple:
    return plan_doc(plan), plan._raw, plan._units


def test_cached_plan_is_the_same_plan(inputs, tmp_path, monkeypatch):
    """A plan read from the cache equals the computed one: every shown value, raw value, unit and
    statistic (and is not computed again)."""
    from sveval.pipeline import disclosure

    _, _, (monthly, rules, parents) = inputs
    computed = fresh_plan(monthly, rules, parents, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))  # no temporary file left

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(disclosure, "_plan", fail)
    cached = fresh_plan(monthly, rules, parents, cache_dir=tmp_path)
    assert cached is not computed
    assert _full(cached) == _full(computed)


def _tamper(path: Path, how: str) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if how == "key":
        doc["key"] = "0" * 64
    elif how == "unrounded":  # publish a count as it is
        cell = next(c for c in doc["cells"] if isinstance(c[3], int) and c[4] % 5)
        cell[3] = int(cell[4])
    elif how == "small":  # publish a suppressed small count
        cell = next(c for c in doc["cells"] if c[3] == "*" and 1 <= c[4] <= 7)
        cell[3] = 5
    elif how == "raw":
        doc["cells"][0][4] += 1
    elif how == "types":
        doc["stats"]["cells"] = str(doc["stats"]["cells"])
    elif how == "shape":
        doc["cells"][0] = doc["cells"][0][:3]
    elif how == "missing":
        doc["cells"].pop()
    elif how == "version":
        doc["algorithm"] = -1
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.mark.parametrize("how", ["garbage", "empty", "list", "key", "unrounded", "small", "raw", "types",
                                 "shape", "missing", "version", "writable"])
def test_damaged_or_tampered_cache_is_recomputed(how, tmp_path, monkeypatch):
    """A cache file that is not valid JSON, not a plan, of another key or version, of the wrong
    types, or that does not fit the input (other cells or raw values, a published value that is
    not the rounding of a publishable count), or that others may write, is ignored: the plan is
    computed again (the same plan) and the file rewritten."""
    import os

    from sveval.pipeline import disclosure

    monthly, rules = _synthetic(3), _rules()
    computed = fresh_plan(monthly, rules, {"m_u25": "m"}, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.json")
    if how == "garbage":
        path.write_bytes(b"\x00{not json")
    elif how == "empty":
        path.write_text("", encoding="utf-8")
    elif how == "list":
        path.write_text("[]", encoding="utf-8")
    elif how == "writable":
        if not hasattr(os, "getuid"):
            pytest.skip("no file ownership here")
        path.chmod(0o666)
    else:
        _tamper(path, how)
    calls = []
    real = disclosure._plan
    monkeypatch.setattr(disclosure, "_plan", lambda *a: calls.append(1) or real(*a))
    again = fresh_plan(monthly, rules, {"m_u25": "m"}, cache_dir=tmp_path)
    assert calls == [1]
    assert _full(again) == _full(computed)
    # rewritten: the next reader uses it
    calls.clear()
    assert _full(fresh_plan(monthly, rules, {"m_u25": "m"}, cache_dir=tmp_path)) == _full(computed)
    assert calls == []


def test_other_data_other_key(tmp_path):
    """A changed count, other rules or another parent give another cache file; unchanged input the
    same one."""
    monthly, rules = _synthetic(4), _rules()
    fresh_plan(monthly, rules, {"m_u25": "m"}, cache_dir=tmp_path)
    fresh_plan(monthly.copy(), rules, {"m_u25": "m"}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    changed = monthly.copy()
    changed.loc[changed.index[0], "count"] += 1
    fresh_plan(changed, rules, {"m_u25": "m"}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2
    fresh_plan(monthly, rules, {}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 3
    from sveval.pipeline.disclosure import SourceRule

    other = rules.model_copy(update={"rules": {
        **rules.rules, "hospital": SourceRule(suppress_min=1, suppress_max=7, round_to=10, secondary=True)}})
    fresh_plan(monthly, other, {"m_u25": "m"}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_concurrent_writers(tmp_path):
    """Kernels writing the same plan at once: every reader sees a whole, valid plan."""
    from concurrent.futures import ThreadPoolExecutor

    from sveval.pipeline import disclosure

    monthly, rules = _synthetic(5), _rules()
    plan = fresh_plan(monthly, rules, {"m_u25": "m"})
    key = "a" * 64
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: disclosure._write_plan(tmp_path, key, plan), range(24)))
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]
    doc = json.loads((tmp_path / f"{key}.json").read_text(encoding="utf-8"))
    assert doc["key"] == key and len(doc["cells"]) == len(plan._raw)


if __name__ == "__main__":  # regenerate the references
    import tempfile

    src = Path(sys.argv[1])
    REFERENCE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        for variant in VARIANTS:
            data = src if variant == "example" else small_counts_copy(src, Path(d) / "small")
            root = _project(Path(d) / f"project-{variant}", data)
            doc = plan_doc(fresh_plan(*plan_inputs(root)))
            (REFERENCE / f"plan_{variant}.json").write_text(json.dumps(doc, indent=0) + "\n",
                                                            encoding="utf-8")
            print(variant, doc["stats"])
