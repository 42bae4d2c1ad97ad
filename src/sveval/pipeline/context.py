"""From a parameter file to a :class:`~sveval.result.Result` and its result JSON.

This is the one Python entry point the notebooks, the runner and the CLI share::

    ctx = prepare("parameters/evaluations/nte-durham-its.yaml")   # validate + load data
    result = fit(ctx)                                             # run the design
    save(ctx, result, "reports/evaluations/nte-durham-its.json")  # result JSON with provenance

:func:`prepare` refuses an invalid evaluation before anything runs: unknown keys, measures,
interventions or areas; dates outside the data; a pre-period shorter than ``min_pre_months``;
a missing data file.

Quarterly, yearly and financial-year measures (periods ``2021-Q2``, ``2021``, ``2021/22``): the
window and the intervention start are periods of the measure's granularity; a month given for them
(an intervention's start in the registry is a month) is taken as the period holding it, and the
mapping is stated in :attr:`EvaluationContext.period_notes` (and in the result's warnings).
``min_pre_months`` and the three-month minimum post period stay months, converted to whole periods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from sveval.catalog import Catalog
from sveval.data.check import check_evaluation_series
from sveval.data.load import load_long
from sveval.data.series import measure_granularity
from sveval.errors import MISSING, DataError, SpecError
from sveval.paths import ProjectPaths
from sveval.periods import (
    PERIOD_NOUN,
    first_month,
    from_index,
    granularity_of,
    index_of,
    last_month,
    months_to_periods,
    to_granularity,
)
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
    #: the measure's period granularity: month, quarter, year or financial_year
    granularity: str = "month"
    #: how months given for a non-monthly measure were mapped to its periods
    period_notes: list[str] = field(default_factory=list)

    # -- convenient views -----------------------------------------------------------------------------
    @property
    def pre_months(self) -> int:
        if self.granularity != "month":
            return period_index(first_month(self.intervention_start)) - period_index(first_month(self.start))
        return period_index(self.intervention_start) - period_index(self.start)

    @property
    def post_months(self) -> int:
        if self.granularity != "month":
            return months_between(first_month(self.intervention_start), last_month(self.end))
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


def _periods_of(spec: EvaluationSpec, spec_path: Path, intervention: InterventionSpec,
                measure: MeasureSpec, have: pd.DataFrame, gran: str):
    """Window and intervention start of a quarterly, yearly or financial-year measure, in its
    periods: a month given is mapped to the period holding it (stated in the notes), a period of
    another granularity is refused. ``min_pre_months`` and the 3-month minimum post period are
    converted to whole periods (rounded up)."""
    noun = PERIOD_NOUN[gran]
    idx = have["period"].map(lambda q: index_of(q, gran))
    first, last = from_index(int(idx.min()), gran), from_index(int(idx.max()), gran)
    problems, notes = [], []

    def conv(key: str, value: str | None, default: str) -> str:
        if value is None:
            return default
        try:
            p, note = to_granularity(value, gran)
        except ValueError as exc:
            problems.append((key, value, f"measure '{measure.id}' is by {noun}: {exc}"))
            return default
        if note:
            notes.append(f"{key}: {note}")
        return p

    start = conv("period.start", spec.period.start, first)
    end = conv("period.end", spec.period.end, last)
    iv_key = "intervention_start" if spec.intervention_start else f"intervention '{intervention.id}' start"
    iv_start = conv(iv_key, spec.intervention_start or intervention.start, first)
    if problems:
        raise SpecError(spec_path, problems)
    i0, i1, iv = index_of(start, gran), index_of(end, gran), index_of(iv_start, gran)
    if i0 < index_of(first, gran):
        problems.append(("period.start", start, f"before the data, which start in {first}"))
    if i1 > index_of(last, gran):
        problems.append(("period.end", end, f"after the data, which end in {last}"))
    if not (i0 < iv <= i1):
        problems.append(("intervention_start", iv_start,
                         f"must fall inside the analysed period {start} to {end} (data cover {first} to {last})"))
    else:
        need = months_to_periods(spec.min_pre_months, gran)
        if iv - i0 < need:
            problems.append(("intervention_start", iv_start,
                             f"pre-period too short: {iv - i0} {noun}(s) from {start}; min_pre_months="
                             f"{spec.min_pre_months} is {need} {noun}(s) for a measure by {noun} "
                             f"(earliest allowed start {from_index(i0 + need, gran)})"))
        need_post = months_to_periods(3, gran)
        if i1 - iv + 1 < need_post:
            problems.append(("intervention_start", iv_start,
                             f"only {i1 - iv + 1} post-period {noun}(s); need at least {need_post} "
                             f"(3 months)"))
    if spec.design == "its" and measure.kind == "continuous":
        from sveval.designs.its_models import COUNT_MODELS

        if spec.its.model in COUNT_MODELS:
            problems.append(("its.model", spec.its.model, f"a count model, but measure '{spec.measure}' is "
                             "continuous; use auto, ols, newey_west, gls_ar or arima"))
    if spec.design == "did" and getattr(spec.did, "unit", "area") == "lsoa":
        problems.append(("did.unit", "lsoa", f"LSOA-level panels are monthly; measure '{measure.id}' "
                         f"is by {noun}: use did.unit: area"))
    if problems:
        raise SpecError(spec_path, problems)
    if gran != "month":
        notes.append(f"measure '{measure.id}' is by {noun}: min_pre_months={spec.min_pre_months} "
                     f"taken as {months_to_periods(spec.min_pre_months, gran)} {noun}(s)")
    return start, end, iv_start, notes


def its_options(spec: EvaluationSpec, intervention: InterventionSpec):
    """The evaluation's ITS options with defaults from the registries filled in (the one place):
    an unset ``phase_in_months`` takes the intervention's phase-in from interventions.yaml."""
    if spec.its.phase_in_months is not None:
        return spec.its
    return spec.its.model_copy(update={"phase_in_months": int(intervention.phase_in_months or 0)})


