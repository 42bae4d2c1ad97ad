"""Data checks: the series an evaluation needs, and the data-quality report of a project.

Two uses, both on frames (never on files, except the one reader at the end):

* :func:`check_evaluation_series` refuses, before anything runs, a measure's series that a design
  cannot use: counts that are not whole numbers, not finite or absurdly large, negative values
  of a count measure, missing months in the analysed window, and an all-zero series.
* :func:`data_quality` builds the project's data-quality report (``sveval data check``): per
  measure the months covered, gaps, duplicates, months of zeros, recording breaks and population
  coverage; per source whether its files are there; for record-level police.uk data the records
  whose LSOA lies outside the partnership's areas (counted and named).
  :meth:`DataQualityReport.to_markdown` and :meth:`DataQualityReport.to_json` give the page and
  the JSON written under ``reports/``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sveval.errors import DataError
from sveval.periods import (
    PERIOD_NOUN,
    add_months,
    granularity_of,
    months_between,
    period_index,
    period_range,
)

#: largest monthly value accepted for a count or rate measure (England and Wales record about
#: six million crimes a year; anything near this is a unit or parsing error)
MAX_COUNT = 1e9
#: largest absolute value accepted for a continuous measure (model fits overflow beyond)
MAX_CONTINUOUS = 1e12
#: most items named in one message or report line
SHOWN = 8
#: monthly mean from which runs of 3+ zero months are flagged as suspect
ZERO_RUN_MEAN = 3.0


def _months(start: str, end: str) -> list[str]:
    return [add_months(start, k) for k in range(months_between(start, end))]


def _list(items: Iterable[Any], n: int = SHOWN) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _runs(periods: list[str]) -> list[tuple[str, str]]:
    """Consecutive-month runs of sorted periods, as (first, last)."""
    runs: list[tuple[str, str]] = []
    for p in periods:
        if runs and period_index(p) == period_index(runs[-1][1]) + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _fmt_runs(runs: list[tuple[str, str]]) -> str:
    return _list(a if a == b else f"{a} to {b}" for a, b in runs)


# ------------------------------------------------------------------------------------------------
# The series of one evaluation (called by pipeline.context.prepare_spec)
# ------------------------------------------------------------------------------------------------
def check_evaluation_series(
    long: pd.DataFrame,
    measure: Any,
    treated: Collection[str],
    comparison: Collection[str],
    start: str,
    end: str,
    intervention_start: str,
    *,
    path: Path | str | None = None,
) -> None:
    """Refuse a measure's series that the designs cannot use, naming what and where.

    Parameters
    ----------
    long : the long frame (period, area_code, measure, count, population)
    measure : the :class:`~sveval.spec.MeasureSpec` evaluated
    treated, comparison : area codes
    start, end : the analysed window (months, inclusive)
    intervention_start : first month of the post-period
    path : the data file (or parameter file) named in the message

    Raises
    ------
    DataError
        Listing every problem: values that are not finite, not whole numbers (count measures),
        negative (count and rate measures) or beyond :data:`MAX_COUNT` / :data:`MAX_CONTINUOUS`;
        months missing in the window, by area; a treated (or comparison) series that is zero in
        every month, or in every month before the intervention.
    """
    areas = list(dict.fromkeys([*treated, *comparison]))
    d = long[(long["measure"] == measure.id) & long["area_code"].isin(areas)
             & (long["period"] >= start) & (long["period"] <= end)]
    problems: list[str] = []
    values = d["count"].to_numpy(dtype=float)

    def first_row(mask: np.ndarray) -> str:
        r = d[mask].iloc[0]
        return f"{r['area_code']} {r['period']}: {float(r['count']):g}"

    bad = ~np.isfinite(values)
    if bad.any():
        problems.append(f"{int(bad.sum())} value(s) missing or not finite (first: {first_row(bad)}); "
                        "every month needs a number")
    fin = np.where(np.isfinite(values), values, 0.0)
    if measure.kind == "continuous":
        big = np.abs(fin) > MAX_CONTINUOUS
        if big.any():
            problems.append(f"{int(big.sum())} value(s) beyond +/-{MAX_CONTINUOUS:.0e} (first: "
                            f"{first_row(big)}); check the units")
    else:
        neg = fin < 0
        if neg.any():
            problems.append(f"{int(neg.sum())} negative value(s) (first: {first_row(neg)}); a "
                            f"{measure.kind} measure is >= 0 (only kind 'continuous' may be negative)")
        big = fin > MAX_COUNT
        if big.any():
            problems.append(f"{int(big.sum())} value(s) above {MAX_COUNT:.0e} (first: {first_row(big)});"
                            " monthly counts are far smaller: check the units")
        if measure.kind == "count":
            frac = (fin != np.round(fin)) & ~big
            if frac.any():
                problems.append(f"{int(frac.sum())} count(s) not a whole number (first: "
                                f"{first_row(frac)}); count measures take whole numbers (declare "
                                "kind 'rate' or 'continuous' otherwise)")
    gran = granularity_of(start)
    want = _months(start, end) if gran == "month" else period_range(start, end, gran)
    noun = PERIOD_NOUN[gran]
    for area in areas:
        have = set(d.loc[d["area_code"] == area, "period"])
        missing = [p for p in want if p not in have]
        if missing and len(missing) < len(want) and gran != "month":
            problems.append(f"area {area}: {len(missing)} {noun}(s) missing in {start} to {end}: "
                            f"{', '.join(missing[:8])}; give every {noun} (0 where nothing happened)")
        elif missing and len(missing) < len(want):
            problems.append(f"area {area}: {len(missing)} month(s) missing in {start} to {end}: "
                            f"{_fmt_runs(_runs(missing))}; give every month (0 where nothing happened)")
        elif missing:
            problems.append(f"area {area}: no data in {start} to {end}")
    if not problems and measure.kind != "continuous":
        for label, group in (("treated", list(treated)), ("comparison", list(comparison))):
            if not group:
                continue
            g = d[d["area_code"].isin(group)].groupby("period")["count"].sum()
            if len(g) and (g == 0).all():
                problems.append(f"the {label} series ({_list(group)}) is zero in every {noun} from "
                                f"{start} to {end}: there is nothing to evaluate")
            elif len(g) and (g[g.index < intervention_start] == 0).all():
                problems.append(f"the {label} series ({_list(group)}) is zero in every {noun} before "
                                f"{intervention_start}: no baseline to compare against")
    if problems:
        raise DataError(f"measure '{measure.id}' cannot be evaluated with these data:\n  - "
                        + "\n  - ".join(problems), path=path)


# ------------------------------------------------------------------------------------------------
# The data-quality report
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceStatus:
    """Whether a source's files are there."""

    id: str
    kind: str
    path: str
    files: int
    missing: str | None = None  # why it is missing, or None when files were found


