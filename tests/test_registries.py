"""The registries (parameters/*.yaml) validate and agree with the example generator."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sveval.catalog import Catalog
from sveval.data import example as ex
from sveval.data.ingest import FORCE_EXTRACT_COLUMNS, POLICE_UK_COLUMNS

PARAMS = Path(__file__).resolve().parents[1] / "parameters"
HEADLINE = {"homicide", "homicide_u25", "knife_admissions", "knife_admissions_u25", "knife_crime",
            "knife_crime_u25"}
LOCAL = {"fte_youth", "nte_violence", "violence_injury_18_35", "da_knife", "violence_sexual", "robbery",
         "weapons_possession"}


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load(PARAMS)


def test_measures_complete(cat):
    assert set(cat.measures) == HEADLINE | LOCAL
    assert {m.id for m in cat.headline_measures()} == HEADLINE
    for p in (1, 2, 3, 4):
        assert any(p in m.priorities for m in cat.measures.values() if m.id in LOCAL), p


def test_measure_fields(cat):
    m = cat.measures
    assert m["homicide"].rate_per == 1_000_000 and m["homicide_u25"].rate_per == 1_000_000
    assert m["knife_admissions"].disclosure == "hospital" and m["knife_admissions_u25"].disclosure == "hospital"
    for mid in ("homicide_u25", "knife_admissions_u25", "knife_crime_u25"):
        assert m[mid].age_max == 24 and m[mid].parent == mid[:-4] and m[mid].population_band == "0-24"
    assert m["fte_youth"].population_band == "10-17"
    assert m["violence_injury_18_35"].population_band == "18-35"
    for mid in ("knife_crime", "knife_crime_u25", "da_knife"):
        assert {"period": "2021-04", "name": "NDQIS knife-crime recording"} in m[mid].breaks
    for spec in m.values():
        assert spec.description and spec.short_name and spec.cost_category
        if spec.source in ("force_extract", "police_uk", "hospital"):
            assert spec.filter, spec.id


def _empty_table(con, name, columns):
    cols = ", ".join(f'"{k}" {v}' for k, v in columns.items())
    con.execute(f"CREATE TABLE {name} ({cols})")


def test_record_filters_are_valid_sql(cat):
    con = duckdb.connect()
    fe = dict(FORCE_EXTRACT_COLUMNS, knife_flag="BOOLEAN", da_flag="BOOLEAN", alcohol_flag="BOOLEAN",
              nte_zone="BOOLEAN")
    _empty_table(con, "force_extract", fe)
    _empty_table(con, "police_uk", {k.lower().replace(" ", "_"): v for k, v in POLICE_UK_COLUMNS.items()})
    for m in cat.measures.values():
        if m.source in ("force_extract", "police_uk"):
            con.execute(f"SELECT count(*) FROM {m.source} WHERE {m.filter}").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("SELECT count(*) FROM force_extract WHERE knife_flagg").fetchall()


def test_areas_and_groups(cat):
    assert cat.partnership == "County Durham and Darlington"
    assert cat.partnership_areas == ["E06000005", "E06000047"]
    comp = cat.comparison_areas
    assert len(comp) >= 8
    assert set(cat.groups["partnership"]) == set(cat.partnership_areas)
    assert set(cat.groups["all_comparison"]) == set(comp)
    assert cat.groups["most_similar"] and all(not cat.areas[c].vru for c in cat.groups["most_similar"])
    assert set(cat.groups["vru"]) == {c for c in comp if cat.areas[c].vru}
    assert cat.areas["E06000002"].vru and not cat.areas["E06000014"].vru


def test_areas_match_generator(cat):
    gen = {a.code: a for a in ex.AREAS}
    assert set(gen) == set(cat.areas)
    for code, a in cat.areas.items():
        g = gen[code]
        assert (a.name, a.role, a.vru, a.region) == (g.name, g.role, g.vru, g.region)
        assert a.force == ex.FORCES[g.force]


def test_interventions_match_generator(cat):
    gen = {i.id: i for i in ex.INJECTIONS}
    assert set(gen) == set(cat.interventions)
    for iid, iv in cat.interventions.items():
        g = gen[iid]
        assert iv.start == g.start and iv.phase_in_months == g.phase_in_months
        assert sorted(iv.areas) == sorted(g.areas)
        assert sorted(iv.lsoas) == sorted(g.lsoas)
        assert set(iv.measures) == set(g.effects)
        assert iv.cost_gbp and iv.cost_price_year and iv.funder
    cohorts = gen["nte_safe_streets"].cohorts
    assert sorted(cohorts) == ["2023-04", "2023-10", "2024-04"]
    assert min(cohorts) == cat.interventions["nte_safe_streets"].start
    registry = {c.start: sorted(c.lsoas) for c in cat.interventions["nte_safe_streets"].cohorts}
    assert registry == {k: sorted(v) for k, v in cohorts.items()}
    # the staggered cohorts are town-centre NTE LSOAs of Durham City and Darlington
    b = ex._Builder(1)
    lk = b.lsoa.set_index("lsoa_code")
    for code in gen["nte_safe_streets"].lsoas:
        assert lk.loc[code, "nte_zone"] and lk.loc[code, "town"] in ("Durham City", "Darlington town centre")
    never = lk[lk["nte_zone"] & lk["area_code"].isin(ex.PARTNERSHIP)].index.difference(
        list(gen["nte_safe_streets"].lsoas))
    assert len(never) >= 5  # never-treated NTE LSOAs exist for staggered designs
