"""police.uk street-level archives as downloaded, ONS LSOA lookups, and synthetic street files.

The archives (https://data.police.uk/data/) come as monthly folders ``YYYY-MM/`` holding
``YYYY-MM-<force>-street.csv`` (plus outcomes and stop-and-search files, ignored here), or as zip
files holding those folders. :func:`street_files` finds the street files of a path (a folder, a
glob, a zip or a folder of zips; all forces or a few); :func:`read_sql` reads them with an explicit
dialect and column types (sniffing the dialect across many files misparsed quoted commas in LSOA
names such as ``"Bristol, City of 001A"``).

:func:`lookup_columns` recognises the ONS lookup layout (``LSOA11CD``/``LSOA21CD``,
``LAD19CD``/``LAD23CD``/``CSP22CD``... whatever the year suffix). Without a lookup,
:func:`prefix_areas` maps an LSOA by its name's local-authority prefix (``County Durham 001A`` ->
the area named County Durham).

:func:`write_synthetic` writes police.uk-format files (never real data) for tests and benchmarks.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sveval.errors import DataError

#: the published header, in order
STREET_HEADER = ["Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude",
                 "Location", "LSOA code", "LSOA name", "Crime type", "Last outcome category",
                 "Context"]
#: snake_case names (what a measure's filter sees) of the published header
STREET_COLUMNS = {h: h.lower().replace(" ", "_") for h in STREET_HEADER}
STREET_TYPES = {h: ("DOUBLE" if h in ("Longitude", "Latitude") else "VARCHAR") for h in STREET_HEADER}
STREET_RE = re.compile(r"^(\d{4}-\d{2})-([a-z0-9-]+)-street\.csv(\.gz)?$")


@dataclass(frozen=True)
class StreetFile:
    """One monthly street file of one force, on disk or inside a zip."""

    key: str            # stable identity: the path relative to the base, with '!member' for zips
    path: Path          # the file, or the zip holding it
    member: str | None  # the zip member, if any
    size: int
    stamp: int          # mtime in ns (files) or the member's CRC-32 (zips)
    month: str
    force: str


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return p.as_posix()


def street_files(paths: list[Path], base: Path, forces: list[str] | None = None,
                 source_id: str = "police_uk") -> list[StreetFile]:
    """The street files among ``paths`` (files found for a source), zips opened.

    Raises DataError when none is found (naming the zip when a zip holds none).
    """
    out: list[StreetFile] = []
    wanted = set(forces or [])
    for p in paths:
        if p.name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(p) as zf:
                    infos = zf.infolist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"source '{source_id}': not a readable zip file ({exc})", path=p) from None
            found = 0
            for info in infos:
                m = STREET_RE.match(Path(info.filename).name)
                if not m or info.is_dir():
                    continue
                found += 1
                if wanted and m.group(2) not in wanted:
                    continue
                out.append(StreetFile(f"{_rel(p, base)}!{info.filename}", p, info.filename,
                                      info.file_size, info.CRC, m.group(1), m.group(2)))
            if not found:
                raise DataError(f"source '{source_id}': the zip holds no police.uk street files "
                                "(YYYY-MM/YYYY-MM-<force>-street.csv)", path=p)
            continue
        m = STREET_RE.match(p.name)
        if not m or (wanted and m.group(2) not in wanted):
            continue
        st = p.stat()
        out.append(StreetFile(_rel(p, base), p, None, st.st_size, st.st_mtime_ns, m.group(1), m.group(2)))
    if not out:
        what = f" of force(s) {', '.join(sorted(wanted))}" if wanted else ""
        raise DataError(f"source '{source_id}': no police.uk street files{what} found "
                        "(YYYY-MM/YYYY-MM-<force>-street.csv, or zips holding them)",
                        path=paths[0].parent if paths else None)
    return sorted(out, key=lambda f: f.key)


def extract_members(files: list[StreetFile], tmp: Path) -> dict[str, Path]:
    """Extract the zip members among ``files`` into ``tmp``: key -> extracted path."""
    out: dict[str, Path] = {}
    by_zip: dict[Path, list[StreetFile]] = {}
    for f in files:
        if f.member is not None:
            by_zip.setdefault(f.path, []).append(f)
    for zp, members in by_zip.items():
        with zipfile.ZipFile(zp) as zf:
            for k, f in enumerate(members):
                dest = tmp / f"z{len(out)}-{k}-{Path(f.member).name}"
                with zf.open(f.member) as src, open(dest, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                out[f.key] = dest
    return out


def check_header(path: Path, source_id: str) -> None:
    """Refuse a street file whose header is not the published one (naming the difference)."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except UnicodeDecodeError:
        raise DataError(f"source '{source_id}': not UTF-8 text", path=path, row=0) from None
    except OSError as exc:
        raise DataError(f"source '{source_id}': cannot read the file ({exc})", path=path) from None
    if not first.strip():
        raise DataError(f"source '{source_id}': empty file (no header)", path=path)
    header = [h.strip().strip('"') for h in first.rstrip("\r\n").split(",")]
    if header != STREET_HEADER:
        missing = [h for h in STREET_HEADER if h not in header]
        raise DataError(
            f"source '{source_id}': not the police.uk street-level header; "
            + (f"missing column(s) {', '.join(missing)}; " if missing else "columns out of order; ")
            + f"expected {', '.join(STREET_HEADER)}", path=path, column=missing[0] if missing else None)


