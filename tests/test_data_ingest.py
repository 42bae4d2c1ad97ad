"""Ingestion through DuckDB: aggregates match a pandas recount of the raw records; nothing
record-level leaves; caching; a user's long CSV is validated with precise errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.catalog import Catalog
from sveval.data import example as ex
from sveval.data.ingest import (
    LONG_COLUMNS,
    LSOA_COLUMNS,
    PERSONAL_FIELDS,
    aggregate,
    cache_key,
    load_example_long,
    load_example_lsoa,
    read_long_csv,
)
from sveval.errors import DataError

PARAMS = Path(__file__).resolve().parents[1] / "parameters"
P = ["E06000047", "E06000005"]
N_MONTHS = 132


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory) -> Path:
    return ex.ensure_example(tmp_path_factory.getbasetemp() / "sveval-example")


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load(PARAMS)


@pytest.fixture(scope="module")
def long(example_dir, cat) -> pd.DataFrame:
    return load_example_long(example_dir, cat)


@pytest.fixture(scope="module")
def extract(example_dir) -> pd.DataFrame:
    df = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((example_dir / "force_extract").glob("*.csv.gz")))
    df["period"] = df["recorded_date"].str[:7]
    df["age"] = pd.to_numeric(df["victim_age"])
    for f in ("knife_flag", "da_flag", "alcohol_flag", "nte_zone"):
        df[f] = df[f] == "Y"
    t = pd.to_datetime(df["committed_datetime"])
    dow, hour = t.dt.day_of_week, t.dt.hour  # Monday = 0
    df["nte_hours"] = (dow.isin([4, 5]) & (hour >= 20)) | (dow.isin([5, 6]) & (hour < 6))
    return df


KNIFE = ["1", "2", "3A", "5D", "8N", "34B", "19C", "20A"]
RECOUNT = {
    "knife_crime": lambda d: d["knife_flag"] & d["ho_offence_code"].isin(KNIFE),
    "knife_crime_u25": lambda d: d["knife_flag"] & d["ho_offence_code"].isin(KNIFE) & (d["age"] <= 24),
    "da_knife": lambda d: d["da_flag"] & d["knife_flag"] & (d["offence_group"] == "Violence against the person"),
    "nte_violence": lambda d: (d["offence_group"] == "Violence against the person") & ~d["da_flag"]
    & d["nte_zone"] & (d["alcohol_flag"] | d["nte_hours"]),
    "violence_injury_18_35": lambda d: d["ho_offence_code"].isin(["2", "5D", "8N"]) & d["age"].between(18, 35),
}


def test_long_shape_and_zero_fill(long, cat):
    assert list(long.columns) == LONG_COLUMNS
    assert set(long["measure"]) == set(cat.measures)
    n = long.groupby(["measure", "area_code"]).size()
    assert (n == N_MONTHS).all() and len(n) == len(cat.measures) * len(cat.areas)
    assert long["period"].min() == "2015-04" and long["period"].max() == "2026-03"
    assert not long.duplicated(["period", "area_code", "measure"]).any()
    assert (long["count"] >= 0).all() and (long["count"] == 0).any()
    assert long["population"].notna().all()
    pop = long[long["period"] == "2022-01"].set_index(["measure", "area_code"])["population"]
    assert pop[("knife_crime_u25", "E06000047")] < pop[("knife_crime", "E06000047")]
    assert pop[("fte_youth", "E06000047")] < pop[("knife_crime_u25", "E06000047")]


@pytest.mark.parametrize("measure", sorted(RECOUNT))
def test_force_extract_measures_match_pandas_recount(long, extract, measure):
    d = extract[RECOUNT[measure](extract)]
    expect = d.groupby(["area_code", "period"]).size().astype(float)
    got = long[(long["measure"] == measure) & long["area_code"].isin(P)].set_index(["area_code", "period"])["count"]
    expect = expect.reindex(got.index, fill_value=0.0)
    pd.testing.assert_series_equal(got.sort_index(), expect.sort_index(), check_names=False)
    assert got.sum() > 0


def test_police_uk_and_aggregates_match_pandas(long, example_dir):
    puk = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((example_dir / "police_uk").glob("*/*.csv.gz")))
    lk = pd.read_csv(example_dir / "lookups/lsoa_lookup.csv", dtype=str)
    puk = puk.merge(lk[["lsoa_code", "area_code"]], left_on="LSOA code", right_on="lsoa_code")
    rob = puk[puk["Crime type"] == "Robbery"].groupby(["area_code", "Month"]).size().astype(float)
    got = long[long["measure"] == "robbery"].set_index(["area_code", "period"])["count"]
    pd.testing.assert_series_equal(got.sort_index(), rob.reindex(got.index, fill_value=0.0).sort_index(),
                                   check_names=False)
    # comparison areas' flagged measures come from the CSP table
    csp = pd.read_csv(example_dir / "aggregates/csp_flagged_offences.csv", dtype={"offences": float})
    c = csp[csp["measure"] == "knife_crime"].set_index(["csp_code", "month"])["offences"]
    got = long[(long["measure"] == "knife_crime") & ~long["area_code"].isin(P)].set_index(["area_code", "period"])["count"]
    pd.testing.assert_series_equal(got.sort_index(), c.sort_index(), check_names=False)
    # hospital: X99 only, under-25s by age_to
    hes = pd.read_csv(example_dir / "aggregates/hes_sharp_object_admissions.csv")
    x = hes[(hes["icd10_code"] == "X99") & (hes["age_to"] <= 24)].groupby(["area_code", "month"])["admissions"].sum()
    got = long[long["measure"] == "knife_admissions_u25"].set_index(["area_code", "period"])["count"]
    pd.testing.assert_series_equal(got.sort_index(), x.astype(float).sort_index(), check_names=False)
    assert hes["icd10_code"].nunique() > 1  # the filter matters


def test_generator_cells_agree_with_sql_filters(long):
    """The generator's own cell membership (used for the comparison areas' CSP table) equals the
    measures.yaml SQL filters applied to the partnership's records."""
    b = ex._Builder(ex.DEFAULT_SEED)
    b.simulate()
    for measure in ex.FLAGGED_MEASURES + ("homicide", "robbery"):
        gen = b.measure_counts(measure)
        for code in P:
            got = long[(long["measure"] == measure) & (long["area_code"] == code)].sort_values("period")["count"]
            np.testing.assert_array_equal(got.to_numpy(), gen[ex.AREA_INDEX[code]].astype(float), err_msg=measure)


