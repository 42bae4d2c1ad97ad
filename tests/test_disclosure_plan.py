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

REFERENCE = Path(__file__).resolve().parent / "reference" / "disclosure"
HES = "aggregates/hes_sharp_object_admissions.csv"
MEASURES = ["knife_admissions", "knife_admissions_u25"]


def _small_counts(example: Path, dest: Path) -> Path:
    """A copy of the example whose hospital admissions are binomially thinned (p = 0.3), as in
    tests/test_disclosure_tables.py: many small counts, several audit rounds."""
    shutil.copytree(example, dest, symlinks=True)
    hes = pd.read_csv(dest / HES)
    rng = np.random.default_rng(11)
    hes["admissions"] = rng.binomial(hes["admissions"].to_numpy(), 0.3)
    (dest / HES).unlink()
    hes.to_csv(dest / HES, index=False)
    return dest


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
    data = example_data if request.param == "example" else _small_counts(example_data, tmp / "small")
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


if __name__ == "__main__":  # regenerate the references
    import tempfile

    src = Path(sys.argv[1])
    REFERENCE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        for variant in VARIANTS:
            data = src if variant == "example" else _small_counts(src, Path(d) / "small")
            root = _project(Path(d) / f"project-{variant}", data)
            doc = plan_doc(fresh_plan(*plan_inputs(root)))
            (REFERENCE / f"plan_{variant}.json").write_text(json.dumps(doc, indent=0) + "\n",
                                                            encoding="utf-8")
            print(variant, doc["stats"])
