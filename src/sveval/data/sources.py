"""The data catalogue: ``parameters/sources.yaml``.

Every input file set a project reads is a *source* with an ``id`` that measures name in their
``source:`` field::

    base: project            # paths relative to the project root ('example': the example folder)
    sources:
      - id: street
        kind: police_uk      # police.uk street-level archive: folders YYYY-MM/, or the zips
        path: downloads/police-uk        # file, folder, glob or .zip
        forces: [durham, cleveland]      # optional: only these forces' files
        lookup: lsoa_to_la               # optional: LSOA -> area; else the LSOA name's prefix
      - id: lsoa_to_la
        kind: lookup
        path: downloads/LSOA21_LAD23_EW_LU.csv   # ONS layout: LSOA21CD, LAD23CD recognised
      - id: extract
        kind: records                    # other record-level files (a force extract)
        path: extract/*.xlsx
        columns: {date: Recorded Date, lsoa_code: LSOA, offence_group: Offence Group}
        types: {date: date}
      - id: hes
        kind: table                      # aggregate counts
        path: hes_quarterly.csv
        period: quarter                  # month | quarter | year | financial_year
        columns: {period: Quarter, area_code: LA code, count: Admissions}
      - id: mye
        kind: population
        path: mye.csv
        columns: {year: mid_year, area_code: ladcode, band: age_band, population: population}

``columns`` maps sveval's names to the file's own headers (unmapped headers keep their names);
``types`` gives a column's type (``text`` by default). Columns each kind needs:

============  ======================================================================================
police_uk     none (the published header is fixed); filters see crime_id, month, reported_by,
              falls_within, longitude, latitude, location, lsoa_code, lsoa_name, crime_type,
              last_outcome_category, context
records       ``date`` (a date or timestamp) or ``month`` (YYYY-MM); ``area_code`` or ``lsoa_code``
              (mapped through the lookup); filters see every column of the file
table         ``period`` (in the declared granularity), ``area_code``, ``count``; optional ``measure``
              (rows whose value is the measure's id belong to it)
population    ``year`` (mid-year), ``area_code``, ``population``; optional ``band`` (age band,
              ``all`` when absent)
lookup        ``lsoa_code`` and ``area_code`` (ONS headers LSOA<yy>CD and LAD<yy>CD / CSP<yy>CD /
              UTLA<yy>CD are recognised whatever the year); optional ``lsoa_name``
============  ======================================================================================

Period values of tables are kept in their granularity in the long frame: ``2021-04`` (month),
``2021-Q2`` (calendar quarter), ``2021`` (calendar year), ``2021/22`` (financial year, April to
March); see :func:`normalise_period`.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sveval.errors import DataError, SpecError
from sveval.spec import ID_RE, load_model

SourceKindName = Literal["police_uk", "records", "table", "population", "lookup"]
Granularity = Literal["month", "quarter", "year", "financial_year"]
FileFormat = Literal["csv", "csv.gz", "xlsx", "parquet", "zip"]
ColumnType = Literal["text", "integer", "number", "date", "timestamp", "boolean"]

#: sveval column names each kind needs (one of each inner tuple)
REQUIRED_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "police_uk": (),
    "records": (("date", "month"), ("area_code", "lsoa_code")),
    "table": (("period",), ("area_code",), ("count",)),
    "population": (("year",), ("area_code",), ("population",)),
    "lookup": (("lsoa_code",), ("area_code",)),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """One source of ``sources.yaml`` (see the module docstring)."""

    id: str
    kind: SourceKindName
    path: str = Field(description="file, folder, glob or .zip, relative to the base folder")
    format: FileFormat | None = Field(default=None, description="inferred from the suffix when absent")
    description: str = ""
    columns: dict[str, str] = Field(default_factory=dict, description="sveval name -> file header")
    types: dict[str, ColumnType] = Field(default_factory=dict, description="sveval name -> type")
    period: Granularity | None = Field(default=None, description="tables: the period granularity")
    date_format: str = "%Y-%m-%d"
    timestamp_format: str = "%Y-%m-%d %H:%M"
    true_values: list[str] = Field(default_factory=lambda: ["Y", "Yes", "YES", "y", "TRUE", "True",
                                                            "true", "1"])
    sheet: str | None = Field(default=None, description="xlsx: the sheet (default: the first)")
    forces: list[str] = Field(default_factory=list, description="police_uk: only these forces")
    lookup: str | None = Field(default=None, description="police_uk/records: LSOA -> area lookup id")
    complement: str | None = Field(
        default=None, description="records: a table source whose rows (measure = the measure's id) "
        "give the areas these records do not cover")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("ids use lower-case letters, digits, '_' and '-'")
        return v

    @field_validator("forces")
    @classmethod
    def _forces(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not re.match(r"^[a-z0-9-]+$", f)]
        if bad:
            raise ValueError(f"forces are police.uk file-name slugs such as 'durham' or "
                             f"'metropolitan', got {bad}")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> SourceSpec:
        if self.period is not None and self.kind != "table":
            raise ValueError("'period' (granularity) is only for kind 'table'")
        if self.forces and self.kind != "police_uk":
            raise ValueError("'forces' is only for kind 'police_uk'")
        if self.complement and self.kind != "records":
            raise ValueError("'complement' is only for kind 'records'")
        if self.lookup and self.kind not in ("police_uk", "records"):
            raise ValueError("'lookup' is only for kinds 'police_uk' and 'records'")
        if self.kind == "police_uk" and self.format not in (None, "csv", "csv.gz", "zip"):
            raise ValueError("police.uk archives are CSV files (plain, gzip or in zips)")
        if self.kind == "lookup" or self.kind == "police_uk":
            return self  # lookup headers are recognised from the file; police.uk's are fixed
        if self.kind == "records" and "date" in self.columns and self.types.get("date") not in (
                None, "date", "timestamp"):
            raise ValueError("records: column 'date' must have type date or timestamp")
        return self

    @property
    def granularity(self) -> Granularity:
        return self.period or "month"

    def header(self, name: str) -> str:
        """The file's header of sveval column ``name``."""
        return self.columns.get(name, name)


