"""Ingestion through DuckDB: record-level and aggregate files -> the monthly long frame.

This module reads the built-in example's folder layout directly (:func:`aggregate`,
:func:`aggregate_lsoa`) and validates a user's long CSV (:func:`read_long_csv`). Evaluations and
tracking read every source through the data catalogue (``parameters/sources.yaml``,
:mod:`sveval.data.sources`) and the incremental store (:mod:`sveval.data.store`); for the example
the store's long frame and LSOA panels are tested equal to :func:`aggregate` and
:func:`aggregate_lsoa`, which remain as the reference (and as the fallback for a project without
a sources file).

Record-level data stop here. Every source is read with SQL (``read_csv`` with explicit column
types) into a view, each measure's ``filter`` (a DuckDB SQL condition from ``measures.yaml``) and
``age_max`` select its records or rows, and only monthly counts by area (and by LSOA) come out.

The long frame has one row per ``period`` x ``area_code`` x ``measure`` with ``count`` and
``population`` (the measure's denominator, :attr:`MeasureSpec.population_band`). Months without
records are zeros, not gaps. Results are cached as parquet under ``<data_dir>/.cache/`` keyed by a
hash of the measure definitions, the ingestion version and the data files (name, size, mtime).

Source views and their columns (what a measure's ``filter`` may use):

``force_extract``  crime_ref, ho_offence_code, offence_description, offence_group, recorded_date
                   (DATE), committed_datetime (TIMESTAMP), area_code, lsoa_code, lsoa_name,
                   knife_flag, da_flag, alcohol_flag, nte_zone (BOOLEAN), victim_age (INTEGER),
                   victim_sex. Counted by month of ``recorded_date``. Areas outside the extract come
                   from ``aggregates/csp_flagged_offences.csv`` (rows of the measure's id).
``police_uk``      crime_id, month, reported_by, falls_within, longitude, latitude, location,
                   lsoa_code, lsoa_name, crime_type, last_outcome_category, context, area_code
                   (from the LSOA lookup).
``hospital``       month, area_code, icd10_code, icd10_description, age_group, age_from, age_to, n
``homicide_index`` month, area_code, offence, victim_age_group, age_from, age_to, method, domestic, n
``youth_justice``  month, area_code, age_group, age_from, age_to, sex, n
``aggregate``      month, area_code, measure, n (the CSP table: rows whose measure is the id)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from sveval.data.filters import compile_filter, lock_down, source_columns
from sveval.errors import DataError
from sveval.spec import PERIOD_RE, MeasureSpec, add_months, months_between

INGEST_VERSION = "1"
LONG_COLUMNS = ["period", "area_code", "measure", "count", "population"]
LSOA_COLUMNS = ["period", "lsoa_code", "area_code", "measure", "count"]

from sveval.data.views import (  # noqa: E402,F401  (the built-in views' columns, re-exported)
    AGGREGATE_FILES,
    FORCE_EXTRACT_COLUMNS,
    PERSONAL_FIELDS,
    POLICE_UK_COLUMNS,
)

_COUNT_COLUMN = {"hospital": "admissions", "homicide_index": "homicides", "youth_justice": "first_time_entrants"}
RECORD_SOURCES = ("force_extract", "police_uk")


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_sql_str(v) for v in values) + "]"


def _read_csv_sql(files: list[Path], columns: dict[str, str]) -> str:
    cols = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in columns.items()) + "}"
    return (f"read_csv({_sql_list(f.as_posix() for f in files)}, header = true, columns = {cols}, "
            "auto_detect = false, delim = ',', quote = '\"', dateformat = '%Y-%m-%d', "
            "timestampformat = '%Y-%m-%d %H:%M')")


# ------------------------------------------------------------------------------------------------
# Files of a data folder
# ------------------------------------------------------------------------------------------------
def _files(data_dir: Path) -> dict[str, list[Path]]:
    """Input files by source (sorted; plain or gzip-compressed CSV)."""
    def glob(pattern: str) -> list[Path]:
        return sorted(p for p in data_dir.glob(pattern) if p.is_file())

    out = {
        "force_extract": glob("force_extract/*.csv") + glob("force_extract/*.csv.gz"),
        "police_uk": glob("police_uk/*/*-street.csv") + glob("police_uk/*/*-street.csv.gz"),
    }
    for key, (rel, _) in AGGREGATE_FILES.items():
        p = data_dir / rel
        out[key] = [p] if p.is_file() else []
    return out


def _fingerprint(files: dict[str, list[Path]], data_dir: Path) -> list[tuple[str, int, int]]:
    fp = []
    for key in sorted(files):
        for p in files[key]:
            st = p.stat()
            fp.append((p.relative_to(data_dir).as_posix(), st.st_size, st.st_mtime_ns))
    return fp


def cache_key(data_dir: Path | str, measures: Iterable[MeasureSpec]) -> str:
    """Hash of the measure definitions, the ingestion version and the data files."""
    data_dir = Path(data_dir)
    payload = {
        "version": INGEST_VERSION,
        "measures": [m.model_dump(mode="json") for m in sorted(measures, key=lambda m: m.id)],
        "files": _fingerprint(_files(data_dir), data_dir),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------------
# The DuckDB session
# ------------------------------------------------------------------------------------------------
class _Session:
    """A DuckDB connection with one view per source of a data folder."""

    def __init__(self, data_dir: Path, record_sources: Iterable[str] = RECORD_SOURCES):
        self.data_dir = data_dir
        self.files = _files(data_dir)
        for src in set(RECORD_SOURCES) - set(record_sources):
            self.files[src] = []  # not needed: not read
        self.con = duckdb.connect()
        self.con.execute(f"SET threads = {max(1, min(2, os.cpu_count() or 1))}")
        try:
            self.con.execute("SET enable_progress_bar = false")
        except duckdb.Error:
            # inside a Jupyter kernel DuckDB refuses to touch the setting without ipywidgets;
            # there the progress bar is not shown anyway
            pass
        self.views: set[str] = set()
        self._make_views()
        lock_down(self.con)  # sources attached: no file or network access from here on

    def close(self) -> None:
        self.con.close()

    def _view(self, name: str, sql: str, table: bool = False) -> None:
        kind = "TABLE" if table else "VIEW"
        try:
            self.con.execute(f"CREATE OR REPLACE {kind} {name} AS {sql}")
        except duckdb.Error as exc:  # pragma: no cover - malformed input files
            raise DataError(f"cannot read the {name} files: {exc}", path=self.data_dir) from None
        self.views.add(name)

    def _make_views(self) -> None:
        f = self.files
        for key, (_rel, cols) in AGGREGATE_FILES.items():
            if f[key]:
                self._view(f"raw_{key}", f"SELECT * FROM {_read_csv_sql(f[key], cols)}", table=True)
        if f["force_extract"]:
            self._view("force_extract", f"""
                SELECT * REPLACE (knife_flag = 'Y' AS knife_flag, da_flag = 'Y' AS da_flag,
                                  alcohol_flag = 'Y' AS alcohol_flag, nte_zone = 'Y' AS nte_zone),
                       strftime(recorded_date, '%Y-%m') AS period
                FROM {_read_csv_sql(f['force_extract'], FORCE_EXTRACT_COLUMNS)}""", table=True)
        if f["police_uk"]:
            if "raw_lsoa_lookup" not in self.views:
                raise DataError("police.uk files need lookups/lsoa_lookup.csv (LSOA -> area)", path=self.data_dir)
            self._view("police_uk", f"""
                SELECT p."Crime ID" AS crime_id, p."Month" AS month, p."Reported by" AS reported_by,
                       p."Falls within" AS falls_within, p."Longitude" AS longitude, p."Latitude" AS latitude,
                       p."Location" AS location, p."LSOA code" AS lsoa_code, p."LSOA name" AS lsoa_name,
                       p."Crime type" AS crime_type, p."Last outcome category" AS last_outcome_category,
                       p."Context" AS context, l.area_code, p."Month" AS period
                FROM {_read_csv_sql(f['police_uk'], POLICE_UK_COLUMNS)} p
                JOIN raw_lsoa_lookup l ON l.lsoa_code = p."LSOA code" """, table=True)
        for key, col in _COUNT_COLUMN.items():
            if f[key]:
                self._view(key, f"SELECT *, {col} AS n, month AS period FROM raw_{key}")
        if f["csp"]:
            self._view("aggregate", "SELECT month AS period, csp_code AS area_code, measure, offences AS n FROM raw_csp")

    # -- queries ---------------------------------------------------------------------------------------
    def df(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def months(self) -> list[str]:
        """The months the data cover (union over sources)."""
        parts = [f"SELECT min(period) AS lo, max(period) AS hi FROM {v}" for v in
                 ("force_extract", "police_uk", "hospital", "homicide_index", "youth_justice", "aggregate")
                 if v in self.views]
        if not parts:
            raise DataError("no data files found (force_extract/, police_uk/, aggregates/)", path=self.data_dir)
        r = self.df(" UNION ALL ".join(parts))
        lo, hi = r["lo"].dropna().min(), r["hi"].dropna().max()
        return [add_months(lo, k) for k in range(months_between(lo, hi))]


def _where(m: MeasureSpec, age_col: str) -> str:
    conds = []
    if m.filter:
        conds.append(f"({compile_filter(m.filter, source_columns(m.source), where=f'measure {m.id!r}')})")
    if m.age_max is not None:
        conds.append(f"{age_col} <= {int(m.age_max)}")
    return " AND ".join(conds) if conds else "TRUE"


def _run(s: _Session, m: MeasureSpec, sql: str, what: str) -> pd.DataFrame:
    try:
        return s.df(sql)
    except duckdb.Error as exc:
        raise DataError(
            f"measure '{m.id}': its filter/age_max could not be applied to the {what} data: "
            f"{str(exc).splitlines()[0]} (filter: {m.filter!r})"
        ) from None


def _measure_counts(s: _Session, m: MeasureSpec, by_lsoa: bool) -> tuple[pd.DataFrame, list[str]]:
    """Monthly counts of one measure (by area or by LSOA) and the area universe of its source."""
    key = "lsoa_code, area_code" if by_lsoa else "area_code"
    empty = pd.DataFrame(columns=["period", *key.split(", "), "count"])
    if m.source in RECORD_SOURCES:
        if m.source not in s.views:
            return empty, []
        df = _run(s, m, f"SELECT period, {key}, count(*)::DOUBLE AS count FROM {m.source} "
                        f"WHERE {_where(m, 'victim_age')} GROUP BY ALL", m.source)
        areas = s.df(f"SELECT DISTINCT area_code FROM {m.source}")["area_code"].tolist()
        if m.source == "force_extract" and not by_lsoa and "aggregate" in s.views:
            extra = s.df(f"SELECT period, area_code, sum(n)::DOUBLE AS count FROM aggregate "
                         f"WHERE measure = {_sql_str(m.id)} AND area_code NOT IN (SELECT area_code FROM "
                         f"(SELECT DISTINCT area_code FROM force_extract)) GROUP BY ALL")
            df = pd.concat([df, extra], ignore_index=True) if len(extra) else df
            areas += s.df(f"SELECT DISTINCT area_code FROM aggregate WHERE measure = {_sql_str(m.id)}")[
                "area_code"].tolist()
        return df, sorted(set(areas))
    if by_lsoa:
        raise DataError(f"measure '{m.id}' comes from the aggregate source '{m.source}': no LSOA counts")
    view = m.source
    if view not in s.views:
        return empty, []
    age_col = "age_to" if view != "aggregate" else "NULL"
    where = _where(m, age_col)
    if view == "aggregate":
        where = f"measure = {_sql_str(m.id)}" + ("" if where == "TRUE" else f" AND {where}")
    df = _run(s, m, f"SELECT period, area_code, sum(n)::DOUBLE AS count FROM {view} WHERE {where} GROUP BY ALL", view)
    areas = s.df(f"SELECT DISTINCT area_code FROM {view}" + (
        f" WHERE measure = {_sql_str(m.id)}" if view == "aggregate" else ""))["area_code"].tolist()
    return df, sorted(areas)


def _zero_fill(df: pd.DataFrame, months: list[str], units: pd.DataFrame) -> pd.DataFrame:
    """Every month x unit (units: a frame of unit key columns), missing counts as zeros."""
    grid = units.merge(pd.DataFrame({"period": months}), how="cross")
    keys = [*units.columns, "period"]
    out = grid.merge(df[[*keys, "count"]], on=keys, how="left") if len(df) else grid.assign(count=np.nan)
    out["count"] = out["count"].fillna(0.0).astype(float)
    return out


def _populations(s: _Session, months: list[str]) -> pd.DataFrame:
    """period x area_code x band -> population (calendar year, last estimate carried forward)."""
    if "raw_population" not in s.views:
        return pd.DataFrame(columns=["period", "area_code", "population_band", "population"])
    pop = s.df("SELECT mid_year, area_code, age_band AS population_band, population FROM raw_population")
    years = pd.DataFrame({"period": months, "year": [int(p[:4]) for p in months]})
    out = []
    for (area, band), g in pop.groupby(["area_code", "population_band"]):
        g = g.sort_values("mid_year")
        idx = np.searchsorted(g["mid_year"].to_numpy(), years["year"].to_numpy(), side="right") - 1
        vals = np.where(idx >= 0, g["population"].to_numpy()[np.maximum(idx, 0)], g["population"].iloc[0])
        out.append(pd.DataFrame({"period": months, "area_code": area, "population_band": band,
                                 "population": vals.astype(float)}))
    return pd.concat(out, ignore_index=True)


def _catalog_measures(catalog) -> list[MeasureSpec]:
    return list(catalog.measures.values()) if hasattr(catalog, "measures") else list(catalog)


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def aggregate(data_dir: Path | str, measures: Iterable[MeasureSpec]) -> pd.DataFrame:
    """Ingest a data folder without caching: the long frame of ``measures`` (see module docs)."""
    data_dir = Path(data_dir)
    measures = list(measures)
    s = _Session(data_dir, record_sources={m.source for m in measures} & set(RECORD_SOURCES))
    try:
        months = s.months()
        pops = _populations(s, months)
        frames = []
        for m in measures:
            df, areas = _measure_counts(s, m, by_lsoa=False)
            if not areas:
                continue
            full = _zero_fill(df, months, pd.DataFrame({"area_code": areas}))
            full["measure"] = m.id
            p = pops[pops["population_band"] == m.population_band][["period", "area_code", "population"]]
            full = full.merge(p, on=["period", "area_code"], how="left")
            frames.append(full[LONG_COLUMNS])
    finally:
        s.close()
    if not frames:
        raise DataError("no measure could be computed from the data folder", path=data_dir)
    long = pd.concat(frames, ignore_index=True)
    long = long.sort_values(["measure", "area_code", "period"], kind="stable").reset_index(drop=True)
    return _typed_long(long)


def aggregate_lsoa(data_dir: Path | str, measure: MeasureSpec) -> pd.DataFrame:
    """Monthly counts of a record-level measure by LSOA (zeros filled over the source's LSOAs)."""
    data_dir = Path(data_dir)
    if measure.source not in RECORD_SOURCES:
        raise DataError(
            f"measure '{measure.id}' comes from the aggregate source '{measure.source}', which has no "
            "LSOA detail; LSOA panels need a force_extract or police_uk measure"
        )
    s = _Session(data_dir, record_sources=[measure.source])
    try:
        if measure.source not in s.views:
            raise DataError(f"no {measure.source} files for measure '{measure.id}'", path=data_dir)
        months = s.months()
        df, _ = _measure_counts(s, measure, by_lsoa=True)
        units = s.df(f"SELECT DISTINCT lsoa_code, area_code FROM {measure.source}")
        if "raw_lsoa_lookup" in s.views:  # LSOAs of the source's areas without any record
            lk = s.df("SELECT lsoa_code, area_code FROM raw_lsoa_lookup")
            units = pd.concat([units, lk[lk["area_code"].isin(units["area_code"])]]).drop_duplicates()
    finally:
        s.close()
    units = units.sort_values(["area_code", "lsoa_code"]).reset_index(drop=True)
    full = _zero_fill(df, months, units)
    full["measure"] = measure.id
    full = full[LSOA_COLUMNS].sort_values(["lsoa_code", "period"], kind="stable").reset_index(drop=True)
    for c in ("period", "lsoa_code", "area_code", "measure"):
        full[c] = full[c].astype(str)
    return full


def _typed_long(long: pd.DataFrame) -> pd.DataFrame:
    out = long[LONG_COLUMNS].copy()
    for c in ("period", "area_code", "measure"):
        out[c] = out[c].astype(str)
    out["count"] = out["count"].astype(float)
    out["population"] = pd.to_numeric(out["population"], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def _cached(data_dir: Path, name: str, build) -> pd.DataFrame:
    """Read ``<data_dir>/.cache/<name>.parquet`` or build and write it (atomically, via DuckDB)."""
    cache = data_dir / ".cache"
    path = cache / f"{name}.parquet"
    if path.exists():
        try:
            with duckdb.connect() as con:
                df = con.execute(f"SELECT * FROM read_parquet({_sql_str(path.as_posix())})").df()
            return _retype(df)
        except duckdb.Error:  # a damaged cache file is rebuilt
            pass
    df = build()
    try:
        cache.mkdir(exist_ok=True)
        tmp = cache / f".{name}.{os.getpid()}.tmp"
        with duckdb.connect() as con:
            con.register("frame", df)
            con.execute(f"COPY frame TO {_sql_str(tmp.as_posix())} (FORMAT parquet)")
        os.replace(tmp, path)
    except (OSError, duckdb.Error):
        pass  # read-only data folder: no cache
    return df


def _retype(df: pd.DataFrame) -> pd.DataFrame:
    for c in df.columns:
        if c in ("count", "population"):
            df[c] = df[c].astype(float)
        else:
            df[c] = df[c].astype(str)
    return df


def load_example_long(data_dir: Path | str, catalog) -> pd.DataFrame:
    """The long frame of every registry measure in a data folder (cached).

    Parameters
    ----------
    data_dir : folder written by :func:`sveval.data.example.ensure_example` (or the same layout)
    catalog : a :class:`sveval.catalog.Catalog` (or an iterable of :class:`MeasureSpec`)

    Returns
    -------
    pandas.DataFrame
        period, area_code, measure, count, population; every month of the data for every area the
        measure's source covers.

    Examples
    --------
    >>> from sveval.catalog import Catalog
    >>> from sveval.data.example import ensure_example
    >>> long = load_example_long(ensure_example("data/example"), Catalog.load("parameters"))  # doctest: +SKIP
    """
    data_dir = Path(data_dir)
    measures = _catalog_measures(catalog)
    key = cache_key(data_dir, measures)
    return _cached(data_dir, f"long-{key}", lambda: aggregate(data_dir, measures))


def load_example_lsoa(data_dir: Path | str, catalog, measure_id: str) -> pd.DataFrame:
    """LSOA x month counts of one record-level measure: period, lsoa_code, area_code, measure, count.

    From the store when ``data_dir`` is a store or holds one (``.store``, the example's), else
    ingested directly from the example layout (cached).
    """
    data_dir = Path(data_dir)
    measures = {m.id: m for m in _catalog_measures(catalog)}
    if measure_id not in measures:
        raise DataError(f"unknown measure '{measure_id}'; known: {', '.join(sorted(measures))}")
    m = measures[measure_id]
    from sveval.data.store import Store, is_store

    for root in (data_dir / ".store", data_dir):  # the store of the example, or a project's store
        if is_store(root):
            store = Store(root)
            areas = {c: a.name for c, a in getattr(catalog, "areas", {}).items()}
            return store.lsoa(store.sources(), m, areas)
    key = cache_key(data_dir, [m])
    return _cached(data_dir, f"lsoa-{measure_id}-{key}", lambda: aggregate_lsoa(data_dir, m))


# ------------------------------------------------------------------------------------------------
# A user's long CSV
# ------------------------------------------------------------------------------------------------
REQUIRED = ("period", "area_code", "measure", "count")
#: largest long CSV read (bytes): area totals are small; a bigger file is a wrong path or a device
MAX_LONG_CSV_BYTES = 512 * 1024 * 1024


def read_long_csv(path: Path | str, continuous: Iterable[str] = ()) -> pd.DataFrame:
    """Read and validate a user's long CSV: period, area_code, measure, count[, population].

    Errors (:class:`~sveval.errors.DataError`) name the file, the 1-based data row and the column:
    a path that is not a regular file (a folder, a device such as ``/dev/zero``) or is larger
    than :data:`MAX_LONG_CSV_BYTES`, no data rows, a missing column, a period that is not a month
    ``YYYY-MM``, a calendar quarter ``YYYY-Qn``, a year ``YYYY`` or a financial year ``YYYY/YY``,
    a measure whose periods mix these forms, a count that is missing, non-numeric, infinite or
    negative (negative values are
    allowed for the measures named in ``continuous``), a negative, infinite or non-numeric
    population, duplicated period x area x measure rows. Unknown extra columns are ignored.

    The returned frame's ``attrs["granularity"]`` maps each measure to its granularity (``month``,
    ``quarter``, ``year`` or ``financial_year``).
    """
    import stat

    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise DataError("is a folder; data.path names one long CSV file", path=path)
    if not stat.S_ISREG(st.st_mode):
        raise DataError("not a regular file (a device, pipe or socket); data.path names a CSV file",
                        path=path)
    if st.st_size > MAX_LONG_CSV_BYTES:
        raise DataError(f"{st.st_size:,} bytes; a long CSV of area totals is at most "
                        f"{MAX_LONG_CSV_BYTES:,} bytes", path=path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError("empty file: no header and no data rows", path=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable CSV file: {str(exc).strip()}", path=path) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; a long CSV needs period, area_code, measure, count "
            f"(and optionally population); found: {', '.join(raw.columns)}",
            path=path, column=missing[0])
    if raw.empty:
        raise DataError("no data rows: the file has a header only; a long CSV needs one row per "
                        "period x area_code x measure", path=path)
    for col in ("period", "area_code", "measure"):
        vals = raw[col].str.strip()
        bad = np.flatnonzero(vals == "")
        if len(bad):
            raise DataError(f"empty {col}", path=path, row=int(bad[0]) + 1, column=col)
        raw[col] = vals
    gran = _period_granularity(raw["period"])
    bad = np.flatnonzero(gran.isna().to_numpy())
    if len(bad):
        r = int(bad[0])
        raise DataError(f"period {raw['period'].iloc[r]!r} is not a month as YYYY-MM (e.g. 2023-04), "
                        "a quarter as YYYY-Qn (2023-Q2), a year as YYYY (2023) or a financial year "
                        "as YYYY/YY (2023/24)", path=path, row=r + 1, column="period")
    granularity: dict[str, str] = {}
    for m, g in gran.groupby(raw["measure"], sort=True):
        kinds = g.unique()
        if len(kinds) > 1:
            rows = [int(np.flatnonzero((raw["measure"] == m).to_numpy() & (gran == k).to_numpy())[0])
                    for k in kinds]
            shown = ", ".join(f"{k.replace('_', ' ')} {raw['period'].iloc[r]!r} (row {r + 1})"
                              for k, r in zip(kinds, rows, strict=True))
            raise DataError(f"measure '{m}' mixes period forms: {shown}; one measure has one "
                            "granularity", path=path, row=max(rows) + 1, column="period")
        granularity[str(m)] = str(kinds[0])
    out = raw[["period", "area_code", "measure"]].copy()
    out["count"] = _numbers(raw["count"], path, "count", required=True,
                            may_be_negative=raw["measure"].isin(set(continuous)).to_numpy())
    if "population" in raw.columns:
        out["population"] = _numbers(raw["population"], path, "population", required=False)
    else:
        out["population"] = np.nan
    dup = out.duplicated(["period", "area_code", "measure"], keep="first").to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(
            (out["period"] == out["period"].iloc[r]) & (out["area_code"] == out["area_code"].iloc[r])
            & (out["measure"] == out["measure"].iloc[r]))[0])
        raise DataError(
            f"duplicated period x area_code x measure ({out['period'].iloc[r]}, {out['area_code'].iloc[r]}, "
            f"{out['measure'].iloc[r]}): first given in row {first + 1}", path=path, row=r + 1)
    out = out.sort_values(["measure", "area_code", "period"], kind="stable")
    long = _typed_long(out)
    long.attrs["granularity"] = granularity
    return long


_GRANULARITY_PATTERNS = (
    ("month", PERIOD_RE.pattern),
    ("quarter", r"^\d{4}-Q[1-4]$"),
    ("year", r"^\d{4}$"),
    ("financial_year", r"^\d{4}/\d{2}$"),
)


def _period_granularity(periods: pd.Series) -> pd.Series:
    """Granularity of each period string (NaN where none): a financial year must run into the next
    year (``2023/24``, not ``2023/25``)."""
    out = pd.Series(np.nan, index=periods.index, dtype=object)
    for g, pat in _GRANULARITY_PATTERNS:
        hit = periods.str.match(pat) & out.isna()
        if g == "financial_year" and hit.any():
            y = pd.to_numeric(periods.str.slice(0, 4), errors="coerce")
            yy = pd.to_numeric(periods.str.slice(5, 7), errors="coerce")
            hit &= ((y + 1) % 100 == yy)
        out[hit] = g
    return out


def _numbers(col: pd.Series, path: Path, name: str, required: bool,
             may_be_negative: np.ndarray | None = None) -> pd.Series:
    s = col.str.strip()
    empty = s == ""
    if required and empty.any():
        r = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"missing {name}", path=path, row=r + 1, column=name)
    num = pd.to_numeric(s.where(~empty), errors="coerce")
    bad = np.flatnonzero((num.isna() & ~empty).to_numpy())
    if len(bad):
        r = int(bad[0])
        raise DataError(f"{name} {col.iloc[r]!r} is not a number", path=path, row=r + 1, column=name)
    inf = np.flatnonzero(np.isinf(num.to_numpy(dtype=float)))
    if len(inf):
        r = int(inf[0])
        raise DataError(f"{name} {col.iloc[r]!r} is not a finite number", path=path, row=r + 1,
                        column=name)
    negative = (num < 0).to_numpy()
    if may_be_negative is not None:
        negative = negative & ~may_be_negative
    neg = np.flatnonzero(negative)
    if len(neg):
        r = int(neg[0])
        what = ("counts and populations are >= 0" if may_be_negative is None or name != "count"
                else "only continuous measures (kind: continuous in measures.yaml) may be negative")
        raise DataError(f"{name} {col.iloc[r]!r} is negative; {what}", path=path, row=r + 1, column=name)
    return num.astype(float)
