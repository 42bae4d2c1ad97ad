"""Pydantic models of every parameter file, and loading with precise errors.

Files:

* ``parameters/measures.yaml``      -> :class:`MeasureRegistry`
* ``parameters/areas.yaml``         -> :class:`AreaRegistry`
* ``parameters/interventions.yaml`` -> :class:`InterventionRegistry`
* ``parameters/evaluations/<id>.yaml`` -> :class:`EvaluationSpec`

Every model forbids unknown keys, so a typo in a key is refused with the allowed keys listed.
Structural checks live here; checks that need the registries or the data (unknown measure, date
outside the data, pre-period too short) live in :mod:`sveval.catalog`.
"""

from __future__ import annotations

import difflib
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sveval.errors import MISSING, SpecError
from sveval.periods import (  # noqa: F401  (re-exported for parameter models)
    COVID_END,
    COVID_START,
    PERIOD_RE,
    add_months,
    granularity_of,
    index_of,
    months_between,
    parse_any_period,
    parse_financial_year,
    parse_period,
    period_from_index,
    period_index,
)

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


Period = Annotated[str, Field(description="month as YYYY-MM")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _period_validator(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: None if v is None else parse_period(v))


def _any_period_validator(*names: str):
    """A month, or a period of a quarterly/yearly/financial-year measure (``2021-Q2``, ``2021``,
    ``2021/22``); checked against the measure's granularity when the data are loaded."""
    return field_validator(*names, mode="before")(lambda cls, v: None if v is None else parse_any_period(v))


# ------------------------------------------------------------------------------------------------
# Registries
# ------------------------------------------------------------------------------------------------
SourceKind = Literal[
    "force_extract", "police_uk", "hospital", "homicide_index", "youth_justice", "aggregate"
]
PopulationBand = Literal["all", "0-24", "10-17", "18-35", "0-17"]


class MeasureSpec(_Strict):
    """One outcome measure. ``filter`` is a DuckDB SQL condition over the source's records."""

    id: str
    name: str
    short_name: str | None = None
    description: str
    kind: Literal["count", "rate", "continuous"] = "count"
    source: str = Field(description="id of a source in parameters/sources.yaml (for the built-in "
                        "example: " + ", ".join(SourceKind.__args__) + ")")
    filter: str | None = Field(
        default=None, description="SQL WHERE condition selecting records (record-level sources)"
    )
    age_max: int | None = Field(default=None, description="victim age limit, inclusive (splits)")
    parent: str | None = Field(default=None, description="measure this one splits (e.g. under-25s)")
    headline: bool = False
    priorities: list[int] = Field(default_factory=list)
    population_band: PopulationBand = "all"
    rate_per: int = 100_000
    disclosure: Literal["hospital", "police", "none"] = "police"
    better_if: Literal["lower", "higher"] = "lower"
    cost_category: str | None = Field(default=None, description="row of the costs-of-crime table")
    breaks: list[dict[str, str]] = Field(
        default_factory=list, description="known recording breaks: {period: YYYY-MM, name: ...}"
    )

    @field_validator("id", "source")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("ids use lower-case letters, digits, '_' and '-'")
        return v

    @field_validator("priorities")
    @classmethod
    def _prio(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if p not in (1, 2, 3, 4)]
        if bad:
            raise ValueError(f"priorities are 1-4 (the partnership's four priorities), got {bad}")
        return v


class MeasureRegistry(_Strict):
    measures: list[MeasureSpec]


class AreaSpec(_Strict):
    code: str
    name: str
    role: Literal["partnership", "comparison"]
    force: str | None = None
    region: str | None = None
    vru: bool = Field(default=False, description="a Violence Reduction Unit area (contaminated)")

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not AREA_CODE_RE.match(v):
            raise ValueError("area codes are 1-32 letters, digits, '_' or '-' (no spaces); with "
                             "code_system 'ons' (the default) 9-character ONS codes such as 'E06000047'")
        return v


AREA_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
ONS_CODE_RE = re.compile(r"^[EWSNK]\d{8}$")


class AreaRegistry(_Strict):
    partnership: str = Field(description="the partnership's name")
    partnership_code: str | None = None
    code_system: Literal["ons", "other"] = Field(
        default="ons", description="ons: area codes are 9-character ONS codes (checked); other: any "
        "code system (letters, digits, '_' and '-')")
    areas: list[AreaSpec]

    @model_validator(mode="after")
    def _ons_codes(self) -> AreaRegistry:
        if self.code_system != "ons":
            return self
        bad = [f"areas.{k}.code {a.code!r}" for k, a in enumerate(self.areas) if not ONS_CODE_RE.match(a.code)]
        if bad:
            raise ValueError(f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: not a 9-character "
                             "ONS code such as 'E06000047'; declare 'code_system: other' for another "
                             "code system")
        return self
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="named lists of area codes (e.g. most_similar)"
    )


