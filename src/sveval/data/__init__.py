"""Data: the illustrative example generator, ingestion through DuckDB, series and panels.

* :func:`sveval.data.example.ensure_example` - generate (once) the deterministic example dataset
* :func:`sveval.data.ingest.load_example_long` - the long frame: period, area_code, measure, count, population
* :func:`sveval.data.ingest.load_example_lsoa` - LSOA x month counts of a record-level measure
* :func:`sveval.data.ingest.read_long_csv` - a user's long CSV, validated
* :func:`sveval.data.series.area_series` / :func:`sveval.data.series.area_panel` - complete monthly series
"""
