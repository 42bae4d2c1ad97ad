"""The result record: the one typed document every evaluation publishes.

Built only by :func:`build_record` (a completed evaluation) or :func:`failure_record` (a failed
run), written only by :func:`write_record` and read only by :func:`read_record`; the site and the
returns read records through these functions, never through ad-hoc JSON parsing.

The JSON Schema of the record is generated from these models (:func:`record_schema`) and
committed as ``src/sveval/schemas/result-record.schema.json`` for people who read result JSON with
other tools; a test keeps the two in step. ``schema_version`` changes whenever a field is removed
or changes meaning (adding an optional field does not change it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sveval._version import __version__
from sveval.errors import PublishError, SvevalError
from sveval.paths import WORK_PREFIX, sha256_file, write_json_atomic
from sveval.pipeline.context import EvaluationContext
from sveval.result import CheckName, Result, Status

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EffectRecord(_Model):
    """One estimated effect (see :class:`sveval.result.Effect`); infinite bounds are ``null``."""

    name: str
    scale: Literal["rate_ratio", "difference", "percent_change"]
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None
    better_if: Literal["lower", "higher"] = "lower"
    description: str = ""
    ci_level: float = 0.95
    significant: bool = False
    unit: str = Field(default="", description="the effect's unit: '% change' for rate ratios as shown, "
                      "or the outcome's own scale for differences (events per month, rate per 100,000 "
                      "population per month, log points, the measure's units)")


class PreventedRecord(_Model):
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    period_start: str = ""
    period_end: str = ""
    months: int = 0
    unit: str = "events"


class CheckRecord(_Model):
    name: CheckName
    description: str
    statistic: float | None = None
    p_value: float | None = None
    passed: bool | None = None
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class PowerRecord(_Model):
    model_config = ConfigDict(extra="allow")  # simulation bookkeeping may add fields

    mde: float | None
    target_power: float = 0.8
    alpha: float = 0.05
    post_months: int = 0
    power_at: dict[str, float | None] = Field(default_factory=dict)
    n_sim: int = 0
    underpowered: bool = False
    threshold: float = 0.3
    method: str = ""


class Evidence(_Model):
    """Maryland Scientific Methods Scale level (:mod:`sveval.pipeline.evidence`)."""

    level: int = Field(ge=1, le=5)
    label: str
    short: str
    reason: str = ""


class DisclosureControl(_Model):
    class_: str = Field(alias="class")
    rule: str
    controlled: list[str] = Field(default_factory=list)
    suppressed_points: int = 0
    exempt: str = ""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PeriodRange(_Model):
    start: str
    end: str


class Provenance(_Model):
    model_config = ConfigDict(extra="allow")

    parameters: dict[str, Any] | None = None
    parameter_file: str | None = None
    data_source: str | None = None
    data_files: int | None = None
    data_sha256: str | None = None
    data_file_hashes: dict[str, str] | None = None
    sveval_version: str
    git_commit: str | None = None
    generated_at: str = Field(description="declared timestamp: the only field that differs between identical runs")


class FailureRecord(_Model):
    """Where and how a failed run failed (:class:`sveval.pipeline.executor.CellFailure`)."""

    cell: int | None = Field(default=None, description="failing cell's position in the notebook (1-based)")
    cell_id: str | None = None
    first_line: str = Field(default="", description="first line of the failing cell")
    exception: str = Field(description="the exception's class name")
    message: str = ""
    dead_kernel: bool = Field(default=False, description="the kernel died while the cell ran")


class LastGood(_Model):
    """The last completed result, kept while later runs fail."""

    result: str = Field(description="path of the kept result JSON, relative to the reports folder")
    notebook: str | None = None
    generated_at: str | None = None


class ResultRecord(_Model):
    """The result JSON of one evaluation (``reports/evaluations/<id>.json``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str
    title: str
    description: str = ""
    design: Literal["its", "did", "synth"]
    method: str = ""
    measure: str
    measure_name: str = ""
    measure_source: str | None = None
    better_if: Literal["lower", "higher"] = "lower"
    area: list[str]
    area_name: str = ""
    comparison: list[str] = Field(default_factory=list)
    intervention: str
    intervention_title: str = ""
    priority: int | None = None
    intervention_start: str | None = None
    period: PeriodRange | None = None
    sensitivity_of: str | None = Field(
        default=None, description="id of the evaluation this one is a sensitivity variant of"
    )
    status: Status
    error: str | None = Field(default=None, description="why a failed run failed")
    failure: FailureRecord | None = Field(default=None, description="the failing cell and exception")
    last_good: LastGood | None = Field(default=None, description="the last good result of a failed run")
    notebook: str | None = None
    design_variant: str | None = Field(default=None, description="its, cits, did, twfe, event_study, staggered, synth")
    effects: list[EffectRecord] = Field(default_factory=list)
    prevented: PreventedRecord | None = None
    diagnostics: list[CheckRecord] = Field(default_factory=list)
    power: PowerRecord | None = None
    warnings: list[str] = Field(default_factory=list)
    n_obs: int = 0
    details: dict[str, Any] = Field(default_factory=dict)
    series: dict[str, list[Any]] | None = None
    measure_disclosure: str | None = None
    evidence: Evidence | None = None
    value_for_money: dict[str, Any] | None = None
    value_for_money_reason: str | None = None
    disclosure_control: DisclosureControl | None = None
    provenance: Provenance

    @model_validator(mode="after")
    def _completed_has_effects(self) -> ResultRecord:
        if self.status == Status.COMPLETED and not self.effects:
            raise ValueError("a completed result needs at least one effect in 'effects'")
        return self

    @property
    def completed(self) -> bool:
        return self.status == Status.COMPLETED

    def to_json(self) -> dict[str, Any]:
        """The JSON document (field order fixed, ``null`` for absent optional parts)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


def record_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ResultRecord` (committed under ``src/sveval/schemas/``)."""
    schema = ResultRecord.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://sveval.invalid/schemas/result-record-v{SCHEMA_VERSION}.json"
    return schema


def _validate(data: dict[str, Any], where: str) -> ResultRecord:
    try:
        return ResultRecord.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(x) for x in e['loc'])}': {e['msg']}" for e in exc.errors()[:10]
        )
        raise PublishError(f"{where}: not a valid result record ({problems})") from None