class SourcesFile(_Strict):
    """``parameters/sources.yaml``."""

    base: Literal["project", "example"] = Field(
        default="project", description="paths are relative to the project root, or to the built-in "
        "example's data folder (data/example, or $SVEVAL_DATA_DIR)")
    sources: list[SourceSpec]


class Sources:
    """The loaded catalogue: sources by id, with paths resolved against a base folder."""

    def __init__(self, spec: SourcesFile, base_dir: Path, path: Path | None = None):
        self.spec = spec
        self.base_dir = Path(base_dir)
        self.path = path
        problems = []
        seen: dict[str, SourceSpec] = {}
        for k, s in enumerate(spec.sources):
            if s.id in seen:
                problems.append((f"sources.{k}.id", s.id, "duplicate id; each must be unique"))
            seen[s.id] = s
        for k, s in enumerate(spec.sources):
            for field, kinds in (("lookup", ("lookup",)), ("complement", ("table",))):
                ref = getattr(s, field)
                if ref is None:
                    continue
                if ref not in seen:
                    problems.append((f"sources.{k}.{field}", ref, "unknown source id; known: "
                                     + ", ".join(sorted(seen))))
                elif seen[ref].kind not in kinds:
                    problems.append((f"sources.{k}.{field}", ref, f"source '{ref}' is a "
                                     f"{seen[ref].kind}, not a {kinds[0]}"))
        pops = [s.id for s in spec.sources if s.kind == "population"]
        if len(pops) > 1:
            problems.append(("sources", ", ".join(pops), "give one population source"))
        if problems:
            raise SpecError(path or "sources.yaml", problems)
        self.by_id = seen

    @classmethod
    def load(cls, path: Path | str, project_root: Path | str, example_dir: Path | str | None = None
             ) -> Sources:
        """Load ``sources.yaml``; ``base: example`` resolves paths against ``example_dir``."""
        path = Path(path)
        spec = load_model(SourcesFile, path)
        base = Path(project_root)
        if spec.base == "example":
            if example_dir is None:
                raise SpecError(path, [("base", "example", "the example data folder is not known here")])
            base = Path(example_dir)
        return cls(spec, base, path)

    def __iter__(self):
        return iter(self.spec.sources)

    def __contains__(self, sid: str) -> bool:
        return sid in self.by_id

    def __getitem__(self, sid: str) -> SourceSpec:
        return self.by_id[sid]

    @property
    def ids(self) -> list[str]:
        return list(self.by_id)

    @property
    def population(self) -> SourceSpec | None:
        return next((s for s in self if s.kind == "population"), None)

    def lookup_for(self, s: SourceSpec) -> SourceSpec | None:
        """The LSOA -> area lookup of a record source: its own, else the only lookup source."""
        if s.lookup:
            return self[s.lookup]
        lookups = [x for x in self if x.kind == "lookup"]
        return lookups[0] if len(lookups) == 1 else None

    # -- files -----------------------------------------------------------------------------------
    def files(self, s: SourceSpec) -> list[Path]:
        """The files a source's ``path`` names (a file, a folder, a glob), sorted.

        Raises DataError when nothing exists there, or when the path is not a regular file or
        folder (a device, a socket).
        """
        raw = s.path
        p = Path(raw)
        p = p if p.is_absolute() else self.base_dir / p
        if any(ch in raw for ch in "*?["):
            hits = sorted(Path(x) for x in _glob.glob(str(p), recursive=True))
            files = [h for h in hits if h.is_file()]
            if not files:
                raise DataError(f"source '{s.id}': no file matches the glob {raw!r}", path=p)
            return files
        if not p.exists():
            raise DataError(f"source '{s.id}': path does not exist", path=p)
        if p.is_dir():
            return files_under(p)
        if not p.is_file():
            raise DataError(f"source '{s.id}': not a regular file or folder (a device or socket?)",
                            path=p)
        return [p]

    def file_format(self, s: SourceSpec, path: Path) -> str:
        """A file's format: declared, else from its suffix."""
        if s.format and s.format != "zip":
            return s.format
        return infer_format(path, s.id)