class CohortSpec(_Strict):
    """One wave of a staggered roll-out: its start and the areas or LSOAs it covers."""

    start: str
    areas: list[str] = Field(default_factory=list)
    lsoas: list[str] = Field(default_factory=list)
    _p = _period_validator("start")

    @model_validator(mode="after")
    def _units(self) -> CohortSpec:
        if not self.areas and not self.lsoas:
            raise ValueError("a cohort needs 'areas' or 'lsoas'")
        return self


class InterventionSpec(_Strict):
    id: str
    title: str
    description: str = ""
    priority: int
    areas: list[str]
    lsoas: list[str] = Field(default_factory=list)
    start: str
    end: str | None = None
    phase_in_months: int = 0
    cost_gbp: float | None = Field(default=None, ge=0)
    cost_price_year: str | None = None
    funder: str | None = None
    measures: list[str] = Field(default_factory=list)
    cohorts: list[CohortSpec] = Field(
        default_factory=list, description="staggered roll-out waves; empty = every unit starts at start"
    )

    _p = _period_validator("start", "end")

    @model_validator(mode="after")
    def _cohorts(self) -> InterventionSpec:
        if self.cohorts:
            first = min(period_index(c.start) for c in self.cohorts)
            if first != period_index(self.start):
                raise ValueError("'start' must be the first cohort's start")
            in_cohorts = sorted(x for c in self.cohorts for x in c.lsoas)
            if self.lsoas and in_cohorts and sorted(self.lsoas) != in_cohorts:
                raise ValueError("'lsoas' must be exactly the union of the cohorts' LSOAs")
        return self

    @field_validator("priority")
    @classmethod
    def _prio(cls, v: int) -> int:
        if v not in (1, 2, 3, 4):
            raise ValueError("priority must be 1-4 (the partnership's four priorities)")
        return v


class InterventionRegistry(_Strict):
    interventions: list[InterventionSpec]
    priorities: dict[int, str] = Field(
        default_factory=dict, description="the partnership's priorities (1-4) by number: a short name each"
    )


# ------------------------------------------------------------------------------------------------
# Evaluation parameter files
# ------------------------------------------------------------------------------------------------
class DataSpec(_Strict):
    """Where the data comes from: the built-in example, the project's store, or a long CSV.

    ``example``: the built-in example (described by ``parameters/sources.yaml``, ingested into its
    store). ``store``: the project's own sources (``parameters/sources.yaml``), read from the store
    under ``data/store`` (new or changed files are ingested first). ``csv``: a long CSV with columns
    ``period`` (YYYY-MM), ``area_code``, ``measure``, ``count`` and optionally ``population``;
    relative paths are relative to the parameter file.
    """

    source: Literal["example", "csv", "store"] = "example"
    path: str | None = None

    @model_validator(mode="after")
    def _path_needed(self) -> DataSpec:
        if self.source == "csv" and not self.path:
            raise ValueError("data.source 'csv' needs data.path: a long CSV file")
        if self.source != "csv" and self.path:
            raise ValueError("data.path is only used with data.source 'csv'")
        return self


class PeriodSpec(_Strict):
    start: str | None = None
    end: str | None = None
    _p = _any_period_validator("start", "end")


class BreakSpec(_Strict):
    period: str
    name: str
    _p = _period_validator("period")


class ComparisonSpec(_Strict):
    """The comparison group: named areas, a named group from the areas registry, or a rule."""

    areas: list[str] = Field(default_factory=list)
    group: str | None = Field(default=None, description="a group in areas.yaml, e.g. most_similar")
    rule: Literal["all_comparison_areas", "untreated_lsoas_same_areas"] | None = None
    exclude_vru: bool = Field(default=False, description="drop Violence Reduction Unit areas")
    lsoas: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> ComparisonSpec:
        given = sum(bool(x) for x in (self.areas or self.lsoas, self.group, self.rule))
        if given == 0:
            raise ValueError("give comparison 'areas' (or 'lsoas'), a 'group', or a 'rule'")
        if given > 1:
            raise ValueError("give only one of comparison 'areas'/'lsoas', 'group' or 'rule'")
        return self


