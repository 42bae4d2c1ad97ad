"""The result record: built, written and read here only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sveval import __version__
from sveval.pipeline.context import EvaluationContext
from sveval.result import Result


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(ctx: EvaluationContext) -> dict[str, Any]:
    """Parameters, data file hashes, package version, git commit and run time."""
    root = ctx.paths.root
    files = {}
    for p in ctx.data_files:
        try:
            key = str(p.relative_to(ctx.data_dir)) if ctx.data_dir else p.name
        except ValueError:
            key = p.name
        files[key] = _sha256(p)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {
        "parameters": ctx.spec.model_dump(mode="json"),
        "parameter_file": os.path.relpath(ctx.spec_path, root),
        "data_source": ctx.spec.data.source,
        "data_files": len(files),
        "data_sha256": digest,
        "data_file_hashes": files if len(files) <= 50 else {"(many files)": digest},
        "sveval_version": __version__,
        "git_commit": git_commit(root),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def result_record(ctx: EvaluationContext, result: Result) -> dict[str, Any]:
    """The result JSON document: identification, effects, prevented, warnings, provenance."""
    body = result.to_dict()
    record = {
        "id": ctx.spec.id,
        "title": ctx.spec.title,
        "description": ctx.spec.description,
        "design": ctx.spec.design,
        "method": body.pop("method"),
        "measure": ctx.measure.id,
        "measure_name": ctx.measure.name,
        "measure_source": ctx.measure.source,
        "better_if": ctx.measure.better_if,
        "area": ctx.treated,
        "area_name": ctx.area_label,
        "comparison": ctx.comparison,
        "intervention": ctx.intervention.id,
        "intervention_title": ctx.intervention.title,
        "priority": ctx.intervention.priority,
        "intervention_start": ctx.intervention_start,
        "period": {"start": ctx.start, "end": ctx.end},
        "status": "completed",
    }
    record["design_variant"] = body.pop("design")  # e.g. cits for a controlled ITS
    record.update(body)
    record["measure_disclosure"] = ctx.measure.disclosure
    record["provenance"] = provenance(ctx)
    return assess_and_control(record, ctx)


def assess_and_control(record: dict[str, Any], ctx: EvaluationContext) -> dict[str, Any]:
    """Add evidence strength and value for money, then apply disclosure control.

    The result JSON is what gets published, so disclosure control is applied here, once: observed
    hospital counts in ``series`` are suppressed/rounded by the rules in
    ``parameters/disclosure.yaml``; model estimates are exempt.
    """
    from sveval.pipeline import disclosure, evidence, value

    record["evidence"] = evidence.assess(record)
    vfm, reason = value.assess_with_reason(
        record, ctx.intervention, ctx.measure, parameters_dir=ctx.paths.parameters
    )
    record["value_for_money"] = vfm
    record["value_for_money_reason"] = reason
    rules = disclosure.load_rules(ctx.paths.parameters)
    controlled = disclosure.control_record(record, rules)
    # keep the provenance (and the key order) last
    controlled["provenance"] = controlled.pop("provenance")
    return controlled


def save(ctx: EvaluationContext, result: Result, path: Path | str) -> dict[str, Any]:
    """Write the result JSON atomically (never a half-written file) and return it."""
    record = result_record(ctx, result)
    write_json_atomic(Path(path), record)
    return record


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