def declared_timestamp() -> str:
    """The declared timestamp of a run (``provenance.generated_at``, the returns' "generated at"):
    now in UTC, or ``$SOURCE_DATE_EPOCH`` when set (reproducible builds: then nothing differs
    between two runs on the same inputs)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


_sha256 = sha256_file


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
        "generated_at": declared_timestamp(),
    }


def _draft(ctx: EvaluationContext, result: Result) -> dict[str, Any]:
    """The record's fields before assessment and disclosure control (a plain dict)."""
    body = result.to_dict()
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
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
        "sensitivity_of": ctx.spec.sensitivity_of,
        "status": Status.COMPLETED.value,
    }
    record["design_variant"] = body.pop("design")  # e.g. cits for a controlled ITS
    record.update(body)
    record["measure_disclosure"] = ctx.measure.disclosure
    record["provenance"] = provenance(ctx)
    return record


def build_record(ctx: EvaluationContext, result: Result) -> ResultRecord:
    """The result record of a completed evaluation: estimates, evidence strength, value for money
    and provenance, after disclosure control.

    The result JSON is what gets published, so disclosure control is applied here, once, by the
    rules in ``parameters/disclosure.yaml`` (:func:`sveval.pipeline.disclosure.control_record`).
    """
    from sveval.pipeline import disclosure, evidence, tracking, value

    record = _draft(ctx, result)
    record["evidence"] = evidence.assess(record)
    vfm, reason = value.assess_with_reason(
        record, ctx.intervention, ctx.measure, parameters_dir=ctx.paths.parameters
    )
    record["value_for_money"] = vfm
    record["value_for_money_reason"] = reason
    rules = disclosure.load_rules(ctx.paths.parameters)
    # a protected measure's observed months are the cells the tracking tables and returns publish
    plan = tracking.project_plan(ctx.paths.parameters, rules, ctx.measure.id) \
        if rules.protects(ctx.measure.disclosure) else None
    controlled = disclosure.control_record(record, rules, plan=plan)
    return _validate(controlled, f"evaluation '{ctx.spec.id}'")