def _covid_in_order(opts: Any) -> Any:
    if period_index(opts.covid_start) > period_index(opts.covid_end):
        raise ValueError(f"covid_start {opts.covid_start} is after covid_end {opts.covid_end}; the COVID "
                         "window runs from covid_start to covid_end (inclusive)")
    return opts


ITSModel = Literal["auto", "poisson", "quasipoisson", "negbin", "ols", "newey_west", "gls_ar", "arima"]


class ITSOptions(_Strict):
    """Options of the interrupted time series design (``design: its``)."""

    model: ITSModel = Field(
        default="auto",
        description="auto picks by measure kind: counts -> quasipoisson (AR(1) working correlation "
        "and Wald intervals, or at low counts no AR terms and profile-likelihood intervals); "
        "continuous -> gls_ar",
    )
    seasonality: Literal["fourier", "month", "none"] = "fourier"
    fourier_terms: int = Field(default=2, ge=1, le=6)
    slope_change: bool = True
    phase_in_months: int | None = Field(
        default=None, ge=0, le=36,
        description="months over which the effect builds up linearly; default: the intervention's "
        "phase_in_months in interventions.yaml",
    )
    lag_months: int = Field(default=0, ge=0, le=24)
    covid: Literal["indicator", "exclude", "none"] = "indicator"
    covid_start: str = COVID_START
    covid_end: str = COVID_END
    breaks: list[BreakSpec] = Field(default_factory=list)
    change_points: list[str] = Field(
        default_factory=list, description="further intervention dates in the same series"
    )
    ar_order: int = Field(default=1, ge=0, le=3)
    interval: Literal["auto", "wald", "profile"] = Field(
        default="auto",
        description="auto: profile-likelihood intervals for count models at low counts (pre-period "
        "mean below 5 a month) where the model allows them, else Wald; profile needs model poisson "
        "or quasipoisson with ar_order 0",
    )
    population_offset: bool = True
    placebo: bool = True
    sensitivity_months: int = Field(default=3, ge=0, le=12)
    power_sims: int = Field(default=200, ge=0, le=20000)
    mde_threshold: float = Field(default=0.30, gt=0, lt=1)
    _p = _period_validator("covid_start", "covid_end")

    @model_validator(mode="after")
    def _covid_order(self):
        return _covid_in_order(self)

    @model_validator(mode="after")
    def _profile_needs_glm(self) -> ITSOptions:
        if self.interval != "profile":
            return self
        if self.model in ("ols", "newey_west", "gls_ar", "arima", "negbin"):
            raise ValueError(f"interval 'profile' is available for model poisson, quasipoisson or auto (count "
                             f"measures), not for model '{self.model}'")
        if self.model == "quasipoisson" and self.ar_order > 0 and "ar_order" in self.model_fields_set:
            raise ValueError("interval 'profile' needs ar_order 0 (profile likelihood has no AR working "
                             f"correlation); got ar_order {self.ar_order}")
        return self

    @field_validator("change_points", mode="before")
    @classmethod
    def _cps(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [parse_period(x) for x in v]
        return v


class DiDOptions(_Strict):
    """Options of the difference-in-differences family (``design: did``)."""

    estimator: Literal["2x2", "twfe", "poisson_fe", "event_study", "staggered"] = "twfe"
    outcome: Literal["auto", "rate", "count", "continuous", "log"] = Field(
        default="auto", description="auto: for count measures a rate per rate_per when populations are "
        "known, else counts; for continuous measures the measure's own values. 'log' analyses the log "
        "of a positive outcome (effects in log points)"
    )
    unit: Literal["area", "lsoa"] = "area"
    control_group: Literal["never_treated", "not_yet_treated"] = "never_treated"
    cluster: Literal["unit"] = "unit"
    inference: Literal["auto", "cluster", "wild_bootstrap"] = "auto"
    vcov: Literal["fixest", "CR1", "CR1S", "CR2", "CR3"] = Field(
        default="fixest",
        description="cluster-robust variance: fixest (fixest's default small-sample correction, "
        "unit effects nested in the clusters not counted), CR1 (G/(G-1)), CR1S (every fixed effect "
        "counted, Stata / clubSandwich CR1S), CR2 (Bell-McCaffrey, Satterthwaite df), CR3 (jackknife)",
    )
    bootstrap_draws: int = Field(default=999, ge=99, le=99999)
    event_window: tuple[int, int] = (-12, 12)
    randomisation_draws: int = Field(default=200, ge=0, le=5000)
    covid: Literal["indicator", "exclude", "none"] = "none"
    covid_start: str = COVID_START
    covid_end: str = COVID_END
    _p = _period_validator("covid_start", "covid_end")

    @model_validator(mode="after")
    def _covid_order(self):
        return _covid_in_order(self)


class SynthOptions(_Strict):
    """Options of the synthetic control design (``design: synth``)."""

    outcome: Literal["rate", "count"] = "rate"
    placebo: bool = True
    min_pre_fit_r2: float = Field(default=0.5, ge=0, le=1)
    method: Literal["sc", "sdid"] = Field(
        default="sc", description="sc: synthetic control; sdid: synthetic difference-in-differences"
    )
    frequency: Literal["month", "quarter", "year"] | None = Field(
        default=None, description="period of the series; default inferred from the period index"
    )
    placebo_replications: int = Field(default=200, ge=20, description="sdid placebo standard error")


class EvaluationSpec(_Strict):
    """One evaluation: ``parameters/evaluations/<id>.yaml``."""

    id: str
    title: str
    description: str = ""
    intervention: str
    measure: str
    areas: list[str] = Field(min_length=1, description="treated area codes")
    design: Literal["its", "did", "synth"]
    intervention_start: str | None = Field(
        default=None, description="defaults to the intervention's start in the registry"
    )
    period: PeriodSpec = Field(default_factory=PeriodSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    comparison: ComparisonSpec | None = None
    min_pre_months: int = Field(default=24, ge=6)
    its: ITSOptions = Field(default_factory=ITSOptions)
    did: DiDOptions = Field(default_factory=DiDOptions)
    synth: SynthOptions = Field(default_factory=SynthOptions)
    sensitivity_of: str | None = Field(
        default=None,
        description="id of the evaluation this one tests the sensitivity of (same intervention and "
        "measure); the site groups it under that evaluation instead of listing it as a headline",
    )
    _p = _any_period_validator("intervention_start")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("ids use lower-case letters, digits, '_' and '-' (file-name safe)")
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the title is empty; give a short title that names the intervention, "
                             "the measure and the area")
        return v

    @model_validator(mode="after")
    def _design_needs(self) -> EvaluationSpec:
        if self.sensitivity_of is not None and self.sensitivity_of == self.id:
            raise ValueError("sensitivity_of names the evaluation itself; name the evaluation it tests")
        if self.design in ("did", "synth") and self.comparison is None:
            raise ValueError(f"design '{self.design}' needs a 'comparison' group")
        if self.period.start and self.period.end and len({granularity_of(self.period.start),
                                                          granularity_of(self.period.end)}) == 1:
            if index_of(self.period.end) <= index_of(self.period.start):
                raise ValueError("period.end must be after period.start")
        return self


# ------------------------------------------------------------------------------------------------
# Loading with precise errors
# ------------------------------------------------------------------------------------------------
def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Keys allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        f = current.model_fields.get(part)
        if f is None:
            return None
        ann = f.annotation
        current = _unwrap_model(ann)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _unwrap_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _problems_from(err: ValidationError, model: type[BaseModel], data: Any) -> list[tuple[str, Any, str]]:
    problems: list[tuple[str, Any, str]] = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        field = ".".join(str(p) for p in loc) or "<file>"
        value = e.get("input", MISSING)
        etype = e.get("type", "")
        msg = e.get("msg", "invalid")
        if etype == "extra_forbidden":
            allowed = _allowed_keys(model, loc) or []
            key = str(loc[-1]) if loc else ""
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            msg = f"unknown key.{hint} Allowed keys here: {', '.join(allowed)}"
            value = MISSING
        elif etype == "missing":
            msg = "required field is missing"
            value = MISSING
        elif etype == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"not an allowed value; expected one of {expected}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if isinstance(value, dict):
            value = MISSING
        elif value is not MISSING:
            value = shorten_value(value)
        problems.append((field, value, msg))
    return problems


#: largest parameter or registry file read (bytes)
MAX_PARAMETER_BYTES = 1_000_000
#: most values a parameter file may hold once YAML aliases are expanded
MAX_YAML_VALUES = 200_000
#: longest excerpt of a bad value shown in an error message
SHOWN_VALUE_CHARS = 200


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"duplicate key {key!r}")