def test_no_record_level_columns_or_values_leave(long, example_dir, cat, extract):
    lsoa = load_example_lsoa(example_dir, cat, "nte_violence")
    for df in (long, lsoa):
        assert not set(df.columns) & set(PERSONAL_FIELDS)
        assert not set(df.columns) & {"victim_age", "victim_sex", "knife_flag", "lsoa_name"}
        text = df.astype(str).to_csv(index=False)
        for value in extract["victim_name"].dropna().unique()[:50]:
            assert value not in text
        assert "DC/20" not in text


def test_lsoa_frame(example_dir, cat, extract):
    lsoa = load_example_lsoa(example_dir, cat, "nte_violence")
    assert list(lsoa.columns) == LSOA_COLUMNS
    lk = pd.read_csv(example_dir / "lookups/lsoa_lookup.csv")
    assert set(lsoa["lsoa_code"]) == set(lk[lk["area_code"].isin(P)]["lsoa_code"])
    assert (lsoa.groupby("lsoa_code").size() == N_MONTHS).all()
    d = extract[RECOUNT["nte_violence"](extract)]
    assert lsoa["count"].sum() == len(d)
    nte = set(lk[lk["nte_zone"]]["lsoa_code"])
    assert set(lsoa.loc[lsoa["count"] > 0, "lsoa_code"]) <= nte
    # staggered injected effect visible in treated vs never-treated NTE LSOAs
    first = ex.INJECTIONS[1].cohorts["2023-04"]
    never = nte & set(lsoa["lsoa_code"]) - set(ex.INJECTIONS[1].lsoas)

    def ratio(codes):
        x = lsoa[lsoa["lsoa_code"].isin(codes)]
        pre = x[(x["period"] >= "2021-07") & (x["period"] <= "2023-03")]["count"].sum()
        post = x[(x["period"] >= "2023-06") & (x["period"] <= "2026-03")]["count"].sum()
        return post / pre
    assert 0.6 <= ratio(first) / ratio(never) <= 0.95
    with pytest.raises(DataError, match="no LSOA detail"):
        load_example_lsoa(example_dir, cat, "fte_youth")
    with pytest.raises(DataError, match="unknown measure 'nope'"):
        load_example_lsoa(example_dir, cat, "nope")


