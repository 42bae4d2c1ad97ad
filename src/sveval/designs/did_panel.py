"""The unit x month panel that every difference-in-differences estimator reads.

A :class:`DidPanel` is a tidy frame, one row per unit (area or LSOA) and month, with the outcome,
the exposure (population) where known, and each unit's treatment cohort (the month it was first
treated; ``-1`` for never-treated comparison units). It is built either from an
a frame (the pipeline's :func:`sveval.pipeline.designs.panel_from_context` builds one from an evaluation)
(:func:`make_panel`), which is what the tests and benchmarks use.

Treatment timing comes from, in order:

1. ``intervention.cohorts`` (if the registry gives cohorts: ``{start, areas | lsoas}`` each);
2. otherwise every treated unit starts at the evaluation's ``intervention_start``.

Periods need not be months: a panel of calendar quarters (``2021-Q2``), years (``2021``) or
financial years (``2021/22``) works the same way, with ``t`` the index of the period in its own
granularity (:func:`sveval.periods.index_of`); a cohort given as a month starts in the period
holding that month, and an event window or trend is then in those periods.

LSOA comparison units: ``comparison.lsoas`` (an explicit list, e.g. the never-treated night-time
economy LSOAs -- the comparable ones), or the rule ``untreated_lsoas_same_areas`` (every other LSOA
of the treated areas, most of them residential with much lower counts: prefer an explicit list).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from sveval.errors import DataError
from sveval.periods import (
    PERIOD_NOUN,
    from_index,
    granularity_of_all,
    index_of,
    periods_per_year,
    to_granularity,
)
from sveval.spec import period_from_index, period_index

NEVER = -1
OutcomeKind = Literal["rate", "count", "continuous", "log"]
#: outcomes that count events: only these give events prevented and rate ratios
EVENT_OUTCOMES = ("rate", "count")


@dataclass(frozen=True)
class DidPanel:
    """A balanced unit x month panel with treatment timing.

    Attributes
    ----------
    frame : columns ``unit`` (str), ``period`` (YYYY-MM), ``t`` (int month index), ``count``,
        ``population`` (may be NaN), ``y`` (the outcome), ``cohort`` (first treated month index,
        ``-1`` = never treated), ``treated`` (bool: unit ever treated), ``D`` (0/1: treated now).
    outcome : ``"rate"`` (per ``rate_per`` population) or ``"count"`` (events per unit-month)
    unit_kind : ``"area"`` or ``"lsoa"``
    rate_per : denominator of rates (100,000 by default)
    granularity : what one step of ``t`` is: ``month`` (default), ``quarter``, ``year`` or
        ``financial_year``
    """

    frame: pd.DataFrame = field(repr=False)
    outcome: OutcomeKind
    unit_kind: str
    rate_per: int = 100_000
    granularity: str = "month"

    # -- periods ----------------------------------------------------------------------------------
    @property
    def period_noun(self) -> str:
        """``month``, ``quarter``, ``year`` or ``financial year``."""
        return PERIOD_NOUN[self.granularity]

    @property
    def per_year(self) -> int:
        """Periods in a year (12 for months)."""
        return periods_per_year(self.granularity)

    def period_of(self, t: int) -> str:
        """The period label of index ``t`` (``YYYY-MM`` for a monthly panel)."""
        if self.granularity == "month":
            return period_from_index(int(t))
        return from_index(int(t), self.granularity)

    def index_of(self, period: str) -> int:
        """The index ``t`` of a period of the panel; a month is taken as the period holding it."""
        if self.granularity == "month":
            return period_index(period)
        try:
            return index_of(to_granularity(period, self.granularity)[0], self.granularity)
        except ValueError as exc:
            raise DataError(str(exc), column="period") from None

    # -- shape ------------------------------------------------------------------------------------
    @property
    def units(self) -> list[str]:
        return sorted(self.frame["unit"].unique())

    @property
    def n_units(self) -> int:
        return int(self.frame["unit"].nunique())

    @property
    def n_treated_units(self) -> int:
        return int(self.frame.loc[self.frame["treated"], "unit"].nunique())

    @property
    def n_periods(self) -> int:
        return int(self.frame["t"].nunique())

    @property
    def cohorts(self) -> list[int]:
        """Treatment start month indices of the treated cohorts, sorted."""
        c = self.frame.loc[self.frame["treated"], "cohort"].unique()
        return sorted(int(x) for x in c)

    @property
    def staggered(self) -> bool:
        return len(self.cohorts) > 1

    @property
    def first_start(self) -> int:
        return min(self.cohorts)

    @property
    def counts_events(self) -> bool:
        """True when the outcome counts events (a count or a rate), so events prevented and rate
        ratios mean something; False for continuous and log outcomes."""
        return self.outcome in EVENT_OUTCOMES

    @property
    def outcome_label(self) -> str:
        per = self.period_noun
        if self.outcome == "rate":
            return f"rate per {self.rate_per:,} population per {per}, per {self.unit_kind}"
        if self.outcome == "log":
            return f"log points (difference in the log outcome per {self.unit_kind} and period)"
        if self.outcome == "continuous":
            return f"outcome units per {self.unit_kind} and period"
        return f"count per {self.unit_kind} per {per}"

    def unit_cohorts(self) -> pd.Series:
        """Cohort (first treated month index, -1 never) of each unit, indexed by unit."""
        return self.frame.groupby("unit", sort=True)["cohort"].first()

    def wide(self, column: str = "y") -> pd.DataFrame:
        """Units x months matrix of ``column`` (rows sorted by unit, columns by month index)."""
        return self.frame.pivot(index="unit", columns="t", values=column).sort_index()

    def restrict(self, mask: pd.Series) -> DidPanel:
        return DidPanel(self.frame.loc[mask].reset_index(drop=True), self.outcome, self.unit_kind, self.rate_per,
                        self.granularity)


def make_panel(
    frame: pd.DataFrame,
    cohorts: dict[str, str | int | None],
    unit: str = "unit",
    period: str = "period",
    count: str = "count",
    population: str | None = "population",
    outcome: Literal["auto", "rate", "count", "continuous", "log"] = "auto",
    unit_kind: str = "unit",
    rate_per: int = 100_000,
    fill_zero: bool = False,
) -> DidPanel:
    """Build a :class:`DidPanel` from a long frame.

    Parameters
    ----------
    frame : one row per unit and month
    cohorts : unit -> first treated month (``YYYY-MM`` or month index); units missing from the
        mapping, or mapped to None, are never treated (comparison units)
    unit, period, count, population : column names (``population`` may be None or absent)
    outcome : ``"rate"`` needs a population for every row; ``"auto"`` uses rates when it is there
    fill_zero : complete the unit x month grid with zero counts (sparse event data such as LSOAs);
        otherwise a missing unit-month is an error

    Examples
    --------
    >>> f = pd.DataFrame({"unit": ["a", "a", "b", "b"], "period": ["2020-01", "2020-02"] * 2,
    ...                   "count": [3.0, 1.0, 2.0, 2.0]})
    >>> p = make_panel(f, {"a": "2020-02"}, population=None)
    >>> p.frame["D"].tolist()
    [0, 1, 0, 0]
    """
    need = [unit, period, count]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"panel is missing column(s) {missing}; have {list(frame.columns)}")
    cols = {unit: "unit", period: "period", count: "count"}
    has_pop = population is not None and population in frame.columns
    if has_pop:
        cols[population] = "population"
    f = frame[list(cols)].rename(columns=cols).copy()
    f["unit"] = f["unit"].astype(str)
    f["period"] = f["period"].astype(str)
    if not has_pop:
        f["population"] = np.nan
    f = f.groupby(["unit", "period"], as_index=False, sort=True).agg(
        count=("count", "sum"), population=("population", "first")
    )
    gran = _panel_granularity(f["period"])
    if gran == "month":
        f["t"] = f["period"].map(period_index).astype(np.int64)
        label = period_from_index
    else:
        f["t"] = f["period"].map(lambda q: index_of(q, gran)).astype(np.int64)
        label = (lambda i: from_index(int(i), gran))  # noqa: E731
    tmin, tmax = int(f["t"].min()), int(f["t"].max())
    units = sorted(f["unit"].unique())
    grid = pd.MultiIndex.from_product([units, range(tmin, tmax + 1)], names=["unit", "t"])
    f = f.set_index(["unit", "t"]).reindex(grid)
    gap = f["count"].isna()
    if gap.any():
        if not fill_zero:
            u, t = f.index[gap.to_numpy()][0]
            raise DataError(
                f"panel is not balanced: {int(gap.sum())} unit-{PERIOD_NOUN[gran]}s missing, e.g. unit "
                f"{u} in {label(int(t))}; every unit needs every {PERIOD_NOUN[gran]}"
            )
        f.loc[gap, "count"] = 0.0
        f["population"] = f.groupby(level="unit")["population"].transform(lambda s: s.ffill().bfill())
    f = f.reset_index()
    f["period"] = f["t"].map(label)
    if outcome in ("count", "rate", "auto") and f["count"].lt(0).any():
        raise DataError("counts must be non-negative (use outcome 'continuous' or 'log' for other "
                        "outcomes)", column=count)

    pop_ok = bool(f["population"].notna().all() and (f["population"] > 0).all())
    if outcome == "auto":
        outcome = "rate" if pop_ok else "count"
    if outcome == "rate":
        if not pop_ok:
            raise DataError("outcome 'rate' needs a positive population for every unit-month", column="population")
        f["y"] = f["count"] / f["population"] * rate_per
    elif outcome == "log":
        if not f["count"].gt(0).all():
            raise DataError("outcome 'log' takes the logarithm of the outcome column: every value must "
                            "be positive (or pass an already logged outcome as 'continuous')", column=count)
        f["y"] = np.log(f["count"].astype(float))
    else:
        f["y"] = f["count"].astype(float)

    starts: dict[str, int] = {}
    for u, c in cohorts.items():
        if c is None:
            continue
        if isinstance(c, int | np.integer):
            starts[str(u)] = int(c)
        elif gran == "month":
            starts[str(u)] = period_index(str(c))
        else:
            try:
                starts[str(u)] = index_of(to_granularity(str(c), gran)[0], gran)
            except ValueError as exc:
                raise DataError(f"treatment start of unit {u}: {exc}") from None
    unknown = sorted(set(starts) - set(units))
    if unknown:
        raise DataError(f"treated unit(s) {unknown[:5]} have no rows in the panel")
    f["cohort"] = f["unit"].map(starts).fillna(NEVER).astype(np.int64)
    f["treated"] = f["cohort"] != NEVER
    f["D"] = (f["treated"] & (f["t"] >= f["cohort"])).astype(np.int64)
    if not f["treated"].any():
        raise DataError("no treated unit in the panel")
    if f["treated"].all():
        raise DataError("no comparison (never-treated) unit in the panel")
    f = f[["unit", "period", "t", "count", "population", "y", "cohort", "treated", "D"]]
    return DidPanel(f.sort_values(["unit", "t"]).reset_index(drop=True), outcome, unit_kind, rate_per,
                    gran)


def _panel_granularity(periods: pd.Series) -> str:
    try:
        return granularity_of_all(periods, "panel")
    except ValueError as exc:
        raise DataError(str(exc), column="period") from None


def covid_bounds(panel: DidPanel, covid: tuple[str, str]) -> tuple[int, int]:
    """Indices ``t`` of the first and last period of a window given in months (or periods) on the
    panel's own granularity: the periods holding the window's first and last months."""
    return panel.index_of(covid[0]), panel.index_of(covid[1])


def exclude_months(panel: DidPanel, start: str, end: str) -> DidPanel:
    """Drop the months ``start..end`` (e.g. COVID-19 restrictions) from every unit; on a panel of
    quarters or years, the periods holding them."""
    a, b = covid_bounds(panel, (start, end))
    return panel.restrict(~panel.frame["t"].between(a, b))
