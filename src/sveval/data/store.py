"""The persistent, incremental store: every source of ``sources.yaml`` aggregated under ``data/``.

Layout (a folder, not in git)::

    <store>/manifest.json        what was read: per source its signature and parts, per file its
                                 key (path, or zip!member), size, mtime (or zip CRC), CRC-32, rows
    <store>/parts/<source>-<uuid>.parquet
                                 aggregates of one ingest batch (see below)

:meth:`Store.ingest` reads only new or changed files: a file whose size and mtime are unchanged is
skipped without being read (so content rewritten to the same size with the old mtime put back is
not seen: the limit of stat-based change detection; touch the file or run with a fresh store); one
whose mtime changed but whose size and CRC-32 are unchanged is only re-stamped. A
source whose definition or measures changed (its *signature*: the source entry, the measures
naming it, the ingestion version) is re-read in full. New parts are written first, then a new
manifest replaces the old one atomically (``os.replace``); a failed ingest deletes its new parts
and leaves the last good store. A lock file serialises concurrent ingests.

What a part holds, by source kind (record-level data stop here):

``police_uk``  file, period, lsoa_code, crime_type, n: the monthly LSOA x crime type cube of
               each file (plus the few-valued columns measure filters use, and lsoa_name without
               a lookup); measures over these columns are evaluated on the cube when read, others
               (filters over location, crime_id...) get a count column ``m:<measure>`` at
               ingestion. Files are read in groups of whole months by two workers (one
               single-threaded DuckDB each, one part a group; files named by number, the
               manifest's ``id``); a part holding an LSOA and month in two files (``mixed`` in
               the manifest) has those pairs beside it in ``shared-<part>``, so that
               :meth:`Store.crime_types_sql` sums only where it must
``records``    file, period, lsoa_code, area_code, n, ``m:<measure>``
``table``      file, period (canonical, in the source's granularity), area_code, ``m:<measure>``
               (sum of the count column over rows passing the filter) and ``p:<measure>`` (rows of
               the measure: its area universe)
``population`` file, year, area_code, band, population
``lookup``     file, lsoa_code, area_code, lsoa_name

:meth:`Store.long` then maps LSOAs to areas (the lookup, or the LSOA name's prefix against the
area registry), zero-fills every period of the data for every area of the measure's source and
adds populations: the long frame of :mod:`sveval.data.ingest`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from sveval.data import policeuk
from sveval.data.filters import compile_filter
from sveval.data.sources import (
    Sources,
    SourcesFile,
    SourceSpec,
    normalise_period,
    period_range,
    period_year,
)
from sveval.errors import DataError
from sveval.spec import MeasureSpec

STORE_VERSION = "2"  # 2: police.uk parts name files by number (the manifest's "id")
LONG_COLUMNS = ["period", "area_code", "measure", "count", "population"]
LSOA_COLUMNS = ["period", "lsoa_code", "area_code", "measure", "count"]
BATCH_BYTES = 768 << 20  # files read per query (larger: faster, more memory)
GROUP_BYTES = 64 << 20  # police.uk street files read per query by one worker
PART_ROW_GROUP = 16384  # rows a row group of a street part (small dictionaries: ~15% faster to write)
_DUCK_TYPES = {"text": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "date": "DATE",
               "timestamp": "TIMESTAMP", "boolean": "VARCHAR"}


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + str(s).replace('"', '""') + '"'


try:  # zlib-ng's CRC-32 (the same values as zlib's, five times as fast: 0.1 CPU-s a GB)
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib's is the fallback
    _crc32 = zlib.crc32

_CRC_BUFFERS = threading.local()


def crc32_file(path: Path) -> int:
    """CRC-32 of a file's bytes, read into one reused buffer per thread (half the time of
    reading a new bytes object per block: no allocation, no page faults on fresh memory)."""
    buf = getattr(_CRC_BUFFERS, "buf", None)
    if buf is None:
        buf = _CRC_BUFFERS.buf = memoryview(bytearray(1 << 20))
    c = 0
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            c = _crc32(buf[:n], c)
    return c


@dataclass(frozen=True)
class FileRef:
    """One input file of a source (or one street file inside a zip)."""

    key: str
    path: Path
    member: str | None
    size: int
    stamp: int
    month: str | None = None  # police.uk street files: the month of the file's name


@dataclass
class SourceReport:
    id: str
    kind: str
    files: int = 0
    files_read: int = 0
    rows: int = 0


@dataclass
class IngestReport:
    """What one :meth:`Store.ingest` did."""

    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def files_read(self) -> int:
        return sum(s.files_read for s in self.sources)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [f"{s.id:<20} {s.kind:<10} {s.files:>6} files, {s.files_read:>6} read, "
                 f"{s.rows:>12,} rows" for s in self.sources]
        lines.append(f"read {self.files_read} file(s), {self.rows:,} rows in {self.seconds:.1f} s "
                     f"({self.rows_per_second:,.0f} rows/s)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _connect(threads: int | None = None, memory: str = "600MB") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET threads = {threads or max(1, min(2, os.cpu_count() or 1))}")
    con.execute(f"SET memory_limit = '{memory}'")
    con.execute("SET preserve_insertion_order = false")
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")
    return con


# ------------------------------------------------------------------------------------------------
# Reading a source's files into a relation with sveval's columns
# ------------------------------------------------------------------------------------------------
def _read_header(path: Path, fmt: str, sid: str) -> list[str]:
    opener = gzip.open if fmt == "csv.gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            first = next(csv.reader(io.StringIO(fh.readline())), None)
    except UnicodeDecodeError:
        raise DataError(f"source '{sid}': not UTF-8 text (save the file as UTF-8)", path=path,
                        row=0) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"source '{sid}': cannot read the file ({exc})", path=path) from None
    if not first or not any(h.strip() for h in first):
        raise DataError(f"source '{sid}': empty file (no header)", path=path)
    return [h.strip() for h in first]


def _columns_of(s: SourceSpec, header: list[str], path: Path) -> dict[str, str]:
    """sveval name -> header for every column a query may use (mapped names and own headers)."""
    for name, h in s.columns.items():
        if h not in header:
            raise DataError(f"source '{s.id}': column '{h}' (mapped to {name}) is not in the file's "
                            f"header; found: {', '.join(header)}", path=path, column=h)
    # DuckDB names are case-insensitive: a mapped name hides a header spelled the same way
    mapped = {n.lower() for n in s.columns}
    cols = {h: h for h in header if h.lower() not in mapped}
    cols.update(s.columns)
    return cols


def _type_of(s: SourceSpec, name: str, header: str) -> str:
    return s.types.get(name) or s.types.get(header) or "text"


def _select_list(s: SourceSpec, cols: dict[str, str]) -> str:
    parts = []
    tv = "(" + ", ".join(_q(v) for v in s.true_values) + ")"
    for name, h in cols.items():
        t = _type_of(s, name, h)
        expr = f"({_ident(h)} IN {tv})" if t == "boolean" else _ident(h)
        parts.append(f"{expr} AS {_ident(name)}")
    return ", ".join(parts)


def _relations(con, sources: Sources, s: SourceSpec, files: list[FileRef], tmp: Path
               ) -> list[tuple[str, dict[str, str]]]:
    """Subqueries over the files (one per header layout) with ``file`` (the key) and sveval columns."""
    by_layout: dict[tuple, list[FileRef]] = {}
    for f in files:
        fmt = sources.file_format(s, f.path)
        header = tuple(_read_header(f.path, fmt, s.id)) if fmt in ("csv", "csv.gz") else ()
        by_layout.setdefault((fmt, header), []).append(f)
    out = []
    for (fmt, header), group in by_layout.items():
        keys = "(VALUES " + ", ".join(f"({_q(f.path.as_posix())}, {_q(f.key)})" for f in group) + ")"
        if fmt in ("csv", "csv.gz"):
            cols = _columns_of(s, list(header), group[0].path)
            types = {h: _DUCK_TYPES[_type_of(s, h, h)] for h in header}
            for name, h in s.columns.items():
                types[h] = _DUCK_TYPES[_type_of(s, name, h)]
            if s.kind == "table":
                types[s.header("period")] = "VARCHAR"
                types[s.header("count")] = "DOUBLE"
            elif s.kind == "population":
                types[s.header("population")] = "DOUBLE"
                types[s.header("year")] = "INTEGER"
            ctypes = "{" + ", ".join(f"{_q(h)}: {_q(types[h])}" for h in header) + "}"
            flist = "[" + ", ".join(_q(f.path.as_posix()) for f in group) + "]"
            src = (f"read_csv({flist}, header = true, columns = {ctypes}, auto_detect = false, "
                   f"delim = ',', quote = '\"', escape = '\"', dateformat = {_q(s.date_format)}, "
                   f"timestampformat = {_q(s.timestamp_format)}, filename = true)")
            sel = (f"(SELECT k.key AS file, {_select_list(s, cols)} FROM {src} r "
                   f"JOIN {keys} k(path, key) ON r.filename = k.path)")
            out.append((sel, cols))
            continue
        for f in group:
            if fmt == "parquet":
                src = f"read_parquet({_q(f.path.as_posix())})"
                header_f = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            else:  # xlsx
                try:
                    df = pd.read_excel(f.path, sheet_name=s.sheet or 0, dtype=object)
                except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds
                    raise DataError(f"source '{s.id}': cannot read the workbook ({exc})", path=f.path) from None
                df.columns = [str(c).strip() for c in df.columns]
                name = f"xlsx_{uuid.uuid4().hex[:8]}"
                text = df.astype(str).where(df.notna(), None)  # typed below by explicit casts
                for c in df.columns:  # whole numbers read as floats by the workbook reader
                    if pd.api.types.is_float_dtype(df[c]):
                        whole = df[c].dropna().mod(1).eq(0).all()
                        text[c] = df[c].map(lambda v, w=whole: None if pd.isna(v) else
                                            (str(int(v)) if w else repr(float(v))))
                    elif pd.api.types.is_datetime64_any_dtype(df[c]):
                        text[c] = df[c].dt.strftime("%Y-%m-%d %H:%M:%S").where(df[c].notna(), None)
                con.register(name, text)
                src = name
                header_f = list(df.columns)
            cols = _columns_of(s, header_f, f.path)
            casts = []
            tv = "(" + ", ".join(_q(v) for v in s.true_values) + ")"
            for name, h in cols.items():
                t = _type_of(s, name, h)
                if s.kind == "table" and name == "count":
                    t = "number"
                if t == "boolean":
                    casts.append(f"(CAST({_ident(h)} AS VARCHAR) IN {tv}) AS {_ident(name)}")
                elif t == "date" and fmt == "xlsx":
                    casts.append(f"CAST(CAST({_ident(h)} AS TIMESTAMP) AS DATE) AS {_ident(name)}")
                else:
                    casts.append(f"CAST({_ident(h)} AS {_DUCK_TYPES[t]}) AS {_ident(name)}")
            out.append((f"(SELECT {_q(f.key)} AS file, {', '.join(casts)} FROM {src})", cols))
    return out


def _need(s: SourceSpec, cols: dict[str, str], *names: str, path: Path | None = None) -> str:
    hit = next((n for n in names if n in cols), None)
    if hit is None:
        raise DataError(f"source '{s.id}': needs a column {' or '.join(names)} (map it in "
                        f"'columns'); found: {', '.join(c for c in cols if cols[c] == c)}",
                        path=path, column=names[0])
    return hit


_COMPILED: dict[tuple, str] = {}  # filter, columns, measure -> checked SQL (parsing costs ~1 ms)


def _compiled(expr: str, cols: list[str], mid: str) -> str:
    key = (expr, tuple(cols), mid)
    if key not in _COMPILED:
        _COMPILED[key] = compile_filter(expr, cols, where=f"measure '{mid}'")
    return _COMPILED[key]


def _condition(m: MeasureSpec, s: SourceSpec, cols: Iterable[str], age_col: str | None) -> str:
    conds = []
    if m.filter:
        conds.append("(" + _compiled(m.filter, list(cols), m.id) + ")")
    if m.age_max is not None:
        if age_col is None or age_col not in cols:
            raise DataError(f"measure '{m.id}': age_max needs an age column in source '{s.id}' "
                            f"({'age' if s.kind == 'records' else 'age_to'})")
        conds.append(f"{_ident(age_col)} <= {int(m.age_max)}")
    return " AND ".join(conds) if conds else "TRUE"


#: police.uk columns of few values that may join the cube's keys when a filter uses them
CUBE_EXTRA = ("last_outcome_category", "falls_within", "reported_by", "context", "lsoa_name")
_CUBE_BASE = {"month", "period", "lsoa_code", "crime_type"}
_STREET_FILTER_COLUMNS = [*policeuk.STREET_COLUMNS.values(), "period"]


@functools.lru_cache(maxsize=256)
def _filter_columns(sql: str) -> frozenset[str]:
    import sqlglot
    from sqlglot import exp

    return frozenset(c.name.lower() for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column))


def police_plan(s: SourceSpec, measures: list[MeasureSpec]) -> tuple[list[str], dict[str, str], list[MeasureSpec]]:
    """How a police.uk source is aggregated: the extra cube keys, the measures evaluated on the
    cube at query time (id -> condition) and those counted at ingestion (filters over columns of
    many values, such as location or crime_id).

    The cube is the monthly count by LSOA x crime type (plus any :data:`CUBE_EXTRA` column a
    filter uses), so measures over those columns can be added or changed without re-reading files.
    """
    extra: set[str] = set()
    cube: dict[str, str] = {}
    ingest = []
    for m in measures:
        cond = _condition(m, s, _STREET_FILTER_COLUMNS, None)
        used = _filter_columns(cond) if m.filter else set()
        if used <= _CUBE_BASE | set(CUBE_EXTRA):
            cube[m.id] = cond
            extra |= used & set(CUBE_EXTRA)
        else:
            ingest.append(m)
    return sorted(extra), cube, ingest


# ------------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------------
class Store:
    """A store folder (see the module docstring)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.parts_dir = self.root / "parts"
        self._memo: dict = {}  # per-call cache of source-level aggregates (long, lsoa)

    # -- manifest ----------------------------------------------------------------------------------
    def manifest(self) -> dict:
        p = self.root / "manifest.json"
        if not p.exists():
            return {"version": STORE_VERSION, "sources": {}}
        try:
            m = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {"version": STORE_VERSION, "sources": {}}
        return m if m.get("version") == STORE_VERSION else {"version": STORE_VERSION, "sources": {}}

    def _write_manifest(self, m: dict) -> None:
        tmp = self.root / f".manifest.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.write_text(json.dumps(m, indent=1, sort_keys=True))
        os.replace(tmp, self.root / "manifest.json")

    def sources(self) -> Sources:
        """The catalogue the store was last ingested from (a store describes itself)."""
        cat = self.manifest().get("catalogue")
        if not cat:
            raise DataError("the store is empty: run 'sveval data ingest' first", path=self.root)
        return Sources(SourcesFile.model_validate(cat["spec"]), Path(cat["base_dir"]),
                       Path(cat["path"]) if cat.get("path") else None)

    @contextlib.contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX
                pass
            yield

    # -- discovering files --------------------------------------------------------------------------
    @staticmethod
    def discover(sources: Sources, s: SourceSpec) -> list[FileRef]:
        paths = sources.files(s)
        if s.kind == "police_uk":
            return [FileRef(f.key, f.path, f.member, f.size, f.stamp, f.month)
                    for f in policeuk.street_files(paths, sources.base_dir, s.forces, s.id)]
        out = []
        for p in paths:
            st = p.stat()
            if st.st_size == 0:
                raise DataError(f"source '{s.id}': empty file", path=p)
            try:
                key = p.relative_to(sources.base_dir).as_posix()
            except ValueError:
                key = p.as_posix()
            out.append(FileRef(key, p, None, st.st_size, st.st_mtime_ns))
        return out

    @staticmethod
    def signature(s: SourceSpec, measures: list[MeasureSpec], sources: Sources) -> str:
        if s.kind == "police_uk":  # measures on the cube do not change what is stored
            extra, _cube, measures = police_plan(s, measures)
        else:
            extra = []
        payload = {"v": STORE_VERSION, "source": s.model_dump(mode="json"),
                   "lookup": sources.lookup_for(s) is not None, "cube": extra,
                   "measures": [[m.id, m.filter, m.age_max] for m in measures]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # -- ingest ---------------------------------------------------------------------------------------
    def ingest(self, sources: Sources, measures: Iterable[MeasureSpec], progress: bool = False,
               log: Callable[[str], None] | None = None) -> IngestReport:
        """Read new or changed files of every source into the store (see the module docstring)."""
        measures = list(measures)
        by_source = _measures_by_source(sources, measures)
        t0 = time.perf_counter()
        report = IngestReport()
        with self._lock():
            old = self.manifest()
            new = {"version": STORE_VERSION, "sources": {}}
            written: list[Path] = []
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".ingest-", dir=self.root))
            con = None  # DuckDB is connected only when a file is to be read (an unchanged store: never)
            try:
                plan = []
                for s in sources:
                    files = self.discover(sources, s)
                    sig = self.signature(s, by_source.get(s.id, []), sources)
                    prev = old["sources"].get(s.id, {})
                    prev_files = prev.get("files", {}) if prev.get("sig") == sig else {}
                    keep, todo = {}, []
                    for f in files:
                        e = prev_files.get(f.key)
                        if e and e["size"] == f.size and e["stamp"] == f.stamp:
                            keep[f.key] = e
                        elif e and e["size"] == f.size and f.member is None and \
                                crc32_file(f.path) == e["crc"]:
                            keep[f.key] = {**e, "stamp": f.stamp}
                        else:
                            todo.append(f)
                    plan.append((s, sig, files, keep, todo))
                    report.sources.append(SourceReport(s.id, s.kind, len(files), len(todo)))
                total = sum(f.size for *_, todo in plan for f in todo)
                if any(todo for *_, todo in plan):
                    con = _connect()
                    con.execute(f"SET temp_directory = {_q((tmp / 'spill').as_posix())}")
                bar = _bar(total, progress)
                for (s, sig, _files, keep, todo), rep in zip(plan, report.sources, strict=True):
                    entries = dict(keep)
                    prev_parts = old["sources"].get(s.id, {}).get("parts", {}) if keep else {}
                    parts = {p: n for p, n in prev_parts.items() if any(e["part"] == p for e in keep.values())}
                    mixed = set(old["sources"].get(s.id, {}).get("mixed", [])) & set(parts)
                    if s.kind == "police_uk":  # files numbered after every number in use
                        first = 1 + max((e.get("id", -1) for e in keep.values()), default=-1)
                        done = self._read_street(sources, s, by_source.get(s.id, []), todo, tmp, bar, first)
                    else:
                        done = (self._read_batch(con, sources, s, by_source.get(s.id, []), batch, tmp, bar)
                                for batch in _batches(todo))
                    for part, batch, rows, shared in done:
                        written += [part, part.with_name(f"shared-{part.name}")] if shared else [part]
                        parts[part.name] = len(batch)
                        if shared:
                            mixed.add(part.name)
                        for f in batch:
                            entries[f.key] = {"size": f.size, "stamp": f.stamp, "crc": rows[f.key][1],
                                              "rows": rows[f.key][0], "part": part.name,
                                              "lo": rows[f.key][2], "hi": rows[f.key][3]}
                            if rows[f.key][4] is not None:
                                entries[f.key]["id"] = rows[f.key][4]
                        rep.rows += sum(r[0] for r in rows.values())
                    new["sources"][s.id] = {"sig": sig, "kind": s.kind, "files": entries, "parts": parts,
                                            "granularity": s.granularity if s.kind == "table" else
                                            ("year" if s.kind == "population" else "month")}
                    if s.kind == "police_uk":  # parts with an LSOA and month that several files hold
                        new["sources"][s.id]["mixed"] = sorted(mixed)
                        new["sources"][s.id]["keys"] = self._street_keys(sources, s, by_source.get(s.id, []))
                bar.close()
                changed = {r.id for r in report.sources if r.files_read}
                report.warnings += self._check_mapping(con, sources, new, changed)
                new["catalogue"] = {"base_dir": sources.base_dir.as_posix(),
                                    "path": sources.path.as_posix() if sources.path else None,
                                    "spec": sources.spec.model_dump(mode="json")}
                if new != old:  # nothing new: the manifest stays as it is
                    self._write_manifest(new)
            except BaseException:
                for p in written:
                    p.unlink(missing_ok=True)
                raise
            finally:
                if con is not None:
                    con.close()
                shutil.rmtree(tmp, ignore_errors=True)
            live = {e["part"] for src in new["sources"].values() for e in src["files"].values()}
            live |= {f"shared-{p}" for p in live}
            for p in self.parts_dir.glob("*.parquet"):
                if p.name not in live:
                    p.unlink(missing_ok=True)
        report.seconds = time.perf_counter() - t0
        if log:
            log(report.summary())
        return report

    def _read_batch(self, con, sources: Sources, s: SourceSpec, measures: list[MeasureSpec],
                    batch: list[FileRef], tmp: Path, bar) -> tuple[Path, list[FileRef], dict[str, tuple], bool]:
        """Aggregate one batch of files (of a source other than police.uk) into a new part; per
        file: rows, CRC-32, first/last period."""
        with ThreadPoolExecutor(1) as pool:
            crcs = pool.map(lambda f: f.stamp if f.member else crc32_file(f.path), batch)
            sql = self._batch_sql(con, sources, s, measures, batch, tmp)
            part = self.parts_dir / f"{s.id}-{uuid.uuid4().hex[:12]}.parquet"
            tmp_part = tmp / part.name
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE batch AS {sql}")
            except duckdb.Error as exc:
                raise DataError(f"source '{s.id}': cannot read {len(batch)} file(s) "
                                f"({batch[0].key}{' ...' if len(batch) > 1 else ''}): "
                                f"{str(exc).splitlines()[0]}", path=batch[0].path) from None
            crc = dict(zip([f.key for f in batch], crcs, strict=True))
        if s.kind == "table":
            self._normalise_table_periods(con, s, batch)
        if s.kind in ("police_uk", "records"):
            per = self._check_months(con, s, batch)
        else:
            per = {r[0]: r[1:] for r in con.execute(self._stats_sql(s)).fetchall()}
        con.execute(f"COPY batch TO {_q(tmp_part.as_posix())} (FORMAT parquet)")
        os.replace(tmp_part, part)
        bar.update(sum(f.size for f in batch))
        return part, batch, _file_rows(s, batch, per, crc), False

    def _read_street(self, sources: Sources, s: SourceSpec, measures: list[MeasureSpec],
                     files: list[FileRef], tmp: Path, bar, first_id: int = 0
                     ) -> list[tuple[Path, list[FileRef], dict, bool]]:
        """police.uk street files into parts: groups of files read by :func:`_threads` workers at
        once, each its own single-threaded DuckDB (smaller hash tables, no hand-over between
        threads: about a tenth less CPU than one query on two threads), each group's CRC-32s
        computed by its worker just before DuckDB reads the same bytes, and its counts written
        straight to a parquet part (no table in between). Parts are moved into the store only
        when every group has been read."""
        extra = self._street_keys(sources, s, measures)
        counted = police_plan(s, measures)[2]
        keys_sql = ", ".join(["period", "lsoa_code", "crime_type", *extra])
        mcols = "".join(
            f", count(*) FILTER (WHERE {_condition(m, s, _STREET_FILTER_COLUMNS, None)})::BIGINT AS "
            f"{_ident('m:' + m.id)}" for m in counted)
        groups = _groups(files, _threads())
        if not groups:
            return []
        starts = [first_id + sum(len(g) for g in groups[:j]) for j in range(len(groups))]
        results: list = [None] * len(groups)
        errors: list[BaseException] = []
        todo = iter(range(len(groups)))
        lock = threading.Lock()
        stop = threading.Event()  # set when done or failed: no further group is started
        cons: list = []

        n = min(_threads(), len(groups))

        def work(w: int) -> None:  # fewer groups than cores (one new month): threads for each
            con = _connect(threads=max(1, _threads() // n), memory=f"{600 // n}MB")
            with lock:
                cons.append(con)
            try:
                con.execute(f"SET temp_directory = {_q((tmp / f'spill{w}').as_posix())}")
                while not stop.is_set():
                    with lock:
                        j = next(todo, None)
                    if j is None:
                        return
                    results[j] = self._street_group(con, s, groups[j], tmp / f"g{j}", keys_sql, mcols,
                                                    starts[j])
                    with lock:
                        bar.update(sum(f.size for f in groups[j]))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(exc)
                stop.set()
            finally:
                with lock:
                    cons.remove(con)
                con.close()

        pool = ThreadPoolExecutor(n)
        try:
            for fut in [pool.submit(work, w) for w in range(n)]:
                fut.result()
        except BaseException:  # interrupted: stop the other worker's query too
            stop.set()
            with lock:
                for con in cons:
                    con.interrupt()
            raise
        finally:
            stop.set()
            pool.shutdown(wait=True)
        if errors:
            raise errors[0]
        out = []
        for tmp_part, group, rows, shared in results:
            part = self.parts_dir / tmp_part.name
            if shared:
                side = tmp_part.with_name(f"shared-{tmp_part.name}")
                os.replace(side, self.parts_dir / side.name)
            os.replace(tmp_part, part)
            out.append((part, group, rows, shared))
        return out

    @staticmethod
    def _street_keys(sources: Sources, s: SourceSpec, measures: list[MeasureSpec]) -> list[str]:
        """Keys of a street part beyond period, lsoa_code and crime_type (filters' columns)."""
        extra = police_plan(s, measures)[0]
        if sources.lookup_for(s) is None and "lsoa_name" not in extra:
            # LSOA names are kept where no lookup maps LSOAs (prefix matching needs them)
            extra = [*extra, "lsoa_name"]
        return extra

    @staticmethod
    def _street_group(con, s: SourceSpec, group: list[FileRef], gdir: Path, keys_sql: str, mcols: str,
                      first_id: int) -> tuple[Path, list[FileRef], dict[str, tuple], bool]:
        """One group of street files: CRC-32s, then the LSOA x crime type x month counts of each
        file into a part in ``gdir``, the files numbered from ``first_id`` in the ``file``
        column; per file: rows, CRC-32, first/last month, number."""
        gdir.mkdir(parents=True, exist_ok=True)
        extracted = policeuk.extract_members(group, gdir)
        paths = []
        for f in group:
            p = extracted.get(f.key, f.path)
            policeuk.check_header(p, s.id)
            paths.append(p)
        crc = {f.key: f.stamp if f.member else crc32_file(f.path) for f in group}
        # files are told apart by their position in the list and stored by number (the
        # manifest names them): cheaper to group by, and to write, than the file's name
        sql = (f"SELECT (file_index + {int(first_id)})::BIGINT AS file, {keys_sql}, "
               f"count(*)::BIGINT AS n{mcols} "
               f"FROM (SELECT *, month AS period FROM {policeuk.select_sql(paths, index=True)}) "
               f"GROUP BY file_index, {keys_sql}")
        tmp_part = gdir / f"{s.id}-{uuid.uuid4().hex[:12]}.parquet"
        try:
            con.execute(f"COPY ({sql}) TO {_q(tmp_part.as_posix())} "
                        f"(FORMAT parquet, ROW_GROUP_SIZE {PART_ROW_GROUP})")
        except duckdb.Error as exc:
            raise _read_error(s, group, paths, exc) from None
        for p in extracted.values():  # the counts are made: the extracted copies can go
            p.unlink(missing_ok=True)
        rel = f"read_parquet({_q(tmp_part.as_posix())})"
        ids = {first_id + i: f.key for i, f in enumerate(group)}
        per = Store._check_months(con, s, group, rel, names=ids)
        # the LSOAs and months held by several files of the group (a neighbouring force's or the
        # British Transport Police's records), whose cells are summed when read: written beside
        # the part (shared-<part>), none where there are none
        side = gdir / f"shared-{tmp_part.name}"
        shared = len(group) > 1 and con.execute(
            f"COPY (SELECT period, lsoa_code FROM {rel} WHERE lsoa_code IS NOT NULL GROUP BY ALL "
            f"HAVING min(file) <> max(file)) TO {_q(side.as_posix())} (FORMAT parquet)").fetchone()[0] > 0
        if not shared:
            side.unlink(missing_ok=True)
        return tmp_part, group, _file_rows(s, group, per, crc, {k: i for i, k in ids.items()}), shared

    @staticmethod
    def _stats_sql(s: SourceSpec) -> str:
        if s.kind in ("police_uk", "records"):
            return "SELECT file, sum(n), min(period), max(period) FROM batch GROUP BY file"
        if s.kind == "table":
            return "SELECT file, sum(rows), min(period), max(period) FROM batch GROUP BY file"
        if s.kind == "population":
            return "SELECT file, count(*), min(year)::VARCHAR, max(year)::VARCHAR FROM batch GROUP BY file"
        return "SELECT file, count(*), NULL, NULL FROM batch GROUP BY file"

    def _batch_sql(self, con, sources: Sources, s: SourceSpec, measures: list[MeasureSpec],
                   batch: list[FileRef], tmp: Path) -> str:
        rels = _relations(con, sources, s, batch, tmp)
        selects = []
        for rel, cols in rels:
            path = batch[0].path
            if s.kind == "records":
                dcol = _need(s, cols, "date", "month", path=path)
                period = (f"strftime({_ident(dcol)}, '%Y-%m')" if dcol == "date"
                          else f"CAST({_ident(dcol)} AS VARCHAR)")
                if "lsoa_code" not in cols and "area_code" not in cols:
                    _need(s, cols, "area_code", "lsoa_code", path=path)
                lsoa = _ident("lsoa_code") if "lsoa_code" in cols else "NULL::VARCHAR"
                area = _ident("area_code") if "area_code" in cols else "NULL::VARCHAR"
                fcols = [*cols, "period"]
                age = "age" if "age" in cols else None
                mcols = "".join(f", count(*) FILTER (WHERE {_condition(m, s, fcols, age)})::BIGINT AS "
                                f"{_ident('m:' + m.id)}" for m in measures)
                selects.append(
                    f"SELECT file, period, lsoa_code, area_code, count(*)::BIGINT AS n{mcols} FROM "
                    f"(SELECT *, {period} AS period, {lsoa} AS lsoa_code, {area} AS area_code "
                    f"FROM {rel}) GROUP BY file, period, lsoa_code, area_code")
            elif s.kind == "table":
                for n in ("period", "area_code", "count"):
                    _need(s, cols, n, path=path)
                has_measure = "measure" in cols
                mcols = []
                for m in measures:
                    own = f"{_ident('measure')} = {_q(m.id)}" if has_measure else "TRUE"
                    # a records source's measure completed by this table: its rows are the measure's
                    cond = _condition(m, s, cols, "age_to") if m.source == s.id else "TRUE"
                    mcols.append(f"sum({_ident('count')}) FILTER (WHERE {own} AND {cond})::DOUBLE AS "
                                 f"{_ident('m:' + m.id)}")
                    mcols.append(f"count(*) FILTER (WHERE {own})::BIGINT AS {_ident('p:' + m.id)}")
                selects.append(
                    f"SELECT file, CAST({_ident('period')} AS VARCHAR) AS period, "
                    f"CAST({_ident('area_code')} AS VARCHAR) AS area_code, count(*)::BIGINT AS rows"
                    f"{''.join(', ' + c for c in mcols)} FROM {rel} GROUP BY ALL")
            elif s.kind == "population":
                for n in ("year", "area_code", "population"):
                    _need(s, cols, n, path=path)
                band = _ident("band") if "band" in cols else "'all'"
                selects.append(f"SELECT file, CAST({_ident('year')} AS INTEGER) AS year, "
                               f"CAST({_ident('area_code')} AS VARCHAR) AS area_code, "
                               f"CAST({band} AS VARCHAR) AS band, "
                               f"CAST({_ident('population')} AS DOUBLE) AS population FROM {rel}")
            else:  # lookup
                header = [h for h, v in cols.items() if h == v]
                lk = policeuk.lookup_columns(header, s.columns, s.id, path)
                name = _ident(lk["lsoa_name"]) if "lsoa_name" in lk else "NULL::VARCHAR"
                selects.append(f"SELECT DISTINCT file, CAST({_ident(lk['lsoa_code'])} AS VARCHAR) AS "
                               f"lsoa_code, CAST({_ident(lk['area_code'])} AS VARCHAR) AS area_code, "
                               f"CAST({name} AS VARCHAR) AS lsoa_name FROM {rel}")
        return " UNION ALL BY NAME ".join(f"({x})" for x in selects)

    @staticmethod
    def _normalise_table_periods(con, s: SourceSpec, batch: list[FileRef]) -> None:
        raw = con.execute("SELECT DISTINCT file, period FROM batch").fetchall()
        mapping = {}
        paths = {f.key: f.path for f in batch}
        for file, value in raw:
            canon = normalise_period(value, s.granularity) if value is not None else None
            if canon is None:
                from sveval.data.sources import GRANULARITY_EXAMPLE

                raise DataError(
                    f"source '{s.id}': period {value!r} is not a {s.granularity.replace('_', ' ')} "
                    f"(declared 'period: {s.granularity}'; expected e.g. "
                    f"{GRANULARITY_EXAMPLE[s.granularity]})", path=paths.get(file),
                    column=s.header("period"))
            mapping[value] = canon
        con.execute("CREATE OR REPLACE TEMP TABLE _pmap (raw VARCHAR, canon VARCHAR)")
        con.executemany("INSERT INTO _pmap VALUES (?, ?)", list(mapping.items()))
        cols = [r[0] for r in con.execute("DESCRIBE batch").fetchall()]
        agg = ", ".join(f"sum({_ident(c)}) AS {_ident(c)}" for c in cols
                        if c not in ("file", "period", "area_code"))
        con.execute(f"CREATE OR REPLACE TEMP TABLE batch AS SELECT b.file, m.canon AS period, "
                    f"b.area_code, {agg} FROM batch b JOIN _pmap m ON m.raw = b.period "
                    f"GROUP BY b.file, m.canon, b.area_code")

    @staticmethod
    def _check_months(con, s: SourceSpec, batch: list[FileRef], rel: str = "batch",
                      names: dict | None = None) -> dict[str, tuple]:
        """Refuse records whose month is missing or malformed; per file (``names`` maps the
        ``file`` column's values to keys where they are not the keys): rows, first, last month."""
        rows = con.execute(f"SELECT file, period, sum(n) FROM {rel} GROUP BY ALL").fetchall()
        if names is not None:
            rows = [(names[f], p, n) for f, p, n in rows]
        bad = [r for r in rows if r[1] is None or normalise_period(r[1], "month") != r[1]]
        per: dict[str, list] = {}
        for file, period, n in rows:
            e = per.setdefault(file, [0, period, period])
            e[0] += int(n)
            if period is not None:
                e[1] = period if e[1] is None else min(e[1], period)
                e[2] = period if e[2] is None else max(e[2], period)
        if bad:
            file, period, n = bad[0]
            path = next((f.path for f in batch if f.key == file), None)
            what = "missing" if period is None else f"{period!r} is not a month as YYYY-MM"
            raise DataError(f"source '{s.id}': {n} record(s) whose date or month is {what}",
                            path=path, column=s.header("date") if s.kind == "records" else "Month")
        return {k: tuple(v) for k, v in per.items()}

    def _check_mapping(self, con, sources: Sources, manifest: dict, changed: set[str]) -> list[str]:
        """Warnings: LSOAs of police.uk / records sources that the lookup leaves unmapped (checked
        when the source or its lookup was read in this ingest)."""
        out = []
        for s in sources:
            if s.kind not in ("police_uk", "records"):
                continue
            lk = sources.lookup_for(s)
            if s.id not in changed and (lk is None or lk.id not in changed):
                continue
            if lk is None:
                if s.kind == "police_uk":
                    out.append(f"source '{s.id}': no lookup source; LSOAs are mapped to areas by the "
                               "LSOA name's local-authority prefix matched against areas.yaml")
                continue
            if s.kind == "records" and "area_code" in s.columns:
                continue
            rel = self._rel(manifest, s.id)
            lrel = self._rel(manifest, lk.id)
            if rel is None or lrel is None:
                continue
            r = con.execute(f"SELECT count(DISTINCT lsoa_code), sum(n), list(DISTINCT lsoa_code)[1:5] "
                            f"FROM {rel} WHERE lsoa_code IS NOT NULL AND lsoa_code NOT IN "
                            f"(SELECT lsoa_code FROM {lrel})").fetchone()
            if r and r[0]:
                out.append(f"source '{s.id}': {r[0]} LSOA(s) ({int(r[1])} records) are not in the "
                           f"lookup '{lk.id}' and are left out, e.g. {', '.join(r[2])}")
        return out

    # -- reading --------------------------------------------------------------------------------------
    def _rel(self, manifest: dict, sid: str) -> str | None:
        """SQL over the live rows of a source's parts (None when the store has none)."""
        src = manifest["sources"].get(sid)
        if not src or not src["files"]:
            return None
        live: dict[str, list[str]] = {}
        for key, e in src["files"].items():
            live.setdefault(e["part"], []).append(key)
        written = src.get("parts", {})
        whole = sorted(p for p, keys in live.items() if written.get(p) == len(keys))
        partly = sorted(set(live) - set(whole))  # parts holding rows of files read again since

        def parquet(parts: list[str]) -> str:
            files = "[" + ", ".join(_q((self.parts_dir / p).as_posix()) for p in parts) + "]"
            return f"read_parquet({files}, union_by_name = true)"

        sels = [f"SELECT * FROM {parquet(whole)}"] if whole else []
        if partly:  # police.uk parts name files by number
            keys = ", ".join(str(src["files"][k]["id"]) if "id" in src["files"][k] else _q(k)
                             for p in partly for k in live[p])
            sels.append(f"SELECT * FROM {parquet(partly)} WHERE file IN ({keys})")
        return "(" + " UNION ALL BY NAME ".join(sels) + ")"

    def long(self, sources: Sources, measures: Iterable[MeasureSpec], areas: dict[str, str]
             ) -> pd.DataFrame:
        """The long frame of ``measures`` (period, area_code, measure, count, population).

        ``areas`` maps area codes to names (for LSOA-name prefix mapping without a lookup).
        ``attrs['granularity']`` maps each measure to its period granularity.
        """
        measures = list(measures)
        man = self.manifest()
        con = _connect()
        self._memo = {"measures": measures}
        try:
            grids = self._grids(sources, man)
            pops = self._populations(con, sources, man)
            frames, gran = [], {}
            for m in measures:
                s = sources[m.source]
                g = s.granularity if s.kind == "table" else "month"
                df, units = self._measure(con, sources, man, s, m, areas, by_lsoa=False)
                if not units or g not in grids:
                    continue
                full = _zero_fill(df, grids[g], pd.DataFrame({"area_code": units}))
                full["measure"] = m.id
                p = pops.get(m.population_band)
                if p is not None:
                    full = full.merge(_population_for(p, grids[g]), on=["period", "area_code"], how="left")
                else:
                    full["population"] = np.nan
                frames.append(full[LONG_COLUMNS])
                gran[m.id] = g
        finally:
            con.close()
            self._memo = {}
        if not frames:
            raise DataError("no measure could be computed from the store: run 'sveval data ingest' "
                            "and check the sources of the measures", path=self.root)
        long = pd.concat(frames, ignore_index=True)
        long = long.sort_values(["measure", "area_code", "period"], kind="stable").reset_index(drop=True)
        long = _typed(long)
        long.attrs["granularity"] = gran
        return long

    def crime_types_sql(self, source_id: str) -> str:
        """SQL (a subquery over the parts) of a police.uk source's monthly counts by LSOA x crime
        type, summed over its files: period, lsoa_code, crime_type, n (BIGINT).

        Each file's counts are stored apart (so a changed file can be replaced). A month's files
        are read together into one part, so where no two parts' months overlap, a cell can only be
        held by several files of one part: its worker wrote the LSOAs and months two of its files
        hold (a neighbouring force's or the British Transport Police's records) beside it, and
        only those cells and the rows without an LSOA are summed, the rest passed through (0.66
        instead of 1.0 CPU-s for 3 M cells with such a file every month, 0.35 without).
        """
        man = self.manifest()
        src = man["sources"].get(source_id)
        if not src or src["kind"] != "police_uk":
            raise DataError(f"'{source_id}' is not a police_uk source of the store; run 'sveval data "
                            "ingest' first", path=self.root)
        rel = self._rel(man, source_id)
        if rel is None:
            return "(SELECT NULL::VARCHAR AS period, NULL::VARCHAR AS lsoa_code, NULL::VARCHAR AS crime_type, " \
                   "NULL::BIGINT AS n WHERE FALSE)"
        if "keys" in src:
            cols = set(src["keys"])
        else:  # a store written before the keys were listed
            con = _connect()
            try:
                cols = set(self._columns(con, rel)) & set(CUBE_EXTRA)
            finally:
                con.close()
        cell = "period, lsoa_code, crime_type"
        if cols:  # further keys (a filter's columns, LSOA names): a file holds several rows of a cell
            return f"(SELECT {cell}, sum(n)::BIGINT AS n FROM {rel} GROUP BY ALL)"
        if self._parts_apart(src):
            def parquet(parts: list[str]) -> str:
                return "read_parquet([" + ", ".join(_q((self.parts_dir / p).as_posix()) for p in parts) + "])"

            mixed = sorted(set(src["mixed"]) & set(src["parts"]))
            sides = [f"shared-{p}" for p in mixed]
            if all((self.parts_dir / p).is_file() for p in sides):
                # rows of an LSOA and month that one file holds passed through, the rest summed
                every, held = parquet(sorted(src["parts"])), parquet(sides)
                sels = [f"SELECT {cell}, n::BIGINT AS n FROM {every} WHERE lsoa_code IS NOT NULL",
                        f"SELECT {cell}, sum(n)::BIGINT AS n FROM {every} WHERE lsoa_code IS NULL GROUP BY ALL"]
                if sides:
                    sels = [f"SELECT {cell}, n::BIGINT AS n FROM {every} ANTI JOIN {held} h "
                            "USING (period, lsoa_code) WHERE lsoa_code IS NOT NULL",
                            f"SELECT {cell}, sum(n)::BIGINT AS n FROM (SELECT * FROM {every} SEMI JOIN {held} h "
                            f"USING (period, lsoa_code) UNION ALL SELECT * FROM {every} WHERE lsoa_code IS NULL) "
                            "GROUP BY ALL"]
                return "(" + " UNION ALL ".join(f"({x})" for x in sels) + ")"
            plain = sorted(set(src["parts"]) - set(mixed))
            sels = [f"SELECT {cell}, sum(n)::BIGINT AS n FROM {parquet([p])} GROUP BY ALL" for p in mixed]
            if plain:
                sels += [f"SELECT {cell}, n::BIGINT AS n FROM {parquet(plain)} WHERE lsoa_code IS NOT NULL",
                         f"SELECT {cell}, sum(n)::BIGINT AS n FROM {parquet(plain)} WHERE lsoa_code IS NULL "
                         "GROUP BY ALL"]
            return "(" + " UNION ALL ".join(f"({x})" for x in sels) + ")"
        # parts whose months overlap (files added to a month read before): the cells of an LSOA
        # and month held by several files, and those without an LSOA, summed across parts
        return (f"(WITH p AS NOT MATERIALIZED (SELECT file, {cell}, n FROM {rel}), "
                "s AS (SELECT period, lsoa_code FROM p GROUP BY ALL HAVING min(file) <> max(file)) "
                f"SELECT {cell}, n::BIGINT AS n FROM p ANTI JOIN s USING (period, lsoa_code) "
                "WHERE lsoa_code IS NOT NULL UNION ALL "
                f"SELECT {cell}, sum(n)::BIGINT AS n FROM "
                "(SELECT * FROM p SEMI JOIN s USING (period, lsoa_code) UNION ALL "
                "SELECT * FROM p WHERE lsoa_code IS NULL) GROUP BY ALL)")

    @staticmethod
    def _parts_apart(src: dict) -> bool:
        """Whether a police.uk source's parts hold months apart: every part wholly live, no two
        parts' months overlapping (each month's files were read together), and each part's
        worker has said whether two of its files share an LSOA and month (``mixed``)."""
        if "mixed" not in src:
            return False
        spans: dict[str, list] = {}
        for e in src["files"].values():
            sp = spans.setdefault(e["part"], [e["lo"], e["hi"], 0])
            sp[0], sp[1], sp[2] = min(sp[0], e["lo"]), max(sp[1], e["hi"]), sp[2] + 1
        if any(src["parts"].get(p) != sp[2] for p, sp in spans.items()):
            return False
        ordered = sorted(sp[:2] for sp in spans.values())
        return all(a[1] < b[0] for a, b in zip(ordered, ordered[1:], strict=False))

    def crime_types(self, source_id: str) -> pd.DataFrame:
        """A police.uk source's monthly counts by LSOA x crime type (see :meth:`crime_types_sql`),
        sorted by period, LSOA and crime type."""
        con = _connect()
        try:
            return con.execute(f"SELECT * FROM {self.crime_types_sql(source_id)} "
                               "ORDER BY period, lsoa_code NULLS LAST, crime_type").df()
        finally:
            con.close()

    def lsoa(self, sources: Sources, measure: MeasureSpec, areas: dict[str, str]) -> pd.DataFrame:
        """LSOA x month counts of a record-level measure: period, lsoa_code, area_code, measure, count."""
        s = sources[measure.source]
        if s.kind not in ("police_uk", "records"):
            raise DataError(f"measure '{measure.id}' comes from the {s.kind} source '{s.id}', which "
                            "has no LSOA detail; LSOA panels need a police_uk or records source")
        man = self.manifest()
        con = _connect()
        self._memo = {}
        try:
            grids = self._grids(sources, man)
            df, units = self._measure(con, sources, man, s, measure, areas, by_lsoa=True)
        finally:
            con.close()
            self._memo = {}
        if units is None or not len(units):
            raise DataError(f"no {s.id} records with an LSOA for measure '{measure.id}'")
        full = _zero_fill(df, grids["month"], units.sort_values(["area_code", "lsoa_code"]))
        full["measure"] = measure.id
        full = full[LSOA_COLUMNS].sort_values(["lsoa_code", "period"], kind="stable").reset_index(drop=True)
        for c in ("period", "lsoa_code", "area_code", "measure"):
            full[c] = full[c].astype(str)
        return full

    @staticmethod
    def _grids(sources: Sources, man: dict) -> dict[str, list[str]]:
        """Every period of the data, by granularity (from the first to the last period read)."""
        lo: dict[str, str] = {}
        hi: dict[str, str] = {}
        for sid, src in man["sources"].items():
            g = src.get("granularity")
            if sid not in sources or src["kind"] in ("population", "lookup"):
                continue
            for e in src["files"].values():
                if e.get("lo") is None:
                    continue
                lo[g] = min(lo.get(g, e["lo"]), e["lo"])
                hi[g] = max(hi.get(g, e["hi"]), e["hi"])
        return {g: period_range(lo[g], hi[g], g) for g in lo}

    def _area_map(self, con, sources: Sources, man: dict, s: SourceSpec, areas: dict[str, str]
                  ) -> str:
        """SQL of (lsoa_code, area_code) for a record source's LSOAs."""
        lk = sources.lookup_for(s)
        if lk is not None:
            rel = self._rel(man, lk.id)
            if rel is None:
                raise DataError(f"the lookup '{lk.id}' of source '{s.id}' has no rows in the store")
            return f"(SELECT DISTINCT lsoa_code, area_code FROM {rel})"
        if ("prefix", s.id) in self._memo:
            return self._memo[("prefix", s.id)]
        rel = self._rel(man, s.id)
        names = dict(con.execute(f"SELECT lsoa_code, any_value(lsoa_name) FROM {rel} "
                                 "WHERE lsoa_code IS NOT NULL GROUP BY ALL").fetchall())
        mapping = policeuk.prefix_areas(names, areas)
        table = f"_prefix_{len(self._memo)}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (lsoa_code VARCHAR, area_code VARCHAR)")
        if mapping:
            con.executemany(f"INSERT INTO {table} VALUES (?, ?)", list(mapping.items()))
        self._memo[("prefix", s.id)] = table
        return table

    def _measure(self, con, sources: Sources, man: dict, s: SourceSpec, m: MeasureSpec,
                 areas: dict[str, str], by_lsoa: bool):
        """Counts of one measure (by period x area, or period x lsoa x area) and its units."""
        rel = self._rel(man, s.id)
        col = _ident("m:" + m.id)
        if rel is None:
            return pd.DataFrame(), None if by_lsoa else []

        def value(mm: MeasureSpec) -> str:  # a record's (or cube cell's) contribution to a measure
            if s.kind != "police_uk":
                return _ident("m:" + mm.id)
            cond = police_plan(s, [mm])[1].get(mm.id)
            return _ident("m:" + mm.id) if cond is None else f"CASE WHEN ({cond}) THEN n ELSE 0 END"

        if s.kind in ("police_uk", "records"):
            if s.kind == "police_uk" or "area_code" not in self._columns(con, rel) or \
                    con.execute(f"SELECT count(*) FROM {rel} WHERE area_code IS NULL").fetchone()[0]:
                amap = self._area_map(con, sources, man, s, areas)
                base = (f"(SELECT r.*, r.period AS month, a.area_code AS area FROM {rel} r JOIN {amap} a "
                        f"ON a.lsoa_code = r.lsoa_code)")
                if s.kind == "records":
                    base = (f"(SELECT r.* EXCLUDE (area_code), coalesce(r.area_code, a.area_code) AS area "
                            f"FROM {rel} r LEFT JOIN {amap} a ON a.lsoa_code = r.lsoa_code "
                            "WHERE coalesce(r.area_code, a.area_code) IS NOT NULL)")
            else:
                base = f"(SELECT *, area_code AS area FROM {rel})"
            if by_lsoa:
                df = con.execute(f"SELECT period, lsoa_code, area AS area_code, sum({value(m)})::DOUBLE AS count "
                                 f"FROM {base} WHERE lsoa_code IS NOT NULL GROUP BY ALL").df()
                units = con.execute(f"SELECT DISTINCT lsoa_code, area AS area_code FROM {base} "
                                    "WHERE lsoa_code IS NOT NULL").df()
                lk = sources.lookup_for(s)
                if lk is not None and self._rel(man, lk.id) is not None:
                    more = con.execute(f"SELECT DISTINCT lsoa_code, area_code FROM {self._rel(man, lk.id)}"
                                       ).df()
                    more = more[more["area_code"].isin(units["area_code"])]
                    units = pd.concat([units, more]).drop_duplicates().reset_index(drop=True)
                return df, units
            if ("area", s.id) not in self._memo or f"m:{m.id}" not in self._memo[("area", s.id)]:
                # every measure of the source in one pass
                todo = {mm.id: mm for mm in self._memo.get("measures", []) if mm.source == s.id}
                todo[m.id] = m
                sums = ", ".join(f"sum({value(mm)})::DOUBLE AS {_ident('m:' + mm.id)}" for mm in todo.values())
                self._memo[("area", s.id)] = con.execute(
                    f"SELECT period, area AS area_code, {sums} FROM {base} GROUP BY ALL").df()
            agg = self._memo[("area", s.id)]
            df = agg[["period", "area_code", f"m:{m.id}"]].rename(columns={f"m:{m.id}": "count"})
            units = set(agg["area_code"])
            if s.complement:
                crel = self._rel(man, s.complement)
                ccols = self._columns(con, crel) if crel else []
                if crel and f"m:{m.id}" in ccols:
                    extra = con.execute(
                        f"SELECT period, area_code, sum({col})::DOUBLE AS count FROM {crel} "
                        f"GROUP BY ALL HAVING sum({_ident('p:' + m.id)}) > 0").df()
                    extra = extra[~extra["area_code"].isin(units)]
                    df = pd.concat([df, extra], ignore_index=True)
                    units |= set(extra["area_code"])
            return df, sorted(units)
        if by_lsoa:
            raise DataError(f"measure '{m.id}' comes from the table '{s.id}': no LSOA counts")
        df = con.execute(f"SELECT period, area_code, sum({col})::DOUBLE AS count, "
                         f"sum({_ident('p:' + m.id)}) AS present FROM {rel} GROUP BY ALL").df()
        units = sorted(set(df.loc[df["present"] > 0, "area_code"]))
        return df[df["area_code"].isin(units)][["period", "area_code", "count"]], units

    @staticmethod
    def _columns(con, rel: str) -> list[str]:
        return [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]

    def _populations(self, con, sources: Sources, man: dict) -> dict[str, pd.DataFrame]:
        ps = sources.population
        rel = self._rel(man, ps.id) if ps else None
        if rel is None:
            return {}
        pop = con.execute(f"SELECT year, area_code, band, population FROM {rel}").df()
        return {band: g for band, g in pop.groupby("band")}

    def export(self, sources: Sources, measures: Iterable[MeasureSpec], areas: dict[str, str],
               out: Path | str) -> int:
        """Write the aggregated long table as CSV (period, area_code, measure, count, population)."""
        long = self.long(sources, measures, areas)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        long.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, out)
        return len(long)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def filter_columns(sources: Sources, s: SourceSpec) -> frozenset[str]:
    """The columns a measure's ``filter`` may use on a source (for checking filters before use).

    police_uk: the published columns in snake_case and ``period``; records and tables: the first
    file's headers and the mapped sveval names (records also ``period``).
    """
    if s.kind == "police_uk":
        return frozenset(_STREET_FILTER_COLUMNS)
    files = sources.files(s)
    fmt = sources.file_format(s, files[0])
    if fmt in ("csv", "csv.gz"):
        header = _read_header(files[0], fmt, s.id)
    elif fmt == "parquet":
        with duckdb.connect() as con:
            header = [r[0] for r in con.execute(
                f"DESCRIBE SELECT * FROM read_parquet({_q(files[0].as_posix())})").fetchall()]
    else:
        header = [str(c).strip() for c in pd.read_excel(files[0], sheet_name=s.sheet or 0, nrows=0).columns]
    cols = set(_columns_of(s, header, files[0]))
    return frozenset(cols | ({"period"} if s.kind == "records" else set()))