def read_sql(paths: list[Path]) -> str:
    """DuckDB ``read_csv`` of street files: explicit dialect and types, the file name as a column."""
    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    cols = "{" + ", ".join(f"{q(k)}: {q(v)}" for k, v in STREET_TYPES.items()) + "}"
    files = "[" + ", ".join(q(p.as_posix()) for p in paths) + "]"
    return (f"read_csv({files}, header = true, columns = {cols}, auto_detect = false, delim = ',', "
            "quote = '\"', escape = '\"', new_line = '\\n', filename = true, null_padding = false, "
            "parallel = true)")


def select_sql(paths: list[Path], index: bool = False) -> str:
    """The street files as a relation with snake_case columns and ``filename`` (or, with
    ``index``, ``file_index``: the file's position in ``paths``)."""
    cols = ", ".join(f'"{h}" AS {n}' for h, n in STREET_COLUMNS.items())
    return f"(SELECT {cols}, {'file_index' if index else 'filename'} FROM {read_sql(paths)})"


# ------------------------------------------------------------------------------------------------
# LSOA -> area
# ------------------------------------------------------------------------------------------------
_LSOA_CD = re.compile(r"^LSOA\d{2}CD$", re.I)
_LSOA_NM = re.compile(r"^LSOA\d{2}NM$", re.I)
_AREA_CD = [re.compile(rf"^{k}\d{{2}}CD$", re.I) for k in ("CSP", "LAD", "LTLA", "UTLA", "CTYUA")]


def lookup_columns(header: list[str], mapped: dict[str, str], source_id: str, path: Path
                   ) -> dict[str, str]:
    """Which headers of a lookup hold lsoa_code, area_code (and lsoa_name).

    Explicit ``columns`` win; otherwise ``lsoa_code``/``area_code`` by name, then the ONS
    layout: LSOA<yy>CD, and the first of CSP<yy>CD, LAD<yy>CD, LTLA<yy>CD, UTLA<yy>CD present.
    When several years are present (LSOA11CD and LSOA21CD) the latest is used.
    """
    out: dict[str, str] = {}
    for name, pats in (("lsoa_code", [_LSOA_CD]), ("lsoa_name", [_LSOA_NM]), ("area_code", _AREA_CD)):
        if name in mapped:
            if mapped[name] not in header:
                raise DataError(f"source '{source_id}': column '{mapped[name]}' (mapped to {name}) "
                                f"not in the header; found: {', '.join(header)}", path=path,
                                column=mapped[name])
            out[name] = mapped[name]
            continue
        if name in header:
            out[name] = name
            continue
        for pat in pats:
            hits = sorted((h for h in header if pat.match(h)), key=lambda h: h[-4:-2])
            if hits:
                out[name] = hits[-1]
                break
    for need in ("lsoa_code", "area_code"):
        if need not in out:
            raise DataError(f"source '{source_id}': cannot find the {need} column of the lookup "
                            "(give 'columns' or use the ONS layout LSOA21CD, LAD23CD...); "
                            f"found: {', '.join(header)}", path=path, column=need)
    return out


_LSOA_SUFFIX = re.compile(r"\s+\d{3}[A-Z]$")


def prefix_areas(lsoa_names: dict[str, str], areas: dict[str, str]) -> dict[str, str]:
    """LSOA code -> area code by the LSOA name's local-authority prefix.

    ``lsoa_names`` maps LSOA codes to names such as ``County Durham 001A``; ``areas`` maps area
    codes to names. Names are compared case-insensitively; LSOAs whose prefix names no area are
    left out.
    """
    by_name = {n.strip().lower(): c for c, n in areas.items()}
    out = {}
    for code, name in lsoa_names.items():
        if not isinstance(name, str):
            continue
        prefix = _LSOA_SUFFIX.sub("", name.strip()).lower()
        if prefix in by_name:
            out[code] = by_name[prefix]
    return out


# ------------------------------------------------------------------------------------------------
# Synthetic police.uk files (tests and benchmarks; never real data)
# ------------------------------------------------------------------------------------------------
CRIME_TYPES = ["Anti-social behaviour", "Bicycle theft", "Burglary", "Criminal damage and arson",
               "Drugs", "Other crime", "Other theft", "Possession of weapons", "Public order",
               "Robbery", "Shoplifting", "Theft from the person", "Vehicle crime",
               "Violence and sexual offences"]
OUTCOMES = ["Investigation complete; no suspect identified", "Unable to prosecute suspect",
            "Under investigation", "Offender given a caution", "Awaiting court outcome"]


