"""The persistent, incremental store: the example through sources.yaml, re-reading only what
changed, keeping the last good state, tables of other granularities, force extracts, export."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sveval.catalog import Catalog
from sveval.data import policeuk
from sveval.data.ingest import aggregate, aggregate_lsoa
from sveval.data.sources import Sources
from sveval.data.store import Store, crc32_file, filter_columns, is_store
from sveval.errors import DataError
from sveval.spec import MeasureSpec

REPO = Path(__file__).resolve().parents[1]
FORCES = ["durham", "cleveland"]


def _m(mid: str, source: str, filt: str | None = None, **kw) -> MeasureSpec:
    return MeasureSpec(id=mid, name=mid, description=mid, source=source, filter=filt, **kw)


def _areas() -> dict[str, str]:
    return {code: name for _f, code, name in policeuk.synthetic_areas(FORCES)}


# ------------------------------------------------------------------------------------------------
# The built-in example, described by parameters/sources.yaml, through the store
# ------------------------------------------------------------------------------------------------
def test_example_through_the_store_equals_direct_ingestion(example_data, tmp_path):
    cat = Catalog.load(REPO / "parameters")
    sources = Sources.load(REPO / "parameters" / "sources.yaml", REPO, example_data)
    store = Store(tmp_path / "store")
    r = store.ingest(sources, cat.measures.values())
    assert r.files_read > 1000 and r.sources[0].rows > 500_000
    areas = {c: a.name for c, a in cat.areas.items()}
    long = store.long(sources, cat.measures.values(), areas)
    pd.testing.assert_frame_equal(long, aggregate(example_data, cat.measures.values()))
    assert set(long.attrs["granularity"].values()) == {"month"}
    for mid in ("violence_sexual", "nte_violence"):
        pd.testing.assert_frame_equal(store.lsoa(sources, cat.measures[mid], areas),
                                      aggregate_lsoa(example_data, cat.measures[mid]))
    assert store.ingest(sources, cat.measures.values()).files_read == 0
    assert is_store(store.root) and store.sources().ids == sources.ids


# ------------------------------------------------------------------------------------------------
# Incremental ingestion and the last good state
# ------------------------------------------------------------------------------------------------
MEASURES = [_m("robbery", "street", "crime_type = 'Robbery'")]


def _street(root: Path, months: list[str]) -> Sources:
    policeuk.write_synthetic(root / "arch", months, FORCES, 500, seed=5, lsoas_per_area=6)
    pd.DataFrame(policeuk.synthetic_lookup(FORCES, 6)).to_csv(root / "lookup.csv", index=False)
    doc = {"sources": [{"id": "street", "kind": "police_uk", "path": "arch"},
                       {"id": "lk", "kind": "lookup", "path": "lookup.csv"}]}
    (root / "sources.yaml").write_text(yaml.safe_dump(doc))
    return Sources.load(root / "sources.yaml", root)


def test_only_new_or_changed_files_are_read(tmp_path):
    sources = _street(tmp_path, ["2024-01", "2024-02"])
    store = Store(tmp_path / "store")
    first = store.ingest(sources, MEASURES)
    assert (first.sources[0].files_read, first.sources[0].rows) == (4, 2000)
    before = store.long(sources, MEASURES, _areas())
    assert store.ingest(sources, MEASURES).files_read == 0
    # a new month: only its files
    policeuk.write_synthetic(tmp_path / "arch", ["2024-03"], FORCES, 500, seed=5, lsoas_per_area=6)
    r = store.ingest(sources, MEASURES)
    assert (r.sources[0].files_read, r.sources[0].rows, r.sources[1].files_read) == (2, 1000, 0)
    after = store.long(sources, MEASURES, _areas())
    assert sorted(set(after["period"])) == ["2024-01", "2024-02", "2024-03"]
    pd.testing.assert_frame_equal(after[after["period"] < "2024-03"].reset_index(drop=True), before)
    # touched but unchanged (same size and CRC-32): not re-read
    f = tmp_path / "arch" / "2024-01" / "2024-01-durham-street.csv"
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert store.ingest(sources, MEASURES).files_read == 0
    # changed: re-read, and the counts follow
    rows = f.read_text().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if ",Robbery," not in r]
    f.write_text("\n".join(keep) + "\n")
    assert store.ingest(sources, MEASURES).files_read == 1
    changed = store.long(sources, MEASURES, _areas())
    durham = {c for fo, c, _ in policeuk.synthetic_areas(FORCES) if fo == "durham"}
    jan = changed[(changed["period"] == "2024-01") & changed["area_code"].isin(durham)]
    assert jan["count"].sum() == 0 and changed["count"].sum() > 0
    # street parts name files by number: the live files' numbers are distinct
    ids = [e["id"] for e in store.manifest()["sources"]["street"]["files"].values()]
    assert len(ids) == len(set(ids)) == 6
    # a measure over the LSOA x crime type cube changed: nothing re-read, the counts follow
    m2 = [_m("robbery", "street", "crime_type = 'Robbery' OR crime_type = 'Drugs'")]
    assert store.ingest(sources, m2).files_read == 0
    assert store.long(sources, m2, _areas())["count"].sum() > changed["count"].sum()
    # a measure over a column of many values (counted at ingestion): the source is re-read in full
    m3 = [*m2, _m("near_parks", "street", "location LIKE '%Street 1%'")]
    assert store.ingest(sources, m3).files_read == 6
    near = store.long(sources, m3, _areas())
    near = near[near["measure"] == "near_parks"]
    assert 0 < near["count"].sum() < 6 * 500
    # a deleted file: its rows leave the store, and so do unused parts
    shutil.rmtree(tmp_path / "arch" / "2024-03")
    store.ingest(sources, m2)
    assert sorted(set(store.long(sources, m2, _areas())["period"])) == ["2024-01", "2024-02"]
    live = {e["part"] for s in store.manifest()["sources"].values() for e in s["files"].values()}
    assert {p.name for p in store.parts_dir.iterdir()} == live


@pytest.mark.parametrize("damage", ["bad_month", "bad_header", "not_utf8", "empty"])
def test_a_failed_ingest_keeps_the_last_good_state(tmp_path, damage):
    sources = _street(tmp_path, ["2024-01"])
    store = Store(tmp_path / "store")
    store.ingest(sources, MEASURES)
    manifest = (store.root / "manifest.json").read_bytes()
    parts = sorted(store.parts_dir.iterdir())
    good = store.long(sources, MEASURES, _areas())
    policeuk.write_synthetic(tmp_path / "arch", ["2024-02"], FORCES, 500, seed=6, lsoas_per_area=6)
    f = tmp_path / "arch" / "2024-02" / "2024-02-cleveland-street.csv"
    text = f.read_text()
    if damage == "bad_month":
        f.write_text(text.replace(",2024-02,", ",Feb 2024,", 3))
    elif damage == "bad_header":
        f.write_text(text.replace("LSOA code", "LSOA", 1))
    elif damage == "not_utf8":
        f.write_bytes(text.encode("utf-8").replace(b"On or near", b"On or n\xe9ar", 1)[:2000].replace(
            b"Month", b"M\xf6nth", 1))
    else:
        f.write_text("")
    with pytest.raises(DataError) as e:
        store.ingest(sources, MEASURES)
    assert "source 'street'" in str(e.value) and f.name in str(e.value)
    assert (store.root / "manifest.json").read_bytes() == manifest
    assert sorted(store.parts_dir.iterdir()) == parts
    pd.testing.assert_frame_equal(store.long(sources, MEASURES, _areas()), good)
    assert not list(store.root.glob(".ingest-*"))


# ------------------------------------------------------------------------------------------------
# Tables of other granularities, populations, force extracts, export
# ------------------------------------------------------------------------------------------------
def _tables(root: Path) -> Sources:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hes_q.csv").write_text(
        "Quarter,LA code,ICD,Admissions\n"
        "2021 Q2,E1,X99,4\n2021 Q2,E1,W25,9\n2021 Q4,E1,X99,2\n2021 Q2,E2,X99,1\n2022 Q1,E2,W25,3\n")
    (root / "fte_fy.csv").write_text("fy,area,n\n2019-20,E1,30\n2021-22,E1,25\n2020-21,E2,12\n")
    (root / "score.csv").write_text("year,area_code,count\n2019,E1,-0.25\n2021,E1,0.5\n2020,E2,0.1\n")
    (root / "mye.csv").write_text("mid_year,ladcode,population\n2019,E1,1000\n2021,E1,1100\n"
                                  "2019,E2,500\n")
    doc = {"sources": [
        {"id": "hes", "kind": "table", "path": "hes_q.csv", "period": "quarter",
         "columns": {"period": "Quarter", "area_code": "LA code", "count": "Admissions", "icd": "ICD"}},
        {"id": "fte", "kind": "table", "path": "fte_fy.csv", "period": "financial_year",
         "columns": {"period": "fy", "area_code": "area", "count": "n"}},
        {"id": "score", "kind": "table", "path": "score.csv", "period": "year",
         "columns": {"period": "year"}},
        {"id": "mye", "kind": "population", "path": "mye.csv",
         "columns": {"year": "mid_year", "area_code": "ladcode"}},
    ]}
    (root / "sources.yaml").write_text(yaml.safe_dump(doc))
    return Sources.load(root / "sources.yaml", root)


TABLE_MEASURES = [_m("knife", "hes", "icd = 'X99'"), _m("fte", "fte"),
                  _m("score", "score", kind="continuous")]


def test_tables_keep_their_granularity(tmp_path):
    sources = _tables(tmp_path)
    store = Store(tmp_path / "store")
    store.ingest(sources, TABLE_MEASURES)
    long = store.long(sources, TABLE_MEASURES, {})
    assert long.attrs["granularity"] == {"knife": "quarter", "fte": "financial_year", "score": "year"}
    k = long[long["measure"] == "knife"].set_index(["area_code", "period"])["count"].to_dict()
    assert k == {("E1", "2021-Q2"): 4.0, ("E1", "2021-Q3"): 0.0, ("E1", "2021-Q4"): 2.0,
                 ("E1", "2022-Q1"): 0.0, ("E2", "2021-Q2"): 1.0, ("E2", "2021-Q3"): 0.0,
                 ("E2", "2021-Q4"): 0.0, ("E2", "2022-Q1"): 0.0}
    f = long[long["measure"] == "fte"]
    assert list(f[f["area_code"] == "E1"]["period"]) == ["2019/20", "2020/21", "2021/22"]
    assert list(f[f["area_code"] == "E1"]["count"]) == [30.0, 0.0, 25.0]
    s = long[long["measure"] == "score"]
    assert s["count"].min() == -0.25  # continuous measures may be negative
    # populations: the period's year, last estimate carried forward
    pop = long.set_index(["measure", "area_code", "period"])["population"]
    assert pop[("knife", "E1", "2021-Q2")] == 1100 and pop[("fte", "E1", "2020/21")] == 1000
    assert pop[("score", "E2", "2021")] == 500
    out = tmp_path / "out" / "long.csv"
    assert store.export(sources, TABLE_MEASURES, {}, out) == len(long)
    back = pd.read_csv(out, dtype={"period": str})
    assert list(back.columns) == ["period", "area_code", "measure", "count", "population"]
    assert set(back["period"]) >= {"2021-Q2", "2019/20", "2021"}


def test_table_periods_must_match_their_granularity(tmp_path):
    sources = _tables(tmp_path)
    (tmp_path / "hes_q.csv").write_text("Quarter,LA code,ICD,Admissions\n2021-04,E1,X99,4\n")
    with pytest.raises(DataError) as e:
        Store(tmp_path / "store").ingest(sources, TABLE_MEASURES)
    msg = str(e.value)
    assert "source 'hes'" in msg and "'2021-04' is not a quarter" in msg and "2021-Q2" in msg
    assert "hes_q.csv" in msg and "Quarter" in msg


def test_missing_mapped_header_refused(tmp_path):
    sources = _tables(tmp_path)
    (tmp_path / "fte_fy.csv").write_text("fy,area_code,n\n2019-20,E1,30\n")
    with pytest.raises(DataError) as e:
        Store(tmp_path / "store").ingest(sources, TABLE_MEASURES)
    assert "source 'fte'" in str(e.value) and "'area' (mapped to area_code)" in str(e.value)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_force_extract_with_its_own_headers(tmp_path, fmt):
    rec = pd.DataFrame({
        "Ref": ["a1", "a2", "a3", "a4", "a5"],
        "Recorded Date": pd.to_datetime(["2023-01-05", "2023-01-20", "2023-03-02", "2023-03-09", "2023-03-10"]),
        "LSOA": ["E01000001", "E01000002", "E01000001", "E01000003", "E01000002"],
        "Knife": ["Y", "N", "Y", "Y", ""],
        "Age": [17, 30, 22, 40, 15],
    })
    path = tmp_path / f"extract.{fmt}"
    if fmt == "csv":
        rec.assign(**{"Recorded Date": rec["Recorded Date"].dt.strftime("%d/%m/%Y")}).to_csv(path, index=False)
    else:
        rec.to_excel(path, index=False)
    pd.DataFrame({"LSOA21CD": ["E01000001", "E01000002", "E01000003"],
                  "LAD23CD": ["E1", "E1", "E2"]}).to_csv(tmp_path / "lk.csv", index=False)
    src = {"id": "extract", "kind": "records", "path": path.name,
           "columns": {"date": "Recorded Date", "lsoa_code": "LSOA", "knife_flag": "Knife", "age": "Age"},
           "types": {"date": "date", "knife_flag": "boolean", "age": "integer"}}
    if fmt == "csv":
        src["date_format"] = "%d/%m/%Y"
    doc = {"sources": [src, {"id": "lk", "kind": "lookup", "path": "lk.csv"}]}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(doc))
    sources = Sources.load(tmp_path / "sources.yaml", tmp_path)
    ms = [_m("knife", "extract", "knife_flag"), _m("knife_u25", "extract", "knife_flag", age_max=24)]
    store = Store(tmp_path / "store")
    store.ingest(sources, ms)
    long = store.long(sources, ms, {})
    got = long.set_index(["measure", "area_code", "period"])["count"].to_dict()
    assert got == {("knife", "E1", "2023-01"): 1.0, ("knife", "E1", "2023-02"): 0.0,
                   ("knife", "E1", "2023-03"): 1.0, ("knife", "E2", "2023-01"): 0.0,
                   ("knife", "E2", "2023-02"): 0.0, ("knife", "E2", "2023-03"): 1.0,
                   ("knife_u25", "E1", "2023-01"): 1.0, ("knife_u25", "E1", "2023-02"): 0.0,
                   ("knife_u25", "E1", "2023-03"): 1.0, ("knife_u25", "E2", "2023-01"): 0.0,
                   ("knife_u25", "E2", "2023-02"): 0.0, ("knife_u25", "E2", "2023-03"): 0.0}
    panel = store.lsoa(sources, ms[0], {})
    assert len(panel) == 3 * 3 and panel["count"].sum() == 3


def test_a_project_ingests_exports_and_loads_from_its_store(tmp_path, capsys):
    from sveval.cli import main
    from sveval.data.load import load_long
    from sveval.paths import ProjectPaths
    from sveval.spec import DataSpec

    root = tmp_path / "proj"
    pdir = root / "parameters"
    pdir.mkdir(parents=True)
    (root / "evaluations").mkdir()
    policeuk.write_synthetic(root / "downloads", ["2024-01", "2024-02"], FORCES, 300, seed=2,
                             lsoas_per_area=4, zipped=True)
    (pdir / "sources.yaml").write_text(yaml.safe_dump(
        {"sources": [{"id": "street", "kind": "police_uk", "path": "downloads"}]}))
    (pdir / "measures.yaml").write_text(yaml.safe_dump({"measures": [
        {"id": "robbery", "name": "Robbery", "description": "police.uk robbery", "source": "street",
         "filter": "crime_type = 'Robbery'"}]}))
    (pdir / "areas.yaml").write_text(yaml.safe_dump({"partnership": "Test", "areas": [
        {"code": c, "name": n, "role": "partnership" if k == 0 else "comparison"}
        for k, (c, n) in enumerate(_areas().items())]}))
    (pdir / "interventions.yaml").write_text("interventions: []\n")
    assert main(["--root", str(root), "data", "ingest", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1,200 rows" in out and "rows/s" in out and "local-authority prefix" in out
    assert (root / "data" / "store" / "manifest.json").is_file()
    csv_out = tmp_path / "long.csv"
    assert main(["--root", str(root), "data", "export", "--measure", "robbery", "--out", str(csv_out),
                 "--quiet"]) == 0
    exported = pd.read_csv(csv_out)
    assert len(exported) == 2 * len(_areas()) and set(exported["measure"]) == {"robbery"}
    assert main(["--root", str(root), "data", "export", "--measure", "nope", "--out", str(csv_out)]) == 1
    cat = Catalog.load(pdir)
    loaded = load_long(DataSpec(source="store"), None, ProjectPaths(root), cat)
    assert loaded.data_dir == root / "data" / "store" and loaded.files == [loaded.data_dir / "manifest.json"]
    assert loaded.long["count"].sum() == exported["count"].sum() > 0


def test_filter_columns_of_a_source(tmp_path):
    sources = _tables(tmp_path)
    # "ICD" is mapped to "icd": DuckDB names are case-insensitive, so only the mapped name remains
    assert filter_columns(sources, sources["hes"]) == {"Quarter", "LA code", "Admissions", "period",
                                                       "area_code", "count", "icd"}
    st = _street(tmp_path / "street", ["2024-01"])
    assert {"crime_type", "lsoa_code", "period", "last_outcome_category"} <= filter_columns(st, st["street"])


def test_file_crc_is_zlibs_crc32(tmp_path):
    """The fingerprint kept in the manifest is the standard CRC-32 (whichever library computes
    it), over every byte: files larger than the read buffer, and empty ones."""
    import zlib

    data = os.urandom(3 * (1 << 20) + 12345)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "e.bin").write_bytes(b"")
    assert crc32_file(tmp_path / "a.bin") == zlib.crc32(data)
    assert crc32_file(tmp_path / "e.bin") == 0


def test_change_detection_same_size_changed_content(tmp_path):
    """A file rewritten with the same size is re-read when its mtime changed (its CRC-32 differs);
    the documented limit: same size *and* the same mtime (content swapped and the old mtime put
    back) is taken as unchanged without reading it, as ``make`` and ``rsync`` do by default."""
    sources = _street(tmp_path, ["2024-01"])
    store = Store(tmp_path / "store")
    store.ingest(sources, MEASURES)
    f = tmp_path / "arch" / "2024-01" / "2024-01-durham-street.csv"
    st = f.stat()
    text = f.read_text()
    swapped = text.replace(",Robbery,", ",Robbery,".upper(), 1)  # same length, other bytes
    assert swapped != text and len(swapped) == len(text)
    f.write_text(swapped)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime put back
    assert store.ingest(sources, MEASURES).files_read == 0  # the limit
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    r = store.ingest(sources, MEASURES)
    assert r.files_read == 1  # new mtime, same size, other CRC-32: re-read
    e = store.manifest()["sources"]["street"]["files"]["arch/2024-01/2024-01-durham-street.csv"]
    assert e["size"] == st.st_size and e["stamp"] == st.st_mtime_ns + 1_000_000_000