def is_store(root: Path | str) -> bool:
    """Whether ``root`` is a store folder with at least one ingest."""
    root = Path(root)
    if not (root / "parts").is_dir() or not (root / "manifest.json").is_file():
        return False
    return "catalogue" in Store(root).manifest()


def _measures_by_source(sources: Sources, measures: list[MeasureSpec]) -> dict[str, list[MeasureSpec]]:
    out: dict[str, list[MeasureSpec]] = {}
    for m in sorted(measures, key=lambda m: m.id):
        if m.source not in sources:
            raise DataError(f"measure '{m.id}': source '{m.source}' is not in sources.yaml; known: "
                            + ", ".join(sources.ids))
        s = sources[m.source]
        if s.kind in ("population", "lookup"):
            raise DataError(f"measure '{m.id}': source '{m.source}' is a {s.kind}, not a source of counts")
        out.setdefault(m.source, []).append(m)
        if s.complement:
            out.setdefault(s.complement, []).append(m)
    return out


def _threads() -> int:
    """DuckDB threads (or workers) an ingest uses: the cores, at most 2."""
    return max(1, min(2, os.cpu_count() or 1))


def _file_rows(s: SourceSpec, batch: list[FileRef], per: dict, crc: dict, ids: dict | None = None
               ) -> dict[str, tuple]:
    """Per file of a batch: rows, CRC-32, first and last period, number in the part (or None); a
    file without rows is refused."""
    out = {}
    for f in batch:
        n, lo, hi = per.get(f.key, (0, None, None))
        if n == 0:
            raise DataError(f"source '{s.id}': no data rows in the file", path=f.path)
        out[f.key] = (int(n), int(crc[f.key]), lo, hi, ids[f.key] if ids else None)
    return out


