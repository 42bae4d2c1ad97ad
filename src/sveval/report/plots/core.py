"""Figures shared by every design."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

P = ParamSpec("P")
R = TypeVar("R")

# Resolve matplotlib's backend now: when a kernel's first figure is drawn inside ``rc_context``
# (as ``styled`` does), leaving the context resets the backend to "not chosen yet" and the inline
# backend then shows none of the later figures (matplotlib 3.11, matplotlib-inline 0.1).
if not plt.get_fignums():
    plt.switch_backend(plt.get_backend())

if TYPE_CHECKING:  # pragma: no cover
    from sveval.result import Result

#: Okabe-Ito colour-blind-safe palette (Okabe and Ito 2008): every figure draws from these
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
}
PALETTE = {
    "observed": OKABE_ITO["black"], "fitted": OKABE_ITO["blue"], "counterfactual": OKABE_ITO["vermillion"],
    "band": "#F5C9A6",  # vermillion lightened for the counterfactual interval band
    "improvement": OKABE_ITO["bluish_green"], "worse": OKABE_ITO["vermillion"],
    "unclear": "#6E6E6E", "ink": "#212529",
    "areas": [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "reddish_purple", "sky_blue",
                                     "vermillion", "yellow", "black")],
}


#: where titles sit: at the top of the axes, which is where matplotlib's automatic placement (None)
#: puts them on these figures, since nothing is drawn above their axes (the same pixels; the tests
#: compare), without that placement's measuring of every tick label at each draw (about a fifth of
#: a figure's drawing time)
TITLE_Y: float | None = 1.0


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw inside sveval's style (seaborn whitegrid, notebook context) without changing the
    caller's global matplotlib or seaborn settings."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"), "axes.titley": TITLE_Y}
        with plt.rc_context(rc):
            return fn(*args, **kwargs)

    return wrapper


def _dates(periods: pd.Series) -> pd.Series:
    return pd.to_datetime(periods.astype(str) + "-01")


def _line(ax: Any, x: pd.Series, y: pd.Series, **style: Any) -> None:
    """A line through ``(x, y)`` as seaborn's ``lineplot`` draws one series: missing values left
    out, sorted by ``x``, repeated ``x`` averaged (without seaborn's bootstrap band), the same
    marker edge; the pixels are seaborn's (``tests/test_plots_core_pixels.py`` compares them byte
    for byte) at half the time of building the figure."""
    frame = pd.DataFrame({"x": x.to_numpy(), "y": pd.to_numeric(y, errors="coerce").to_numpy()}).dropna()
    line = frame.groupby("x", sort=True)["y"].mean()
    ax.plot(line.index, line.to_numpy(), markeredgewidth=0.75, markeredgecolor="w", **style)


@styled
def observed_vs_counterfactual(
    result: Result | None,
    title: str | None = None,
    ylabel: str = "Count per month",
    ax: Any = None,
    data: pd.DataFrame | None = None,
):
    """Observed series, model fit, and the counterfactual with its interval after the start.

    Returns ``(fig, ax)``. The frame behind it is ``result.get_plot_data()``, or ``data`` when
    given (e.g. the disclosure-controlled series of a published result, where suppressed
    observed values are missing and so not drawn).
    """
    df = data.copy() if data is not None else result.get_plot_data()
    if "group" in df.columns:
        df = df[df["group"].isin(["treated"])] if (df["group"] == "treated").any() else df
    x = _dates(df["period"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4.8))
    else:
        fig = ax.figure
    observed = pd.to_numeric(df["observed"], errors="coerce")
    shown = observed.notna().to_numpy()
    if shown.any():
        points = ax.scatter(x[shown], observed[shown], s=18, color=PALETTE["observed"], label="Observed",
                            zorder=3, edgecolor="w")
        points.set_linewidths(0.08 * np.sqrt(18))  # seaborn's scatterplot edge for markers of size 18
    if "fitted" in df.columns:
        _line(ax, x, df["fitted"], color=PALETTE["fitted"], label="Model fit", linewidth=1.6)
    post = df["post"].astype(bool) if "post" in df.columns else pd.Series(False, index=df.index)
    if post.any() and "counterfactual" in df.columns:
        xp = x[post]
        ax.fill_between(
            xp, df.loc[post, "cf_low"], df.loc[post, "cf_high"], color=PALETTE["band"], alpha=0.45,
            label="Counterfactual 95% interval", lw=0,
        )
        _line(ax, xp, df.loc[post, "counterfactual"], color=PALETTE["counterfactual"], linestyle="--",
              label="Counterfactual (no intervention)", linewidth=1.8)
        ax.axvline(xp.iloc[0], color="grey", lw=1, linestyle=":")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if df["observed"].notna().any() and df["observed"].min() >= 0:
        ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=9, frameon=True)
    fig.tight_layout()
    return fig, ax
