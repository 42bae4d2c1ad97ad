"""Figures of the ITS diagnostics: ACF, placebo dates, sensitivity and power curve.

Each function takes a :class:`~sveval.result.Result` of :func:`sveval.designs.its.fit_its`
and returns ``(fig, ax)``; the data behind each figure is in the named check's ``data``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

from sveval.report.plots.core import PALETTE, styled

if TYPE_CHECKING:  # pragma: no cover
    from sveval.result import Result


def _ax(ax: Any, size=(8, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    return fig, ax


def _null(scale: str) -> float:
    return 1.0 if scale == "rate_ratio" else 0.0


@styled
def acf_plot(result: Result, ax: Any = None, whitened: bool = False):
    """Autocorrelation of the model residuals (or whitened residuals) with the 95% bounds."""
    c = result.check("autocorrelation")
    d = c.data
    fig, ax = _ax(ax)
    lags = np.asarray(d["lags"])[1:]
    vals = np.asarray(d["acf_whitened" if whitened else "acf"])[1:]
    ax.vlines(lags, 0, vals, color=PALETTE["observed"], lw=2)
    ax.scatter(lags, vals, color=PALETTE["observed"], s=14, zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    for b in (d["bound"], -d["bound"]):
        ax.axhline(b, color=PALETTE["counterfactual"], ls="--", lw=1)
    ax.set_xlabel("Lag (months)")
    ax.set_ylabel("Autocorrelation")
    lb = d["ljung_box_whitened" if whitened else "ljung_box"]
    ax.set_title(f"Residual autocorrelation{' (whitened)' if whitened else ''}: "
                 f"Ljung-Box p = {lb['p']:.3f}", fontsize=11)
    fig.tight_layout()
    return fig, ax


def _not_run(ax: Any, text: str):
    """A panel that says a check was not run (an option turned it off), instead of an error."""
    fig, ax = _ax(ax, (8, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True, transform=ax.transAxes)
    return fig, ax


@styled
def placebo_plot(result: Result, ax: Any = None):
    """Placebo-date estimates with intervals, and the real estimate, on the effect's scale."""
    if "placebo_in_time" not in {c.name for c in result.diagnostics}:
        return _not_run(ax, "Placebo dates were not run for this evaluation (its.placebo: false).")
    c = result.check("placebo_in_time")
    d = c.data
    fig, ax = _ax(ax, (9, 4))
    rows = [r for r in d.get("placebos", []) if r.get("estimate") is not None]
    labels = [r["label"] for r in rows] + ["actual"]
    est = [r["estimate"] for r in rows] + [d["actual"]["estimate"]]
    lo = [r["ci_low"] for r in rows] + [d["actual"]["ci_low"]]
    hi = [r["ci_high"] for r in rows] + [d["actual"]["ci_high"]]
    x = np.arange(len(labels))
    colors = [PALETTE["fitted"]] * len(rows) + [PALETTE["counterfactual"]]
    for i in range(len(x)):
        ax.plot([x[i], x[i]], [lo[i], hi[i]], color=colors[i], lw=2)
    ax.scatter(x, est, c=colors, s=30, zorder=3)
    scale = d.get("scale", result.headline.scale)
    ax.axhline(_null(scale), color="grey", ls=":")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Rate ratio" if scale == "rate_ratio" else "Difference")
    ax.set_title("Placebo intervention dates in the pre-period vs the real date", fontsize=11)
    fig.tight_layout()
    return fig, ax


@styled
def sensitivity_plot(result: Result, ax: Any = None):
    """Headline estimate under each intervention-date shift and seasonality choice."""
    fig, ax = _ax(ax, (9, 4))
    rows, groups = [], []
    for name, title in (("sensitivity_date", "date shift"), ("sensitivity_seasonality", "seasonality")):
        try:
            c = result.check(name)
        except KeyError:
            continue
        for r in c.data.get("variants", []):
            if r.get("estimate") is not None:
                rows.append(r)
                groups.append(title)
    y = np.arange(len(rows))[::-1]
    pal = {"date shift": PALETTE["fitted"], "seasonality": PALETTE["counterfactual"]}
    for yi, r, g in zip(y, rows, groups, strict=True):
        ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color=pal[g], lw=2)
        ax.scatter([r["estimate"]], [yi], color=pal[g], s=28, zorder=3)
    ax.set_yticks(y, [f"{g}: {r['label']}" for r, g in zip(rows, groups, strict=True)], fontsize=8)
    h = result.headline
    ax.axvline(_null(h.scale), color="grey", ls=":")
    ax.axvline(h.estimate, color="black", lw=0.8, ls="--")
    ax.set_xlabel("Rate ratio" if h.scale == "rate_ratio" else "Difference")
    ax.set_title("Sensitivity of the headline effect", fontsize=11)
    fig.tight_layout()
    return fig, ax


@styled
def power_curve(result: Result, ax: Any = None):
    """Simulated power against the size of the change, with the MDE and the threshold."""
    p = result.power
    if p is None:
        return _not_run(ax, "Power was not simulated for this evaluation (its.power_sims: 0).")
    fig, ax = _ax(ax)
    xs = sorted(p.power_at, key=float)
    x = np.array([100 * float(k) for k in xs])
    yv = np.array([p.power_at[k] for k in xs])
    ax.plot(x, yv, marker="o", color=PALETTE["observed"])
    ax.axhline(p.target_power, color="grey", ls=":")
    ax.axvline(100 * p.threshold, color=PALETTE["counterfactual"], ls="--", lw=1,
               label=f"threshold {100 * p.threshold:.0f}%")
    if p.mde is not None:
        ax.axvline(100 * p.mde, color=PALETTE["fitted"], lw=1.2, label=f"MDE {100 * p.mde:.0f}%")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Change in the measure (%)")
    ax.set_ylabel("Power")
    ax.set_title(f"Power for {p.post_months} post-period months ({p.n_sim} simulations)", fontsize=11)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig, ax