def files_under(folder: Path, *, hidden_folders: bool = True) -> list[Path]:
    """The regular files in ``folder`` and its subfolders, sorted: what
    ``sorted(x for x in folder.rglob("*") if x.is_file() and not x.name.startswith("."))`` gives
    (symbolic links to files included, linked folders not entered, unreadable folders skipped), with
    one ``scandir`` per folder instead of a ``stat`` per file (a source of 1,300 police.uk files is
    listed before every evaluation). ``hidden_folders=False`` also leaves out folders whose name
    starts with a dot."""
    out: list[Path] = []
    stack = [os.fspath(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        if hidden_folders or not e.name.startswith("."):
                            stack.append(e.path)
                    elif not e.name.startswith(".") and e.is_file():
                        out.append(Path(e.path))
        except (PermissionError, FileNotFoundError):
            continue
    return sorted(out)


def infer_format(path: Path, source_id: str = "?") -> str:
    name = path.name.lower()
    for suffix, fmt in ((".csv.gz", "csv.gz"), (".csv", "csv"), (".xlsx", "xlsx"),
                        (".parquet", "parquet"), (".zip", "zip"), (".txt", "csv")):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"source '{source_id}': cannot tell the format from the file name; declare "
                    "'format' (csv, csv.gz, xlsx, parquet)", path=path)


# ------------------------------------------------------------------------------------------------
# Periods of other granularities
# ------------------------------------------------------------------------------------------------
_PERIOD_PATTERNS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "month": [(re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$"), "{0}-{1}"),
              (re.compile(r"^(\d{4})-(0[1-9]|1[0-2])-\d{2}$"), "{0}-{1}")],
    "quarter": [(re.compile(r"^(\d{4})[- ]?Q([1-4])$", re.I), "{0}-Q{1}"),
                (re.compile(r"^Q([1-4])[- ](\d{4})$", re.I), "{1}-Q{0}")],
    "year": [(re.compile(r"^(\d{4})$"), "{0}")],
    "financial_year": [(re.compile(r"^(\d{4})[/-](\d{2})$"), "fy"),
                       (re.compile(r"^(?:FY)?(\d{4})[/-](\d{4})$", re.I), "fy4")],
}
GRANULARITY_EXAMPLE = {"month": "2021-04", "quarter": "2021-Q2", "year": "2021",
                       "financial_year": "2021/22"}


def normalise_period(value: str, granularity: str) -> str | None:
    """A period in canonical form for its granularity, or None when it is not one.

    month ``YYYY-MM`` (a date ``YYYY-MM-DD`` gives its month), quarter ``YYYY-Qn`` (calendar
    quarters; ``2021 Q2``, ``Q2 2021`` accepted), year ``YYYY``, financial year ``YYYY/YY``
    (``2021-22``, ``2021/2022`` accepted; the second year must follow the first).
    """
    v = str(value).strip()
    for pat, fmt in _PERIOD_PATTERNS[granularity]:
        m = pat.match(v)
        if not m:
            continue
        g = m.groups()
        if fmt == "fy":
            if (int(g[0]) + 1) % 100 != int(g[1]):
                return None
            return f"{g[0]}/{g[1]}"
        if fmt == "fy4":
            if int(g[0]) + 1 != int(g[1]):
                return None
            return f"{g[0]}/{g[1][2:]}"
        return fmt.format(*g)
    return None


def period_year(period: str) -> int:
    """The calendar year whose mid-year population applies to a period of any granularity."""
    return int(str(period)[:4])


def period_range(lo: str, hi: str, granularity: str) -> list[str]:
    """Every period from ``lo`` to ``hi`` inclusive (canonical forms)."""
    if granularity == "month":
        y0, m0, y1, m1 = int(lo[:4]), int(lo[5:7]), int(hi[:4]), int(hi[5:7])
        idx = range(y0 * 12 + m0 - 1, y1 * 12 + m1)
        return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in idx]
    if granularity == "quarter":
        a, b = int(lo[:4]) * 4 + int(lo[-1]) - 1, int(hi[:4]) * 4 + int(hi[-1]) - 1
        return [f"{i // 4:04d}-Q{i % 4 + 1}" for i in range(a, b + 1)]
    if granularity == "year":
        return [str(y) for y in range(int(lo), int(hi) + 1)]
    return [f"{y}/{(y + 1) % 100:02d}" for y in range(int(lo[:4]), int(hi[:4]) + 1)]


def granularity_of(period: str) -> str | None:
    """Which granularity a canonical period string has (None if none)."""
    for g in ("month", "quarter", "financial_year", "year"):
        if normalise_period(period, g) == period:
            return g
    return None
