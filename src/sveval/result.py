"""The result object shared by every design, and small helpers around it.

Every design (ITS, controlled ITS, DiD, event study, staggered DiD, synthetic control) returns a
:class:`Result`. The pipeline turns it into the typed result record (:mod:`sveval.pipeline.record`) that
the site and the returns read, so a new design needs nothing but a function that builds one.
This module imports nothing else from sveval: it is the bottom of the design layers.

Conventions (``../shared/design.md``):

* frozen dataclasses; JSON is written from them (:meth:`Result.to_dict`), never from ad-hoc dicts;
* every effect carries its ``scale`` (``rate_ratio``, ``difference``, ``percent_change``) and the
  direction in which the measure improves;
* ``series`` is the frame behind the main figure (observed vs counterfactual with its interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd

Scale = Literal["rate_ratio", "difference", "percent_change"]


class Status(StrEnum):
    """Status of an evaluation's result record."""

    COMPLETED = "completed"
    FAILED = "failed"


class CheckName(StrEnum):
    """Every diagnostic and robustness check a design may report (one name each)."""

    AUTOCORRELATION = "autocorrelation"
    OVERDISPERSION = "overdispersion"
    PLACEBO_IN_TIME = "placebo_in_time"
    PLACEBO_IN_SPACE = "placebo_in_space"
    SENSITIVITY_DATE = "sensitivity_date"
    SENSITIVITY_SEASONALITY = "sensitivity_seasonality"
    PRE_TREND = "pre_trend"
    PRE_TREND_POWER = "pre_trend_power"
    PARALLEL_TRENDS_SENSITIVITY = "parallel_trends_sensitivity"
    ESTIMATOR_AGREEMENT = "estimator_agreement"
    BALANCE = "balance"
    PRE_FIT = "pre_fit"
    DONOR_WEIGHTS = "donor_weights"
Direction = Literal["lower", "higher"]

SCALES: tuple[str, ...] = ("rate_ratio", "difference", "percent_change")

#: the unit an effect states when its design gives none more specific. A rate ratio is shown to
#: readers as a percentage change; a difference is on the outcome's own scale, which the design
#: names (events per month, rate per 100,000 per month, log points, the measure's units).
DEFAULT_UNITS = {
    "rate_ratio": "rate ratio (shown as % change)",
    "percent_change": "% change",
    "difference": "difference in the outcome",
}