def failure_record(ctx: EvaluationContext, error: str, *, notebook: str | None = None,
                   failure: dict[str, Any] | None = None,
                   last_good: dict[str, Any] | None = None) -> ResultRecord:
    """The record of a failed run: identification, the error (with the failing cell and exception
    when known) and where the last good result is kept; no estimates."""
    return _validate({
        "id": ctx.spec.id, "title": ctx.spec.title, "description": ctx.spec.description,
        "design": ctx.spec.design, "measure": ctx.measure.id, "measure_name": ctx.measure.name,
        "measure_source": ctx.measure.source, "better_if": ctx.measure.better_if,
        "area": ctx.treated, "area_name": ctx.area_label, "comparison": ctx.comparison,
        "intervention": ctx.intervention.id, "intervention_title": ctx.intervention.title,
        "priority": ctx.intervention.priority, "intervention_start": ctx.intervention_start,
        "period": {"start": ctx.start, "end": ctx.end}, "sensitivity_of": ctx.spec.sensitivity_of,
        "status": Status.FAILED.value, "error": error, "notebook": notebook,
        "failure": failure, "last_good": last_good,
        "warnings": [f"Evaluation failed: {error}"],
        "measure_disclosure": ctx.measure.disclosure,
        "provenance": {"sveval_version": __version__,
                       "generated_at": declared_timestamp()},
    }, f"evaluation '{ctx.spec.id}'")


def write_record(path: Path | str, record: ResultRecord, *, create_folder: bool = True) -> None:
    """Write a record atomically (a temporary file swapped in: never a half-written file)."""
    write_json_atomic(Path(path), record.to_json(), create_folder=create_folder)


def read_record(path: Path | str) -> ResultRecord:
    """Read and validate one result JSON, raising :class:`PublishError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PublishError(f"{path}: cannot read the result JSON ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublishError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-run the evaluation to rewrite it"
        ) from exc
    if not isinstance(data, dict):
        raise PublishError(f"{path}: expected a JSON object (a result record), got {type(data).__name__}")
    rid = data.get("id")
    if rid is not None and str(rid) != path.stem:
        raise PublishError(
            f"{path}: field 'id' is {rid!r} but the file is named '{path.name}'; "
            f"expected the file to be '{rid}.json'"
        )
    version = data.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise PublishError(f"{path}: field 'schema_version' is {version!r}; this sveval reads version "
                           f"{SCHEMA_VERSION}: re-run the evaluation")
    data.setdefault("schema_version", SCHEMA_VERSION)
    return _validate(data, str(path))


def save(ctx: EvaluationContext, result: Result, path: Path | str) -> ResultRecord:
    """Build the record of a completed evaluation and write it; returns the record.

    A notebook run by ``sveval run`` writes into the run's private work folder. When that folder is
    gone, the run has ended (killed, and its successor cleaned up): the kernel is an orphan finishing
    its cell, and must not create the folder again (it would be left behind), so this raises."""
    path = Path(path)
    in_work = path.parent.name.startswith(WORK_PREFIX)
    record = build_record(ctx, result)
    try:
        write_record(path, record, create_folder=not in_work)
    except FileNotFoundError:
        if not in_work or path.parent.is_dir():
            raise
        raise SvevalError(f"{path.parent}: the run that started this notebook has ended; "
                          "its result is not written") from None
    return record