# libyaml's parser (C) when PyYAML was built with it: the same safe constructor, about 5x faster to
# parse (the registries are read by every command and every notebook)
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, refusing duplicate keys in a mapping (instead of keeping the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: left to the safe loader's own error
                    continue
                if first is not None:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(data: Any, limit: int) -> int | None:
    """Number of values in ``data`` with every alias expanded; None if it refers to itself.

    Shared (aliased) containers are sized once and their size reused, so an alias bomb is sized
    without being walked value by value.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(x: Any) -> int | None:
        if not isinstance(x, dict | list):
            return 1
        key = id(x)
        if key in sizes:
            return sizes[key]
        if key in busy:
            return None
        busy.add(key)
        total = 1
        items = [*x.keys(), *x.values()] if isinstance(x, dict) else x
        for item in items:
            n = size(item)
            if n is None:
                return None
            total += n
            if total > limit:
                break
        busy.discard(key)
        sizes[key] = total
        return total

    try:
        return size(data)
    except RecursionError:
        return None


def read_yaml(path: Path | str) -> Any:
    """Read a YAML parameter file, refusing anything that is not a small, plain YAML file.

    Missing files, folders and devices, files over :data:`MAX_PARAMETER_BYTES`, text that is not
    UTF-8, YAML syntax errors, duplicate keys and aliases that expand to more than
    :data:`MAX_YAML_VALUES` values all become a :class:`SpecError` naming the file (and the line).
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(path, [("<file>", MISSING, "file not found")])
    if path.is_dir():
        raise SpecError(path, [("<file>", MISSING, "is a directory, expected a YAML file")])
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(path, [("<file>", MISSING, "not a regular file (a device, pipe or socket); "
                                                   "expected a YAML file")])
    if st.st_size > MAX_PARAMETER_BYTES:
        raise SpecError(path, [("<file>", MISSING, f"{st.st_size:,} bytes; parameter files are at most "
                                                   f"{MAX_PARAMETER_BYTES:,} bytes")])
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PARAMETER_BYTES + 1)
    except OSError as exc:
        raise SpecError(path, [("<file>", MISSING, f"cannot be read: {exc.strerror}")]) from None
    if len(raw) > MAX_PARAMETER_BYTES:
        raise SpecError(path, [("<file>", MISSING, f"more than {MAX_PARAMETER_BYTES:,} bytes; parameter "
                                                   "files are smaller")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, [("<file>", MISSING, f"not UTF-8 text ({exc.reason})")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpecError(path, [("<file>", MISSING, f"duplicate key {shorten_value(exc.key)!r} at line "
                                                   f"{exc.line} (first given at line {exc.first_line}); "
                                                   "each key may appear once")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(path, [("<file>", MISSING, f"invalid YAML at {where}: {problem}")]) from None
    except RecursionError:
        raise SpecError(path, [("<file>", MISSING, "YAML nested too deeply")]) from None
    n = _expanded_size(data, MAX_YAML_VALUES)
    if n is None:
        raise SpecError(path, [("<file>", MISSING, "a YAML alias refers to itself (recursive anchor)")])
    if n > MAX_YAML_VALUES:
        raise SpecError(path, [("<file>", MISSING, f"YAML aliases ('*name') expand to more than "
                                                   f"{MAX_YAML_VALUES:,} values; parameter files do "
                                                   "not need aliases: write the values out")])
    return data


class _Shown:
    """A shortened stand-in for a long or nested bad value in an error message."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shorten_value(value: Any, limit: int = SHOWN_VALUE_CHARS) -> Any:
    """``value`` as shown in an error message: long text cut, containers summarised."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value) - limit:,} more characters)"
    if isinstance(value, list | tuple | set | dict):
        import reprlib

        r = reprlib.Repr()
        r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 6, 6, 40, 40
        text = r.repr(value)
        return _Shown(text if len(text) <= limit else text[:limit] + "...")
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _Shown(shorten_value(repr(value), limit))


def load_model(model: type[BaseModel], path: Path | str, data: Any | None = None) -> Any:
    """Validate a YAML file against ``model``; raise :class:`SpecError` listing every problem."""
    path = Path(path)
    if data is None:
        data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(
            path, [("<file>", MISSING, f"expected a mapping of keys to values, got {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(path, _problems_from(err, model, data)) from None


def load_evaluation(path: Path | str) -> EvaluationSpec:
    """Load and structurally validate one evaluation parameter file."""
    path = Path(path)
    spec = load_model(EvaluationSpec, path)
    stem = path.stem
    if spec.id != stem:
        raise SpecError(
            path, [("id", spec.id, f"must match the file name '{stem}' (one file per evaluation)")]
        )
    return spec
