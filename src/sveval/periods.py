"""Periods: months, quarters, years and financial years, and the COVID-19 window. One place for each.

Monthly periods are ``YYYY-MM`` strings; financial years are written ``2025/26`` (April 2025 to
March 2026) and their quarters run April-June (Q1) to January-March (Q4). Every module that needs
a period calculation imports it from here.
"""

from __future__ import annotations

import re
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
