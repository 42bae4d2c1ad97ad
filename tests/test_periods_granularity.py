"""Granularity-aware period arithmetic (sveval.periods): months, calendar quarters, years and
financial years; the monthly functions keep their behaviour."""

from __future__ import annotations

import pytest

from sveval import periods as P


@pytest.mark.parametrize("period, gran", [
    ("2021-04", "month"), ("2021-Q2", "quarter"), ("2021", "year"), ("2021/22", "financial_year"),
    ("1999/00", "financial_year"),
])
def test_granularity_of(period, gran):
    assert P.granularity_of(period) == gran
    assert P.parse_any_period(period) == period
    assert P.parse_any_period(period, gran) == period


@pytest.mark.parametrize("bad", ["2021-13", "2021-Q5", "21", "2021/23", "2021-4", "", "Q2 2021"])
def test_malformed_periods_are_refused(bad):
    with pytest.raises(ValueError, match="expected a period"):
        P.granularity_of(bad)


def test_parse_any_period_refuses_another_granularity():
    with pytest.raises(ValueError, match="expected a year such as '2023', got '2021-Q2' .a quarter"):
        P.parse_any_period("2021-Q2", "year")
    assert P.parse_any_period(2000) == "2000"


@pytest.mark.parametrize("gran, first, n", [
    ("month", "2019-11", 40), ("quarter", "2019-Q3", 17), ("year", "1970", 31),
    ("financial_year", "2016/17", 12),
])
def test_index_round_trip_add_and_between(gran, first, n):
    ps = [P.add_periods(first, k) for k in range(n)]
    idx = [P.index_of(p, gran) for p in ps]
    assert idx == list(range(idx[0], idx[0] + n))  # consecutive, no gaps, no repeats
    assert [P.from_index(i, gran) for i in idx] == ps
    assert P.periods_between(ps[0], ps[-1]) == n
    assert P.period_range(ps[0], ps[-1]) == ps
    assert P.add_periods(ps[-1], -(n - 1)) == first
    assert sorted(ps) == ps  # the written forms sort in time order


def test_examples():
    assert P.add_periods("2021-Q4", 1) == "2022-Q1"
    assert P.add_periods("2021-Q1", -1) == "2020-Q4"
    assert P.add_periods("2019/20", 2) == "2021/22"
    assert P.add_periods("1999/00", -1) == "1998/99"
    assert P.index_of("2021-Q2") - P.index_of("2020-Q2") == 4
    assert P.periods_per_year("month") == 12 and P.periods_per_year("quarter") == 4
    assert P.periods_per_year("year") == P.periods_per_year("financial_year") == 1
    assert P.months_per_period("quarter") == 3


@pytest.mark.parametrize("period, first, last", [
    ("2021-04", "2021-04", "2021-04"), ("2021-Q1", "2021-01", "2021-03"),
    ("2021-Q4", "2021-10", "2021-12"), ("2021", "2021-01", "2021-12"),
    ("2021/22", "2021-04", "2022-03"),
])
def test_first_and_last_month(period, first, last):
    assert P.first_month(period) == first
    assert P.last_month(period) == last


@pytest.mark.parametrize("month, gran, want", [
    ("2022-02", "quarter", "2022-Q1"), ("2022-03", "quarter", "2022-Q1"), ("2022-04", "quarter", "2022-Q2"),
    ("2022-12", "quarter", "2022-Q4"), ("2022-02", "year", "2022"), ("2022-02", "financial_year", "2021/22"),
    ("2022-04", "financial_year", "2022/23"), ("2022-02", "month", "2022-02"),
])
def test_period_holding_a_month(month, gran, want):
    assert P.period_of_month(month, gran) == want
    # every month of a period maps back to it
    p = P.period_of_month(month, gran)
    assert P.first_month(p) <= month <= P.last_month(p)


def test_to_granularity_maps_months_and_refuses_mixed():
    assert P.to_granularity("2019", "year") == ("2019", None)
    p, note = P.to_granularity("1989-01", "year")
    assert p == "1989" and "month 1989-01 taken as the year holding it, 1989" in note
    p, note = P.to_granularity("2020-08", "financial_year")
    assert p == "2020/21" and "financial year" in note
    with pytest.raises(ValueError, match="is a quarter but the series is by year"):
        P.to_granularity("2019-Q1", "year")


def test_months_to_periods_rounds_up():
    assert P.months_to_periods(6, "quarter") == 2
    assert P.months_to_periods(4, "quarter") == 2
    assert P.months_to_periods(6, "year") == 1
    assert P.months_to_periods(24, "year") == 2
    assert P.months_to_periods(5, "month") == 5
    assert P.months_to_periods(0, "year") == 0


def test_monthly_functions_unchanged():
    assert P.period_index("2023-04") - P.period_index("2023-01") == 3
    assert P.index_of("2023-04") == P.period_index("2023-04")
    assert P.add_months("2023-11", 3) == "2024-02" == P.add_periods("2023-11", 3)
    assert P.months_between("2023-01", "2023-12") == 12 == P.periods_between("2023-01", "2023-12")
    assert P.financial_year("2026-03") == "2025/26"
    assert P.quarter_start("2023-05") == "2023-04"
    with pytest.raises(ValueError, match="expected a month"):
        P.parse_period("2023")


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity must be one of"):
        P.from_index(3, "week")