@dataclass(frozen=True)
class AreaGaps:
    area_code: str
    months: int
    first: str
    last: str
    gaps: list[str]          # missing-month runs as "YYYY-MM" or "YYYY-MM to YYYY-MM"
    zero_months: int
    zero_runs: list[str]     # runs of 3+ zero months where the area averages ZERO_RUN_MEAN+
    population_months: int   # months with a population (denominator)


@dataclass(frozen=True)
class MeasureQuality:
    measure: str
    name: str
    source: str
    first: str | None
    last: str | None
    months: int
    duplicates: int
    areas: list[AreaGaps]
    areas_without_data: list[str]
    breaks: list[dict[str, str]]
    population_coverage: float | None  # share of area-months with a population

    @property
    def problems(self) -> list[str]:
        out = []
        if self.months == 0:
            out.append("no data")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicated period x area rows")
        gaps = [a.area_code for a in self.areas if a.gaps]
        if gaps:
            out.append(f"missing months in {_list(gaps)}")
        if self.areas_without_data and self.months:
            out.append(f"no data for {_list(self.areas_without_data)}")
        zero = [a.area_code for a in self.areas if a.zero_runs]
        if zero:
            out.append(f"runs of 3+ months of zeros in {_list(zero)}")
        if self.population_coverage is not None and self.population_coverage < 1:
            out.append(f"population known for {self.population_coverage:.0%} of area-months")
        return out


@dataclass(frozen=True)
class OutOfArea:
    """Record-level rows whose LSOA lies outside the partnership's areas."""

    source: str
    records: int
    total_records: int
    lsoas: list[dict[str, Any]]  # lsoa_code, lsoa_name, area_code (or None), records; largest first