_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")
_CSV_FILE = re.compile(r"^\s*file = (.+)$", re.M)


def _read_error(s: SourceSpec, group: list[FileRef], paths: list[Path], exc: Exception) -> DataError:
    """A DuckDB error reading street files, naming the file (and row) DuckDB names."""
    text = str(exc)
    hit = _CSV_FILE.search(text)
    at = next((i for i, p in enumerate(paths) if hit and p.as_posix() == hit.group(1).strip()), None)
    if at is None:
        return DataError(f"source '{s.id}': cannot read {len(group)} file(s) ({group[0].key}"
                         f"{' ...' if len(group) > 1 else ''}): {text.splitlines()[0]}", path=group[0].path)
    line = _CSV_LINE.search(text)
    f = group[at]
    where = f" ({f.key})" if f.member else ""
    lines = [x.strip() for x in text.splitlines()]
    reason = next((x for x in reversed(lines[:lines.index("Possible fixes:")]) if x), None) \
        if "Possible fixes:" in lines else None
    if line is None or reason is None:
        return DataError(f"source '{s.id}': cannot read the file{where}: {lines[0]}", path=f.path)
    return DataError(f"source '{s.id}': not a valid CSV row{where}: {reason} (expected the police.uk "
                     "street-level layout: 12 comma-separated fields, text with commas in double quotes)",
                     path=f.path, row=int(line.group(1)) - 1)


