"""The public API for evaluators (re-exported as ``sveval.prepare``, ``fit``, ``save``, ``plan``).

::

    import sveval

    ctx = sveval.prepare("parameters/evaluations/youth-navigators-fte-its.yaml")
    result = sveval.fit(ctx)
    record = sveval.save(ctx, result, "reports/evaluations/youth-navigators-fte-its.json")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sveval.catalog import Catalog
from sveval.pipeline import context
from sveval.pipeline.context import EvaluationContext
from sveval.pipeline.designs import DESIGNS, check_inputs, run_design
from sveval.pipeline.planning import plan
from sveval.pipeline.record import build_record, read_record, save, write_record
from sveval.result import Result


def prepare(spec_path: Path | str, root: Path | None = None, catalog: Catalog | None = None) -> EvaluationContext:
    """Validate an evaluation parameter file against its schema, the registries and the data (the
    same checks the design needs), and load the data. Raises :class:`~sveval.errors.SpecError` or
    :class:`~sveval.errors.DataError` naming the file, field or row."""
    ctx = context.prepare(spec_path, root=root, catalog=catalog)
    check_inputs(ctx)
    return ctx


def prepare_spec(spec, spec_path: Path, root: Path | None = None, catalog: Catalog | None = None) -> EvaluationContext:
    """:func:`prepare` for an already loaded :class:`~sveval.spec.EvaluationSpec`."""
    ctx = context.prepare_spec(spec, spec_path, root=root, catalog=catalog)
    check_inputs(ctx)
    return ctx


def prepare_notebook(spec_path: str, namespace: dict[str, Any], root: str = "") -> EvaluationContext:
    """The notebooks' entry point: ``-p spec_path FILE`` or ``-f FILE`` (see
    :func:`sveval.pipeline.context.prepare_notebook`)."""
    ctx = context.prepare_notebook(spec_path, namespace, root)
    check_inputs(ctx)
    return ctx


def fit(ctx: EvaluationContext) -> Result:
    """Run the evaluation's design (``design:`` in the parameter file) on its prepared data."""
    return run_design(ctx)


__all__ = ["prepare", "prepare_notebook", "prepare_spec", "fit", "save", "plan", "build_record",
           "read_record", "write_record", "DESIGNS", "EvaluationContext"]
