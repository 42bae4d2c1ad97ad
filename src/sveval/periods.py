"""Periods: months, quarters, years and financial years, and the COVID-19 window. One place for each.

Monthly periods are ``YYYY-MM`` strings; financial years are written ``2025/26`` (April 2025 to
March 2026) and their quarters run April-June (Q1) to January-March (Q4). Every module that needs
a period calculation imports it from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
FY_RE = re.compile(r"^(\d{4})/(\d{2})$")

#: The COVID-19 disruption window used by default in every design, tracking note and return
#: (first national lockdown to the end of the last restrictions in England).
COVID_START = "2020-03"
COVID_END = "2021-06"


def parse_period(value: Any) -> str:
    """Normalise a monthly period to ``YYYY-MM`` (accepts ``YYYY-MM`` strings or dates)."""
    if hasattr(value, "year") and hasattr(value, "month"):
        return f"{value.year:04d}-{value.month:02d}"
    if not isinstance(value, str) or not PERIOD_RE.match(value.strip()):
        raise ValueError(f"expected a month as 'YYYY-MM' (e.g. '2023-04'), got {value!r}")
    return value.strip()


def period_index(period: str) -> int:
    """Months since year 0: ``period_index('2023-04') - period_index('2023-01') == 3``."""
    y, m = period.split("-")
    return int(y) * 12 + int(m) - 1


def period_from_index(i: int) -> str:
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


def add_months(period: str, n: int) -> str:
    return period_from_index(period_index(period) + n)


def months_between(start: str, end: str) -> int:
    """Number of months from ``start`` to ``end`` inclusive."""
    return period_index(end) - period_index(start) + 1


def parse_financial_year(value: Any) -> str:
    """Validate a financial year written ``2025/26`` (April 2025 to March 2026)."""
    v = str(value).strip()
    m = FY_RE.match(v)
    if not m or (int(m.group(1)) + 1) % 100 != int(m.group(2)):
        raise ValueError(f"expected a financial year such as '2025/26', got {v!r}")
    return v


def financial_year(period: str) -> str:
    """Financial year (April-March) of a ``YYYY-MM`` month: ``'2026-03' -> '2025/26'``."""
    y, m = (int(x) for x in period.split("-"))
    start = y if m >= 4 else y - 1
    return f"{start}/{(start + 1) % 100:02d}"


def fy_months(fy: str) -> list[str]:
    """The twelve months of a financial year, April to March."""
    s = int(fy[:4])
    return [add_months(f"{s}-04", k) for k in range(12)]


def quarter_months(fy: str, q: int) -> list[str]:
    """Months of quarter ``q`` (1 = April-June) of financial year ``fy``."""
    if q not in (1, 2, 3, 4):
        raise ValueError(f"quarter must be 1-4, got {q}")
    return fy_months(fy)[3 * (q - 1) : 3 * q]


def quarter_start(period: str) -> str:
    """First month of the calendar quarter holding ``period``."""
    y, m = (int(x) for x in period.split("-"))
    return f"{y:04d}-{(m - 1) // 3 * 3 + 1:02d}"


# ------------------------------------------------------------------------------------------------
# Granularity-aware periods: months, calendar quarters, calendar years and financial years
# ------------------------------------------------------------------------------------------------
#: The period granularities of a measure's series, as in the long frame's ``attrs["granularity"]``.
GRANULARITIES = ("month", "quarter", "year", "financial_year")

QUARTER_RE = re.compile(r"^(\d{4})-Q([1-4])$")
YEAR_RE = re.compile(r"^(\d{4})$")

_MONTHS_PER = {"month": 1, "quarter": 3, "year": 12, "financial_year": 12}
_EXAMPLE = {"month": "2023-04", "quarter": "2023-Q2", "year": "2023", "financial_year": "2023/24"}
#: How each granularity is named in text: "per month", "per quarter", "per year", "per financial year"
PERIOD_NOUN = {"month": "month", "quarter": "quarter", "year": "year",
               "financial_year": "financial year"}


def _check_granularity(granularity: str) -> str:
    if granularity not in _MONTHS_PER:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    return granularity


def granularity_of(value: Any) -> str:
    """The granularity a period is written in: ``'2021-04'`` month, ``'2021-Q2'`` quarter,
    ``'2021'`` year, ``'2021/22'`` financial year (April-March).

    Raises
    ------
    ValueError
        when ``value`` is none of these forms.
    """
    v = str(value).strip()
    if PERIOD_RE.match(v):
        return "month"
    if QUARTER_RE.match(v):
        return "quarter"
    if YEAR_RE.match(v):
        return "year"
    m = FY_RE.match(v)
    if m and (int(m.group(1)) + 1) % 100 == int(m.group(2)):
        return "financial_year"
    raise ValueError(
        f"expected a period as a month 'YYYY-MM' (2023-04), a quarter 'YYYY-Qn' (2023-Q2), a year "
        f"'YYYY' (2023) or a financial year 'YYYY/YY' (2023/24), got {value!r}")


def parse_any_period(value: Any, granularity: str | None = None) -> str:
    """Normalise a period of any granularity (or of ``granularity`` when given).

    Dates are taken as months; an integer as a year. Raises ValueError for anything else, or for a
    period of another granularity than the one asked for.
    """
    if hasattr(value, "year") and hasattr(value, "month"):
        v = f"{value.year:04d}-{value.month:02d}"
    elif isinstance(value, int) and not isinstance(value, bool):
        v = f"{value:04d}"
    else:
        v = str(value).strip()
    g = granularity_of(v)
    if granularity is not None and g != _check_granularity(granularity):
        raise ValueError(f"expected a {PERIOD_NOUN[granularity]} such as "
                         f"'{_EXAMPLE[granularity]}', got {value!r} (a {PERIOD_NOUN[g]})")
    return v


def index_of(period: str, granularity: str | None = None) -> int:
    """Consecutive integer index of a period within its granularity (months: as
    :func:`period_index`; quarters: ``4 * year + quarter - 1``; years and financial years: the
    (starting) year). Differences of indices count periods."""
    g = granularity or granularity_of(period)
    p = str(period)
    if g == "month":
        return period_index(p)
    if g == "quarter":
        m = QUARTER_RE.match(p)
        if not m:
            raise ValueError(f"expected a quarter as 'YYYY-Qn', got {period!r}")
        return int(m.group(1)) * 4 + int(m.group(2)) - 1
    if g == "year":
        if not YEAR_RE.match(p):
            raise ValueError(f"expected a year as 'YYYY', got {period!r}")
        return int(p)
    if g == "financial_year":
        return int(parse_financial_year(p)[:4])
    _check_granularity(g)
    raise AssertionError  # pragma: no cover


def from_index(i: int, granularity: str) -> str:
    """The period of index ``i`` (inverse of :func:`index_of`)."""
    g = _check_granularity(granularity)
    i = int(i)
    if g == "month":
        return period_from_index(i)
    if g == "quarter":
        return f"{i // 4:04d}-Q{i % 4 + 1}"
    if g == "year":
        return f"{i:04d}"
    return f"{i:04d}/{(i + 1) % 100:02d}"


def add_periods(period: str, n: int, granularity: str | None = None) -> str:
    """``period`` moved by ``n`` periods of its own granularity (``add_months`` for months)."""
    g = granularity or granularity_of(period)
    return from_index(index_of(period, g) + n, g)


def periods_between(start: str, end: str, granularity: str | None = None) -> int:
    """Number of periods from ``start`` to ``end`` inclusive (``months_between`` for months)."""
    g = granularity or granularity_of(start)
    return index_of(end, g) - index_of(start, g) + 1


def period_range(start: str, end: str, granularity: str | None = None) -> list[str]:
    """Every period from ``start`` to ``end`` inclusive."""
    g = granularity or granularity_of(start)
    a, b = index_of(start, g), index_of(end, g)
    return [from_index(i, g) for i in range(a, b + 1)]


def periods_per_year(granularity: str) -> int:
    """12 for months, 4 for quarters, 1 for years and financial years."""
    return 12 // _MONTHS_PER[_check_granularity(granularity)]


def months_per_period(granularity: str) -> int:
    """1 for months, 3 for quarters, 12 for years and financial years."""
    return _MONTHS_PER[_check_granularity(granularity)]


def first_month(period: str, granularity: str | None = None) -> str:
    """First month (``YYYY-MM``) of a period: ``'2021-Q2' -> '2021-04'``, ``'2021/22' -> '2021-04'``."""
    g = granularity or granularity_of(period)
    i = index_of(period, g)
    if g == "month":
        return period_from_index(i)
    if g == "quarter":
        return period_from_index(i * 3)
    if g == "year":
        return f"{i:04d}-01"
    return f"{i:04d}-04"


def last_month(period: str, granularity: str | None = None) -> str:
    """Last month (``YYYY-MM``) of a period: ``'2021-Q2' -> '2021-06'``, ``'2021/22' -> '2022-03'``."""
    g = granularity or granularity_of(period)
    return add_months(first_month(period, g), months_per_period(g) - 1)


def period_of_month(month: str, granularity: str) -> str:
    """The period of ``granularity`` holding a month: ``('2021-05', 'quarter') -> '2021-Q2'``."""
    g = _check_granularity(granularity)
    y, m = (int(x) for x in parse_period(month).split("-"))
    if g == "month":
        return f"{y:04d}-{m:02d}"
    if g == "quarter":
        return f"{y:04d}-Q{(m - 1) // 3 + 1}"
    if g == "year":
        return f"{y:04d}"
    return financial_year(f"{y:04d}-{m:02d}")


def to_granularity(value: Any, granularity: str) -> tuple[str, str | None]:
    """A period for a series of ``granularity``: a period of that granularity is kept; a month is
    mapped to the period holding it. Returns ``(period, note)``, the note stating a mapping made
    (None when nothing was mapped).

    Raises
    ------
    ValueError
        for a period of another non-monthly granularity (a quarter for a yearly series: mixed).
    """
    v = parse_any_period(value)
    g = granularity_of(v)
    if g == granularity:
        return v, None
    if g == "month":
        p = period_of_month(v, granularity)
        return p, f"month {v} taken as the {PERIOD_NOUN[granularity]} holding it, {p}"
    raise ValueError(f"{v!r} is a {PERIOD_NOUN[g]} but the series is by {PERIOD_NOUN[granularity]} "
                     f"(periods such as '{_EXAMPLE[granularity]}'); give a "
                     f"{PERIOD_NOUN[granularity]} or a month")


def months_to_periods(months: int, granularity: str) -> int:
    """A duration in months as whole periods, rounded up (6 months -> 2 quarters -> 1 year)."""
    k = months_per_period(granularity)
    return -(-int(months) // k)


def granularity_of_all(periods: Iterable[Any], where: str, *, plural: bool = False, note: str = "") -> str:
    """The one granularity of some periods (``month`` when there are none).

    Raises ValueError naming ``where`` when a period is malformed (``"<where>: <reason>"``) or
    when the periods mix forms (``"<where> mixes period forms: ..."``, each form with an example;
    ``plural`` words them ``years (e.g. 2000)``, ``note`` is appended).
    """
    kinds: dict[str, str] = {}
    for value in dict.fromkeys(str(x) for x in periods):
        try:
            kinds.setdefault(granularity_of(value), value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if len(kinds) > 1:
        shown = ", ".join(f"{PERIOD_NOUN[g]}s (e.g. {v})" if plural else f"{PERIOD_NOUN[g]} ({v})"
                          for g, v in kinds.items())
        raise ValueError(f"{where} mixes period forms: {shown}{note}")
    return next(iter(kinds), "month")
