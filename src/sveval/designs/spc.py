"""Statistical process control in the NHS "Making Data Count" style, and exact rate-ratio intervals.

XmR (individuals and moving range) charts:

* the process mean and the mean moving range ``mR-bar`` are computed per *segment*; limits are
  ``mean +/- 2.66 * mR-bar`` (2.66 = 3 / d2, d2 = 1.128 for moving ranges of two points);
* segments are separated by declared change points only (for example the Serious Violence Duty's
  start); the moving range across a change point is not used;
* special-cause rules (all evaluated within a segment):

  1. ``outside``      a single point above the upper or below the lower process limit;
  2. ``shift``        a run of ``run_length`` (default 7) or more consecutive points on one side of
                      the mean (a point exactly on the mean breaks the run);
  3. ``trend``        ``trend_length`` (default 7) or more consecutive points each strictly higher
                      (or each strictly lower) than the one before (a repeated value breaks it);
  4. ``two_of_three`` two of three consecutive points beyond two sigma (two-thirds of the way from
                      the mean to a limit) on the same side.

Each flagged point is read as *improvement* or *concern* from its side and the measure's
``better_if``.

Also here: :func:`rate_ratio_ci`, the exact (conditional, Clopper-Pearson) interval for the ratio
of two Poisson rates, as in R's ``poisson.test(c(x1, x0), c(t1, t0))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sveval.errors import DataError, OptionError

#: 3 / d2 with d2 = 1.128 (expected range of two normal observations in sigma units)
XMR_CONSTANT = 2.66
D2 = 1.128

RULES = ("outside", "shift", "trend", "two_of_three")


@dataclass(frozen=True)
class RateRatio:
    """Ratio of two Poisson rates with its exact interval and two-sided p-value."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    count: float
    exposure: float
    baseline_count: float
    baseline_exposure: float
    ci_level: float = 0.95

    @property
    def percent_change(self) -> tuple[float, float, float]:
        return tuple(100.0 * (v - 1.0) for v in (self.estimate, self.ci_low, self.ci_high))


def rate_ratio_ci(
    count: float, exposure: float, baseline_count: float, baseline_exposure: float, level: float = 0.95
) -> RateRatio:
    """Exact conditional interval of the rate ratio ``(count/exposure) / (baseline_count/baseline_exposure)``.

    Conditional on the total ``n = count + baseline_count``, ``count`` is binomial with probability
    ``p = RR * e1 / (RR * e1 + e0)``. The Clopper-Pearson interval of ``p`` maps one-to-one to an
    interval for ``RR``; the p-value is the exact two-sided binomial test of ``RR = 1``.

    Parameters
    ----------
    count, exposure : events and exposure (person-time, population) of the period of interest
    baseline_count, baseline_exposure : the same for the baseline period
    level : confidence level

    Returns
    -------
    RateRatio

    Examples
    --------
    >>> r = rate_ratio_ci(11, 800, 21, 3011)
    >>> round(r.estimate, 4), round(r.ci_low, 4), round(r.ci_high, 4)
    (1.9715, 0.8584, 4.2773)
    """
    x1, x0 = float(count), float(baseline_count)
    e1, e0 = float(exposure), float(baseline_exposure)
    for name, v in (("count", x1), ("baseline_count", x0)):
        if not np.isfinite(v) or v < 0 or v != round(v):
            raise DataError(f"{name} must be a non-negative whole number, got {v!r}")
    for name, v in (("exposure", e1), ("baseline_exposure", e0)):
        if not np.isfinite(v) or v <= 0:
            raise DataError(f"{name} must be positive, got {v!r}")
    if not 0 < level < 1:
        raise OptionError(f"level must be between 0 and 1, got {level!r}")
    n = x1 + x0
    nan = float("nan")
    if n == 0:
        return RateRatio(nan, nan, nan, 1.0, x1, e1, x0, e0, level)
    alpha = 1.0 - level
    p_lo = 0.0 if x1 == 0 else float(stats.beta.ppf(alpha / 2, x1, x0 + 1))
    p_hi = 1.0 if x0 == 0 else float(stats.beta.ppf(1 - alpha / 2, x1 + 1, x0))
    scale = e0 / e1

    def to_rr(p: float) -> float:
        return float("inf") if p >= 1 else p / (1 - p) * scale

    est = float("inf") if x0 == 0 else (x1 / e1) / (x0 / e0)
    p0 = e1 / (e1 + e0)
    pval = float(stats.binomtest(int(x1), int(n), p0).pvalue)
    return RateRatio(est, to_rr(p_lo), to_rr(p_hi), pval, x1, e1, x0, e0, level)


