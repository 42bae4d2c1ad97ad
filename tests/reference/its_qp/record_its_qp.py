"""Record the full results of the quasi-Poisson ITS evaluations of the example (issue 15, "Fast").

Run from the repository root with the code whose results are to be kept:

    .venv/bin/python tests/reference/its_qp/record_its_qp.py

It generates the built-in example in a temporary folder, fits ``focused-deterrence-violence-its``
(the default ITS evaluation: quasi-Poisson with an AR(1) working correlation),
``youth-navigators-knife-u25-quasipoisson`` and ``focused-deterrence-homicide-its`` with
``sveval.fit`` and writes every number the speed work on the quasi-Poisson refits must keep to
``its_qp_reference.json`` beside this script: the result record of
``tests/reference/its_slow/record_its_slow.py`` (effects, coefficients, series, prevented events,
placebo / sensitivity rows, power) and, for the power study, every simulated series' level-change
estimate, standard error and critical value (``sveval.designs.power._fit_sims``).
``tests/test_its_qp_refit.py`` compares new code against it. The committed values were recorded
before the quasi-Poisson refit speed-ups (their commit is in the JSON).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EVALUATIONS = ("focused-deterrence-violence-its", "youth-navigators-knife-u25-quasipoisson",
               "focused-deterrence-homicide-its")

_spec = importlib.util.spec_from_file_location("record_its_slow", HERE.parent / "its_slow" / "record_its_slow.py")
_slow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_slow)
_num = _slow._num


@contextlib.contextmanager
def capture_sims(sink: list):
    """Record the (b, se, crit) arrays of every power simulation run while active."""
    from sveval.designs import power

    original = power._fit_sims

    def wrapped(*args, **kwargs):
        b, se, crit = original(*args, **kwargs)
        sink.append({"b": [_num(v) for v in b], "se": [_num(v) for v in se],
                     "crit": [_num(v) for v in crit]})
        return b, se, crit

    power._fit_sims = wrapped
    try:
        yield sink
    finally:
        power._fit_sims = original


def record(project: Path, eid: str) -> dict:
    from sveval.pipeline.api import fit, prepare

    sims: list = []
    ctx = prepare(project / "parameters" / "evaluations" / f"{eid}.yaml", root=project)
    with capture_sims(sims):
        rec = _slow.result_record(fit(ctx))
    rec["sims"] = sims
    return rec


def main() -> None:
    from sveval.data.example import ensure_example

    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import make_project

        project = make_project(Path(tmp) / "project", ensure_example(Path(tmp) / "example"))
        out = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True).stdout.strip(), "evaluations": {}}
        for eid in EVALUATIONS:
            out["evaluations"][eid] = record(project, eid)
        shutil.rmtree(project)
    (HERE / "its_qp_reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
