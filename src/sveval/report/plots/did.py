"""Figures of the difference-in-differences family and synthetic control.

Each function takes a :class:`~sveval.result.Result` and returns ``(fig, ax)``; the frame
behind it is in ``result.tables`` (``trends``, ``event_study``, ``by_cohort``, ``gaps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sveval.report.plots.core import PALETTE, _dates, styled

if TYPE_CHECKING:  # pragma: no cover
    from sveval.result import Result


def _axes(ax: Any, size=(10, 4.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax


def _start(result: Result):
    s = result.series
    if s is None or not s["post"].any():
        return None
    return pd.Timestamp(str(s.loc[s["post"].astype(bool), "period"].iloc[0]) + "-01")


@styled
def trends(result: Result, title: str | None = None, ylabel: str | None = None, ax: Any = None,
           rolling: int = 3, data: pd.DataFrame | None = None):
    """Treated vs comparison group means by month (``rolling``-month moving average).

    ``data`` replaces ``result.tables['trends']`` (the published, disclosure-controlled table).
    """
    t = data if data is not None else result.tables.get("trends")
    if t is None:
        raise ValueError("this result has no 'trends' table (DiD designs only)")
    fig, ax = _axes(ax)
    x = _dates(t["period"])
    for col, colour, label in (("treated", PALETTE["observed"], "Treated"),
                               ("comparison", PALETTE["counterfactual"], "Comparison")):
        ax.plot(x, t[col], color=colour, alpha=0.25, lw=1)
        ax.plot(x, t[col].rolling(rolling, center=True, min_periods=1).mean(), color=colour, lw=2,
                label=f"{label} ({rolling}-month average)")
    st = _start(result)
    if st is not None:
        ax.axvline(st, color="grey", ls=":", lw=1)
    ax.set_ylabel(ylabel or result.details.get("outcome", "outcome"))
    ax.set_title(title or "Treated and comparison units: mean per unit")
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig, ax


@styled
def event_study(result: Result, title: str | None = None, ax: Any = None):
    """Event-study coefficients with 95% intervals (and simultaneous bands where estimated)."""
    t = result.tables.get("event_study")
    if t is None:
        raise ValueError("this result has no 'event_study' table")
    fig, ax = _axes(ax)
    e = t["event_time"].to_numpy()
    pre = e < 0
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color="grey", ls=":", lw=1)
    if "band_low" in t.columns:
        ax.fill_between(e, t["band_low"], t["band_high"], color=PALETTE["band"], alpha=0.35, lw=0,
                        label="95% simultaneous band")
    for mask, colour, label in ((pre, "#7f8c8d", "Before start (leads)"), (~pre, PALETTE["observed"], "After start")):
        ax.errorbar(e[mask], t["estimate"][mask], yerr=[t["estimate"][mask] - t["ci_low"][mask],
                    t["ci_high"][mask] - t["estimate"][mask]], fmt="o", ms=4, color=colour, capsize=2,
                    label=label)
    if "binned" in t.columns and t["binned"].any():
        b = t[t["binned"]]
        ax.scatter(b["event_time"], b["estimate"], marker="s", s=50, facecolors="none",
                   edgecolors="black", label="binned end point", zorder=4)
    try:
        c = result.check("pre_trend")
        ax.text(0.01, 0.02, f"pre-trend test p = {c.p_value:.3f}", transform=ax.transAxes, fontsize=9)
    except KeyError:
        pass
    ax.set_xlabel("months since start")
    ax.set_ylabel(f"effect ({result.details.get('outcome', '')})")
    ax.set_title(title or "Event study")
    ax.legend(loc="lower left", fontsize=8, bbox_to_anchor=(0, 0.06))
    fig.tight_layout()
    return fig, ax


@styled
def cohorts(result: Result, title: str | None = None, ax: Any = None):
    """Callaway-Sant'Anna effect by cohort, beside the overall and TWFE estimates."""
    t = result.tables.get("by_cohort")
    if t is None:
        raise ValueError("this result has no 'by_cohort' table (staggered estimator only)")
    rows = [(f"cohort {r.cohort} (n={r.n_units})", r.estimate, r.ci_low, r.ci_high) for r in t.itertuples()]
    rows += [(e.name, e.estimate, e.ci_low, e.ci_high) for e in result.effects if e.scale == "difference"]
    fig, ax = _axes(ax, size=(9, 0.5 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    for yi, (_label, est, lo, hi) in zip(y, rows, strict=True):
        ax.errorbar(est, yi, xerr=[[est - lo], [hi - est]], fmt="o", color=PALETTE["observed"], capsize=3)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"effect ({result.details.get('outcome', '')})")
    ax.set_title(title or "Effects by cohort and estimator")
    fig.tight_layout()
    return fig, ax


@styled
def gap(result: Result, title: str | None = None, ax: Any = None, data: pd.DataFrame | None = None):
    """Synthetic control gap (treated - synthetic) with the donors' placebo gaps in grey.

    ``data`` replaces ``result.tables['gaps']`` (the published, disclosure-controlled table).
    """
    g = data if data is not None else result.tables.get("gaps")
    if g is None:
        raise ValueError("this result has no 'gaps' table (synthetic control only)")
    fig, ax = _axes(ax)
    x = _dates(g["period"])
    treated = result.details.get("treated_unit")
    for col in g.columns:
        if col in ("period", treated):
            continue
        ax.plot(x, g[col], color="#b3b6b7", lw=0.8, alpha=0.8)
    ax.plot(x, g[treated], color=PALETTE["observed"], lw=2.2, label=f"{treated} (treated)")
    ax.plot([], [], color="#b3b6b7", label="placebo donors")
    ax.axhline(0, color="black", lw=0.8)
    st = _start(result)
    if st is not None:
        ax.axvline(st, color="grey", ls=":", lw=1)
    ax.set_ylabel("gap: treated - synthetic")
    ax.set_title(title or "Synthetic control gap and placebo gaps")
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig, ax


@styled
def diagnostics_table(result: Result) -> pd.DataFrame:
    """The diagnostics as a table for the report."""
    return pd.DataFrame([{"check": c.name, "passed": c.passed, "statistic": c.statistic,
                          "p_value": c.p_value, "detail": c.detail} for c in result.diagnostics])
