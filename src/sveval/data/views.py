"""The columns of the built-in source views (the example layout and its formats).

Kept apart from :mod:`sveval.data.ingest` so that the filter checker (:mod:`sveval.data.filters`)
can know which columns a measure's filter may use without importing the ingestion code.
"""

from __future__ import annotations

# Explicit column types of every file the example (and a user's copy of these formats) provides.
POLICE_UK_COLUMNS = {
    "Crime ID": "VARCHAR", "Month": "VARCHAR", "Reported by": "VARCHAR", "Falls within": "VARCHAR",
    "Longitude": "DOUBLE", "Latitude": "DOUBLE", "Location": "VARCHAR", "LSOA code": "VARCHAR",
    "LSOA name": "VARCHAR", "Crime type": "VARCHAR", "Last outcome category": "VARCHAR",
    "Context": "VARCHAR",
}
FORCE_EXTRACT_COLUMNS = {
    "crime_ref": "VARCHAR", "ho_offence_code": "VARCHAR", "offence_description": "VARCHAR",
    "offence_group": "VARCHAR", "recorded_date": "DATE", "committed_datetime": "TIMESTAMP",
    "area_code": "VARCHAR", "lsoa_code": "VARCHAR", "lsoa_name": "VARCHAR", "knife_flag": "VARCHAR",
    "da_flag": "VARCHAR", "alcohol_flag": "VARCHAR", "nte_zone": "VARCHAR", "victim_age": "INTEGER",
    "victim_sex": "VARCHAR", "victim_name": "VARCHAR", "victim_dob": "VARCHAR",
    "offender_name": "VARCHAR", "latitude": "DOUBLE", "longitude": "DOUBLE",
}
#: personal / record-identifying fields that never leave ingestion
PERSONAL_FIELDS = ("crime_ref", "crime_id", "victim_name", "victim_dob", "offender_name", "latitude",
                   "longitude", "committed_datetime", "location")
AGGREGATE_FILES = {
    "csp": ("aggregates/csp_flagged_offences.csv", {
        "month": "VARCHAR", "financial_year": "VARCHAR", "force_name": "VARCHAR", "csp_code": "VARCHAR",
        "csp_name": "VARCHAR", "measure": "VARCHAR", "offences": "BIGINT"}),
    "hospital": ("aggregates/hes_sharp_object_admissions.csv", {
        "month": "VARCHAR", "financial_year": "VARCHAR", "area_code": "VARCHAR", "area_name": "VARCHAR",
        "icd10_code": "VARCHAR", "icd10_description": "VARCHAR", "age_group": "VARCHAR",
        "age_from": "INTEGER", "age_to": "INTEGER", "admissions": "BIGINT"}),
    "homicide_index": ("aggregates/homicide_index.csv", {
        "month": "VARCHAR", "financial_year": "VARCHAR", "force_name": "VARCHAR", "area_code": "VARCHAR",
        "area_name": "VARCHAR", "offence": "VARCHAR", "victim_age_group": "VARCHAR", "age_from": "INTEGER",
        "age_to": "INTEGER", "method": "VARCHAR", "domestic": "VARCHAR", "homicides": "BIGINT"}),
    "youth_justice": ("aggregates/youth_justice_fte.csv", {
        "month": "VARCHAR", "financial_year": "VARCHAR", "area_code": "VARCHAR", "area_name": "VARCHAR",
        "age_group": "VARCHAR", "age_from": "INTEGER", "age_to": "INTEGER", "sex": "VARCHAR",
        "first_time_entrants": "BIGINT"}),
    "population": ("aggregates/population_mye.csv", {
        "mid_year": "INTEGER", "area_code": "VARCHAR", "area_name": "VARCHAR", "age_band": "VARCHAR",
        "population": "DOUBLE"}),
    "lsoa_lookup": ("lookups/lsoa_lookup.csv", {
        "lsoa_code": "VARCHAR", "lsoa_name": "VARCHAR", "area_code": "VARCHAR", "area_name": "VARCHAR",
        "town": "VARCHAR", "nte_zone": "BOOLEAN", "population": "BIGINT"}),
}