@dataclass(frozen=True)
class DataQualityReport:
    partnership: str
    sources: list[SourceStatus] = field(default_factory=list)
    measures: list[MeasureQuality] = field(default_factory=list)
    out_of_area: list[OutOfArea] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def missing_sources(self) -> list[SourceStatus]:
        return [s for s in self.sources if s.missing]

    @property
    def ok(self) -> bool:
        return not self.missing_sources and not any(m.problems for m in self.measures)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for m, md in zip(self.measures, d["measures"], strict=True):
            md["problems"] = m.problems
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_markdown(self) -> str:
        lines = [f"# Data quality: {self.partnership}", ""]
        lines += [n for n in self.notes] + ([""] if self.notes else [])
        if self.sources:
            lines += ["## Sources", "", "| source | kind | path | files | status |", "|---|---|---|---:|---|"]
            for s in self.sources:
                status = f"missing: {s.missing}" if s.missing else "ok"
                lines.append(f"| {s.id} | {s.kind} | `{s.path}` | {s.files} | {status} |")
            lines.append("")
        if self.measures:
            lines += ["## Measures", "", "| measure | source | months | first | last | population | "
                      "recording breaks | problems |", "|---|---|---:|---|---|---:|---|---|"]
            for m in self.measures:
                pop = "" if m.population_coverage is None else f"{m.population_coverage:.0%}"
                brk = "; ".join(f"{b.get('period')} {b.get('name', '')}".strip() for b in m.breaks)
                lines.append(f"| {m.measure} | {m.source} | {m.months} | {m.first or ''} | {m.last or ''} "
                             f"| {pop} | {brk} | {'; '.join(m.problems) or 'none'} |")
            lines.append("")
            detail = [(m, a) for m in self.measures for a in m.areas if a.gaps or a.zero_runs]
            if detail:
                lines += ["### Gaps and runs of zeros", "", "| measure | area | missing months | "
                          "zero months | runs of zeros |", "|---|---|---|---:|---|"]
                for m, a in detail:
                    lines.append(f"| {m.measure} | {a.area_code} | {', '.join(a.gaps) or 'none'} | "
                                 f"{a.zero_months} | {', '.join(a.zero_runs) or 'none'} |")
                lines.append("")
        for o in self.out_of_area:
            lines += [f"## Records outside the partnership's areas: {o.source}", "",
                      f"{o.records:,} of {o.total_records:,} records "
                      f"({o.records / max(o.total_records, 1):.2%}) lie in {len(o.lsoas)} LSOA(s) "
                      "outside the partnership's areas.", ""]
            if o.lsoas:
                lines += ["| LSOA | name | area | records |", "|---|---|---|---:|"]
                for x in o.lsoas:
                    lines.append(f"| {x['lsoa_code']} | {x.get('lsoa_name') or ''} | "
                                 f"{x.get('area_code') or 'not in the lookup'} | {x['records']:,} |")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def summary(self) -> str:
        """Short plain text for the command line."""
        out = [f"data check: {self.partnership}"]
        out += [f"  note: {n}" for n in self.notes]
        for s in self.sources:
            out.append(f"  {'MISSING' if s.missing else 'ok     '} source {s.id} ({s.kind}): "
                       + (f"{s.missing} (expected at {s.path})" if s.missing else f"{s.files} file(s)"))
        for m in self.measures:
            span = f"{m.first} to {m.last}, {m.months} months" if m.months else "no data"
            out.append(f"  {'ok     ' if not m.problems else 'CHECK  '} measure {m.measure}: {span}"
                       + (f"; {'; '.join(m.problems)}" if m.problems else ""))
        for o in self.out_of_area:
            names = _list(f"{x['lsoa_code']} {x.get('lsoa_name') or ''}".strip() for x in o.lsoas)
            out.append(f"  note   {o.source}: {o.records:,} of {o.total_records:,} records in "
                       f"{len(o.lsoas)} LSOA(s) outside the partnership's areas" + (f": {names}" if names else ""))
        return "\n".join(out)