def synthetic_areas(forces: list[str], las_per_force: int = 3) -> list[tuple[str, str, str]]:
    """(force, area code, area name) of synthetic local authorities; some names hold commas."""
    out = []
    for i, f in enumerate(forces):
        for j in range(las_per_force):
            k = i * las_per_force + j
            name = f"{f.title()} Town {j}" if k % 3 else f"{f.title()}, City of {j}"
            out.append((f, f"E{7000000 + k:08d}", name))
    return out


def write_synthetic(out: Path, months: list[str], forces: list[str], rows_per_file: int,
                    seed: int = 1, lsoas_per_area: int = 60, zipped: bool = False,
                    con=None) -> dict[str, int]:
    """Write police.uk street files ``out/YYYY-MM/YYYY-MM-<force>-street.csv`` (or one zip a month).

    Rows are random but deterministic in ``seed``; some LSOA names hold quoted commas; about 1% of
    rows have no LSOA (as real files do). Returns counts of files and rows.
    """
    import duckdb

    own = con is None
    con = con or duckdb.connect()
    areas = synthetic_areas(forces)
    lsoas = [(f, f"E{1000000 + a * 1000 + k:08d}", f"{name} {k + 1:03d}{'ABCD'[k % 4]}", code)
             for a, (f, code, name) in enumerate(areas) for k in range(lsoas_per_area)]
    con.execute("CREATE OR REPLACE TEMP TABLE _lsoa (force VARCHAR, lsoa_code VARCHAR, "
                "lsoa_name VARCHAR, area_code VARCHAR, k INTEGER)")
    for f in forces:
        rows = [(ff, c, n, a) for ff, c, n, a in lsoas if ff == f]
        con.executemany("INSERT INTO _lsoa VALUES (?, ?, ?, ?, ?)",
                        [(*r, k) for k, r in enumerate(rows)])
    ctypes = "[" + ", ".join("'" + t + "'" for t in CRIME_TYPES) + "]"
    outcomes = "[" + ", ".join("'" + t + "'" for t in OUTCOMES) + "]"
    n_files = 0
    for mi, month in enumerate(months):
        mdir = out / month
        mdir.mkdir(parents=True, exist_ok=True)
        for fi, force in enumerate(forces):
            nl = lsoas_per_area * len([a for a in areas if a[0] == force])
            s = seed * 1_000_003 + mi * 1009 + fi * 7
            path = mdir / f"{month}-{force}-street.csv"
            con.execute(f"""
                COPY (
                  WITH r AS (SELECT i, hash(i + {s}) AS h FROM range({rows_per_file}) t(i))
                  SELECT CASE WHEN h % 14 = 0 THEN NULL ELSE md5((i + {s})::VARCHAR) END AS "Crime ID",
                         '{month}' AS "Month", '{force.title()} Police' AS "Reported by",
                         '{force.title()} Police' AS "Falls within",
                         CASE WHEN h % 100 = 7 THEN NULL ELSE round(-1.5 + (h % 1000) / 1000.0, 6) END
                           AS "Longitude",
                         CASE WHEN h % 100 = 7 THEN NULL ELSE round(54.5 + (h % 997) / 997.0, 6) END
                           AS "Latitude",
                         CASE WHEN h % 100 = 7 THEN 'No Location' ELSE 'On or near Street '
                           || ((h >> 7) % 500)::VARCHAR END AS "Location",
                         CASE WHEN h % 100 = 7 THEN NULL ELSE l.lsoa_code END AS "LSOA code",
                         CASE WHEN h % 100 = 7 THEN NULL ELSE l.lsoa_name END AS "LSOA name",
                         {ctypes}[1 + ((h >> 17) % {len(CRIME_TYPES)})::INTEGER] AS "Crime type",
                         CASE WHEN h % 14 = 0 THEN NULL
                              ELSE {outcomes}[1 + ((h >> 23) % {len(OUTCOMES)})::INTEGER] END
                           AS "Last outcome category",
                         NULL AS "Context"
                  FROM r JOIN _lsoa l ON l.force = '{force}' AND l.k = ((r.h >> 31) % {nl})::INTEGER
                  ORDER BY i
                ) TO '{path.as_posix()}' (HEADER, DELIMITER ',', QUOTE '"')""")
            n_files += 1
        if zipped:
            zp = out / f"{month}.zip"
            with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(mdir.iterdir()):
                    zf.write(p, f"{month}/{p.name}")
                    p.unlink()
            mdir.rmdir()
    if own:
        con.close()
    return {"files": n_files, "rows": n_files * rows_per_file}


def synthetic_lookup(forces: list[str], lsoas_per_area: int = 60) -> list[dict[str, str]]:
    """Rows of an ONS-layout lookup (LSOA21CD, LSOA21NM, LAD23CD, LAD23NM) for synthetic files."""
    rows = []
    for a, (_f, code, name) in enumerate(synthetic_areas(forces)):
        for k in range(lsoas_per_area):
            rows.append({"LSOA21CD": f"E{1000000 + a * 1000 + k:08d}",
                         "LSOA21NM": f"{name} {k + 1:03d}{'ABCD'[k % 4]}",
                         "LAD23CD": code, "LAD23NM": name})
    return rows
