"""Tracking figures: Making Data Count SPC charts and rolling 12-month rates.

Both take disclosure-controlled frames (:meth:`sveval.pipeline.tracking.TrackingResult.published_chart`,
:meth:`~sveval.pipeline.tracking.TrackingResult.published`) and return ``(fig, ax)``.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from sveval.report.plots.core import PALETTE, styled

#: Making Data Count colours: grey common cause, orange concern, blue improvement
MDC = {"common": "#7f7f7f", "concern": "#ed8b00", "improvement": "#41b6e6", "line": "#231f20"}


def _dates(periods: pd.Series) -> pd.Series:
    return pd.to_datetime(periods.astype(str) + "-01")


@styled
def spc_chart(chart: pd.DataFrame, title: str | None = None, ylabel: str = "Count", ax: Any = None):
    """XmR chart: points coloured by variation, mean and process limits per segment.

    ``chart`` needs ``period, mean, ucl, lcl, segment, variation`` and ``shown`` (the controlled
    value; ``None`` for a suppressed point, drawn as a gap) or ``value``.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4.2))
    else:
        fig = ax.figure
    df = chart.copy()
    y = pd.to_numeric(df["shown"] if "shown" in df.columns else df["value"], errors="coerce")
    x = _dates(df["period"])
    ax.plot(x, y, color=MDC["common"], lw=1, zorder=2)
    for kind in ("common", "concern", "improvement"):
        sel = (df["variation"] == kind) & y.notna()
        if sel.any():
            label = {"common": "Common cause", "concern": "Special cause: concern",
                     "improvement": "Special cause: improvement"}[kind]
            ax.scatter(x[sel], y[sel], color=MDC[kind], s=22, zorder=3, label=label)
    for _, seg in df.groupby("segment"):
        xs = _dates(seg["period"])
        ax.plot(xs, seg["mean"], color=MDC["line"], lw=1.2)
        ax.plot(xs, seg["ucl"], color=MDC["line"], lw=0.9, ls="--")
        ax.plot(xs, seg["lcl"], color=MDC["line"], lw=0.9, ls="--")
    if "change_point" in df.columns:
        for p, name in df.loc[df["change_point"] != "", ["period", "change_point"]].itertuples(index=False):
            ax.axvline(_dates(pd.Series([p])).iloc[0], color="#999999", ls=":", lw=1)
            ax.annotate(name, (_dates(pd.Series([p])).iloc[0], ax.get_ylim()[1]), fontsize=7,
                        rotation=90, va="top", ha="right", color="#555555")
    if y.isna().any():
        ax.text(0.01, 0.02, "Gaps: small counts suppressed (disclosure control)", transform=ax.transAxes,
                fontsize=8, color="#555555")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, frameon=True)
    fig.tight_layout()
    return fig, ax


@styled
def rolling_rates(monthly: pd.DataFrame, measure: str, title: str | None = None, ax: Any = None):
    """Rolling 12-month rate of the partnership, its areas and the pooled comparison areas."""
    d = monthly[(monthly["measure"] == measure) & monthly["area_type"].isin(["partnership", "area", "comparison"])]
    d = d.assign(rate=pd.to_numeric(d["rolling_12m_rate"], errors="coerce"), date=_dates(d["period"])).dropna(subset=["rate"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4))
    else:
        fig = ax.figure
    if d.empty:  # protected measures: overlapping 12-month windows are not published
        ax.text(0.5, 0.5, "Rolling 12-month rates are not published for this measure:\n"
                "overlapping windows of disclosure-controlled counts would reveal suppressed months.",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        fig.tight_layout()
        return fig, ax
    n = max(1, d["area_name"].nunique())
    areas = PALETTE["areas"]  # Okabe-Ito: colour-blind safe
    sns.lineplot(data=d, x="date", y="rate", hue="area_name", ax=ax, lw=1.6,
                 palette=[areas[k % len(areas)] for k in range(n)])
    per = int(d["rate_per"].iloc[0]) if len(d) else 100_000
    ax.set_ylabel("Rolling 12-month rate " + ("per million" if per == 1_000_000 else f"per {per:,}"))
    ax.set_xlabel("")
    ax.set_ylim(bottom=0)
    ax.legend(title="", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, ax
