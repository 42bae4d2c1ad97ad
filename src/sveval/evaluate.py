"""From a parameter file to a :class:`~sveval.designs.base.Result` and its result JSON.

This is the one Python entry point the notebooks, the runner and the CLI share::

    ctx = prepare("parameters/evaluations/nte-durham-its.yaml")   # validate + load data
    result = fit(ctx)                                             # run the design
    save(ctx, result, "reports/evaluations/nte-durham-its.json")  # result JSON with provenance

:func:`prepare` refuses an invalid evaluation before anything runs: unknown keys, measures,
interventions or areas; dates outside the data; a pre-period shorter than ``min_pre_months``;
a missing data file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

import sveval
from sveval.catalog import Catalog
from sveval.designs.base import Result
from sveval.errors import MISSING, DataError, SpecError
from sveval.paths import ProjectPaths
from sveval.spec import (
    EvaluationSpec,
    InterventionSpec,
    MeasureSpec,
    add_months,
    load_evaluation,
    load_model,
    months_between,
    period_index,
)


@dataclass
class EvaluationContext:
    """Everything a design needs: the validated spec, registries, resolved areas and the data."""

    spec: EvaluationSpec
    spec_path: Path
    paths: ProjectPaths
    catalog: Catalog
    measure: MeasureSpec
    intervention: InterventionSpec
    treated: list[str]
    comparison: list[str]
    start: str
    end: str
    intervention_start: str
    long: pd.DataFrame = field(repr=False)
    data_files: list[Path] = field(default_factory=list)
    data_dir: Path | None = None

    # -- convenient views -----------------------------------------------------------------------------
    @property
    def pre_months(self) -> int:
        return period_index(self.intervention_start) - period_index(self.start)

    @property
    def post_months(self) -> int:
        return months_between(self.intervention_start, self.end)

    @property
    def area_label(self) -> str:
        return self.catalog.areas_label(self.treated)

    def series(self, areas: list[str] | None = None) -> pd.DataFrame:
        """Monthly series summed over ``areas`` (default: treated): period, count, population."""
        from sveval.data.series import area_series

        return area_series(self.long, self.measure.id, areas or self.treated, self.start, self.end)

    def comparison_series(self) -> pd.DataFrame | None:
        if not self.comparison:
            return None
        return self.series(self.comparison)

    def panel(self) -> pd.DataFrame:
        """Area x month panel of treated and comparison areas: period, area_code, count, population."""
        from sveval.data.series import area_panel

        return area_panel(self.long, self.measure.id, self.treated + self.comparison, self.start, self.end)

    @cached_property
    def lsoa_panel(self) -> pd.DataFrame:
        """LSOA x month panel of the measure in the treated (and comparison) areas (example data)."""
        if self.data_dir is None:
            raise DataError(
                "LSOA-level panels need record-level data; a long CSV only has area totals",
                path=self.spec_path,
            )
        from sveval.data.ingest import load_example_lsoa

        areas = self.treated + self.comparison
        df = load_example_lsoa(self.data_dir, self.catalog, self.measure.id)
        df = df[df["area_code"].isin(areas)]
        return df[(df["period"] >= self.start) & (df["period"] <= self.end)].reset_index(drop=True)


def _load_long(spec: EvaluationSpec, spec_path: Path, paths: ProjectPaths, catalog: Catalog):
    if spec.data.source == "csv":
        from sveval.data.ingest import read_long_csv

        p = Path(spec.data.path)
        if not p.is_absolute():
            p = (spec_path.parent / p).resolve()
        if not p.exists():
            raise SpecError(spec_path, [("data.path", spec.data.path, f"file not found: {p}")])
        return read_long_csv(p), [p], None
    from sveval.data.example import ensure_example
    from sveval.data.ingest import load_example_long

    data_dir = ensure_example(paths.example_data)
    long = load_example_long(data_dir, catalog)
    files = sorted(x for x in data_dir.rglob("*") if x.is_file() and x.suffix in (".csv", ".json"))
    return long, files, data_dir


def prepare(spec_path: Path | str, root: Path | None = None, catalog: Catalog | None = None) -> EvaluationContext:
    """Validate an evaluation parameter file against the registries and the data; load the data."""
    spec_path = Path(spec_path).resolve()
    spec = load_evaluation(spec_path)
    return prepare_spec(spec, spec_path, root=root, catalog=catalog)


def prepare_notebook(spec_path: str, namespace: dict[str, Any], root: str = "") -> EvaluationContext:
    """Entry point of the evaluation notebooks.

    Works both ways papermill can be called: ``-p spec_path parameters/evaluations/<id>.yaml``
    (the runner's way), or ``-f parameters/evaluations/<id>.yaml``, which injects the parameter
    file's keys as notebook variables; those are read back from ``namespace`` (the notebook's
    ``globals()``) and validated exactly like a file.
    """
    root_path = Path(root) if root else None
    if spec_path:
        return prepare(spec_path, root=root_path)
    fields = {k: namespace[k] for k in EvaluationSpec.model_fields if k in namespace}
    if not fields:
        raise SpecError(
            None,
            [("spec_path", MISSING, "no evaluation given: run papermill with -p spec_path "
              "parameters/evaluations/<id>.yaml, or with -f parameters/evaluations/<id>.yaml")],
        )
    paths = ProjectPaths(root_path) if root_path else ProjectPaths.discover()
    pseudo = paths.evaluation_specs / f"{fields.get('id', 'papermill-parameters')}.yaml"
    spec = load_model(EvaluationSpec, pseudo, data=fields)
    return prepare_spec(spec, pseudo, root=paths.root)


def prepare_spec(
    spec: EvaluationSpec, spec_path: Path, root: Path | None = None, catalog: Catalog | None = None
) -> EvaluationContext:
    """Validate a loaded spec against the registries and the data; load the data."""
    paths = ProjectPaths(root) if root else ProjectPaths.discover(spec_path.parent)
    catalog = catalog or Catalog.load(paths.parameters)
    catalog.check_evaluation(spec, spec_path)
    measure = catalog.measures[spec.measure]
    intervention = catalog.interventions[spec.intervention]
    if spec.its.phase_in_months is None:  # default: the registry's phase-in of the intervention
        spec = spec.model_copy(
            update={"its": spec.its.model_copy(update={"phase_in_months": intervention.phase_in_months})}
        )
    comparison = catalog.resolve_comparison(spec)
    if spec.comparison is not None and not comparison and not spec.comparison.lsoas and spec.comparison.rule != "untreated_lsoas_same_areas":
        raise SpecError(spec_path, [("comparison", None, "the comparison group is empty after exclusions")])

    long, files, data_dir = _load_long(spec, spec_path, paths, catalog)
    # Data coverage of the measure in the treated areas
    have = long[(long["measure"] == spec.measure)]
    if have.empty:
        raise SpecError(
            spec_path,
            [("measure", spec.measure, "no rows for this measure in the data; measures present: "
              + ", ".join(sorted(long["measure"].unique())))],
        )
    missing_areas = sorted(set(spec.areas + comparison) - set(have["area_code"]))
    if missing_areas:
        raise SpecError(
            spec_path, [("areas", missing_areas, f"no '{spec.measure}' data for these areas")]
        )
    first, last = have["period"].min(), have["period"].max()
    start = spec.period.start or first
    end = spec.period.end or last
    iv_start = spec.intervention_start or intervention.start
    problems = []
    if period_index(start) < period_index(first):
        problems.append(("period.start", start, f"before the data, which start in {first}"))
    if period_index(end) > period_index(last):
        problems.append(("period.end", end, f"after the data, which end in {last}"))
    if not (period_index(start) < period_index(iv_start) <= period_index(end)):
        problems.append(
            ("intervention_start", iv_start,
             f"must fall inside the analysed period {start} to {end} (data cover {first} to {last})")
        )
    else:
        pre = period_index(iv_start) - period_index(start)
        if pre < spec.min_pre_months:
            problems.append(
                ("intervention_start", iv_start,
                 f"pre-period too short: {pre} months from {start}; at least min_pre_months="
                 f"{spec.min_pre_months} needed (earliest allowed start {add_months(start, spec.min_pre_months)})")
            )
        post = months_between(iv_start, end)
        if post < 3:
            problems.append(("intervention_start", iv_start, f"only {post} post-period month(s); need at least 3"))
    if spec.design == "its" and measure.kind == "continuous":
        from sveval.designs.its_models import COUNT_MODELS

        # count models and profile-likelihood intervals need counts; say so before anything runs
        if spec.its.model in COUNT_MODELS:
            problems.append(("its.model", spec.its.model, f"a count model, but measure '{spec.measure}' is "
                             "continuous; use auto, ols, newey_west, gls_ar or arima"))
        elif spec.its.interval == "profile":
            problems.append(("its.interval", "profile", f"profile-likelihood intervals are for count measures; "
                             f"measure '{spec.measure}' is continuous (use auto or wald)"))
    if problems:
        raise SpecError(spec_path, problems)
    return EvaluationContext(
        spec=spec, spec_path=spec_path, paths=paths, catalog=catalog, measure=measure,
        intervention=intervention, treated=list(spec.areas), comparison=comparison,
        start=start, end=end, intervention_start=iv_start, long=long, data_files=files,
        data_dir=data_dir,
    )


def fit(ctx: EvaluationContext) -> Result:
    """Run the evaluation's design."""
    if ctx.spec.design == "its":
        from sveval.designs import its

        return its.evaluate(ctx)
    if ctx.spec.design == "did":
        from sveval.designs import did

        return did.evaluate(ctx)
    if ctx.spec.design == "synth":
        from sveval.designs import synth

        return synth.evaluate(ctx)
    raise SpecError(ctx.spec_path, [("design", ctx.spec.design, "no such design")])  # pragma: no cover


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
        "sveval_version": sveval.__version__,
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
    from sveval import disclosure, evidence, value

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