def _load_long(spec: EvaluationSpec, spec_path: Path, paths: ProjectPaths, catalog: Catalog):
    d = load_long(spec.data, spec_path, paths, catalog)
    return d.long, d.files, d.data_dir


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
    spec = spec.model_copy(update={"its": its_options(spec, intervention)})
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
    gran = measure_granularity(long, spec.measure)
    if gran != "month":
        start, end, iv_start, notes = _periods_of(spec, spec_path, intervention, measure, have, gran)
    else:
        start, end, iv_start = _monthly_periods(spec, spec_path, intervention, measure, have)
        notes = []
    check_evaluation_series(long, measure, spec.areas, comparison, start, end, iv_start,
                            path=files[0] if spec.data.source == "csv" and files else spec_path)
    return EvaluationContext(
        spec=spec, spec_path=spec_path, paths=paths, catalog=catalog, measure=measure,
        intervention=intervention, treated=list(spec.areas), comparison=comparison,
        start=start, end=end, intervention_start=iv_start, long=long, data_files=files,
        data_dir=data_dir, granularity=gran, period_notes=notes,
    )


def _monthly_periods(spec: EvaluationSpec, spec_path: Path, intervention: InterventionSpec,
                     measure: MeasureSpec, have: pd.DataFrame) -> tuple[str, str, str]:
    """Window and intervention start of a monthly measure, checked against its data (every problem
    at once) and the design's options that need counts."""
    given = [(k, v) for k, v in (("period.start", spec.period.start), ("period.end", spec.period.end),
                                 ("intervention_start", spec.intervention_start))
             if v is not None and granularity_of(v) != "month"]
    if given:
        raise SpecError(spec_path, [(k, v, f"a {PERIOD_NOUN[granularity_of(v)]}, but measure "
                                     f"'{spec.measure}' is monthly: give a month as YYYY-MM")
                                    for k, v in given])
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
    return start, end, iv_start
