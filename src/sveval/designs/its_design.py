"""Design matrices of the interrupted time series (ITS) design.

One function, :func:`build_design`, turns a monthly series (and optionally a comparison series)
plus :class:`~sveval.spec.ITSOptions` into the regression design used by every ITS estimator:

* an intercept and a linear trend in months since the first month;
* seasonality: ``fourier`` (``fourier_terms`` sine/cosine pairs of period 12), ``month``
  (11 calendar-month indicators) or ``none``;
* COVID-19: an ``indicator`` for the window, rows ``exclude``-d from the fit, or ``none``;
* recording-practice breaks (the measure's and the options'): a step indicator from each break;
* for each intervention date (``intervention_start`` then ``change_points``): a level term and,
  with ``slope_change``, a slope term. The effect starts ``lag_months`` after the date; with
  ``phase_in_months = P > 0`` the level term ramps linearly ``1/P, 2/P, ..., 1`` over the first P
  months of the effect, so its coefficient is the *full* (phased-in) level change.

Controlled ITS (a comparison series): the two series are stacked; the comparison series gets its
own intercept and trend (``treated`` and ``treated:time``), both series share the seasonality,
COVID and break terms and a common post-period level and slope change (anything that happened to
both), and the effect is the treated series' *extra* level and slope change
(``treated:level_1`` and ``treated:slope_1``).

Time is counted in months from the first month of the series, so a slope coefficient is per
month (reports convert it to per year).

Quarterly, yearly and financial-year series (periods ``2021-Q2``, ``2021``, ``2021/22``) use the
same terms on their own time index: time is counted in periods, Fourier seasonality has period 4
for quarters (at most 2 harmonics; ``month`` becomes quarter indicators) and is switched off for
years, and every date given in months (intervention start, change points, breaks, the COVID
window) is taken as the period holding that month. ``lag_months`` and ``phase_in_months`` stay
months in the options and are converted to whole periods (rounded up); each conversion is stated
in the design's notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sveval.errors import DataError, OptionError
from sveval.periods import (
    PERIOD_NOUN,
    add_months,
    first_month,
    granularity_of_all,
    index_of,
    months_to_periods,
    periods_per_year,
    to_granularity,
)
from sveval.spec import ITSOptions, period_index


@dataclass(frozen=True)
class ITSDesign:
    """The regression design of one ITS fit.

    Attributes
    ----------
    frame : one row per series x month with columns ``period``, ``group`` (``treated`` /
        ``comparison``), ``y``, ``population``, ``offset``, ``post`` and ``included``
    X : design matrix (all rows, including excluded ones, so counterfactuals can be predicted)
    columns : names of the columns of ``X``
    effect_columns : per intervention date ``k`` (1-based), the names of its level and slope
        columns whose coefficients are the effects (``{"level_1": ..., "slope_1": ...}``)
    series_id : integer id of the series of each row (AR errors are within a series)
    intervention_index : month index (from the first month) of each intervention date
    """

    frame: pd.DataFrame
    X: np.ndarray
    columns: list[str]
    effect_columns: dict[str, str]
    series_id: np.ndarray
    intervention_index: tuple[int, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    granularity: str = "month"  # month | quarter | year | financial_year: what one step of t is

    @property
    def per_year(self) -> int:
        """Periods per year (12 for months): the factor from a per-period slope to per year."""
        return periods_per_year(self.granularity)

    @property
    def included(self) -> np.ndarray:
        return self.frame["included"].to_numpy(bool)

    def col(self, name: str) -> int:
        return self.columns.index(name)

    def counterfactual_X(self) -> np.ndarray:
        """``X`` with the treated series' intervention effect terms set to zero."""
        Xc = self.X.copy()
        for name in self.effect_columns.values():
            Xc[:, self.col(name)] = 0.0
        return Xc