def plan(
    spec_path: Path | str,
    effect: float = 0.2,
    *,
    power: float = 0.8,
    max_months: int = 60,
    n_sim: int = 200,
    root: Path | None = None,
):
    """Planning mode: months after launch until a fall of ``effect`` is detectable.

    Uses only data before the launch (``intervention_start``, or the intervention's start), so it
    answers before any post-period data exists; the launch may lie after the end of the data.
    Returns a :class:`sveval.power.Plan`.
    """
    from sveval.data.series import area_series
    from sveval.power import months_to_detect

    spec_path = Path(spec_path).resolve()
    spec = load_evaluation(spec_path)
    paths = ProjectPaths(root) if root else ProjectPaths.discover(spec_path.parent)
    catalog = Catalog.load(paths.parameters)
    catalog.check_evaluation(spec, spec_path)
    if spec.design != "its":
        raise SpecError(spec_path, [("design", spec.design, "planning mode is for ITS evaluations")])
    measure = catalog.measures[spec.measure]
    intervention = catalog.interventions[spec.intervention]
    launch = spec.intervention_start or intervention.start
    long, _, _ = _load_long(spec, spec_path, paths, catalog)
    have = long[long["measure"] == spec.measure]
    first, last = have["period"].min(), have["period"].max()
    start = spec.period.start or first
    pre_end = min(add_months(launch, -1), last)
    if period_index(pre_end) - period_index(start) + 1 < spec.min_pre_months:
        raise SpecError(
            spec_path,
            [("intervention_start", launch, f"fewer than min_pre_months={spec.min_pre_months} months of "
              f"data before the launch (data from {start})")],
        )
    series = area_series(long, spec.measure, list(spec.areas), start, pre_end)
    its = spec.its
    if its.phase_in_months is None:
        its = its.model_copy(update={"phase_in_months": intervention.phase_in_months})
    return months_to_detect(
        series, launch, effect, power=power, options=its, kind=measure.kind,
        better_if=measure.better_if, max_months=max_months, n_sim=n_sim,
    ), measure