# ------------------------------------------------------------------------------------------------
# XmR charts
# ------------------------------------------------------------------------------------------------
def _segments(periods: Sequence[str], change_points: Sequence[str]) -> np.ndarray:
    """Segment number of every point: 0 before the first change point, 1 after it, ..."""
    cps = sorted(set(change_points))
    per = np.asarray(periods, dtype=object)
    seg = np.zeros(len(per), dtype=int)
    for cp in cps:
        seg += (per >= cp).astype(int)
    return seg


def _runs(mask: np.ndarray, length: int) -> np.ndarray:
    """Flag every element belonging to a run of at least ``length`` consecutive True values."""
    out = np.zeros(len(mask), dtype=bool)
    start = None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start >= length:
                out[start:i] = True
            start = None
    return out


def _trend(x: np.ndarray, length: int, up: bool) -> np.ndarray:
    """Flag points in a run of ``length`` points each strictly above (below) the previous one."""
    n = len(x)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    step = np.diff(x) > 0 if up else np.diff(x) < 0
    # a trend of L points is L-1 consecutive steps; step[i] links point i and i+1
    start = None
    for i, v in enumerate(list(step) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start + 1 >= length:  # points start..i
                out[start : i + 1] = True
            start = None
    return out


def _two_of_three(beyond: np.ndarray) -> np.ndarray:
    """Flag points beyond two sigma that are part of 2-of-3 consecutive such points (one side)."""
    n = len(beyond)
    out = np.zeros(n, dtype=bool)
    for i in range(n - 2):
        window = beyond[i : i + 3]
        if window.sum() >= 2:
            out[i : i + 3] |= window
    if n == 2 and beyond.sum() == 2:  # too short for a window of three; not flagged
        pass
    return out


def xmr(
    values: Sequence[float],
    periods: Sequence[str] | None = None,
    change_points: Sequence[str] = (),
    *,
    better_if: str = "lower",
    run_length: int = 7,
    trend_length: int = 7,
    baseline_points: int | None = None,
    floor_zero: bool = True,
) -> pd.DataFrame:
    """An XmR chart with Making Data Count special-cause rules.

    Parameters
    ----------
    values : the series (counts, rates, rolling totals), in time order; NaN not allowed
    periods : labels (``YYYY-MM``) in the same order; default ``0, 1, ...`` as strings
    change_points : periods at which the process is declared to have changed (limits are
        recalculated from there); a change point must be one of ``periods``
    better_if : ``lower`` or ``higher``: which side is an improvement
    run_length, trend_length : points needed for a shift or a trend
    baseline_points : if given, the mean and mR-bar of each segment come from its first
        ``baseline_points`` points only (frozen limits), as MDC recommends once a process is stable
    floor_zero : clip the lower limit at zero (counts and rates cannot be negative)

    Returns
    -------
    DataFrame with one row per point: ``period, value, segment, mean, moving_range, mr_bar, ucl,
    lcl, upper_2s, lower_2s, outside, shift, trend, two_of_three, special_cause, side,
    variation`` where ``variation`` is ``improvement``, ``concern`` or ``common``.

    Examples
    --------
    >>> ch = xmr([10, 12, 11, 13, 12, 30], better_if="lower")
    >>> ch["variation"].iloc[-1]
    'concern'
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise DataError("values must be a non-empty 1-d sequence")
    if np.isnan(x).any():
        raise DataError("values contain missing points; an XmR chart needs every period")
    if better_if not in ("lower", "higher"):
        raise OptionError("better_if must be 'lower' or 'higher'")
    if periods is None:
        periods = [str(i) for i in range(len(x))]
    periods = [str(p) for p in periods]
    if len(periods) != len(x):
        raise DataError("periods and values differ in length")
    unknown = [c for c in change_points if c not in periods]
    if unknown:
        raise DataError(f"change points {unknown} are not among the chart's periods")
    seg = _segments(periods, change_points)
    n = len(x)
    mean = np.empty(n)
    mr = np.full(n, np.nan)
    mr_bar = np.empty(n)
    flags = {r: np.zeros(n, dtype=bool) for r in RULES}
    side = np.zeros(n, dtype=int)  # +1 high, -1 low
    for s in np.unique(seg):
        idx = np.flatnonzero(seg == s)
        xs = x[idx]
        base = xs if baseline_points is None else xs[:baseline_points]
        m = float(base.mean())
        mrs = np.abs(np.diff(xs))
        mr[idx[1:]] = mrs
        base_mr = np.abs(np.diff(base))
        mrb = float(base_mr.mean()) if len(base_mr) else 0.0
        mean[idx] = m
        mr_bar[idx] = mrb
        ucl = m + XMR_CONSTANT * mrb
        lcl = m - XMR_CONSTANT * mrb
        if floor_zero:
            lcl = max(lcl, 0.0)
        two_s = 2.0 * mrb / D2
        hi_out, lo_out = xs > ucl, xs < lcl
        above, below = xs > m, xs < m
        shift_hi, shift_lo = _runs(above, run_length), _runs(below, run_length)
        tr_up, tr_dn = _trend(xs, trend_length, True), _trend(xs, trend_length, False)
        t3_hi, t3_lo = _two_of_three(xs > m + two_s), _two_of_three(xs < m - two_s)
        flags["outside"][idx] = hi_out | lo_out
        flags["shift"][idx] = shift_hi | shift_lo
        flags["trend"][idx] = tr_up | tr_dn
        flags["two_of_three"][idx] = t3_hi | t3_lo
        high = hi_out | shift_hi | tr_up | t3_hi
        low = lo_out | shift_lo | tr_dn | t3_lo
        sd = np.where(high & ~low, 1, np.where(low & ~high, -1, 0))
        # a point flagged on both sides (a rising trend below the mean): the limit rule decides
        both = high & low
        sd[both] = np.where(hi_out[both], 1, np.where(lo_out[both], -1, np.sign(xs[both] - m)))
        side[idx] = sd
    ucl_all = mean + XMR_CONSTANT * mr_bar
    lcl_all = mean - XMR_CONSTANT * mr_bar
    if floor_zero:
        lcl_all = np.maximum(lcl_all, 0.0)
    special = np.zeros(n, dtype=bool)
    for r in RULES:
        special |= flags[r]
    good = -1 if better_if == "lower" else 1
    variation = np.where(~special, "common", np.where(side == good, "improvement", "concern"))
    return pd.DataFrame(
        {
            "period": periods,
            "value": x,
            "segment": seg,
            "mean": mean,
            "moving_range": mr,
            "mr_bar": mr_bar,
            "ucl": ucl_all,
            "lcl": lcl_all,
            "upper_2s": mean + 2.0 * mr_bar / D2,
            "lower_2s": np.maximum(mean - 2.0 * mr_bar / D2, 0.0) if floor_zero else mean - 2.0 * mr_bar / D2,
            **{r: flags[r] for r in RULES},
            "special_cause": special,
            "side": np.where(side > 0, "high", np.where(side < 0, "low", "")),
            "variation": variation,
        }
    )


def latest_variation(chart: pd.DataFrame, last: int = 6) -> str:
    """Plain-English reading of the last ``last`` points of an XmR chart.

    Returns one sentence saying whether recent points show special-cause improvement, concern, or
    only common-cause variation.
    """
    tail = chart.tail(last)
    kinds = set(tail["variation"])
    rules = [r.replace("_", " ") for r in RULES if tail[r].any()]
    how = f" ({', '.join(rules)})" if rules else ""
    if "concern" in kinds and "improvement" not in kinds:
        return f"Recent months show special-cause variation of concern{how}."
    if "improvement" in kinds and "concern" not in kinds:
        return f"Recent months show special-cause improvement{how}."
    if kinds == {"common"}:
        return "Recent months show only common-cause variation: no signal of change."
    return f"Recent months show mixed special-cause signals{how}; read the chart."
