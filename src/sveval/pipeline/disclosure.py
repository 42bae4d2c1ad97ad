"""Disclosure control: suppression and rounding rules per data source, applied at publishing.

Rules live in ``parameters/disclosure.yaml`` (one rule per disclosure class; a measure names its
class in ``measures.yaml`` as ``disclosure: hospital | police | none``). The default rules follow
NHS Digital's Hospital Episode Statistics analysis guide: counts 1-7 shown as ``*``, other counts
rounded to the nearest 5 (0 stays 0), secondary suppression so that no suppressed cell can be
recovered from a published total; police counts unrounded; model estimates exempt.

Everything that leaves for the site or the returns passes through this module once:

* :func:`apply_to_frame` controls a table (counts, the rates derived from them, secondary
  suppression within groups that sum to a published total);
* :func:`control_record` controls a result JSON (observed hospital counts in its ``series``;
  record-level fields removed);
* :func:`scan_published` checks published files afterwards and lists every finding.

Published tables describe themselves so they can be scanned: a ``disclosure`` column holds each
row's class and an ``area_type`` column marks the partnership total (``partnership``) and its
component areas (``area``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr, model_validator

from sveval._version import __version__
from sveval.data.ingest import PERSONAL_FIELDS
from sveval.errors import DisclosureError, SpecError
from sveval.spec import StrictModel, load_model

SUPPRESSED = "*"


_Strict = StrictModel


class SourceRule(_Strict):
    """Control applied to counts of one disclosure class."""

    description: str = ""
    exempt: bool = Field(default=False, description="no control (model estimates)")
    suppress_min: int | None = Field(default=None, ge=0, description="smallest count suppressed")
    suppress_max: int | None = Field(default=None, ge=0, description="largest count suppressed")
    symbol: str = SUPPRESSED
    round_to: int = Field(default=1, ge=1, description="round other counts to a multiple of this")
    secondary: bool = Field(default=False, description="secondary suppression within totals")

    @model_validator(mode="after")
    def _range(self) -> SourceRule:
        if (self.suppress_min is None) != (self.suppress_max is None):
            raise ValueError("give both suppress_min and suppress_max, or neither")
        if self.suppress_min is not None and self.suppress_max < self.suppress_min:
            raise ValueError("suppress_max must be at least suppress_min")
        return self

    def suppresses(self, value: float) -> bool:
        if self.exempt or self.suppress_min is None or value is None or not np.isfinite(value):
            return False
        return self.suppress_min <= value <= self.suppress_max

    def round(self, value: float) -> float:
        """Round half up to a multiple of ``round_to`` (0 stays 0)."""
        if self.exempt or self.round_to == 1 or value is None or not np.isfinite(value):
            return value
        return float(math.floor(value / self.round_to + 0.5) * self.round_to)


class ProtectedRecords(_Strict):
    """What a result record of a protected measure (hospital data) publishes.

    ``model_series`` lists, per design, the series columns that are parametric model estimates
    (smooth functions of the published coefficients): exempt. ``label_series`` are labels, not
    numbers from the data. Every other series column (observed counts; DiD and synthetic-control
    fitted values and counterfactuals, which are the data or weighted sums of other areas' counts)
    is controlled like a count. ``withheld_keys`` (per-period values derived from the data, such as
    residuals) are removed from diagnostics' ``data`` and ``details`` wherever they appear and
    replaced by summary statistics; so is any other numeric array as long as the analysed series
    (one value per month) unless its key is in ``exempt_arrays``.
    """

    model_series: dict[str, list[str]] = Field(
        default_factory=lambda: {"its": ["fitted", "counterfactual", "cf_low", "cf_high"]})
    label_series: list[str] = Field(default_factory=lambda: ["period", "post", "group"])
    withheld_keys: list[str] = Field(
        default_factory=lambda: ["residuals", "residuals_whitened", "pearson_residuals", "innovations",
                                 "observed", "y", "values", "counts", "gaps", "donor_series"])
    exempt_arrays: list[str] = Field(default_factory=list)


class DisclosureRules(_Strict):
    """``parameters/disclosure.yaml``."""

    source: str = Field(description="where the rules come from")
    rules: dict[str, SourceRule]
    record_level_fields: list[str] = Field(
        default_factory=list, description="fields that must never appear in published output"
    )
    count_columns: list[str] = Field(
        default_factory=lambda: ["count"], description="column names holding counts (for scans)"
    )
    record_count_keys: list[str] = Field(
        default_factory=lambda: ["observed"],
        description="series columns of a result JSON that hold observed counts",
    )
    protected_records: ProtectedRecords = Field(
        default_factory=lambda: ProtectedRecords(),
        description="what a result record of a protected measure publishes",
    )
    _personal: tuple[str, ...] = PrivateAttr(default=())

    def personal_fields(self) -> list[str]:
        """Every record-level field name the scanner looks for: ``record_level_fields`` plus the
        identifying columns of the record-level sources (:func:`personal_fields`)."""
        return sorted({*self.record_level_fields, *_SOURCE_PERSONAL, *self._personal})

    def protects(self, cls: str) -> bool:
        """True when the class changes counts (suppression or rounding): a protected source."""
        r = self.rules.get(cls)
        return r is not None and not r.exempt and (r.suppress_min is not None or r.round_to > 1)

    @model_validator(mode="after")
    def _classes(self) -> DisclosureRules:
        missing = [k for k in ("hospital", "police", "none") if k not in self.rules]
        if missing:
            raise ValueError(f"rules must define the classes {missing} (used by measures.yaml)")
        return self

    def rule(self, source: str) -> SourceRule:
        if source not in self.rules:
            raise KeyError(f"no disclosure rule '{source}'; defined: {', '.join(sorted(self.rules))}")
        return self.rules[source]


#: identifying columns of the built-in record-level sources: the force extract's personal fields
#: (:data:`sveval.data.ingest.PERSONAL_FIELDS`) and police.uk's record columns
_SOURCE_PERSONAL = (*PERSONAL_FIELDS, "Crime ID", "Longitude", "Latitude")


def personal_fields(parameters_dir: Path | str | None = None) -> list[str]:
    """Record-level field names taken from the source definitions.

    The personal fields of the record-level readers (:data:`sveval.data.ingest.PERSONAL_FIELDS`:
    ``victim_dob``, ``latitude``, ``longitude``, names, references ...), police.uk's record
    columns, and, when ``<parameters_dir>/sources.yaml`` exists, the file headers that its
    record-level sources (``kind: records`` or ``police_uk``) map those fields to.
    """
    names = set(_SOURCE_PERSONAL)
    path = Path(parameters_dir) / "sources.yaml" if parameters_dir is not None else None
    if path is not None and path.exists():
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            doc = {}
        for src in doc.get("sources") or []:
            if not isinstance(src, dict) or src.get("kind") not in ("records", "police_uk"):
                continue
            cols = src.get("columns") or {}
            for field in [*PERSONAL_FIELDS, *(src.get("personal") or [])]:
                names.add(str(field))
                if isinstance(cols, dict) and field in cols:
                    names.add(str(cols[field]))
    return sorted(names)


def load_rules(parameters_dir: Path | str) -> DisclosureRules:
    """Load ``<parameters_dir>/disclosure.yaml`` (precise :class:`SpecError` on problems), with the
    personal fields of ``<parameters_dir>/sources.yaml``'s record-level sources."""
    rules = load_model(DisclosureRules, Path(parameters_dir) / "disclosure.yaml")
    rules._personal = tuple(personal_fields(parameters_dir))
    return rules


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def _rule_per_row(df: pd.DataFrame, source: str, rules: DisclosureRules) -> list[SourceRule]:
    if source in rules.rules:
        return [rules.rules[source]] * len(df)
    if source in df.columns:
        bad = sorted(set(df[source].astype(str)) - set(rules.rules))
        if bad:
            raise SpecError(
                None, [(f"column '{source}'", bad, "unknown disclosure class; defined: " + ", ".join(sorted(rules.rules)))]
            )
        return [rules.rules[str(v)] for v in df[source]]
    raise KeyError(f"source '{source}' is neither a disclosure rule ({', '.join(sorted(rules.rules))}) nor a column")


def apply_to_frame(
    df: pd.DataFrame,
    source: str,
    rules: DisclosureRules,
    count_columns: Sequence[str] = ("count",),
    *,
    rate_columns: dict[str, str] | None = None,
    group_by: Sequence[str] | None = None,
    part_column: str = "area_type",
    total_value: str = "partnership",
    part_value: str = "area",
) -> pd.DataFrame:
    """Apply disclosure control to a table.

    Parameters
    ----------
    df : the table (unchanged; a controlled copy is returned)
    source : a disclosure class (``hospital``, ``police``, ``none``, ``model``) applied to every row,
        or the name of a column of ``df`` holding each row's class
    rules : from :func:`load_rules`
    count_columns : columns holding counts; controlled values become whole numbers or ``*``
    rate_columns : ``{rate_column: count_column}``; a rate is suppressed with its count and
        otherwise recomputed from the rounded count (``rate * rounded / raw``)
    group_by : columns identifying cells that add up to a total (for example ``["measure",
        "period"]``); within each group, rows whose ``part_column`` equals ``total_value`` are the
        total and the others its parts. When exactly one part is suppressed and the total is not,
        the smallest other part is suppressed too (or the total when there is no other part).
    part_column, total_value, part_value : how the total row and its parts are recognised (rows
        with other values, such as comparison areas, are not part of the sum)

    Returns
    -------
    DataFrame with the count (and rate) columns as object columns of numbers and ``*``.

    Examples
    --------
    >>> rules = DisclosureRules(source="t", rules={"hospital": SourceRule(suppress_min=1,
    ...     suppress_max=7, round_to=5), "police": SourceRule(), "none": SourceRule(exempt=True)})
    >>> apply_to_frame(pd.DataFrame({"count": [0, 3, 12]}), "hospital", rules)["count"].tolist()
    [0, '*', 10]
    """
    missing = [c for c in list(count_columns) + list((rate_columns or {}).keys()) if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the table (have {list(df.columns)})")
    out = df.copy().reset_index(drop=True)
    row_rules = _rule_per_row(out, source, rules)
    suppressed = {c: np.zeros(len(out), dtype=bool) for c in count_columns}
    raw = {c: pd.to_numeric(out[c], errors="coerce").to_numpy(dtype=float) for c in count_columns}
    for c in count_columns:
        for i, r in enumerate(row_rules):
            suppressed[c][i] = r.suppresses(raw[c][i])
    if group_by:
        _secondary(out, row_rules, raw, suppressed, list(group_by), part_column, total_value, part_value)
    for c in count_columns:
        vals: list[Any] = []
        for i, r in enumerate(row_rules):
            v = raw[c][i]
            if suppressed[c][i]:
                vals.append(r.symbol)
            elif not np.isfinite(v):
                vals.append(None)
            else:
                rv = r.round(v)
                vals.append(int(rv) if float(rv).is_integer() else rv)
        out[c] = pd.Series(vals, index=out.index, dtype=object)
    for rc, cc in (rate_columns or {}).items():
        rate = pd.to_numeric(df[rc].reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
        vals = []
        for i, r in enumerate(row_rules):
            if suppressed[cc][i]:
                vals.append(r.symbol)
            elif r.exempt or r.round_to == 1 or not np.isfinite(rate[i]):
                vals.append(None if not np.isfinite(rate[i]) else float(rate[i]))
            else:
                x = raw[cc][i]
                vals.append(0.0 if x == 0 else float(rate[i] * r.round(x) / x))
        out[rc] = pd.Series(vals, index=out.index, dtype=object)
    return out


def _secondary(out, row_rules, raw, suppressed, group_by, part_column, total_value, part_value) -> None:
    if part_column not in out.columns:
        raise KeyError(f"secondary suppression needs the column '{part_column}'")
    missing = [g for g in group_by if g not in out.columns]
    if missing:
        raise KeyError(f"group_by columns {missing} not in the table")
    keys = out[group_by].astype(str).agg("\x1f".join, axis=1)
    for _, idx in out.groupby(keys, sort=False).groups.items():
        idx = list(idx)
        if not any(row_rules[i].secondary for i in idx):
            continue
        total = [i for i in idx if out.at[i, part_column] == total_value]
        parts = [i for i in idx if out.at[i, part_column] == part_value]
        if not total:
            continue
        for c, sup in suppressed.items():
            changed = True
            while changed:
                changed = False
                if any(sup[t] for t in total):
                    # a suppressed total is recoverable when every part is published
                    if parts and not any(sup[p] for p in parts) and any(raw[c][p] > 0 for p in parts):
                        cand = min((p for p in parts if raw[c][p] > 0), key=lambda p: raw[c][p])
                        sup[cand] = True
                        changed = True
                    continue
                hidden = [p for p in parts if sup[p]]
                if len(hidden) == 1:
                    others = [p for p in parts if not sup[p] and np.isfinite(raw[c][p]) and raw[c][p] > 0]
                    if others:
                        sup[min(others, key=lambda p: raw[c][p])] = True
                    else:
                        for t in total:
                            sup[t] = True
                    changed = True


# ------------------------------------------------------------------------------------------------
# One controlled set of cells per protected measure (months, quarters, years; areas, partnership)
# ------------------------------------------------------------------------------------------------
#: status of a planned cell
_PUBLISHED, _PRIMARY, _SECONDARY, _WITHHELD = 0, 1, 2, 3


class CellPlan:
    """The published form of every count of the protected measures, decided once for all outputs.

    Built by :func:`plan_cells` from the monthly counts of the areas (and the pooled comparison
    areas). Every output (tracking months and years, SPC points, every quarterly and annual return,
    under-25 and all ages) takes its protected counts from here, so one suppression pattern holds
    across all of them.

    :meth:`shown` gives a cell's published value: a multiple of ``round_to`` (or 0), the symbol
    (suppressed: small, or secondary suppression), or ``None`` (withheld: a breakdown of a
    suppressed small total, see :func:`plan_cells`); :meth:`covers` says whether a measure is
    planned (protected classes with ``secondary: true``).
    """

    def __init__(self, shown: dict[tuple[str, str, tuple[str, ...]], Any], measures: set[str],
                 stats: dict[str, int], units: dict[str, dict[frozenset[str], str]] | None = None,
                 raw: dict[tuple[str, str, tuple[str, ...]], float] | None = None):
        self._shown = shown
        self.measures = frozenset(measures)
        self.stats = dict(stats)
        self._units = units or {}
        self._raw = raw or {}

    def unit_code(self, measure: str, members: Iterable[str]) -> str | None:
        """The planned unit (an area, the partnership, the pooled comparison areas) made of exactly
        these areas, or None."""
        return self._units.get(str(measure), {}).get(frozenset(map(str, members)))

    def shown_if_same(self, measure: str, members: Iterable[str], months: Sequence[str],
                      value: float, symbol: str = SUPPRESSED) -> Any:
        """The planned cell of the unit made of ``members`` over ``months`` when its (internal) raw
        count equals ``value``; otherwise (no such unit or cell, other data) the symbol."""
        code = self.unit_code(measure, members)
        key = (str(measure), str(code), tuple(sorted(months)))
        if code is None or key not in self._raw or not np.isclose(self._raw[key], float(value)):
            return symbol
        return self._shown.get(key, symbol)

    def covers(self, measure: str) -> bool:
        return measure in self.measures

    def shown(self, measure: str, area_code: str, months: Sequence[str], symbol: str = SUPPRESSED) -> Any:
        """Published value of ``measure`` in ``area_code`` summed over ``months``; an aggregate the
        plan does not hold (a window other than a month, calendar quarter or financial year, or
        with a month missing) is suppressed."""
        key = (str(measure), str(area_code), tuple(sorted(months)))
        return self._shown.get(key, symbol)


_PLAN_CACHE: dict[str, CellPlan] = {}


def plan_cells(monthly: pd.DataFrame, rules: DisclosureRules,
               parents: dict[str, str] | None = None, *, cache_dir: Path | str | None = None) -> CellPlan:
    """Control every publishable count of the protected measures at once (audit and suppress).

    Parameters
    ----------
    monthly : one row per measure, area and month with ``measure``, ``disclosure``, ``area_type``
        (``area``, ``partnership``, ``comparison``; other rows are ignored), ``area_code``,
        ``period`` and ``count`` (the tracking table); the partnership is the sum of its areas
    rules : from :func:`load_rules`; measures whose class protects counts and has ``secondary``
    parents : ``{under-25 measure: all-ages measure}`` (an under-25 count is at most its parent's)
    cache_dir : folder of the persistent plan cache (:func:`plan_cache_dir`: with the data, never
        published), or None for none

    Returns
    -------
    CellPlan
        the published form of every cell: each area, the partnership and the comparison areas,
        over every month, calendar quarter and financial year that the data cover completely.

    Notes
    -----
    The cells are controlled together, as one attacker would read them (every output at once):

    1. *primary*: a cell of 1-7 (``suppress_min``-``suppress_max``) is suppressed;
    2. *withheld breakdowns*: inside a suppressed small total with two or more non-zero months or
       areas (of the measure, or of its under-25 split), every finer cell is withheld (published
       blank, which may stand for 0-7): two suppressed parts of a total of at most 7 cannot each be
       7, so publishing them as ``*`` would narrow them;
    3. *secondary across areas*: in every area-and-partnership group a lone suppressed part (or
       suppressed total) takes the smallest other part with it;
    4. *audit and suppress*: a linear-programming attacker (HiGHS) reads every published cell as
       its rounding interval (``[v-2, v+2]`` for a multiple of 5; 0 exact), every suppressed small
       cell as ``[1, 7]``, under-25 at most all ages, and bounds each suppressed small cell. When
       one can no longer be anything from 1 to 7, the published cell with the smallest value among
       the constraints that bind (non-zero dual) is suppressed too; repeated until no suppressed
       cell is narrowed. Suppressing only removes constraints, so a cell found safe stays safe and
       only narrowed cells are checked again. A cell whose sum already reaches 1 at one feasible
       point of the attacker's system and 7 at another (the true counts, joint probes, earlier
       solutions) cannot be narrowed, and its linear programs are skipped: only narrowed cells,
       whose duals decide what is suppressed, need solving.

    The result is cached per input (the tracking tables, the SPC charts, every return and every
    record of a protected measure call this): in the process, and in ``cache_dir`` as JSON keyed by
    the SHA-256 of the input, :data:`PLAN_ALGORITHM` and sveval's version, so a data version's plan
    is computed once and shared by the evaluations' kernels, ``sveval track``, ``sveval returns``
    and the site (:func:`_read_plan` checks a cached plan against the input before using it).
    """
    import hashlib

    classes = {k for k, r in rules.rules.items() if rules.protects(k) and r.secondary}
    m = monthly[monthly["disclosure"].astype(str).isin(classes)
                & monthly["area_type"].isin(["area", "partnership", "comparison"])]
    m = m[["measure", "disclosure", "area_type", "area_code", "period", "count"]]
    parents = {c: p for c, p in (parents or {}).items()}
    ca = monthly[monthly["area_type"] == "comparison_area"]
    pooled = {str(ms): frozenset(map(str, g)) for ms, g in ca.groupby("measure")["area_code"]}
    key = hashlib.sha256(
        m.sort_values(["measure", "area_code", "period"]).to_csv(index=False).encode()
        + rules.model_dump_json().encode() + repr(sorted(parents.items())).encode()
        + repr(sorted((k, sorted(v)) for k, v in pooled.items())).encode()).hexdigest()
    key = hashlib.sha256(f"sveval cell plan|{PLAN_ALGORITHM}|{__version__}|{key}".encode()).hexdigest()
    if key in _PLAN_CACHE:
        return _PLAN_CACHE[key]
    plan = _read_plan(Path(cache_dir), key, m, rules, pooled) if cache_dir is not None else None
    if plan is None:
        plan = _plan(m, rules, parents, pooled)
        if cache_dir is not None:
            _write_plan(Path(cache_dir), key, plan)
    _PLAN_CACHE[key] = plan
    return plan


#: version of the plan's algorithm, part of the cache key: raise it whenever :func:`plan_cells`
#: would publish other cells for the same input (a cached plan of another version is not used)
PLAN_ALGORITHM = 1
#: plans kept in a cache folder (the most recently written)
_PLANS_KEPT = 16
_PLAN_FORMAT = "sveval disclosure cell plan"


def plan_cache_dir(root: Path | str) -> Path:
    """The project's plan cache: ``<root>/data/.cache/disclosure-plans`` (with the data: not
    published, not in git; a plan holds the raw small counts)."""
    return Path(root) / "data" / ".cache" / "disclosure-plans"


def _plan_json(key: str, plan: CellPlan) -> dict[str, Any]:
    units = sorted([ms, code, sorted(members)] for ms, by in plan._units.items()
                   for members, code in by.items())
    cells = [[ms, code, list(w), plan._shown.get((ms, code, w)), raw]
             for (ms, code, w), raw in sorted(plan._raw.items())]
    return {"format": _PLAN_FORMAT, "algorithm": PLAN_ALGORITHM, "sveval_version": __version__,
            "key": key, "measures": sorted(plan.measures), "stats": dict(plan.stats),
            "units": units, "cells": cells}


def _write_plan(folder: Path, key: str, plan: CellPlan) -> None:
    """Write a plan as ``<folder>/<key>.json`` atomically (a private temporary file swapped in, so
    concurrent writers and readers only ever see whole files); an unwritable folder is no error."""
    import tempfile

    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_plan_json(key, plan), fh, separators=(",", ":"), allow_nan=False)
        os.replace(tmp, folder / f"{key}.json")
        tmp = None
        kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[_PLANS_KEPT:]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _read_plan(folder: Path, key: str, m: pd.DataFrame, rules: DisclosureRules,
               pooled: dict[str, frozenset[str]]) -> CellPlan | None:
    """The cached plan of ``key``, or None (then it is computed again) when the file is missing,
    unreadable, not ours alone to write, not valid JSON, of another format or key, or does not fit
    the input: other cells, raw values, units or measures, or a published value that is not the
    rule's rounding of a count the rule does not suppress. The cache folder is not trusted."""
    path = folder / f"{key}.json"
    try:
        st = path.stat()
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
            return None  # written, or writable, by someone else
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        return _plan_from_json(doc, key, m, rules, pooled)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _plan_from_json(doc: Any, key: str, m: pd.DataFrame, rules: DisclosureRules,
                    pooled: dict[str, frozenset[str]]) -> CellPlan | None:
    if not isinstance(doc, dict) or doc.get("format") != _PLAN_FORMAT or doc.get("key") != key \
            or doc.get("algorithm") != PLAN_ALGORITHM or doc.get("sveval_version") != __version__:
        return None
    stats, measures = doc["stats"], doc["measures"]
    if not (isinstance(stats, dict) and all(isinstance(k, str) and type(v) is int for k, v in stats.items())
            and _is_str_list(measures) and isinstance(doc["units"], list) and isinstance(doc["cells"], list)):
        return None
    units: dict[str, dict[frozenset[str], str]] = {}
    for u in doc["units"]:
        ms, code, members = u
        if not (isinstance(ms, str) and isinstance(code, str) and _is_str_list(members)):
            return None
        units.setdefault(ms, {})[frozenset(members)] = code
    shown: dict[tuple[str, str, tuple[str, ...]], Any] = {}
    raw: dict[tuple[str, str, tuple[str, ...]], float] = {}
    for c in doc["cells"]:
        ms, code, months, value, x = c
        if not (isinstance(ms, str) and isinstance(code, str) and _is_str_list(months)
                and (value is None or type(value) in (int, float, str)) and type(x) in (int, float)):
            return None
        k = (ms, code, tuple(months))
        shown[k], raw[k] = value, float(x)
    # the same cells, raw values, units and measures as this input's
    _, _, cells, _, planned, _, units_of = _cells(m, rules, pooled)
    if sorted(planned) != measures or units != units_of or len(cells) != len(raw):
        return None
    for c in cells:
        ms, code, w = c["key"]
        k = (ms, code, tuple(sorted(w)))
        if raw.get(k) != c["value"]:
            return None
        v, rule = shown[k], c["rule"]
        if isinstance(v, str):
            if v != rule.symbol:
                return None
        elif v is not None:  # published: the rounding of a count the rule publishes
            r = rule.round(c["value"])
            if rule.suppresses(c["value"]) or v != (int(r) if float(r).is_integer() else r):
                return None
    return CellPlan(shown, set(measures), stats, units, raw)


#: linear programs solved in each round of the last audit in this process (for benchmarks)
_LAST_AUDIT: list[int] = []


class _LPResult:
    __slots__ = ("status", "message", "fun", "x", "marginals")

    def __init__(self, status: int, message: str, fun: float | None = None, x: np.ndarray | None = None,
                 marginals: np.ndarray | None = None):
        self.status, self.message, self.fun, self.x, self.marginals = status, message, fun, x, marginals


def _highs_core() -> tuple[Any, Any] | None:
    """SciPy's HiGHS bindings and the solver options that ``linprog(method="highs")`` passes, set
    exactly as its wrapper sets them; None when this SciPy does not have them (then the audit calls
    :func:`scipy.optimize.linprog`, with the same result, only slower)."""
    global _HIGHS
    if _HIGHS is not None:
        return _HIGHS or None
    try:
        from scipy.optimize._highspy import _core as core
        from scipy.optimize._highspy import _highs_options as hopt
        from scipy.optimize._highspy._highs_wrapper import check_option

        # scipy.optimize._linprog_highs._linprog_highs with its defaults (solver None: simplex)
        options = {"presolve": True, "sense": core.ObjSense.kMinimize, "solver": None, "time_limit": None,
                   "highs_debug_level": core.HighsDebugLevel.kHighsDebugLevelNone,
                   "dual_feasibility_tolerance": None, "ipm_optimality_tolerance": None,
                   "log_to_console": False, "mip_max_nodes": None, "output_flag": False,
                   "primal_feasibility_tolerance": None, "simplex_dual_edge_weight_strategy": None,
                   "simplex_strategy": core.simplex_constants.SimplexStrategy.kSimplexStrategyDual,
                   "ipm_iteration_limit": None, "simplex_iteration_limit": None, "mip_rel_gap": None}
        # ... and scipy.optimize._highspy._highs_wrapper._highs_wrapper's loop setting them
        highs, opts, manager = core._Highs(), core.HighsOptions(), hopt.HighsOptionsManager()
        for key, val in options.items():
            if val is None or key == "sense":
                continue
            if manager.get_option_type(key) == -1:
                continue
            if key == "presolve":
                val = "on" if val else "off"
            if check_option(highs, key, val)[0] == 0:
                setattr(opts, key, val)
        _HIGHS = (core, opts)
    except (ImportError, AttributeError):  # pragma: no cover - another SciPy
        _HIGHS = ()
    return _HIGHS or None


_HIGHS: tuple[Any, ...] | None = None
#: joint probes (feasible points) per direction and round of the audit, at most
_PROBES = 12


class _AuditLP:
    """One round's attacker system ``A x <= b, x >= 0``, minimised for many objectives.

    Each solve is the computation of ``scipy.optimize.linprog(c, A_ub=A, b_ub=b, bounds=(0, None),
    method="highs")`` (the same matrix, bounds and options handed to the same HiGHS, so the same
    solution and duals), without re-validating and re-converting the inputs for every objective.
    """

    def __init__(self, a_ub: Any, b_ub: np.ndarray):
        from scipy.sparse import csc_array, csr_matrix, vstack

        self.a_ub, self.b_ub, self.solved = a_ub, np.asarray(b_ub, dtype=float), 0
        self.n, self.m = a_ub.shape[1], a_ub.shape[0]
        self._core = _highs_core()
        if self._core is None:  # pragma: no cover - another SciPy
            return
        core, _ = self._core
        # as linprog prepares them: sparse rows (no equalities) stacked, by columns; -inf <= A x <= b;
        # 0 <= x <= inf; infinities as HiGHS's
        a = csc_array(vstack((csr_matrix(a_ub, dtype=float), csr_matrix((0, self.n), dtype=float))))
        inf = core.kHighsInf
        self.rhs = self.b_ub.copy()
        lp = core.HighsLp()
        lp.num_col_ = self.n
        lp.num_row_ = self.m
        lp.a_matrix_.num_col_ = self.n
        lp.a_matrix_.num_row_ = self.m
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.col_lower_ = np.zeros(self.n)
        lp.col_upper_ = np.full(self.n, inf)
        lp.row_lower_ = np.full(self.m, -inf)
        upper = self.rhs.copy()
        upper[np.isinf(upper)] = np.sign(upper[np.isinf(upper)]) * inf
        lp.row_upper_ = upper
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        self._lp = lp

    def feasible(self, x: np.ndarray, tol: float = 1e-7) -> bool:
        """Whether ``x`` satisfies the system (to HiGHS's feasibility tolerance)."""
        return bool(np.all(np.isfinite(x)) and np.all(x >= -tol)
                    and np.all(self.a_ub @ x <= self.b_ub + tol))

    def solve(self, c: np.ndarray, upper: float | None = None) -> _LPResult:
        """Minimise ``c @ x`` (with ``x <= upper`` too when given): scipy's status (0 optimal, 2
        infeasible, 3 unbounded, 4 numerical trouble), the optimum, the solution and the
        constraints' duals."""
        self.solved += 1
        if self._core is None:  # pragma: no cover - another SciPy
            from scipy.optimize import linprog

            res = linprog(c, A_ub=self.a_ub, b_ub=self.b_ub, bounds=(0, upper), method="highs")
            return _LPResult(res.status, res.message, res.fun, res.x,
                             None if res.status else res.ineqlin.marginals)
        core, opts = self._core
        from scipy.optimize._linprog_highs import _highs_to_scipy_status_message

        self._lp.col_cost_ = np.asarray(c, dtype=float)
        if upper is not None:
            self._lp.col_upper_ = np.full(self.n, float(upper))
        highs = core._Highs()
        highs.passOptions(opts)
        loaded = highs.passModel(self._lp)
        if upper is not None:
            self._lp.col_upper_ = np.full(self.n, core.kHighsInf)
        if loaded == core.HighsStatus.kError:
            return _LPResult(*_highs_to_scipy_status_message(core.HighsModelStatus.kModelError, "model error"))
        highs.run()
        status = highs.getModelStatus()
        if status != core.HighsModelStatus.kOptimal:
            return _LPResult(*_highs_to_scipy_status_message(status, highs.modelStatusToString(status)))
        info, sol = highs.getInfo(), highs.getSolution()
        x = np.array(sol.col_value)
        fun = info.objective_function_value
        slack = self.rhs - np.array(sol.row_value)
        # linprog's check of the solution (scipy.optimize._linprog_util._check_result, tol 1e-9)
        tol = np.sqrt(1e-9) * 10
        if np.isnan(x).any() or np.isnan(fun) or np.isnan(slack).any() or (x < -tol).any() \
                or (slack < -tol).any():
            return _LPResult(4, "the solution does not satisfy the constraints within the tolerance")
        return _LPResult(0, "optimal", fun, x, np.array(sol.row_dual)[: self.m])


def _seen(lp: _AuditLP, sums: Any, x: np.ndarray | None, lowest: np.ndarray, highest: np.ndarray) -> None:
    """Lower ``lowest`` and raise ``highest`` (each suppressed cell's sum) to their values at ``x``
    when ``x`` is a feasible point of the round's system."""
    if x is not None and lp.feasible(x):
        s = sums @ x
        np.minimum(lowest, s, out=lowest)
        np.maximum(highest, s, out=highest)


def _cells(m: pd.DataFrame, rules: DisclosureRules, pooled: dict[str, frozenset[str]]) -> tuple:
    """Step 1 of :func:`plan_cells`: every planned cell (each area, the partnership and the pooled
    comparison areas over every month, calendar quarter and financial year the data cover), its
    atoms (one per measure, area and month) and raw value; the units and their areas."""
    from sveval.periods import add_months, financial_year, fy_months, quarter_start

    atom_ix: dict[tuple[str, str, str], int] = {}
    atom_val: list[float] = []
    cells: list[dict[str, Any]] = []
    by_key: dict[tuple[str, str, tuple[str, ...]], int] = {}
    measures = sorted(set(m["measure"].astype(str)))
    members_of: dict[str, dict[str, list[str]]] = {}
    units_of: dict[str, dict[frozenset[str], str]] = {}
    for ms in measures:
        d = m[m["measure"] == ms]
        rule = rules.rule(str(d["disclosure"].iloc[0]))
        val = {(str(a), str(p)): float(c) for a, p, c in
               zip(d["area_code"], d["period"], pd.to_numeric(d["count"], errors="coerce"), strict=True)}
        types = d.groupby("area_code")["area_type"].first().astype(str).to_dict()
        areas = sorted(c for c, t in types.items() if t == "area")
        members: dict[str, list[str]] = {}
        for code, t in types.items():
            members[code] = areas if (t == "partnership" and areas) else [code]
            made_of = pooled.get(ms) if t == "comparison" else frozenset(members[code])
            if made_of:
                units_of.setdefault(ms, {})[frozenset(made_of)] = code
        members_of[ms] = members
        periods = sorted(set(d["period"].astype(str)))
        have = set(periods)
        windows = [(p,) for p in periods]
        for qs in sorted({quarter_start(p) for p in periods}):
            w = tuple(add_months(qs, k) for k in range(3))
            if set(w) <= have:
                windows.append(w)
        for fy in sorted({financial_year(p) for p in periods}):
            w = tuple(fy_months(fy))
            if set(w) <= have:
                windows.append(w)
        for code in sorted(members):
            for w in windows:
                units = members[code]
                vals = [val.get((u, p), np.nan) for u in units for p in w]
                if not all(np.isfinite(vals)):
                    continue
                atoms = []
                for u in units:
                    for p in w:
                        k = (ms, u, p)
                        if k not in atom_ix:
                            atom_ix[k] = len(atom_val)
                            atom_val.append(val[(u, p)])
                        atoms.append(atom_ix[k])
                v = float(sum(vals))
                by_key[(ms, code, w)] = len(cells)
                cells.append({"key": (ms, code, w), "measure": ms, "rule": rule, "value": v,
                              "atoms": np.array(atoms), "units": frozenset(units), "months": frozenset(w),
                              "status": _PRIMARY if rule.suppresses(v) else _PUBLISHED})
    return atom_ix, atom_val, cells, by_key, measures, members_of, units_of


def _plan(m: pd.DataFrame, rules: DisclosureRules, parents: dict[str, str],
          pooled: dict[str, frozenset[str]]) -> CellPlan:
    from scipy.sparse import csr_matrix

    atom_ix, atom_val, cells, by_key, measures, members_of, units_of = _cells(m, rules, pooled)
    stats = {"cells": len(cells), "primary": sum(c["status"] == _PRIMARY for c in cells)}

    # 2. breakdowns of a suppressed small total are withheld
    children: dict[str, list[str]] = {}
    for c, p in parents.items():
        if c in members_of and p in members_of:
            children.setdefault(p, []).append(c)
    by_measure: dict[str, list[int]] = {}
    for i, c in enumerate(cells):
        by_measure.setdefault(c["measure"], []).append(i)
    for i, t in enumerate(cells):
        if not t["rule"].suppresses(t["value"]):  # small totals, shown as * or withheld
            continue
        def nonzero(ms: str, t: dict[str, Any] = t) -> int:
            return sum(atom_val[atom_ix[(ms, u, p)]] > 0 for u in t["units"] for p in t["months"]
                       if (ms, u, p) in atom_ix)

        own = nonzero(t["measure"]) >= 2
        for ms in [t["measure"], *children.get(t["measure"], [])]:
            # an under-25 part shown as * is at least 1 of its all-ages part: withheld with the
            # all-ages breakdown too
            if not (own or nonzero(ms) >= 2):
                continue
            for j in by_measure.get(ms, []):
                c = cells[j]
                if j != i and c["units"] <= t["units"] and c["months"] <= t["months"] and not (
                        ms != t["measure"] and c["units"] == t["units"] and c["months"] == t["months"]):
                    c["status"] = _WITHHELD
    stats["withheld"] = sum(c["status"] == _WITHHELD for c in cells)

    def hidden(j: int) -> bool:
        return cells[j]["status"] != _PUBLISHED

    # 3. secondary suppression across areas (each total with its parts)
    for ms in measures:
        members = members_of[ms]
        for code, units in members.items():
            if len(units) < 2 or units == [code]:
                continue
            for (mm, cc, w), ti in list(by_key.items()):
                if mm != ms or cc != code:
                    continue
                parts = [by_key[(ms, u, w)] for u in units if (ms, u, w) in by_key]
                changed = True
                while changed:
                    changed = False
                    shown = [p for p in parts if not hidden(p)]
                    if hidden(ti):
                        if cells[ti]["status"] != _WITHHELD and parts and len(shown) == len(parts):
                            pos = [p for p in parts if cells[p]["value"] > 0]
                            if pos:
                                cells[min(pos, key=lambda p: cells[p]["value"])]["status"] = _SECONDARY
                                changed = True
                        continue
                    if len(parts) - len(shown) == 1:
                        pos = [p for p in shown if cells[p]["value"] > 0]
                        target = min(pos, key=lambda p: cells[p]["value"]) if pos else ti
                        cells[target]["status"] = _SECONDARY
                        changed = True
    stats["secondary_areas"] = sum(c["status"] == _SECONDARY for c in cells)

    # 4. audit and suppress
    n = len(atom_val)
    stats_lp: list[int] = []
    order = []
    for c, p in parents.items():
        for (ms, u, per), a in atom_ix.items():
            if ms == c and (p, u, per) in atom_ix:
                order.append((a, atom_ix[(p, u, per)]))

    def system():
        data, ri, ci, b, owner = [], [], [], [], []
        r = 0
        for j, c in enumerate(cells):
            if c["status"] == _PUBLISHED:
                s = c["rule"].round(c["value"])
                h = c["rule"].round_to / 2
                lo, hi = (s, s) if s == 0 or c["rule"].round_to == 1 else (
                    math.ceil(s - h), math.ceil(s + h) - 1)
            elif c["status"] == _PRIMARY:
                lo, hi = c["rule"].suppress_min, c["rule"].suppress_max
            else:
                continue
            for sign, bound in ((1.0, hi), (-1.0, -lo)):
                data += [sign] * len(c["atoms"])
                ri += [r] * len(c["atoms"])
                ci += list(c["atoms"])
                b.append(bound)
                owner.append(j)
                r += 1
        for a, p in order:
            data += [1.0, -1.0]
            ri += [r, r]
            ci += [a, p]
            b.append(0.0)
            owner.append(-1)
            r += 1
        return csr_matrix((data, (ri, ci)), shape=(r, n)), np.array(b), np.array(owner)

    # every small count is protected, shown as * or withheld (blank): a blank is no constraint but
    # must not be narrowed either (a real reader knows a blank is small)
    todo = [i for i, c in enumerate(cells) if c["status"] in (_PRIMARY, _WITHHELD)
            and c["rule"].suppresses(c["value"])]
    # each todo cell's sum of atoms, for every feasible point the audit comes across
    rows_of = [cells[i]["atoms"] for i in todo]
    sums = csr_matrix((np.ones(sum(len(a) for a in rows_of)),
                       (np.repeat(np.arange(len(todo)), [len(a) for a in rows_of]),
                        np.concatenate(rows_of) if rows_of else np.zeros(0, dtype=int))),
                      shape=(len(todo), n)) if todo else None
    pos_of = {i: k for k, i in enumerate(todo)}
    low = np.array([float(cells[i]["rule"].suppress_min) for i in todo])
    high = np.array([float(cells[i]["rule"].suppress_max) for i in todo])
    truth = np.array(atom_val, dtype=float)
    unresolved = 0
    rounds = 0
    while todo:
        rounds += 1
        a_ub, b_ub, owner = system()
        lp = _AuditLP(a_ub, b_ub)
        # Feasible points of this round's system: a suppressed cell whose sum is at most
        # suppress_min at one of them and at least suppress_max at another is not narrowed, so its
        # two linear programs cannot change anything and are skipped. A narrowed cell has no such
        # points: it is always solved, exactly as before (its duals choose what to suppress).
        lowest = np.full(len(pos_of), np.inf)
        highest = np.full(len(pos_of), -np.inf)
        _seen(lp, sums, truth, lowest, highest)
        here = np.array([pos_of[i] for i in todo])
        for sign in (1.0, -1.0):
            # the cells not yet shown to reach a limit, all as small (large) as they can be at once,
            # while that shows some more
            for _ in range(_PROBES):
                open_ = here[lowest[here] > low[here] + 1e-9] if sign > 0 else \
                    here[highest[here] < high[here] - 1e-9]
                if len(open_) < 2:
                    break
                weights = np.asarray(sums[open_].sum(axis=0)).ravel()
                _seen(lp, sums, lp.solve(sign * weights, upper=None if sign > 0 else 1e6).x, lowest, highest)
                left = (lowest[open_] > low[open_] + 1e-9) if sign > 0 else (highest[open_] < high[open_] - 1e-9)
                if len(open_) - left.sum() < 2:
                    break
        picks: set[int] = set()
        still = []
        for i in todo:
            t = cells[i]
            k = pos_of[i]
            for sign, limit in ((1.0, t["rule"].suppress_min), (-1.0, t["rule"].suppress_max)):
                if (lowest[k] <= limit + 1e-9) if sign > 0 else (highest[k] >= limit - 1e-9):
                    continue  # a feasible point reaches the limit: not narrowed this way
                cvec = np.zeros(n)
                cvec[t["atoms"]] = 1.0
                res = lp.solve(sign * cvec)
                _seen(lp, sums, res.x, lowest, highest)
                if res.status == 3 and sign < 0:  # unbounded above: not narrowed
                    continue
                if res.status != 0:
                    raise DisclosureError(f"disclosure audit failed for {t['key']}: {res.message}")
                value = sign * res.fun
                if (value <= limit + 1e-6) if sign > 0 else (value >= limit - 1e-6):
                    continue
                marg = np.abs(res.marginals)
                cand = {int(owner[r]) for r in np.flatnonzero(marg > 1e-9)
                        if owner[r] >= 0 and cells[owner[r]]["status"] == _PUBLISHED}
                if not cand:
                    shared = set(t["atoms"].tolist())
                    cand = {j for j, c in enumerate(cells) if c["status"] == _PUBLISHED
                            and shared & set(c["atoms"].tolist())}
                if cand:
                    picks.add(min(cand, key=lambda j: (cells[j]["value"], len(cells[j]["atoms"]),
                                                       cells[j]["key"])))
                    still.append(i)
                elif t["status"] == _PRIMARY:  # nothing left to suppress: withhold the cell itself
                    t["status"] = _WITHHELD
                else:
                    unresolved += 1
                break
        stats_lp.append(lp.solved)
        for j in picks:
            cells[j]["status"] = _SECONDARY
        todo = still
    stats["secondary"] = sum(c["status"] == _SECONDARY for c in cells)
    stats["withheld"] = sum(c["status"] == _WITHHELD for c in cells)
    stats["audit_rounds"] = rounds
    _LAST_AUDIT[:] = stats_lp
    if unresolved:  # a withheld small count still narrowed with nothing left to suppress
        raise DisclosureError(f"disclosure audit: {unresolved} withheld small count(s) could still be "
                              "narrowed and no published cell around them is left to suppress")
    shown: dict[tuple[str, str, tuple[str, ...]], Any] = {}
    raw: dict[tuple[str, str, tuple[str, ...]], float] = {}
    for c in cells:
        ms, code, w = c["key"]
        k = (ms, code, tuple(sorted(w)))
        raw[k] = c["value"]
        if c["status"] == _PUBLISHED:
            v = c["rule"].round(c["value"])
            shown[k] = int(v) if float(v).is_integer() else v
        elif c["status"] == _WITHHELD:
            shown[k] = None
        else:
            shown[k] = c["rule"].symbol
    return CellPlan(shown, set(measures), stats, units_of, raw)


def apply_plan(controlled: pd.DataFrame, raw: pd.DataFrame, plan: CellPlan, rules: DisclosureRules,
               count_column: str, months: Any, rate_columns: dict[str, str] | None = None
               ) -> pd.DataFrame:
    """Replace the counts of planned measures in a controlled table by the plan's cells.

    Parameters
    ----------
    controlled : the table after :func:`apply_to_frame` (same rows, same order as ``raw``)
    raw : the uncontrolled table (``measure``, ``disclosure``, ``area_code``, the count column)
    plan : from :func:`plan_cells`
    count_column : the count column
    months : a function of a ``raw`` row giving the months its count sums
    rate_columns : ``{rate_column: count_column}``; a rate follows its count (``*``, blank, or
        recomputed from the rounded count)

    Returns
    -------
    the controlled table, rows of planned measures taken from the plan
    """
    out = controlled.reset_index(drop=True).copy()
    src = raw.reset_index(drop=True)
    rates = [rc for rc, cc in (rate_columns or {}).items() if cc == count_column]
    cols = {col: out[col].astype(object).to_numpy(copy=True) for col in [count_column, *(rate_columns or {})]}
    count = pd.to_numeric(src[count_column], errors="coerce").to_numpy(dtype=float)
    take = np.flatnonzero(src["measure"].astype(str).isin(plan.measures).to_numpy() & np.isfinite(count))
    rows = src.iloc[take].to_dict("records")
    symbols = {cls: rules.rule(cls).symbol for cls in {str(r["disclosure"]) for r in rows}}
    for i, row in zip(take, rows, strict=True):
        x = count[i]
        symbol = symbols[str(row["disclosure"])]
        shown = plan.shown(str(row["measure"]), str(row["area_code"]), months(row), symbol)
        cols[count_column][i] = shown
        for rc in rates:
            rate = pd.to_numeric(row[rc], errors="coerce")
            if shown is None or shown == symbol:
                cols[rc][i] = shown
            elif rate is None or not np.isfinite(rate):
                cols[rc][i] = None
            else:
                cols[rc][i] = 0.0 if x == 0 else float(rate * float(shown) / x)
    for col, values in cols.items():
        out[col] = pd.Series(values, index=out.index, dtype=object)
    return out


# ------------------------------------------------------------------------------------------------
# Result JSON
# ------------------------------------------------------------------------------------------------
def _strip_fields(obj: Any, banned: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_fields(v, banned) for k, v in obj.items() if str(k).lower() not in banned}
    if isinstance(obj, list):
        return [_strip_fields(v, banned) for v in obj]
    return obj


def record_class(record: dict[str, Any]) -> str:
    """Disclosure class of a result JSON: its ``disclosure`` key, else from ``measure_source``."""
    cls = record.get("measure_disclosure") or (record.get("disclosure") if isinstance(record.get("disclosure"), str) else None)
    if cls:
        return str(cls)
    return "hospital" if record.get("measure_source") == "hospital" else "police"


def _control_value(v: Any, rule: SourceRule) -> tuple[Any, bool]:
    """A count controlled by ``rule``: ``(value, suppressed)``; suppressed values become None."""
    x = _num(v)
    if x is None or not np.isfinite(x):
        return None, False
    if rule.suppresses(x):
        return None, True
    rv = rule.round(x)
    return (int(rv) if float(rv).is_integer() and rule.round_to > 1 else rv), False


def _is_numbers(v: Any) -> bool:
    return isinstance(v, list) and any(isinstance(x, int | float) and not isinstance(x, bool) for x in v)


def _summary(values: list[Any]) -> dict[str, Any]:
    x = np.array([_num(v) for v in values if _num(v) is not None], dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0}
    return {"n": int(len(x)), "mean": round(float(x.mean()), 4),
            "sd": round(float(x.std(ddof=1)), 4) if len(x) > 1 else None}


def _withhold_arrays(obj: Any, policy: ProtectedRecords, lengths: set[int], path: str,
                     withheld: list[str]) -> Any:
    """Drop per-period arrays derived from the data (see :class:`ProtectedRecords`)."""
    if isinstance(obj, list):
        return [_withhold_arrays(v, policy, lengths, f"{path}[{i}]", withheld) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    banned = {k.lower() for k in policy.withheld_keys}
    exempt = {k.lower() for k in policy.exempt_arrays}
    for k, v in obj.items():
        key = str(k).lower()
        where = f"{path}.{k}" if path else str(k)
        if key in exempt:
            out[k] = v
        elif key in banned and isinstance(v, list | dict):
            withheld.append(where)
            if _is_numbers(v):
                out[f"{k}_summary"] = _summary(v)
        elif isinstance(v, list) and len(v) in lengths and len(v) > 1 and not isinstance(v[0], dict | list):
            # one value per analysed month: derived from the data unless exempt
            withheld.append(where)
            if _is_numbers(v):
                out[f"{k}_summary"] = _summary(v)
        else:
            out[k] = _withhold_arrays(v, policy, lengths, where, withheld)
    return out


def _from_plan(rec: dict[str, Any], series: dict[str, Any], j: int, value: Any,
               plan: CellPlan | None, rule: SourceRule) -> Any:
    """The plan's published value of row ``j`` of a record's observed series, or None."""
    x = _num(value)
    periods, groups = series.get("period"), series.get("group")
    if plan is None or x is None or not isinstance(periods, list) or j >= len(periods):
        return None
    group = str(groups[j]) if isinstance(groups, list) and j < len(groups) else "treated"
    members = {"treated": rec.get("area"), "comparison": rec.get("comparison")}.get(group)
    if isinstance(members, str):
        members = [members]
    if not members:
        return None
    shown = plan.shown_if_same(str(rec.get("measure")), members, [str(periods[j])], x, rule.symbol)
    return shown if isinstance(shown, int | float) else None


def control_record(record: dict[str, Any], rules: DisclosureRules,
                   plan: CellPlan | None = None) -> dict[str, Any]:
    """A disclosure-controlled copy of a result JSON document: the one publishing rule for records.

    For every measure, record-level fields (:meth:`DisclosureRules.personal_fields`) are removed
    wherever they appear. For a protected measure (a class that suppresses or rounds counts):

    * ``series``: label columns (``period``, ``post``, ``group``) and the design's parametric model
      estimates (``protected_records.model_series``: ITS fitted values, counterfactual and its
      band, functions of the published coefficients) are kept; every other column is controlled
      like a count (suppressed values become ``None``, a gap in figures), including DiD and
      synthetic-control fitted values and counterfactuals, which are the data or weighted sums of
      other areas' counts;
    * diagnostics' ``data`` and ``details``: per-period arrays (``withheld_keys`` such as residuals,
      and any numeric array with one value per analysed month) are replaced by summary statistics
      (``<key>_summary``: n, mean, sd), so that no observed count can be rebuilt from a model
      estimate and a residual.

    For a protected class with secondary suppression, the observed counts (``record_count_keys``)
    are the cells of the one plan shared with the tracking tables and the returns (``plan``, from
    :func:`plan_cells`): a month is published only when the plan holds the same unit (the same
    areas: one area, the partnership, the pooled comparison areas) and the same raw count, and then
    exactly as the plan publishes it; otherwise it is suppressed. Controlled month by month, a
    record would publish months that the plan suppressed to protect others (the test attacker
    narrowed 11 suppressed months of the example from the tables plus such a record).

    The result carries ``disclosure_control`` describing what was done (``withheld`` lists the
    removed arrays). Estimates (effects, prevented, power, value for money, coefficients, ACF and
    test statistics) are exempt: see ``parameters/disclosure.yaml``.
    """
    banned = {f.lower() for f in rules.personal_fields()}
    rec = _strip_fields(json.loads(json.dumps(record)), banned)
    cls = record_class(rec)
    rule = rules.rule(cls)
    policy = rules.protected_records
    protected = rules.protects(cls)
    series = rec.get("series")
    controlled: list[str] = []
    withheld: list[str] = []
    n_sup = 0
    lengths: set[int] = set()
    if isinstance(series, dict):
        keep = set(policy.label_series)
        if protected:
            keep |= set(policy.model_series.get(str(rec.get("design") or ""), []))
        for key, vals in list(series.items()):
            if not isinstance(vals, list):
                continue
            lengths.add(len(vals))
            is_count = key in rules.record_count_keys or (protected and key not in keep)
            if rule.exempt or not is_count:
                continue
            if not _is_numbers(vals) and key not in rules.record_count_keys:
                continue
            new = []
            shared = protected and rule.secondary and key in rules.record_count_keys
            for j, v in enumerate(vals):
                cv, sup = _control_value(v, rule)
                if shared and cv is not None:
                    cv = _from_plan(rec, series, j, v, plan, rule)
                    sup = cv is None
                new.append(cv)
                n_sup += sup
            series[key] = new
            controlled.append(key)
        groups = series.get("group")
        if isinstance(groups, list) and groups:
            lengths |= {groups.count(g) for g in set(map(str, groups))}
    n_obs = rec.get("n_obs")
    if isinstance(n_obs, int) and n_obs > 1:
        lengths.add(n_obs)
    if protected:
        for d in rec.get("diagnostics") or []:
            if isinstance(d, dict) and isinstance(d.get("data"), dict):
                d["data"] = _withhold_arrays(d["data"], policy, lengths, f"diagnostics.{d.get('name')}.data",
                                             withheld)
        if isinstance(rec.get("details"), dict):
            rec["details"] = _withhold_arrays(rec["details"], policy, lengths, "details", withheld)
    rec["disclosure_control"] = {
        "class": cls,
        "rule": rule.description or cls,
        "controlled": controlled,
        "suppressed_points": n_sup,
        "withheld": withheld,
        "exempt": ("model estimates (effects, prevented, coefficients, test statistics"
                   + (", " + ", ".join(policy.model_series.get(str(rec.get("design") or ""), []))
                      if protected and policy.model_series.get(str(rec.get("design") or "")) else "")
                   + ")"),
    }
    return rec


# ------------------------------------------------------------------------------------------------
# Scanning published output
# ------------------------------------------------------------------------------------------------
_TEXT_SUFFIXES = {".html", ".htm", ".json", ".csv", ".md", ".qmd", ".txt", ".ipynb", ".xml", ".js", ".svg"}


def _iter_files(paths: Iterable[Path | str]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(x for x in p.rglob("*") if x.is_file()))
        elif p.is_file():
            files.append(p)
    return files


def _num(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    s = str(v).strip().replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


def check_table(df: pd.DataFrame, where: str, rules: DisclosureRules) -> list[str]:
    """Findings in one published table (see :func:`scan_published`)."""
    findings: list[str] = []
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "disclosure" not in cols:
        return findings
    cls_col = cols["disclosure"]
    count_cols = [cols[c.lower()] for c in rules.count_columns if c.lower() in cols]
    for i, row in df.iterrows():
        cls = str(row[cls_col]).strip()
        rule = rules.rules.get(cls)
        if rule is None or rule.exempt:
            continue
        for c in count_cols:
            v = _num(row[c])
            if v is None:
                continue
            if rule.suppresses(v):
                findings.append(f"{where}: row {i + 1}, column '{c}': unsuppressed {cls} count {v:g}")
            elif rule.round_to > 1 and v % rule.round_to != 0:
                findings.append(f"{where}: row {i + 1}, column '{c}': {cls} count {v:g} not rounded to {rule.round_to}")
    at = cols.get("area_type") or cols.get("area type")
    if at is not None:
        keys = [cols[k] for k in ("measure", "period", "financial_year", "quarter", "year", "metric", "group") if k in cols]
        grouped = df.groupby([df[k].astype(str) for k in keys], sort=False) if keys else [((), df)]
        for key, g in grouped:
            if not (g[cls_col].astype(str).map(lambda s: rules.rules.get(s, SourceRule()).suppress_min is not None)).any():
                continue
            tot = g[g[at].astype(str) == "partnership"]
            parts = g[g[at].astype(str) == "area"]
            if tot.empty or parts.empty:
                continue
            for c in count_cols:
                if tot[c].map(_num).isna().all() and not tot[c].astype(str).str.strip().eq(
                        SUPPRESSED).any():
                    continue  # the total is not published (withheld)
                t_sup = tot[c].astype(str).str.strip().eq(SUPPRESSED).all()
                # a part left blank (withheld inside a suppressed small total) is hidden too
                p_sup = parts[c].astype(str).str.strip().eq(SUPPRESSED) | parts[c].map(_num).isna()
                if not t_sup and p_sup.sum() == 1:
                    findings.append(
                        f"{where}: group {key}, column '{c}': one suppressed part with a published "
                        "total (recoverable by subtraction)"
                    )
                if t_sup and p_sup.sum() == 0 and len(parts) > 0:
                    findings.append(
                        f"{where}: group {key}, column '{c}': suppressed total with every part published "
                        "(recoverable by addition)"
                    )
    return findings


def _record_problems(rec: dict[str, Any], rules: DisclosureRules) -> list[str]:
    """Where a result record breaks the publishing rule of :func:`control_record`."""
    out: list[str] = []
    cls = record_class(rec)
    rule = rules.rules.get(cls)
    if rule is None or rule.exempt:
        return out
    protected = rules.protects(cls)
    policy = rules.protected_records
    series = rec.get("series")
    lengths: set[int] = set()
    if isinstance(series, dict):
        keep = set(policy.label_series)
        if protected:
            keep |= set(policy.model_series.get(str(rec.get("design") or ""), []))
        for key, vals in series.items():
            if not isinstance(vals, list):
                continue
            lengths.add(len(vals))
            if key not in rules.record_count_keys and not (protected and key not in keep):
                continue
            for j, v in enumerate(vals):
                x = _num(v) if not isinstance(v, bool) else None
                if x is None or not np.isfinite(x):
                    continue
                if rule.suppresses(x):
                    out.append(f"series.{key}[{j}]: unsuppressed count {x:g}")
                elif rule.round_to > 1 and x % rule.round_to != 0:
                    out.append(f"series.{key}[{j}]: count {x:g} not rounded")
        groups = series.get("group")
        if isinstance(groups, list) and groups:
            lengths |= {groups.count(g) for g in set(groups)}
    if protected:
        banned = {k.lower() for k in policy.withheld_keys}
        exempt = {k.lower() for k in policy.exempt_arrays}

        def walk(o: Any, path: str) -> None:
            if isinstance(o, dict):
                for k, v in o.items():
                    key, where = str(k).lower(), f"{path}.{k}"
                    if key in exempt:
                        continue
                    if isinstance(v, list) and (key in banned or (len(v) in lengths and len(v) > 1)) \
                            and _is_numbers(v):
                        out.append(f"{where}: per-period array of a protected measure ({len(v)} values)")
                    else:
                        walk(v, where)
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    walk(v, f"{path}[{i}]")

        for d in rec.get("diagnostics") or []:
            if isinstance(d, dict):
                walk(d.get("data"), f"diagnostics.{d.get('name')}.data")
        walk(rec.get("details"), "details")
    return out


def _check_json(obj: Any, where: str, rules: DisclosureRules) -> list[str]:
    """Findings in any published JSON: result records (anywhere in the document), tables as lists
    of row objects that describe themselves (a ``disclosure`` key), and figure data (Vega-Lite
    ``values``, Plotly ``data``) in those forms."""
    findings: list[str] = []

    def walk(o: Any, path: str) -> None:
        if isinstance(o, dict):
            if "series" in o and ("measure_source" in o or "measure_disclosure" in o or "disclosure" in o):
                findings.extend(f"{where}{path and ' ' + path}: {f}" for f in _record_problems(o, rules))
            for k, v in o.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(o, list):
            if o and all(isinstance(r, dict) for r in o) and any(
                    "disclosure" in {str(k).lower() for k in r} for r in o):
                findings.extend(check_table(pd.DataFrame(o), f"{where} {path or 'rows'}", rules))
                return
            for i, v in enumerate(o):
                if isinstance(v, dict | list):
                    walk(v, f"{path}[{i}]")

    walk(obj, "")
    return findings


def _check_record(rec: dict[str, Any], where: str, rules: DisclosureRules) -> list[str]:
    findings = _check_json(rec, where, rules)
    tables = rec.get("tables") if isinstance(rec, dict) else None
    if isinstance(tables, dict):
        for name, rows in tables.items():
            if isinstance(rows, list) and rows and isinstance(rows[0], dict) and not any(
                    "disclosure" in r for r in rows):
                findings += check_table(pd.DataFrame(rows), f"{where} table '{name}'", rules)
    return findings


def _json_keys(obj: Any, acc: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            acc.add(str(k))
            _json_keys(v, acc)
    elif isinstance(obj, list):
        for v in obj:
            _json_keys(v, acc)
    return acc


def _check_html(text: str, where: str, rules: DisclosureRules) -> list[str]:
    if "<table" not in text.lower():
        return []
    from io import StringIO

    try:
        tables = pd.read_html(StringIO(text))
    except ValueError:
        return []
    findings = []
    for k, t in enumerate(tables):
        if isinstance(t.columns, pd.MultiIndex):
            t.columns = [" ".join(str(x) for x in c if "Unnamed" not in str(x)).strip() for c in t.columns]
        findings += check_table(t, f"{where} table {k + 1}", rules)
    return findings


def _xlsx_frames(path: Path) -> tuple[list[tuple[str, pd.DataFrame]], str]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    frames, text = [], []
    for ws in wb.worksheets:
        rows = [list(r) for r in ws.iter_rows(values_only=True)]
        text.extend(str(v) for r in rows for v in r if v is not None)
        if rows and rows[0] and all(v is not None for v in rows[0]):
            frames.append((ws.title, pd.DataFrame(rows[1:], columns=[str(v) for v in rows[0]])))
    wb.close()
    return frames, "\n".join(text)


_TH = re.compile(r"<th[^>]*>(.*?)</th>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_FIGURE_DATA = ("application/json", "application/vnd.vegalite.v4+json", "application/vnd.vegalite.v5+json",
                "application/vnd.plotly.v1+json", "application/geo+json")


def _headers_html(html: str) -> set[str]:
    return {_TAG.sub("", h).strip() for h in _TH.findall(html)}


def _scan_notebook(nbj: dict[str, Any], where: Path, rules: DisclosureRules,
                   names: set[str]) -> list[str]:
    findings: list[str] = []
    for ci, cell in enumerate(nbj.get("cells", [])):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            html = data.get("text/html")
            if html:
                html = "".join(html) if isinstance(html, list) else html
                findings += _check_html(html, f"{where} cell {ci + 1}", rules)
                names |= _headers_html(html)
            for mime in _FIGURE_DATA:
                if mime in data:
                    obj = data[mime]
                    if isinstance(obj, str):
                        try:
                            obj = json.loads(obj)
                        except json.JSONDecodeError:
                            continue
                    findings += _check_json(obj, f"{where} cell {ci + 1} {mime}", rules)
                    names |= _json_keys(obj, set())
    return findings


def scan_published(
    paths: Iterable[Path | str],
    planted_fields: Sequence[str] = (),
    *,
    rules: DisclosureRules | None = None,
    parameters_dir: Path | str | None = None,
    planted_values: Sequence[str] = (),
) -> list[str]:
    """Scan published files (and folders, recursively) for disclosure failures.

    Looks for

    1. protected counts (hospital: 1-7 not shown as ``*``, counts not rounded) in self-describing
       tables (CSV, xlsx sheets, HTML tables, notebook output tables, row lists inside any JSON,
       figure data in notebooks: Vega-Lite, Plotly and JSON outputs) and in result records found
       anywhere in a JSON document (every count series column, and per-period arrays such as
       residuals that :func:`control_record` withholds);
    2. a suppressed part recoverable from a published total (or a suppressed total from its parts);
    3. record-level fields: ``planted_fields`` plus :meth:`DisclosureRules.personal_fields` (the
       rules' ``record_level_fields`` and the record-level sources' identifying columns). Names
       with an underscore (``victim_dob``) are looked for anywhere in the text; plain words
       (``latitude``, ``location``) as a column, header, sheet cell or JSON key, where a field
       would be published; ``planted_values`` anywhere in the text.

    Returns
    -------
    list of findings, one string each, naming the file and place; empty when clean.
    """
    if rules is None:
        if parameters_dir is None:
            raise ValueError("give rules or parameters_dir")
        rules = load_rules(parameters_dir)
    needles = sorted({s for s in list(planted_fields) + rules.personal_fields() if s})
    values = sorted({s for s in planted_values if s})
    anywhere = [n for n in needles if "_" in n or any(ch.isdigit() for ch in n)]
    structural = {n.lower(): n for n in needles if n not in anywhere}
    field_res = [(f, re.compile(r"(?<![A-Za-z0-9])" + re.escape(f) + r"(?![A-Za-z0-9])", re.I)) for f in anywhere]
    # one pass finds whether any field appears at all (it matches wherever one of them would): the
    # usual clean file is read once instead of once per field; the fields are told apart only then
    any_field = (re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(f) for f in anywhere)
                            + r")(?![A-Za-z0-9])", re.I) if anywhere else None)
    may_hold = _field_prefilter(anywhere)
    findings: list[str] = []
    for f in _iter_files(paths):
        suffix = f.suffix.lower()
        text = ""
        names: set[str] = set()
        try:
            if suffix == ".xlsx":
                frames, text = _xlsx_frames(f)
                names |= set(text.split("\n"))
                for name, df in frames:
                    findings += check_table(df, f"{f} sheet '{name}'", rules)
            elif suffix in _TEXT_SUFFIXES:
                text = f.read_text(encoding="utf-8", errors="replace")
                if suffix == ".csv":
                    df = pd.read_csv(f, dtype=str, keep_default_na=False)
                    names |= {str(c) for c in df.columns}
                    findings += check_table(df, str(f), rules)
                elif suffix == ".json":
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError:
                        findings.append(f"{f}: not valid JSON")
                    else:
                        findings += _check_record(obj, str(f), rules)
                        names |= _json_keys(obj, set())
                elif suffix in (".html", ".htm"):
                    findings += _check_html(text, str(f), rules)
                    names |= _headers_html(text)
                elif suffix == ".ipynb":
                    try:
                        nbj = json.loads(text)
                    except json.JSONDecodeError:
                        nbj = {}
                    findings += _scan_notebook(nbj, f, rules, names)
            else:
                continue
        except (OSError, ValueError, KeyError) as exc:
            findings.append(f"{f}: could not be scanned ({exc})")
            continue
        low = text.lower()
        if any_field is not None and may_hold(text, low) and any_field.search(text):
            for name, rx in field_res:
                if rx.search(text):
                    findings.append(f"{f}: record-level field '{name}' appears")
        for n in sorted({str(x).strip().lower() for x in names} & set(structural)):
            findings.append(f"{f}: record-level field '{structural[n]}' appears as a column or key")
        for v in values:
            if v.lower() in low:
                findings.append(f"{f}: record-level value '{v}' appears")
    return findings


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _field_prefilter(fields: Sequence[str]) -> Any:
    """``may_hold(text, text.lower())``: False only where none of ``fields`` can match ``text``
    case-insensitively (``re.I``), so :func:`scan_published` skips its regular expression there
    (slow on long pages: a case-insensitive alternation tried at every position).

    A match of an ASCII field is either all ASCII characters, each equal to the field's in lower
    case, so the field is a substring of ``text.lower()``; or it uses a non-ASCII character that
    ``re.I`` takes for one of the field's (the Kelvin sign for ``k``, a dotless ``ı`` for ``i``):
    with any such character in the text the regular expression runs, as it does for any
    non-ASCII field. Same findings, fewer searches.
    """
    lowered = [f.lower() for f in fields]
    if not all(f.isascii() for f in fields):
        return lambda text, low: True
    chars = re.compile("|".join(re.escape(c) for c in sorted(set("".join(fields)))), re.I) if fields else None

    def may_hold(text: str, low: str) -> bool:
        if any(f in low for f in lowered):
            return True
        if text.isascii() or chars is None:
            return False
        return any(chars.fullmatch(c) for c in set(_NON_ASCII.findall(text)))

    return may_hold


def assert_clean(paths: Iterable[Path | str], rules: DisclosureRules, **kwargs: Any) -> None:
    """Raise :class:`DisclosureError` listing the findings of :func:`scan_published`, if any."""
    findings = scan_published(paths, rules=rules, **kwargs)
    if findings:
        shown = "\n  - ".join(findings[:20])
        more = f"\n  (and {len(findings) - 20} more)" if len(findings) > 20 else ""
        raise DisclosureError(f"{len(findings)} disclosure finding(s):\n  - {shown}{more}")
