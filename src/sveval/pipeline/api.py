"""The public API for evaluators (re-exported as ``sveval.prepare``, ``fit``, ``save``, ``plan``).

::

    import sveval

    ctx = sveval.prepare("parameters/evaluations/youth-navigators-fte-its.yaml")
    result = sveval.fit(ctx)
    record = sveval.save(ctx, result, "reports/evaluations/youth-navigators-fte-its.json")
"""

from __future__ import annotations

from sveval.pipeline.context import EvaluationContext, prepare, prepare_notebook, prepare_spec
from sveval.pipeline.designs import DESIGNS, run_design
from sveval.pipeline.planning import plan
from sveval.pipeline.record import build_record, read_record, save, write_record
from sveval.result import Result


def fit(ctx: EvaluationContext) -> Result:
    """Run the evaluation's design (``design:`` in the parameter file) on its prepared data."""
    return run_design(ctx)


__all__ = ["prepare", "prepare_notebook", "prepare_spec", "fit", "save", "plan", "build_record",
           "read_record", "write_record", "DESIGNS", "EvaluationContext"]
