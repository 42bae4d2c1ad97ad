"""Planning mode: months after launch until an effect is detectable, from pre-launch data only."""

from __future__ import annotations

from pathlib import Path

from sveval.catalog import Catalog
from sveval.errors import SpecError
from sveval.paths import ProjectPaths
from sveval.periods import add_months, period_index
from sveval.pipeline.context import _load_long, its_options
from sveval.spec import load_evaluation


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
    Returns a :class:`sveval.designs.power.Plan`.
    """
    from sveval.data.series import area_series
    from sveval.designs.power import months_to_detect

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
    its = its_options(spec, intervention)
    return months_to_detect(
        series, launch, effect, power=power, options=its, kind=measure.kind,
        better_if=measure.better_if, max_months=max_months, n_sim=n_sim,
    ), measure
