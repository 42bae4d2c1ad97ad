"""Monthly (or quarterly, yearly, financial-year) series and area panels from the long frame.

Both builders refuse a window with a missing month (or an area without data): evaluations need
every month, and a silent gap would bias a model. Zeros are data, gaps are errors.

A measure's periods are in its granularity (:func:`measure_granularity`: the long frame's
``attrs["granularity"]``, else read from its periods); the window ``start``/``end`` is then given in
that granularity too (``2019-Q1``, ``2019``, ``2019/20``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sveval.errors import DataError
from sveval.periods import (
    PERIOD_NOUN,
    granularity_of,
    granularity_of_all,
    parse_any_period,
    period_range,
)
from sveval.spec import add_months, months_between, parse_period


def measure_granularity(long: pd.DataFrame, measure_id: str) -> str:
    """The period granularity of a measure: ``month``, ``quarter``, ``year`` or ``financial_year``.

    Taken from ``long.attrs["granularity"]`` when the loader set it, else from the measure's periods.

    Raises
    ------
    DataError
        when the measure's periods mix forms (months and years, say) or one is malformed.
    """
    declared = (long.attrs.get("granularity") or {}).get(measure_id)
    if declared:
        return str(declared)
    periods = long.loc[long["measure"] == measure_id, "period"].astype(str).unique()
    try:
        return granularity_of_all(periods, f"measure '{measure_id}'", plural=True,
                                  note="; one measure has one granularity")
    except ValueError as exc:
        raise DataError(str(exc), column="period") from None


def _window(start: str, end: str) -> list[str]:
    if granularity_of(start) == "month" or granularity_of(end) == "month":
        start, end = parse_period(start), parse_period(end)
        n = months_between(start, end)
        if n < 1:
            raise DataError(f"empty window: end {end} is before start {start}")
        return [add_months(start, k) for k in range(n)]
    g = granularity_of(start)
    try:
        end = parse_any_period(end, g)
    except ValueError as exc:
        raise DataError(f"window {start} to {end}: {exc}") from None
    out = period_range(start, end, g)
    if not out:
        raise DataError(f"empty window: end {end} is before start {start}")
    return out


def area_panel(long: pd.DataFrame, measure_id: str, areas: list[str], start: str, end: str) -> pd.DataFrame:
    """Area x month panel of one measure: period, area_code, count, population.

    Parameters
    ----------
    long : the long frame (period, area_code, measure, count, population)
    measure_id : the measure
    areas : area codes to keep (order kept in the output, then period)
    start, end : first and last month (``YYYY-MM``), inclusive; or first and last period of the
        measure's granularity (``2019-Q1``, ``2019``, ``2019/20``)

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
            noun = PERIOD_NOUN[granularity_of(months[0])]
            raise DataError(
                f"measure '{measure_id}', area {a}: missing {noun}(s) {shown} in the window "
                f"{months[0]} to {months[-1]}; {noun}s with no events must be given as 0")
    order = {a: i for i, a in enumerate(areas)}
    out = sub[["period", "area_code", "count", "population"]].copy()
    out = out.sort_values(["area_code", "period"], key=lambda s: s.map(order) if s.name == "area_code" else s)
    out["count"] = out["count"].astype(float)
    out["population"] = out["population"].astype(float)
    return out.reset_index(drop=True)


def area_series(long: pd.DataFrame, measure_id: str, areas: list[str], start: str, end: str) -> pd.DataFrame:
    """One series (monthly, or of the measure's granularity) summed over ``areas``: period, count,
    population.

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
