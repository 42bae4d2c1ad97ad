"""Series and panel builders: complete windows, sums over areas, errors on gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sveval.data.series import area_panel, area_series
from sveval.errors import DataError
from sveval.spec import add_months


def _long(months=24, areas=("A1", "A2"), measures=("m1", "m2")) -> pd.DataFrame:
    rows = []
    for mi, m in enumerate(measures):
        for ai, a in enumerate(areas):
            for k in range(months):
                rows.append((add_months("2020-01", k), a, m, float(10 * (ai + 1) + k + mi), 1000.0 * (ai + 1)))
    return pd.DataFrame(rows, columns=["period", "area_code", "measure", "count", "population"])


def test_series_sums_areas():
    s = area_series(_long(), "m1", ["A1", "A2"], "2020-03", "2020-08")
    assert list(s.columns) == ["period", "count", "population"]
    assert s["period"].tolist() == [add_months("2020-03", k) for k in range(6)]
    # A1: 10 + k, A2: 20 + k with k = 2..7
    assert s["count"].tolist() == [30.0 + 2 * k for k in range(2, 8)]
    assert (s["population"] == 3000.0).all()


def test_series_population_nan_when_any_area_missing_it():
    long = _long()
    long.loc[(long["area_code"] == "A2") & (long["period"] == "2020-05"), "population"] = np.nan
    s = area_series(long, "m1", ["A1", "A2"], "2020-04", "2020-06")
    assert np.isnan(s.loc[s["period"] == "2020-05", "population"]).all()
    assert s.loc[s["period"] != "2020-05", "population"].notna().all()


def test_panel_order_and_columns():
    p = area_panel(_long(), "m2", ["A2", "A1"], "2020-01", "2020-03")
    assert list(p.columns) == ["period", "area_code", "count", "population"]
    assert p["area_code"].tolist() == ["A2"] * 3 + ["A1"] * 3
    assert p["count"].tolist() == [21.0, 22.0, 23.0, 11.0, 12.0, 13.0]


def test_missing_month_raises():
    long = _long()
    long = long[~((long["area_code"] == "A1") & (long["period"] == "2020-06") & (long["measure"] == "m1"))]
    with pytest.raises(DataError, match=r"area A1: missing month\(s\) 2020-06"):
        area_series(long, "m1", ["A1", "A2"], "2020-01", "2020-12")
    # outside the window the gap does not matter
    assert len(area_series(long, "m1", ["A1"], "2020-07", "2020-12")) == 6


def test_window_beyond_data_raises():
    with pytest.raises(DataError, match="missing month"):
        area_panel(_long(months=12), "m1", ["A1"], "2020-06", "2021-03")


def test_unknown_measure_and_area():
    with pytest.raises(DataError, match="no rows for measure 'nope'.*m1, m2"):
        area_series(_long(), "nope", ["A1"], "2020-01", "2020-02")
    with pytest.raises(DataError, match="no data for area ZZ"):
        area_series(_long(), "m1", ["A1", "ZZ"], "2020-01", "2020-02")


def test_duplicate_rows_raise():
    long = _long()
    long = pd.concat([long, long.iloc[[0]]])
    with pytest.raises(DataError, match="more than one row"):
        area_panel(long, "m1", ["A1"], "2020-01", "2020-03")


def test_bad_window():
    with pytest.raises(DataError, match="empty window"):
        area_series(_long(), "m1", ["A1"], "2020-05", "2020-04")
    with pytest.raises(ValueError):
        area_series(_long(), "m1", ["A1"], "2020-5", "2020-06")