def seasonal_terms(months: np.ndarray, seasonality: str, fourier_terms: int,
                   per_year: int = 12) -> tuple[np.ndarray, list[str]]:
    """Seasonal regressors for the position in the year, 1..``per_year`` (calendar months 1..12,
    or quarters 1..4 with ``per_year=4``).

    ``fourier``: ``sin(2 pi j m / P)``, ``cos(2 pi j m / P)`` for ``j = 1..fourier_terms`` (the
    sine of the ``P/2``-th harmonic is identically zero and is left out); ``month``: indicators of
    positions 2..P (``month_02``.. or ``quarter_2``..); ``none``: no columns.
    """
    months = np.asarray(months, dtype=float)
    if seasonality == "none" or per_year == 1:
        return np.empty((len(months), 0)), []
    if seasonality == "month":
        cols = [(months == m).astype(float) for m in range(2, per_year + 1)]
        label = (lambda m: f"month_{m:02d}") if per_year == 12 else (lambda m: f"quarter_{m}")
        return np.column_stack(cols), [label(m) for m in range(2, per_year + 1)]
    if seasonality == "fourier":
        cols, names = [], []
        for j in range(1, min(fourier_terms, per_year // 2) + 1):
            if 2 * j < per_year:
                cols.append(np.sin(2 * np.pi * j * months / per_year))
                names.append(f"sin{j}")
            cols.append(np.cos(2 * np.pi * j * months / per_year))
            names.append(f"cos{j}")
        return np.column_stack(cols), names
    raise OptionError(f"seasonality must be 'fourier', 'month' or 'none', got {seasonality!r}")


def effect_weights(t: np.ndarray, start: int, lag: int, phase_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Level and slope regressors of one intervention date.

    Parameters
    ----------
    t : month index of each row (0 = first month of the series)
    start : month index of the intervention date
    lag : months between the date and the start of the effect
    phase_in : months over which the level effect builds up linearly (0 = a step)

    Returns
    -------
    level : 0 before the effect starts, then ``1/P, 2/P, ..., 1`` (or 1 at once when P = 0)
    slope : months since the effect started (0 before), so the coefficient is per month
    """
    s = start + lag
    since = t - s
    if phase_in > 0:
        level = np.clip((since + 1) / phase_in, 0.0, 1.0)
    else:
        level = (since >= 0).astype(float)
    slope = np.where(since >= 0, since, 0).astype(float)
    return level, slope


def _clean_series(df: pd.DataFrame, label: str) -> pd.DataFrame:
    need = {"period", "count"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"{label} series lacks column(s) {sorted(missing)}; expected period, count[, population]")
    out = df.copy()
    out["period"] = out["period"].astype(str)
    if out["period"].duplicated().any():
        dup = out.loc[out["period"].duplicated(), "period"].iloc[0]
        raise DataError(f"{label} series has period {dup} more than once", column="period")
    out = out.sort_values("period").reset_index(drop=True)
    gran = series_granularity(out["period"], label)
    idx = out["period"].map(lambda p: index_of(p, gran)).to_numpy()
    gaps = np.flatnonzero(np.diff(idx) != 1)
    if len(gaps):
        noun = "monthly" if gran == "month" else f"by {PERIOD_NOUN[gran]}"
        raise DataError(
            f"{label} series is not {noun} without gaps: {out['period'].iloc[gaps[0]]} is followed by "
            f"{out['period'].iloc[gaps[0] + 1]}",
            column="period",
        )
    if "population" not in out.columns:
        out["population"] = np.nan
    out["count"] = pd.to_numeric(out["count"], errors="coerce").astype(float)
    out["population"] = pd.to_numeric(out["population"], errors="coerce").astype(float)
    return out[["period", "count", "population"]]


def series_granularity(periods, label: str = "the") -> str:
    """The one granularity of a series' periods (``month``, ``quarter``, ``year`` or
    ``financial_year``); DataError when a period is malformed or the series mixes forms."""
    try:
        return granularity_of_all(pd.Series(periods, dtype=object).astype(str), f"{label} series")
    except ValueError as exc:
        raise DataError(str(exc), column="period") from None


def _date_in(value: str, gran: str, what: str, notes: list[str]) -> str:
    """A date given in the options (a month, or a period of the series' granularity) as a period
    of the series; the mapping of a month is noted."""
    try:
        p, note = to_granularity(value, gran)
    except ValueError as exc:
        raise DataError(f"{what}: {exc}", column="period") from None
    if note is not None:
        notes.append(f"{what}: {note}")
    return p


def build_design(
    data: pd.DataFrame,
    intervention_start: str,
    options: ITSOptions,
    *,
    comparison: pd.DataFrame | None = None,
    breaks: tuple[tuple[str, str], ...] = (),
    count_model: bool = True,
    outcome: str = "count",
) -> ITSDesign:
    """Build the ITS design (see the module docstring for the terms).

    Parameters
    ----------
    data : treated series: ``period`` (YYYY-MM), ``count``, optional ``population``
    intervention_start : first month of the intervention (YYYY-MM)
    options : the evaluation's ITS options
    comparison : comparison series with the same columns (controlled ITS), or None
    breaks : ``(period, name)`` recording-practice breaks modelled as step indicators
    count_model : True for count models (population offset on the log scale)
    outcome : ``count`` (model the count column) or ``rate_per_100k`` (count / population x 1e5)
    """
    series = [("treated", _clean_series(data, "treated"))]
    if comparison is not None:
        comp = _clean_series(comparison, "comparison")
        series.append(("comparison", comp))
    grans = {series_granularity(s["period"]) for _, s in series}
    if len(grans) > 1:
        raise DataError(f"the treated and comparison series have different granularities: {sorted(grans)}",
                        column="period")
    gran = grans.pop()
    notes: list[str] = []
    monthly = gran == "month"
    pindex = period_index if monthly else (lambda q: index_of(q, gran))
    per_year = periods_per_year(gran)
    noun = PERIOD_NOUN[gran]
    first = min(pindex(s["period"].iloc[0]) for _, s in series)
    frames = []
    for gid, (label, s) in enumerate(series):
        f = s.copy()
        f["group"] = label
        f["series_id"] = gid
        f["t"] = f["period"].map(pindex).to_numpy() - first
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)

    # Outcome and offset
    pop = frame["population"].to_numpy(float)
    have_pop = bool(np.all(np.isfinite(pop) & (pop > 0)))
    if outcome == "rate_per_100k":
        if not have_pop:
            raise DataError(f"a rate outcome needs a positive population for every {noun}", column="population")
        frame["y"] = frame["count"] / frame["population"] * 1e5
    else:
        frame["y"] = frame["count"]
    use_offset = count_model and options.population_offset and have_pop
    if count_model and options.population_offset and not have_pop:
        if np.any(np.isfinite(pop)):
            notes.append(f"population is missing for some {noun}s, so no population offset was used")
    frame["offset"] = np.log(frame["population"]) if use_offset else 0.0
    if frame["y"].isna().any():
        bad = frame.loc[frame["y"].isna(), "period"].iloc[0]
        raise DataError(f"missing or non-numeric outcome in {bad}", column="count")
    if count_model and ((frame["y"] < 0).any() or (np.abs(frame["y"] - np.round(frame["y"])) > 1e-9).any()):
        raise DataError("count models need non-negative whole-number counts", column="count")

    t = frame["t"].to_numpy(float)
    if monthly:
        months = frame["period"].str.slice(5, 7).astype(int).to_numpy()
    elif gran == "quarter":
        months = frame["period"].str.slice(6, 7).astype(int).to_numpy()  # position in the year, 1..4
    else:
        months = np.ones(len(frame), int)
    if not monthly:
        intervention_start = _date_in(intervention_start, gran, "intervention start", notes)
        cps = [_date_in(cp, gran, "change point", notes) for cp in options.change_points]
    else:
        cps = list(options.change_points)
    iv_idx = [pindex(intervention_start) - first]
    for cp in sorted(cps, key=pindex):
        iv_idx.append(pindex(cp) - first)
    last = int(frame["t"].max())
    for i, k in enumerate(iv_idx):
        if not (0 < k <= last):
            raise DataError(
                f"intervention date {'(change point) ' if i else ''}at {noun} {k} falls outside the series "
                f"({frame['period'].min()} to {frame['period'].max()})",
                column="period",
            )
    if sorted(iv_idx) != iv_idx or len(set(iv_idx)) != len(iv_idx):
        raise DataError("change_points must be distinct and after intervention_start", column="period")
    frame["post"] = frame["t"] >= iv_idx[0]

    # COVID-19
    included = np.ones(len(frame), bool)
    if monthly:
        cov_lo, cov_hi = period_index(options.covid_start) - first, period_index(options.covid_end) - first
        cov_txt = f"{options.covid_start} to {options.covid_end}"
    else:
        c0 = _date_in(options.covid_start, gran, "COVID-19 window start", [])
        c1 = _date_in(options.covid_end, gran, "COVID-19 window end", [])
        cov_lo, cov_hi = pindex(c0) - first, pindex(c1) - first
        cov_txt = f"{c0} to {c1}"
        if options.covid != "none" and (0 <= cov_hi and cov_lo <= int(frame["t"].max())):
            notes.append(f"the COVID-19 window {options.covid_start} to {options.covid_end} is taken as the "
                         f"{noun}s holding it, {cov_txt}")
    in_covid = (t >= cov_lo) & (t <= cov_hi)
    cols: list[np.ndarray] = [np.ones(len(frame)), t]
    names: list[str] = ["const", "time"]
    if comparison is not None:
        g = (frame["group"] == "treated").to_numpy(float)
        cols += [g, g * t]
        names += ["treated", "treated:time"]
    else:
        g = np.ones(len(frame))
    S, snames = seasonal_terms(months, options.seasonality, options.fourier_terms, per_year)
    if not monthly and options.seasonality != "none":
        if per_year == 1:
            notes.append(f"a series by {noun} has no within-year seasonality: seasonality "
                         f"'{options.seasonality}' is switched off")
        elif options.seasonality == "fourier" and options.fourier_terms > per_year // 2:
            notes.append(f"quarterly series: Fourier seasonality of period 4 with {per_year // 2} "
                         f"harmonics (the most a quarterly series has), not {options.fourier_terms}")
    cols += list(S.T)
    names += snames
    if options.covid != "none" and in_covid.any():
        if options.covid == "indicator":
            if in_covid.all():
                raise DataError("the COVID-19 window covers the whole series; use covid: none")
            cols.append(in_covid.astype(float))
            names.append("covid")
        else:
            included &= ~in_covid
            notes.append(f"{cov_txt} (COVID-19) excluded from the fit")
    # Recording breaks
    all_breaks = list(breaks) + [(b.period, b.name) for b in options.breaks]
    seen = set()
    for period, name in all_breaks:
        if not monthly:
            period = _date_in(period, gran, f"recording break '{name}'", notes)
        if period in seen:
            continue
        seen.add(period)
        k = pindex(period) - first
        step = (t >= k).astype(float)
        if 0 < step[included].sum() < included.sum():
            cols.append(step)
            names.append(f"break:{name}")
        else:
            notes.append(f"recording break '{name}' ({period}) lies outside the analysed period and is not modelled")
    # Interventions
    effect_columns: dict[str, str] = {}
    lag, phase = options.lag_months, options.phase_in_months or 0
    if not monthly:
        # the effect starts in the period holding (first month of the start period + lag months)
        start_month = first_month(intervention_start, gran)
        lag_p = pindex(to_granularity(add_months(start_month, lag), gran)[0]) - pindex(intervention_start)
        phase_p = months_to_periods(phase, gran)
        if lag:
            notes.append(f"lag of {lag} month(s) taken as {lag_p} {noun}(s)")
        if phase:
            notes.append(f"phase-in of {phase} month(s) taken as {phase_p} {noun}(s) (rounded up)")
        lag, phase = lag_p, phase_p
    for j, k in enumerate(iv_idx, start=1):
        level, slope = effect_weights(t, k, lag, phase)
        if comparison is not None:
            cols += [level, slope] if options.slope_change else [level]
            names += [f"level_{j}", f"slope_{j}"] if options.slope_change else [f"level_{j}"]
        cols.append(g * level)
        names.append(f"treated:level_{j}" if comparison is not None else f"level_{j}")
        effect_columns[f"level_{j}"] = names[-1]
        if options.slope_change:
            cols.append(g * slope)
            names.append(f"treated:slope_{j}" if comparison is not None else f"slope_{j}")
            effect_columns[f"slope_{j}"] = names[-1]
    X = np.column_stack(cols)
    frame["included"] = included
    # Identification checks on the rows used
    Xi = X[included]
    rank = np.linalg.matrix_rank(Xi)
    if rank < Xi.shape[1]:
        raise DataError(
            f"the ITS design is not identifiable ({Xi.shape[1]} terms, rank {rank}): too few {noun}s "
            "before/after a date, a break or COVID window coinciding with an intervention date, or "
            "too many seasonal terms for the series",
        )
    if included.sum() - Xi.shape[1] < 8:
        raise DataError(
            f"only {included.sum()} usable {noun}s for {Xi.shape[1]} model terms; at least "
            f"{Xi.shape[1] + 8} are needed"
        )
    return ITSDesign(
        frame=frame[["period", "group", "t", "y", "count", "population", "offset", "post", "included"]],
        X=X,
        columns=names,
        effect_columns=effect_columns,
        series_id=frame["series_id"].to_numpy(int),
        intervention_index=tuple(iv_idx),
        notes=tuple(notes),
        granularity=gran,
    )