def _clean(value: Any) -> Any:
    """Make a value JSON-safe and deterministic (NaN/inf -> None, numpy -> python)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float(f"{value:.10g}")
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return value


@dataclass(frozen=True)
class Effect:
    """One estimated effect.

    ``estimate``, ``ci_low`` and ``ci_high`` are on ``scale``: a rate ratio of 0.8 means a 20% fall;
    a difference is in the outcome's own units, which ``unit`` states (``events per month``,
    ``rate per 100,000 population per month``, ``log points``...). ``better_if`` says whether
    lower or higher values of the measure are an improvement (for violence, ``lower``).
    """

    name: str
    scale: Scale
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float | None = None
    better_if: Direction = "lower"
    description: str = ""
    ci_level: float = 0.95
    unit: str = ""

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"Effect scale must be one of {SCALES}, got {self.scale!r}")
        if not self.unit:
            object.__setattr__(self, "unit", DEFAULT_UNITS[self.scale])

    @property
    def null_value(self) -> float:
        return 1.0 if self.scale == "rate_ratio" else 0.0

    @property
    def significant(self) -> bool:
        """True when the interval excludes the null value."""
        lo, hi = self.ci_low, self.ci_high
        if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
            return False
        return not (lo <= self.null_value <= hi)

    @property
    def improved(self) -> bool | None:
        """True if the interval lies wholly on the improving side, False if wholly on the worse side."""
        if not self.significant:
            return None
        below = self.ci_high < self.null_value
        return below if self.better_if == "lower" else not below

    def percent(self) -> tuple[float, float, float]:
        """Estimate and interval as percent change (only for rate ratios and percent changes)."""
        if self.scale == "rate_ratio":
            return tuple(100.0 * (v - 1.0) for v in (self.estimate, self.ci_low, self.ci_high))
        if self.scale == "percent_change":
            return (self.estimate, self.ci_low, self.ci_high)
        raise ValueError("percent() needs a rate_ratio or percent_change effect")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["significant"] = self.significant
        return _clean(d)


@dataclass(frozen=True)
class Prevented:
    """Offences (or events) prevented over the post period: counterfactual minus observed.

    Positive means fewer events than expected without the intervention.
    """

    estimate: float
    ci_low: float
    ci_high: float
    period_start: str = ""
    period_end: str = ""
    months: int = 0
    unit: str = "events"

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class Check:
    """A diagnostic or robustness check with a uniform shape.

    ``passed`` is True/False where the check has a verdict, None where it is descriptive only.
    ``data`` holds small JSON-safe details (e.g. the placebo estimates) for tables and figures.
    """

    name: str
    description: str
    statistic: float | None = None
    p_value: float | None = None
    passed: bool | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "name", CheckName(self.name))
        except ValueError:
            raise ValueError(f"unknown check name {self.name!r}; add it to sveval.result.CheckName "
                             f"(known: {', '.join(CheckName)})") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["name"] = str(self.name)
        return _clean(d)


@dataclass(frozen=True)
class Power:
    """Power and minimum detectable effect for the available (or planned) post period.

    ``mde`` is the smallest proportional fall (0.2 = 20%) detectable with ``target_power`` at
    ``alpha``; ``power_at`` maps proportional falls to simulated power. ``n_sim`` is the number of
    simulations used (a sequential rule may stop before the maximum) and ``mc_se`` the largest
    Monte Carlo standard error ``sqrt(p (1 - p) / n_sim)`` of the ``power_at`` values.
    """

    mde: float | None
    target_power: float = 0.8
    alpha: float = 0.05
    post_months: int = 0
    power_at: dict[str, float] = field(default_factory=dict)
    n_sim: int = 0
    underpowered: bool = False
    threshold: float = 0.3
    method: str = ""
    mc_se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True, eq=False)
class Result:
    """What every design returns.

    Attributes
    ----------
    design : short design key (``its``, ``cits``, ``did``, ``twfe``, ``event_study``, ``staggered``,
        ``synth``)
    method : one-line description of the model and inference (shown in reports)
    effects : the estimated effects; the first is the headline effect
    prevented : events prevented over the post period, if the design can say
    series : frame behind the main figure; columns ``period`` (YYYY-MM), ``observed``, ``fitted``,
        ``counterfactual``, ``cf_low``, ``cf_high``, ``post`` (bool) and optionally ``group``
    diagnostics : checks (autocorrelation, overdispersion, placebo, pre-trends, ...)
    power : power / MDE, if computed
    warnings : plain-English warnings for the report
    n_obs : number of observations used in the fit
    details : small JSON-safe extras (coefficients table, model options)
    tables : named frames for reports (e.g. ``coefficients``, ``event_study``); not in the JSON
    """

    design: str
    method: str
    effects: tuple[Effect, ...]
    prevented: Prevented | None = None
    series: pd.DataFrame | None = None
    diagnostics: tuple[Check, ...] = ()
    power: Power | None = None
    warnings: tuple[str, ...] = ()
    n_obs: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    # -- access -----------------------------------------------------------------------------------
    @property
    def headline(self) -> Effect:
        if not self.effects:
            raise ValueError("result has no effects")
        return self.effects[0]

    def effect(self, name: str) -> Effect:
        for e in self.effects:
            if e.name == name:
                return e
        raise KeyError(f"no effect named {name!r}; have {[e.name for e in self.effects]}")

    def check(self, name: str) -> Check:
        for c in self.diagnostics:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.diagnostics]}")

    def with_updates(self, **changes: Any) -> Result:
        """A copy with some fields replaced (results are immutable)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Result(**current)

    # -- CausalPy-style outputs ---------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """Effects as a table (one row per effect)."""
        rows = [
            {
                "effect": e.name,
                "scale": e.scale,
                "estimate": e.estimate,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "p_value": e.p_value,
            }
            for e in self.effects
        ]
        return pd.DataFrame(rows)

    def get_plot_data(self) -> pd.DataFrame:
        """The frame behind :meth:`plot`."""
        if self.series is None:
            raise ValueError("this result carries no series")
        return self.series.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (without record-level data: only aggregates and estimates)."""
        out: dict[str, Any] = {
            "design": self.design,
            "method": self.method,
            "effects": [e.to_dict() for e in self.effects],
            "prevented": self.prevented.to_dict() if self.prevented else None,
            "diagnostics": [c.to_dict() for c in self.diagnostics],
            "power": self.power.to_dict() if self.power else None,
            "warnings": list(self.warnings),
            "n_obs": int(self.n_obs),
            "details": _clean(self.details),
        }
        if self.series is not None:
            s = self.series.copy()
            for col in s.columns:
                if pd.api.types.is_bool_dtype(s[col]):
                    s[col] = s[col].astype(bool)
            out["series"] = _clean(s.to_dict(orient="list"))
        return out