def _groups(files: list[FileRef], workers: int) -> list[list[FileRef]]:
    """Street files in groups of whole months (a month's files together, so that only cells of
    one group can be held by several files) of about :data:`GROUP_BYTES`, at least one group a
    worker where there are enough months."""
    if not files:
        return []
    months: dict[str | None, list[FileRef]] = {}
    for f in sorted(files, key=lambda f: (f.month or "", f.key)):
        months.setdefault(f.month, []).append(f)
    blocks = list(months.values())
    total = sum(f.size for f in files)
    n = min(len(blocks), max(workers, -(-total // GROUP_BYTES)))
    out: list[list[FileRef]] = [[] for _ in range(n)]
    acc = 0
    for block in blocks:  # contiguous months, cut where the bytes so far cross a group's share
        out[min(n - 1, acc * n // max(total, 1))].extend(block)
        acc += sum(f.size for f in block)
    return [g for g in out if g]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool):
    if not progress or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="ingest", leave=False)


def _batches(files: list[FileRef]) -> list[list[FileRef]]:
    out: list[list[FileRef]] = []
    cur: list[FileRef] = []
    size = 0
    for f in files:
        cur.append(f)
        size += f.size
        if size >= BATCH_BYTES:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def _zero_fill(df: pd.DataFrame, periods: list[str], units: pd.DataFrame) -> pd.DataFrame:
    grid = units.merge(pd.DataFrame({"period": periods}), how="cross")
    keys = [*units.columns, "period"]
    if len(df):
        df = df.groupby(keys, as_index=False)["count"].sum()
        out = grid.merge(df[[*keys, "count"]], on=keys, how="left")
    else:
        out = grid.assign(count=np.nan)
    out["count"] = out["count"].fillna(0.0).astype(float)
    return out


def _population_for(pop: pd.DataFrame, periods: list[str]) -> pd.DataFrame:
    """period x area_code -> population: the mid-year estimate of the period's year (the last one
    before it carried forward; before the first, the first)."""
    years = np.array([period_year(p) for p in periods])
    out = []
    for area, g in pop.groupby("area_code"):
        g = g.sort_values("year")
        idx = np.searchsorted(g["year"].to_numpy(), years, side="right") - 1
        vals = np.where(idx >= 0, g["population"].to_numpy()[np.maximum(idx, 0)], g["population"].iloc[0])
        out.append(pd.DataFrame({"period": periods, "area_code": area, "population": vals.astype(float)}))
    return pd.concat(out, ignore_index=True)


def _typed(long: pd.DataFrame) -> pd.DataFrame:
    out = long[LONG_COLUMNS].copy()
    for c in ("period", "area_code", "measure"):
        out[c] = out[c].astype(str)
    out["count"] = out["count"].astype(float)
    out["population"] = pd.to_numeric(out["population"], errors="coerce").astype(float)
    return out.reset_index(drop=True)
