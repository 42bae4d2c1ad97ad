"""Record the full ITS results of the two slow example evaluations (issue 15, "Fast").

Run from the repository root with the code whose results are to be kept:

    .venv/bin/python tests/reference/its_slow/record_its_slow.py

It generates the built-in example in a temporary folder, fits ``focused-deterrence-violence-arima``
(regression with AR(1) errors by exact ML) and ``youth-navigators-fte-its`` (negative binomial)
with ``sveval.fit`` and writes every number of the result that the speed work must keep -
effects, coefficient table, prevented events, series, the placebo / sensitivity rows and the
power study - to ``its_slow_reference.json`` beside this script. ``tests/test_its_slow_models.py``
compares new code against it. The committed values were recorded before any of the speed-ups
(their commit is in the JSON).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EVALUATIONS = ("focused-deterrence-violence-arima", "youth-navigators-fte-its")


def _num(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    v = float(v)
    return v if math.isfinite(v) else str(v)


def result_record(result) -> dict:
    """The numbers of a ``sveval.Result`` that must not change, as plain JSON."""
    effects = {e.name: {k: _num(getattr(e, k)) for k in ("estimate", "ci_low", "ci_high", "p_value")}
               for e in result.effects}
    coef = result.tables["coefficients"]
    coefficients = {
        str(r["term"]): {k: _num(r[k]) for k in ("estimate", "se", "ci_low", "ci_high", "p_value", "df")}
        for _, r in coef.iterrows()
    }
    s = result.series
    series = {c: [_num(v) for v in s[c].to_numpy(float)]
              for c in ("observed", "fitted", "counterfactual", "cf_low", "cf_high")}
    p = result.prevented
    prevented = None if p is None else {k: _num(getattr(p, k)) for k in ("estimate", "ci_low", "ci_high")}
    checks = {}
    for c in result.diagnostics:
        rows = c.data.get("placebos") or c.data.get("variants") or []
        checks[c.name] = {
            "statistic": _num(c.statistic), "p_value": _num(c.p_value), "passed": c.passed,
            "rows": [{k: _num(r.get(k)) for k in ("label", "estimate", "ci_low", "ci_high", "p_value",
                                                   "significant", "error")} for r in rows],
        }
    pw = result.power
    power = None if pw is None else {
        "mde": _num(pw.mde), "n_sim": pw.n_sim, "mc_se": _num(pw.mc_se), "underpowered": pw.underpowered,
        "power_at": {k: _num(v) for k, v in pw.power_at.items()},
    }
    d = result.details
    return {"effects": effects, "coefficients": coefficients, "series": series, "prevented": prevented,
            "checks": checks, "power": power,
            "details": {"ar": [_num(a) for a in d["ar"]], "scale": _num(d["scale"]),
                        "nb_alpha": _num(d["nb_alpha"]), "dispersion": _num(d["dispersion"])}}


def main() -> None:
    from sveval.data.example import ensure_example
    from sveval.pipeline.api import fit, prepare

    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import make_project

        project = make_project(Path(tmp) / "project", ensure_example(Path(tmp) / "example"))
        out = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True).stdout.strip(), "evaluations": {}}
        for eid in EVALUATIONS:
            ctx = prepare(project / "parameters" / "evaluations" / f"{eid}.yaml", root=project)
            out["evaluations"][eid] = result_record(fit(ctx))
        shutil.rmtree(project)
    (HERE / "its_slow_reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