def _measure_quality(long: pd.DataFrame, m: Any, areas: list[str]) -> MeasureQuality:
    d = long[long["measure"] == m.id]
    dup = int(d.duplicated(["period", "area_code"]).sum())
    if d.empty:
        return MeasureQuality(m.id, m.name, str(m.source), None, None, 0, 0, [], sorted(areas),
                              list(m.breaks), None)
    first, last = str(d["period"].min()), str(d["period"].max())
    span = _months(first, last)
    out = []
    for area, g in d.groupby("area_code", sort=True):
        have = set(g["period"])
        a_first, a_last = min(have), max(have)
        gaps = [p for p in span if a_first <= p <= a_last and p not in have]
        zeros = sorted(g.loc[g["count"] == 0, "period"].unique())
        # runs of zeros are reported where the area averages ZERO_RUN_MEAN or more a month:
        # there, three zero months in a row are unlikely to be real (Poisson: < 1 in 8,000)
        usual = g["count"].mean() >= ZERO_RUN_MEAN
        zero_runs = [(a, b) for a, b in _runs(zeros) if usual and months_between(a, b) >= 3]
        out.append(AreaGaps(str(area), len(have), a_first, a_last,
                            [a if a == b else f"{a} to {b}" for a, b in _runs(gaps)],
                            len(zeros), [f"{a} to {b}" for a, b in zero_runs],
                            int(g["population"].notna().sum())))
    have_areas = set(d["area_code"])
    pop = d["population"].notna().mean() if "population" in d else np.nan
    return MeasureQuality(m.id, m.name, str(m.source), first, last, len(span), dup, out,
                          sorted(set(areas) - have_areas), list(m.breaks),
                          None if np.isnan(pop) else float(round(pop, 4)))


def out_of_area(records: pd.DataFrame, lookup: pd.DataFrame | None, partnership_areas: Collection[str],
                *, source: str, forces: Collection[str] | None = None) -> OutOfArea:
    """Records whose LSOA is not in the partnership's areas.

    Parameters
    ----------
    records : LSOA counts of a record-level source: ``lsoa_code``, ``lsoa_name`` (optional),
        ``records`` and, for police.uk, ``falls_within`` (the force)
    lookup : LSOA -> area (``lsoa_code``, ``area_code``); LSOAs missing from it count as outside
    partnership_areas : the partnership's area codes
    source : source id for the report
    forces : when given, only records of these forces (``falls_within``) are considered: the
        partnership's own force files
    """
    r = records
    if forces is not None and "falls_within" in r:
        r = r[r["falls_within"].isin(list(forces))]
    if "lsoa_name" not in r:
        r = r.assign(lsoa_name=None)
    r = r.groupby(["lsoa_code", "lsoa_name"], dropna=False, as_index=False)["records"].sum()
    if lookup is not None and len(lookup):
        lk = lookup[["lsoa_code", "area_code"]].drop_duplicates("lsoa_code")
        r = r.merge(lk, on="lsoa_code", how="left")
    else:
        r["area_code"] = None
    outside = r[~r["area_code"].isin(list(partnership_areas))]
    outside = outside.sort_values(["records", "lsoa_code"], ascending=[False, True])
    lsoas = [{"lsoa_code": "(no location)" if pd.isna(x.lsoa_code) else str(x.lsoa_code),
              "lsoa_name": None if pd.isna(x.lsoa_name) else str(x.lsoa_name),
              "area_code": None if pd.isna(x.area_code) else str(x.area_code),
              "records": int(x.records)} for x in outside.itertuples()]
    return OutOfArea(source, int(outside["records"].sum()), int(r["records"].sum()), lsoas)


def data_quality(
    long: pd.DataFrame | None,
    catalog: Any,
    *,
    sources: Iterable[SourceStatus] = (),
    out_of_area_checks: Iterable[OutOfArea] = (),
    notes: Iterable[str] = (),
) -> DataQualityReport:
    """The data-quality report of a project.

    Parameters
    ----------
    long : the long frame (period, area_code, measure, count, population); None when no data
        could be read yet (every measure is then reported without data)
    catalog : a :class:`sveval.catalog.Catalog` (measures, areas)
    sources : the status of each declared source (see :class:`SourceStatus`)
    out_of_area_checks : results of :func:`out_of_area` for record-level sources
    notes : lines shown at the top (e.g. where the data came from)
    """
    if long is None:
        long = pd.DataFrame(columns=["period", "area_code", "measure", "count", "population"])
    areas = sorted(catalog.areas)
    measures = [_measure_quality(long, m, areas) for m in catalog.measures.values()]
    return DataQualityReport(catalog.partnership, list(sources), measures, list(out_of_area_checks),
                             list(notes))