def test_cache(example_dir, cat, long):
    key = cache_key(example_dir, cat.measures.values())
    path = example_dir / ".cache" / f"long-{key}.parquet"
    assert path.exists()
    again = load_example_long(example_dir, cat)
    pd.testing.assert_frame_equal(again, long)
    changed = [m.model_copy(update={"filter": "knife_flag"}) if m.id == "knife_crime" else m
               for m in cat.measures.values()]
    assert cache_key(example_dir, changed) != key


def test_bad_filter_names_the_measure(example_dir, cat):
    bad = cat.measures["knife_crime"].model_copy(update={"filter": "knife_flagg AND TRUE"})
    with pytest.raises(DataError, match="measure 'knife_crime'.*knife_flagg"):
        aggregate(example_dir, [bad])


# ---- read_long_csv --------------------------------------------------------------------------------
def _csv(tmp_path, text, name="long.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_long_csv_ok(tmp_path):
    p = _csv(tmp_path, "period,area_code,measure,count,population,note\n"
                       "2023-02,E06000047,knife_crime,3,530000,x\n2023-01,E06000047,knife_crime,0,530000,\n"
                       "2023-01,E06000005,knife_crime,1,,\n")
    df = read_long_csv(p)
    assert list(df.columns) == LONG_COLUMNS
    assert df["period"].tolist() == ["2023-01", "2023-01", "2023-02"]
    assert df["count"].dtype == float and np.isnan(df["population"].iloc[0])


def test_read_long_csv_without_population(tmp_path):
    df = read_long_csv(_csv(tmp_path, "period,area_code,measure,count\n2023-01,A,m,2\n"))
    assert df["population"].isna().all()


@pytest.mark.parametrize(("body", "pattern"), [
    ("period,area_code,count\n2023-01,A,1\n", r"long\.csv, column 'measure': missing column"),
    ("period,area_code,measure,count\n2023-01,A,m,1\n2023-13,A,m,1\n", r"long\.csv, row 2, column 'period': period '2023-13'"),
    ("period,area_code,measure,count\n01/2023,A,m,1\n", r"row 1, column 'period'.*YYYY-MM"),
    ("period,area_code,measure,count\n2023-01,A,m,-1\n", r"row 1, column 'count'.*negative"),
    ("period,area_code,measure,count\n2023-01,A,m,1\n2023-02,A,m,three\n", r"row 2, column 'count': count 'three' is not a number"),
    ("period,area_code,measure,count\n2023-01,A,m,\n", r"row 1, column 'count': missing count"),
    ("period,area_code,measure,count,population\n2023-01,A,m,1,-5\n", r"row 1, column 'population'.*negative"),
    ("period,area_code,measure,count\n2023-01,A,m,1\n2023-02,A,m,1\n2023-01,A,m,4\n", r"row 3: duplicated .*first given in row 1"),
    ("period,area_code,measure,count\n2023-01,,m,1\n", r"row 1, column 'area_code': empty area_code"),
])
def test_read_long_csv_errors(tmp_path, body, pattern):
    p = _csv(tmp_path, body)
    with pytest.raises(DataError, match=pattern) as info:
        read_long_csv(p)
    assert str(p) in str(info.value)


def test_read_long_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_long_csv(tmp_path / "nope.csv")
