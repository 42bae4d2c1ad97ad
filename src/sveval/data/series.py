"""Monthly series and area panels from the long frame.

Both builders refuse a window with a missing month (or an area without data): evaluations need
every month, and a silent gap would bias a model. Zeros are data, gaps are errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sveval.errors import DataError
from sveval.spec import add_months, months_between, parse_period


def _window(start: str, end: str) -> list[str]:
    start, end = parse_period(start), parse_period(end)
    n = months_between(start, end)
    if n < 1:
        raise DataError(f"empty window: end {end} is before start {start}")
    return [add_months(start, k) for k in range(n)]


def area_panel(long: pd.DataFrame, measure_id: str, areas: list[str], start: str, end: str) -> pd.DataFrame:
    """Area x month panel of one measure: period, area_code, count, population.

    Parameters
    ----------
    long : the long frame (period, area_code, measure, count, population)
    measure_id : the measure
    areas : area codes to keep (order kept in the output, then period)
    start, end : first and last month (``YYYY-MM``), inclusive

    Raises
    ------
    DataError
        when the measure is absent, an area has no rows, or a month of the window is missing.

    Examples
    --------
    >>> panel = area_panel(long, "knife_crime", ["E06000047", "E06000005"], "2019-04", "2025-03")  # doctest: +SKIP
    """
    months = _window(start, end)
    areas = list(dict.fromkeys(areas))
    if not areas:
        raise DataError("no areas given")
    m = long[long["measure"] == measure_id]
    if m.empty:
        have = ", ".join(sorted(long["measure"].unique())) if len(long) else "none"
        raise DataError(f"no rows for measure '{measure_id}'; measures present: {have}")
    sub = m[m["area_code"].isin(areas) & m["period"].isin(months)]
    dups = sub.duplicated(["period", "area_code"])
    if dups.any():
        r = sub[dups].iloc[0]
        raise DataError(f"measure '{measure_id}': more than one row for {r['area_code']} in {r['period']}")
    for a in areas:
        have = set(sub.loc[sub["area_code"] == a, "period"])
        if not have:
            raise DataError(f"measure '{measure_id}': no data for area {a} in {months[0]} to {months[-1]}")
        gaps = [p for p in months if p not in have]
        if gaps:
            shown = ", ".join(gaps[:6]) + (f" and {len(gaps) - 6} more" if len(gaps) > 6 else "")
            raise DataError(
                f"measure '{measure_id}', area {a}: missing month(s) {shown} in the window "
                f"{months[0]} to {months[-1]}; months with no events must be given as 0")
    order = {a: i for i, a in enumerate(areas)}
    out = sub[["period", "area_code", "count", "population"]].copy()
    out = out.sort_values(["area_code", "period"], key=lambda s: s.map(order) if s.name == "area_code" else s)
    out["count"] = out["count"].astype(float)
    out["population"] = out["population"].astype(float)
    return out.reset_index(drop=True)


def area_series(long: pd.DataFrame, measure_id: str, areas: list[str], start: str, end: str) -> pd.DataFrame:
    """One monthly series summed over ``areas``: period, count, population.

    The population is the sum of the areas' populations (NaN in a month when any area's is missing).
    Every month of the window is present; see :func:`area_panel` for the errors.

    Examples
    --------
    >>> s = area_series(long, "nte_violence", ["E06000047"], "2016-04", "2026-03")  # doctest: +SKIP
    """
    panel = area_panel(long, measure_id, areas, start, end)
    g = panel.groupby("period", sort=True)
    out = pd.DataFrame({
        "count": g["count"].sum(),
        "population": g["population"].apply(lambda s: float(s.sum()) if s.notna().all() else np.nan),
    }).reset_index()
    return out[["period", "count", "population"]]