def write_report(report: DataQualityReport, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``data-quality.json`` and ``data-quality.md`` into ``out_dir`` (atomically)."""
    import os

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("data-quality.json", report.to_json()), ("data-quality.md", report.to_markdown())):
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
        written.append(out_dir / name)
    return written[0], written[1]


# ------------------------------------------------------------------------------------------------
# The one reader: police.uk street files -> records by force and LSOA (for out_of_area)
# ------------------------------------------------------------------------------------------------
def police_uk_lsoa_records(files: list[Path]) -> pd.DataFrame:
    """Records by force (``falls_within``), LSOA code and name in police.uk street-level files.

    Only these counts leave: no record-level field is returned.
    """
    import duckdb

    from sveval.data.filters import lock_down
    from sveval.data.ingest import POLICE_UK_COLUMNS, _read_csv_sql

    if not files:
        return pd.DataFrame(columns=["falls_within", "lsoa_code", "lsoa_name", "records"])
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        con.execute(f"""CREATE TABLE t AS SELECT "Falls within" AS falls_within, "LSOA code" AS lsoa_code,
                        "LSOA name" AS lsoa_name, count(*) AS records
                        FROM {_read_csv_sql(list(files), POLICE_UK_COLUMNS)} GROUP BY ALL""")
        lock_down(con)
        df = con.execute("SELECT * FROM t ORDER BY falls_within, lsoa_code").df()
    except duckdb.Error as exc:
        raise DataError(f"cannot read the police.uk files: {str(exc).splitlines()[0]}",
                        path=files[0]) from None
    finally:
        con.close()
    df["records"] = df["records"].astype(int)
    return df


def read_lookup(path: Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """An LSOA -> area lookup file as ``lsoa_code``, ``area_code`` (ONS headers recognised)."""
    import re

    columns = columns or {}
    head = pd.read_csv(path, dtype=str, nrows=0, encoding="utf-8-sig")
    cols = [str(c).strip() for c in head.columns]

    def pick(name: str, pattern: str) -> str:
        if name in columns:
            return columns[name]
        hits = [c for c in cols if c.lower() == name or re.fullmatch(pattern, c, flags=re.I)]
        if not hits:
            raise DataError(f"no column for {name} (expected {name} or an ONS header such as "
                            f"{pattern.replace(chr(92) + 'd', '9')}); found: {', '.join(cols)}", path=path)
        return sorted(hits)[-1]  # the latest year suffix

    lsoa = pick("lsoa_code", r"LSOA\d\dCD")
    area = pick("area_code", r"(LAD|LTLA|UTLA|CSP)\d\dCD")
    df = pd.read_csv(path, dtype=str, usecols=[lsoa, area], encoding="utf-8-sig")
    return df.rename(columns={lsoa: "lsoa_code", area: "area_code"})


def _status_of_folder(sid: str, kind: str, path: Path, pattern: str) -> tuple[SourceStatus, list[Path]]:
    files = sorted(p for p in path.glob(pattern) if p.is_file()) if path.is_dir() else []
    missing = None if files else f"no files matching {pattern} in {path}"
    return SourceStatus(sid, kind, str(path), len(files), missing), files


def check_project(paths: Any, catalog: Any) -> DataQualityReport:
    """The data-quality report of a project folder (``sveval data check``).

    Reads ``parameters/sources.yaml`` when there is one (every source's files are looked for;
    when all are there, the measures are aggregated through the project's loader), else the
    built-in example; long CSVs named by evaluation files (``data: {source: csv}``) are checked
    too. police.uk street files are counted by force and LSOA for :func:`out_of_area`.
    """
    from sveval.data.load import load_long
    from sveval.errors import SvevalError
    from sveval.spec import DataSpec, load_evaluation, read_yaml

    notes: list[str] = []
    statuses: list[SourceStatus] = []
    frames: list[pd.DataFrame] = []
    ooa: list[OutOfArea] = []
    partnership = catalog.partnership_areas
    forces = sorted({a.force for c, a in catalog.areas.items() if a.role == "partnership" and a.force})

    def police_check(sid: str, files: list[Path], lookup: pd.DataFrame | None) -> None:
        street = [f for f in files if f.name.endswith(("-street.csv", "-street.csv.gz"))]
        if not street:
            if any(f.suffix == ".zip" for f in files):
                notes.append(f"{sid}: street files inside zips are not counted by the data check "
                             "(run `sveval data ingest`)")
            return
        recs = police_uk_lsoa_records(street)
        ooa.append(out_of_area(recs, lookup, partnership, source=sid, forces=forces or None))

    sources_file = paths.parameters / "sources.yaml"
    if sources_file.is_file():
        from sveval.data.sources import Sources

        raw = read_yaml(sources_file)
        example_dir = None
        if isinstance(raw, dict) and raw.get("base") == "example":
            from sveval.data.example import ensure_example

            example_dir = ensure_example(paths.example_data)
        sources = Sources.load(sources_file, paths.root, example_dir)
        found: dict[str, list[Path]] = {}
        for s in sources:
            try:
                files = sources.files(s)
                found[s.id] = files
                statuses.append(SourceStatus(s.id, s.kind, s.path, len(files)))
            except DataError as exc:
                statuses.append(SourceStatus(s.id, s.kind, s.path, 0, exc.message))
        if all(st.missing is None for st in statuses):
            try:
                spec = DataSpec(source="example" if example_dir is not None else "store")
                frames.append(load_long(spec, None, paths, catalog).long)
                notes.append(f"measures aggregated from the sources in {sources_file.name}")
            except SvevalError as exc:
                notes.append(f"the sources could not be aggregated: {str(exc).splitlines()[0]}")
        else:
            notes.append(f"{len([s for s in statuses if s.missing])} of {len(statuses)} sources in "
                         f"{sources_file.name} are missing: put the files where it says, or change "
                         "the paths")
        for s in sources:
            if s.kind == "police_uk" and s.id in found:
                lk = sources.lookup_for(s)
                lookup = None
                if lk is not None and found.get(lk.id):
                    lookup = read_lookup(found[lk.id][0], dict(lk.columns))
                police_check(s.id, found[s.id], lookup)
    else:
        from sveval.data.example import ensure_example

        data_dir = ensure_example(paths.example_data)
        notes.append(f"no parameters/sources.yaml: the built-in illustrative example ({data_dir})")
        st, files = _status_of_folder("police_uk", "police_uk", data_dir / "police_uk", "*/*-street.csv*")
        statuses.append(st)
        for sid, kind, rel in (("force_extract", "records", "force_extract"),
                               ("aggregates", "table", "aggregates"), ("lookups", "lookup", "lookups")):
            statuses.append(_status_of_folder(sid, kind, data_dir / rel, "*.csv*")[0])
        frames.append(load_long(DataSpec(), None, paths, catalog).long)
        lk = data_dir / "lookups" / "lsoa_lookup.csv"
        police_check("police_uk", files, read_lookup(lk) if lk.is_file() else None)
    # long CSVs named by evaluation parameter files
    seen: set[Path] = set()
    for spec_path in sorted(paths.evaluation_specs.glob("*.yaml")):
        try:
            ev = load_evaluation(spec_path)
        except SvevalError:
            continue  # `sveval validate` reports it
        if ev.data.source != "csv" or not ev.data.path:
            continue
        p = Path(ev.data.path)
        p = p if p.is_absolute() else (spec_path.parent / p).resolve()
        if p in seen:
            continue
        seen.add(p)
        try:
            from sveval.data.ingest import read_long_csv

            cont = [m.id for m in catalog.measures.values() if m.kind == "continuous"]
            frames.append(read_long_csv(p, continuous=cont))
            statuses.append(SourceStatus(f"csv:{p.name}", "long_csv", str(p), 1))
        except DataError as exc:
            statuses.append(SourceStatus(f"csv:{p.name}", "long_csv", str(p), 0, str(exc)))
    long = pd.concat(frames, ignore_index=True) if frames else None
    return data_quality(long, catalog, sources=statuses, out_of_area_checks=ooa, notes=notes)
