"""Safe measure filters: adversarial expressions are refused with the reason; good ones are
regenerated from the checked tree and select the same rows in DuckDB; a locked-down connection
cannot touch files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sveval.catalog import Catalog
from sveval.data.filters import (
    MAX_FILTER_CHARS,
    FilterError,
    check_measure_filters,
    compile_filter,
    lock_down,
    source_columns,
)
from sveval.errors import DataError, SpecError

PARAMS = Path(__file__).resolve().parents[1] / "parameters"
COLS = ["crime_type", "victim_age", "knife_flag", "offence_group", "recorded_date", "name"]


def refused(expr: str, pattern: str) -> FilterError:
    with pytest.raises(FilterError, match=pattern) as info:
        compile_filter(expr, COLS, where="measure 'm'")
    return info.value


@pytest.mark.parametrize(("expr", "pattern"), [
    ("read_text('/etc/passwd') IS NOT NULL", r"function 'read_text' is not allowed"),
    ("length(read_text('/etc/passwd')) > 0", r"function 'read_text' is not allowed"),
    ("crime_type IN (SELECT content FROM read_text('/etc/passwd'))", r"starts a statement or query"),
    ("1=1; COPY (SELECT 1) TO 'x.csv'", r"';' \(a statement separator\)"),
    ("TRUE;", r"';'"),
    ("crime_type = 'a' -- AND knife_flag", r"comments"),
    ("crime_type = 'a' /* hidden */ OR TRUE", r"comments"),
    ("EXISTS (SELECT 1)", r"starts a statement or query"),
    ("(SELECT 1) = 1", r"starts a statement or query"),
    ("getenv('HOME') = 'x'", r"function 'getenv' is not allowed"),
    ("current_setting('threads') = 2", r"function 'current_setting' is not allowed"),
    ("read_csv('x.csv') IS NULL", r"function 'read_csv' is not allowed"),
    ("glob('/etc/*') IS NULL", r"not allowed"),
    ("crime_typo = 'Robbery'", r"unknown column 'crime_typo'; this source's columns are: crime_type"),
    ("t.crime_type = 'Robbery'", r"qualified"),
    ("crime_type = ?", r"parameters"),
    ("crime_type = $1", r"parameters"),
    ("crime_type = $$Robbery$$", r"only plain single-quoted strings"),
    ("crime_type = e'Rob\\'bery'", r"only plain single-quoted strings"),
    ("crime_type = 'Robbery'\u200b", r"invisible or control character \(U\+200B ZERO WIDTH SPACE\)"),
    ("crime_type = 'a\u202e'", r"U\+202E"),
    ("crime_type = 'a'\x00", r"control character"),
    ("crime_type\uff1b = 'a'", r"non-ASCII text"),
    ("crіme_type = 'Robbery'", r"non-ASCII text"),  # Cyrillic i
    ("victim_age = 0x10", r"not allowed"),
    ("PRAGMA version", r"not a valid expression|not allowed|statement"),
    ("SET threads = 1", r"starts a statement"),
    ("ATTACH 'x.db'", r"not a valid expression|not allowed"),
    ("crime_type::BLOB = 'a'", r"cast to BLOB is not allowed"),
    ("crime_type = 'a' COLLATE nocase", r"not allowed"),
    ("crime_type AS x", r"aliases|not allowed"),
    ("", r"empty"),
    ("   ", r"empty"),
    ("crime_type = ", r"not a valid expression"),
    ("{'a': 1} IS NULL", r"not allowed"),
    ("name = 'it's'", r"not a valid expression|cannot be read|unknown column"),
])
def test_adversarial_filters_refused(expr, pattern):
    err = refused(expr, pattern)
    assert err.where == "measure 'm'"
    assert str(err).startswith("measure 'm': filter ")
    assert isinstance(err, SpecError) and isinstance(err, DataError)


def test_very_long_and_deep_input_refused_quickly():
    long = "victim_age > 1 AND " * 400 + "TRUE"
    err = refused(long, rf"characters; a filter has at most {MAX_FILTER_CHARS}")
    assert len(str(err)) < 400  # the expression is shortened in the message
    deep = "(" * 1500 + "TRUE" + ")" * 1500
    refused(deep, r"nested too deeply")


@pytest.mark.parametrize("expr", [
    "crime_type = 'Robbery'",
    "knife_flag AND victim_age BETWEEN 18 AND 35",
    "lower(trim(name)) LIKE 'o''%' ESCAPE '!'",
    "name ILIKE '%back\\slash%' OR name IS NULL",
    "CASE WHEN victim_age < 18 THEN 'child' ELSE 'adult' END = 'adult'",
    "coalesce(victim_age, 0) + 1 >= 19 AND NOT knife_flag",
    "substr(crime_type, 1, 3) IN ('Rob', 'Vio') AND length(name) > 0",
    "hour(recorded_date) >= 20 OR dayofweek(recorded_date) IN (0, 6)",
    "victim_age::INTEGER % 2 = 0",
    'CRIME_TYPE = \'Robbery\' AND "name" <> \'x\'',
])
def test_good_filters_select_the_same_rows(expr):
    con = duckdb.connect()
    con.execute("""CREATE TABLE t AS SELECT * FROM (VALUES
        ('Robbery', 17, true, 'V', TIMESTAMP '2024-01-06 21:00', 'o''neil'),
        ('Violence', 30, false, 'V', TIMESTAMP '2024-01-03 10:00', 'back\\slash x'),
        ('Robbery', 40, false, 'W', TIMESTAMP '2024-01-07 02:00', NULL),
        ('Other', 22, true, 'V', TIMESTAMP '2024-01-02 23:00', 'Smith'))
        t(crime_type, victim_age, knife_flag, offence_group, recorded_date, name)""")
    lock_down(con)
    sql = compile_filter(expr, COLS, where="measure 'm'")
    want = con.execute(f"SELECT rowid FROM t WHERE {expr} ORDER BY rowid").fetchall()
    got = con.execute(f"SELECT rowid FROM t WHERE {sql} ORDER BY rowid").fetchall()
    assert got == want


@pytest.mark.parametrize("value", ["it's", "a\\' OR 1=1 --", "back\\", "';COPY (SELECT 1) TO 'x.csv';--",
                                   "Ynys Môn", "%_"])
def test_string_escapes_round_trip_exactly(value):
    literal = "'" + value.replace("'", "''") + "'"
    sql = compile_filter(f"name = {literal}", COLS, where="measure 'm'")
    con = duckdb.connect()
    con.execute("CREATE TABLE t (name VARCHAR)")
    con.execute("INSERT INTO t VALUES (?), ('other')", [value])
    lock_down(con)
    assert con.execute(f"SELECT name FROM t WHERE {sql}").fetchall() == [(value,)]


def test_output_is_regenerated_not_the_raw_text():
    assert compile_filter("crime_type='Robbery'   AND  knife_flag", COLS, where="x") == \
        "crime_type = 'Robbery' AND knife_flag"


def test_lock_down_blocks_files_and_settings(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    lock_down(con)
    with pytest.raises(duckdb.Error):
        con.execute(f"SELECT * FROM read_text('{secret.as_posix()}')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute(f"COPY t TO '{(tmp_path / 'out.csv').as_posix()}'")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_every_example_filter_compiles():
    compiled = check_measure_filters(Catalog.load(PARAMS))
    assert "knife_crime" in compiled and "nte_violence" in compiled
    assert compiled["robbery"] == "crime_type = 'Robbery'"


def test_catalog_check_names_file_field_measure_and_reason():
    cat = Catalog.load(PARAMS)
    bad = dict(cat.measures)
    bad["robbery"] = bad["robbery"].model_copy(update={"filter": "read_text('/etc/passwd') IS NOT NULL"})
    bad_cat = Catalog(bad, cat.areas, cat.groups, cat.interventions, cat.partnership, cat.parameters_dir)
    with pytest.raises(SpecError) as info:
        check_measure_filters(bad_cat)
    msg = str(info.value)
    k = list(bad).index("robbery")
    assert "measures.yaml" in msg and f"measures.{k}.filter" in msg
    assert "measure 'robbery'" in msg and "read_text('/etc/passwd')" in msg
    assert "function 'read_text' is not allowed" in msg
    assert "root:" not in msg  # nothing was read


def test_source_columns_of_built_in_sources():
    assert "knife_flag" in source_columns("force_extract")
    assert "crime_type" in source_columns("police_uk")
    assert {"icd10_code", "age_to", "n"} <= source_columns("hospital")
    with pytest.raises(DataError, match="unknown source"):
        source_columns("nope")


def test_ingestion_refuses_a_bad_filter_and_writes_nothing(tmp_path, monkeypatch):
    from sveval.data.ingest import aggregate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "aggregates").mkdir()
    (tmp_path / "aggregates" / "homicide_index.csv").write_text(
        "month,financial_year,force_name,area_code,area_name,offence,victim_age_group,age_from,age_to,"
        "method,domestic,homicides\n2024-01,2023/24,F,E06000047,Durham,Murder,18-24,18,24,Knife,N,1\n")
    good = Catalog.load(PARAMS).measures["homicide"]
    long = aggregate(tmp_path, [good])
    assert long["count"].sum() == 1
    for expr in ("1=1; COPY (SELECT 1) TO 'pwned.csv'", "length(read_text('/etc/passwd')) > 0"):
        bad = good.model_copy(update={"filter": expr})
        with pytest.raises(DataError, match=r"measure 'homicide': filter .* refused"):
            aggregate(tmp_path, [bad])
    assert not (tmp_path / "pwned.csv").exists()


def test_validate_refuses_a_bad_filter(tmp_path, capsys):
    import shutil

    import yaml

    from sveval.cli import main

    root = tmp_path / "p"
    (root / "parameters" / "evaluations").mkdir(parents=True)
    (root / "evaluations").mkdir()
    for f in ("areas.yaml", "interventions.yaml", "measures.yaml"):
        shutil.copy(PARAMS / f, root / "parameters" / f)
    reg = yaml.safe_load((root / "parameters" / "measures.yaml").read_text())
    k = next(i for i, m in enumerate(reg["measures"]) if m["id"] == "robbery")
    reg["measures"][k]["filter"] = "crime_type = 'Robbery' OR length(read_text('/etc/passwd')) > 0"
    (root / "parameters" / "measures.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    rc = main(["--root", str(root), "validate", "--all"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"measures.{k}.filter" in err and "measure 'robbery'" in err
    assert "read_text('/etc/passwd')" in err and "function 'read_text' is not allowed" in err
    assert "root:x:0:0" not in err
