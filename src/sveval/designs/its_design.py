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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sveval.errors import DataError, OptionError
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


def seasonal_terms(months: np.ndarray, seasonality: str, fourier_terms: int) -> tuple[np.ndarray, list[str]]:
    """Seasonal regressors for calendar months 1..12.

    ``fourier``: ``sin(2 pi j m / 12)``, ``cos(2 pi j m / 12)`` for ``j = 1..fourier_terms`` (the
    sine of the 6th harmonic is identically zero and is left out); ``month``: indicators of
    months 2..12; ``none``: no columns.
    """
    months = np.asarray(months, dtype=float)
    if seasonality == "none":
        return np.empty((len(months), 0)), []
    if seasonality == "month":
        cols = [(months == m).astype(float) for m in range(2, 13)]
        return np.column_stack(cols), [f"month_{m:02d}" for m in range(2, 13)]
    if seasonality == "fourier":
        cols, names = [], []
        for j in range(1, fourier_terms + 1):
            if j < 6:
                cols.append(np.sin(2 * np.pi * j * months / 12))
                names.append(f"sin{j}")
            cols.append(np.cos(2 * np.pi * j * months / 12))
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
    idx = out["period"].map(period_index).to_numpy()
    gaps = np.flatnonzero(np.diff(idx) != 1)
    if len(gaps):
        raise DataError(
            f"{label} series is not monthly without gaps: {out['period'].iloc[gaps[0]]} is followed by "
            f"{out['period'].iloc[gaps[0] + 1]}",
            column="period",
        )
    if "population" not in out.columns:
        out["population"] = np.nan
    out["count"] = pd.to_numeric(out["count"], errors="coerce").astype(float)
    out["population"] = pd.to_numeric(out["population"], errors="coerce").astype(float)
    return out[["period", "count", "population"]]


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
    first = min(period_index(s["period"].iloc[0]) for _, s in series)
    frames = []
    for gid, (label, s) in enumerate(series):
        f = s.copy()
        f["group"] = label
        f["series_id"] = gid
        f["t"] = f["period"].map(period_index).to_numpy() - first
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    notes: list[str] = []

    # Outcome and offset
    pop = frame["population"].to_numpy(float)
    have_pop = bool(np.all(np.isfinite(pop) & (pop > 0)))
    if outcome == "rate_per_100k":
        if not have_pop:
            raise DataError("a rate outcome needs a positive population for every month", column="population")
        frame["y"] = frame["count"] / frame["population"] * 1e5
    else:
        frame["y"] = frame["count"]
    use_offset = count_model and options.population_offset and have_pop
    if count_model and options.population_offset and not have_pop:
        if np.any(np.isfinite(pop)):
            notes.append("population is missing for some months, so no population offset was used")
    frame["offset"] = np.log(frame["population"]) if use_offset else 0.0
    if frame["y"].isna().any():
        bad = frame.loc[frame["y"].isna(), "period"].iloc[0]
        raise DataError(f"missing or non-numeric outcome in {bad}", column="count")
    if count_model and ((frame["y"] < 0).any() or (np.abs(frame["y"] - np.round(frame["y"])) > 1e-9).any()):
        raise DataError("count models need non-negative whole-number counts", column="count")

    t = frame["t"].to_numpy(float)
    months = frame["period"].str.slice(5, 7).astype(int).to_numpy()
    iv_idx = [period_index(intervention_start) - first]
    for cp in sorted(options.change_points):
        iv_idx.append(period_index(cp) - first)
    last = int(frame["t"].max())
    for i, k in enumerate(iv_idx):
        if not (0 < k <= last):
            raise DataError(
                f"intervention date {'(change point) ' if i else ''}at month {k} falls outside the series "
                f"({frame['period'].min()} to {frame['period'].max()})",
                column="period",
            )
    if sorted(iv_idx) != iv_idx or len(set(iv_idx)) != len(iv_idx):
        raise DataError("change_points must be distinct and after intervention_start", column="period")
    frame["post"] = frame["t"] >= iv_idx[0]

    # COVID-19
    included = np.ones(len(frame), bool)
    cov_lo, cov_hi = period_index(options.covid_start) - first, period_index(options.covid_end) - first
    in_covid = (t >= cov_lo) & (t <= cov_hi)
    cols: list[np.ndarray] = [np.ones(len(frame)), t]
    names: list[str] = ["const", "time"]
    if comparison is not None:
        g = (frame["group"] == "treated").to_numpy(float)
        cols += [g, g * t]
        names += ["treated", "treated:time"]
    else:
        g = np.ones(len(frame))
    S, snames = seasonal_terms(months, options.seasonality, options.fourier_terms)
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
            notes.append(f"{options.covid_start} to {options.covid_end} (COVID-19) excluded from the fit")
    # Recording breaks
    all_breaks = list(breaks) + [(b.period, b.name) for b in options.breaks]
    seen = set()
    for period, name in all_breaks:
        if period in seen:
            continue
        seen.add(period)
        k = period_index(period) - first
        step = (t >= k).astype(float)
        if 0 < step[included].sum() < included.sum():
            cols.append(step)
            names.append(f"break:{name}")
        else:
            notes.append(f"recording break '{name}' ({period}) lies outside the analysed period and is not modelled")
    # Interventions
    effect_columns: dict[str, str] = {}
    lag, phase = options.lag_months, options.phase_in_months or 0
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
            f"the ITS design is not identifiable ({Xi.shape[1]} terms, rank {rank}): too few months "
            "before/after a date, a break or COVID window coinciding with an intervention date, or "
            "too many seasonal terms for the series",
        )
    if included.sum() - Xi.shape[1] < 8:
        raise DataError(
            f"only {included.sum()} usable months for {Xi.shape[1]} model terms; at least "
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
    )
