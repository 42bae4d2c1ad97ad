"""police.uk street-level archives as downloaded (folders or zips), LSOA -> area, against pandas."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from sveval.data import policeuk
from sveval.data.sources import Sources
from sveval.data.store import Store
from sveval.errors import DataError
from sveval.spec import MeasureSpec

FORCES = ["durham", "cleveland"]
MONTHS = ["2023-11", "2023-12", "2024-01"]


def _measure(mid: str, filt: str | None, source: str = "street") -> MeasureSpec:
    return MeasureSpec(id=mid, name=mid, description=mid, source=source, filter=filt)


MEASURES = [_measure("robbery", "crime_type = 'Robbery'"),
            _measure("violence", "crime_type = 'Violence and sexual offences'"),
            _measure("open_cases", "last_outcome_category = 'Under investigation'")]


def _project(tmp_path: Path, zipped: bool = False, lookup: bool = True, forces=None) -> Sources:
    root = tmp_path / "proj"
    arch = root / "downloads"
    if not arch.exists():
        policeuk.write_synthetic(arch, MONTHS, FORCES, 1500, seed=3, lsoas_per_area=12, zipped=zipped)
        pd.DataFrame(policeuk.synthetic_lookup(FORCES, 12)).to_csv(root / "lookup.csv", index=False)
    src = {"id": "street", "kind": "police_uk", "path": "downloads"}
    if forces:
        src["forces"] = forces
    doc = {"sources": [src] + ([{"id": "lk", "kind": "lookup", "path": "lookup.csv"}] if lookup else [])}
    (root / "sources.yaml").write_text(yaml.safe_dump(doc))
    return Sources.load(root / "sources.yaml", root)


def _pandas_rows(arch: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype=str) for p in sorted(arch.rglob("*-street.csv"))]
    return pd.concat(frames, ignore_index=True)


def _areas() -> dict[str, str]:
    return {code: name for _f, code, name in policeuk.synthetic_areas(FORCES)}


@pytest.fixture
def ingested(tmp_path):
    sources = _project(tmp_path)
    store = Store(tmp_path / "store")
    report = store.ingest(sources, MEASURES)
    return sources, store, report


def test_counts_match_pandas(ingested, tmp_path):
    sources, store, report = ingested
    raw = _pandas_rows(tmp_path / "proj" / "downloads")
    assert report.sources[0].rows == len(raw) == 3 * 2 * 1500
    assert report.sources[0].files == 6 and report.warnings == []
    # quoted commas in LSOA names did not shift columns: every LSOA code is a code
    assert raw["LSOA name"].str.contains(",").any()
    lk = pd.read_csv(tmp_path / "proj" / "lookup.csv")
    raw = raw.merge(lk, left_on="LSOA code", right_on="LSOA21CD", how="inner")
    long = store.long(sources, MEASURES, _areas())
    for m, cond in (("robbery", raw["Crime type"] == "Robbery"),
                    ("violence", raw["Crime type"] == "Violence and sexual offences"),
                    ("open_cases", raw["Last outcome category"] == "Under investigation")):
        want = raw[cond].groupby(["Month", "LAD23CD"]).size()
        got = long[long["measure"] == m].set_index(["period", "area_code"])["count"]
        got = got[got > 0]
        assert got.to_dict() == {k: float(v) for k, v in want.items()}, m
    assert set(long["period"]) == set(MONTHS)
    assert set(long["area_code"]) == set(_areas())
    # LSOA x crime type cube kept in the store
    parts = (tmp_path / "store" / "parts").as_posix()
    cube = duckdb.sql(f"SELECT * FROM read_parquet('{parts}/street-*.parquet')").df()
    assert int(cube["n"].sum()) == 9000
    assert set(cube["crime_type"].dropna()) <= set(policeuk.CRIME_TYPES)
    assert "last_outcome_category" in cube.columns  # a filter uses it: a key of the cube
    # record-level fields never reach the store
    assert not {"crime_id", "location", "longitude", "latitude"} & set(cube.columns)


def test_lsoa_panel(ingested, tmp_path):
    sources, store, _ = ingested
    panel = store.lsoa(sources, MEASURES[0], _areas())
    assert list(panel.columns) == ["period", "lsoa_code", "area_code", "measure", "count"]
    assert len(panel) == 2 * 3 * 12 * 3  # every LSOA of the lookup x every month
    raw = _pandas_rows(tmp_path / "proj" / "downloads")
    want = raw[raw["Crime type"] == "Robbery"].groupby(["Month", "LSOA code"]).size()
    got = panel.set_index(["period", "lsoa_code"])["count"]
    assert got[got > 0].to_dict() == {k: float(v) for k, v in want.items()}


def test_zips_give_the_same_counts(tmp_path):
    a = _project(tmp_path / "a")
    b = _project(tmp_path / "b", zipped=True)
    assert sorted(p.name for p in (tmp_path / "b" / "proj" / "downloads").iterdir()) == [
        f"{m}.zip" for m in MONTHS]
    la = Store(tmp_path / "sa")
    lb = Store(tmp_path / "sb")
    la.ingest(a, MEASURES)
    rb = lb.ingest(b, MEASURES)
    assert rb.sources[0].files == 6 and rb.sources[0].rows == 9000
    pd.testing.assert_frame_equal(la.long(a, MEASURES, _areas()), lb.long(b, MEASURES, _areas()))
    assert lb.ingest(b, MEASURES).files_read == 0  # zip members keyed by CRC: nothing re-read


def test_a_few_forces(tmp_path):
    sources = _project(tmp_path, forces=["cleveland"])
    store = Store(tmp_path / "store")
    r = store.ingest(sources, MEASURES)
    assert r.sources[0].files == 3 and r.sources[0].rows == 4500
    long = store.long(sources, MEASURES, _areas())
    cleveland = {c for f, c, _ in policeuk.synthetic_areas(FORCES) if f == "cleveland"}
    assert set(long["area_code"]) == cleveland


def test_without_a_lookup_the_lsoa_name_prefix_maps_areas(tmp_path):
    with_lk = _project(tmp_path)
    s1 = Store(tmp_path / "s1")
    s1.ingest(with_lk, MEASURES)
    no_lk = _project(tmp_path, lookup=False)
    s2 = Store(tmp_path / "s2")
    r = s2.ingest(no_lk, MEASURES)
    assert any("local-authority prefix" in w for w in r.warnings)
    pd.testing.assert_frame_equal(s1.long(with_lk, MEASURES, _areas()), s2.long(no_lk, MEASURES, _areas()))
    # an area missing from the registry is left out
    some = dict(list(_areas().items())[1:])
    long = s2.long(no_lk, MEASURES, some)
    assert set(long["area_code"]) == set(some)


def test_unmapped_lsoas_warned_with_counts(tmp_path):
    sources = _project(tmp_path)
    lk = pd.read_csv(tmp_path / "proj" / "lookup.csv")
    lk.iloc[1:].to_csv(tmp_path / "proj" / "lookup.csv", index=False)
    r = Store(tmp_path / "store").ingest(sources, MEASURES)
    w = [x for x in r.warnings if "not in the lookup" in x]
    assert len(w) == 1 and "1 LSOA(s)" in w[0] and lk["LSOA21CD"].iloc[0] in w[0]


def test_ons_lookup_headers_recognised():
    cols = policeuk.lookup_columns(["LSOA11CD", "LSOA21CD", "LSOA21NM", "LAD22CD", "LAD22NM"], {}, "x",
                                   Path("l.csv"))
    assert cols == {"lsoa_code": "LSOA21CD", "lsoa_name": "LSOA21NM", "area_code": "LAD22CD"}
    cols = policeuk.lookup_columns(["lsoa11cd", "CSP19CD", "LAD19CD"], {}, "x", Path("l.csv"))
    assert cols == {"lsoa_code": "lsoa11cd", "area_code": "CSP19CD"}
    with pytest.raises(DataError, match="cannot find the area_code column"):
        policeuk.lookup_columns(["LSOA21CD", "Name"], {}, "x", Path("l.csv"))
    with pytest.raises(DataError, match="mapped to area_code"):
        policeuk.lookup_columns(["LSOA21CD"], {"area_code": "LA"}, "x", Path("l.csv"))


def test_bad_archives_refused(tmp_path):
    sources = _project(tmp_path)
    arch = tmp_path / "proj" / "downloads"
    f = arch / "2024-01" / "2024-01-durham-street.csv"
    text = f.read_text().replace("Crime type", "Crime kind", 1)
    f.write_text(text)
    with pytest.raises(DataError) as e:
        Store(tmp_path / "store").ingest(sources, MEASURES)
    assert "source 'street'" in str(e.value) and "Crime type" in str(e.value) and f.name in str(e.value)
    # a zip without street files
    for p in list(arch.rglob("*.csv")):
        p.unlink()
    with zipfile.ZipFile(arch / "2024-02.zip", "w") as zf:
        zf.writestr("2024-02/2024-02-durham-outcomes.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="the zip holds no police.uk street files"):
        Store(tmp_path / "store").ingest(sources, MEASURES)


def test_synthetic_rows_are_valid_csv(tmp_path):
    policeuk.write_synthetic(tmp_path, ["2024-01"], ["durham"], 200, seed=9, lsoas_per_area=5)
    rows = list(csv.reader(io.StringIO((tmp_path / "2024-01" / "2024-01-durham-street.csv").read_text())))
    assert rows[0] == policeuk.STREET_HEADER
    assert all(len(r) == 12 for r in rows) and len(rows) == 201


@pytest.mark.parametrize(("measures", "overlap", "apart"), [
    (MEASURES[:2], None, True),              # no LSOA and month in two files: passed through
    (MEASURES[:2], "same_ingest", True),     # a second force's file over the same LSOAs: its part summed
    (MEASURES[:2], "added_later", False),    # ... added to a month read before: summed across parts
    (MEASURES, "same_ingest", True),         # cube keyed by the outcome too: every cell summed
], ids=["apart", "shared", "shared_later", "with_outcomes"])
def test_lsoa_by_crime_type_counts_match_pandas(tmp_path, measures, overlap, apart):
    """The monthly LSOA x crime type table, summed over files: cells that several files hold (a
    second force's file over the same LSOAs) and rows without an LSOA are summed, the rest passed."""
    sources = _project(tmp_path)
    arch = tmp_path / "proj" / "downloads"
    store = Store(tmp_path / "store")

    def btp() -> None:  # British Transport Police style: another force's file, same LSOAs
        src = (arch / "2023-12" / "2023-12-durham-street.csv").read_text().splitlines()
        (arch / "2023-12" / "2023-12-btp-street.csv").write_text("\n".join(src[:400]) + "\n")

    if overlap == "same_ingest":
        btp()
    store.ingest(sources, measures)
    if overlap == "added_later":
        btp()
        assert store.ingest(sources, measures).files_read == 1
    src = store.manifest()["sources"]["street"]
    assert Store._parts_apart(src) is apart and bool(src["mixed"]) is (overlap == "same_ingest")
    raw = _pandas_rows(arch)
    want = raw.groupby(["Month", "LSOA code", "Crime type"], dropna=False).size()
    got = store.crime_types("street")
    assert list(got.columns) == ["period", "lsoa_code", "crime_type", "n"]
    assert not got.duplicated(["period", "lsoa_code", "crime_type"]).any()
    got = got.set_index(["period", "lsoa_code", "crime_type"])["n"]
    assert got.to_dict() == {k: int(v) for k, v in want.items()}
    assert int(got.sum()) == len(raw) == 9000 + (399 if overlap else 0)
    sides = sorted(store.parts_dir.glob("shared-*.parquet"))
    assert len(sides) == (overlap == "same_ingest")  # the LSOAs and months two files hold
    assert store.ingest(sources, measures).files_read == 0 and sorted(store.parts_dir.glob("shared-*")) == sides
    for side in sides:  # without them (a store written before), each such part is summed on its own
        side.unlink()
    again = store.crime_types("street").set_index(["period", "lsoa_code", "crime_type"])["n"]
    assert again.to_dict() == got.to_dict()
    with pytest.raises(DataError, match="not a police_uk source"):
        store.crime_types("lk")
    if overlap:  # the shared file deleted: its rows leave the (now partly live) part's sums
        (arch / "2023-12" / "2023-12-btp-street.csv").unlink()
        assert store.ingest(sources, measures).files_read == 0
        want = _pandas_rows(arch).groupby(["Month", "LSOA code", "Crime type"], dropna=False).size()
        got = store.crime_types("street").set_index(["period", "lsoa_code", "crime_type"])["n"]
        assert got.to_dict() == {k: int(v) for k, v in want.items()} and int(got.sum()) == 9000


def test_a_malformed_row_is_refused_naming_its_file_and_row(tmp_path):
    sources = _project(tmp_path)
    arch = tmp_path / "proj" / "downloads"
    f = arch / "2024-01" / "2024-01-durham-street.csv"  # the last file of its group: not the first
    lines = f.read_text().splitlines()
    lines[7] = lines[7].replace(",On or near", ',"On or near', 1)  # an unterminated quote
    f.write_text("\n".join(lines) + "\n")
    store = Store(tmp_path / "store")
    with pytest.raises(DataError) as e:
        store.ingest(sources, MEASURES)
    assert e.value.path == f and e.value.row == 7
    assert "source 'street': not a valid CSV row: Value with unterminated quote" in str(e.value)
    assert not (tmp_path / "store" / "manifest.json").exists() and not list(store.parts_dir.iterdir())
