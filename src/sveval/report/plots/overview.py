"""Overview figures for the site's home page: a forest plot of every headline effect.

Effects on different scales cannot share an axis, so the forest plot has one panel per unit
(percentage change against the expected level; each kind of difference with its own unit), each
row labelled with the evaluation and each panel titled with its unit. Colours are the
colour-blind-safe palette of :mod:`sveval.report.plots.core` and every verdict is also told by the
marker's shape, never by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from sveval.report.plots.core import PALETTE, styled

#: marker and colour per verdict (shape carries the meaning as well as colour)
VERDICT_STYLE = {
    "improvement": ("o", PALETTE["improvement"], "Improvement: interval excludes no change"),
    "worse": ("s", PALETTE["worse"], "Worse: interval excludes no change"),
    "unclear": ("D", PALETTE["unclear"], "No clear change: interval includes no change"),
}


@dataclass(frozen=True)
class ForestRow:
    """One headline effect on the forest plot, already on its display scale.

    ``estimate``, ``low`` and ``high`` are percentage changes for ratio effects and the
    difference itself otherwise; an open bound is ``inf``/``-inf`` (drawn as an arrow).
    """

    label: str
    unit: str
    estimate: float
    low: float
    high: float
    verdict: str  # improvement | worse | unclear
    null: float = 0.0
    ratio: bool = False  # a percentage change of a ratio: drawn on a log-ratio axis


PCT_TICKS = (-90, -75, -50, 0, 100, 300, 900)  # symmetric on the log-ratio axis


def _to_axis(v: float, ratio: bool) -> float:
    """Percentage changes of ratios on a log-ratio axis (a halving and a doubling equally far
    from no change); other values as they are."""
    if not ratio or not math.isfinite(v):
        return v
    return math.log(max(1.0 + v / 100.0, 1e-3))


@styled
def forest_plot(rows: Sequence[ForestRow], title: str | None = None):
    """Forest plot, one panel per unit; returns ``(fig, axes)``."""
    units = list(dict.fromkeys(r.unit for r in rows))
    heights = [max(1, sum(r.unit == u for r in rows)) for u in units] or [1]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(9, 1.2 + 0.42 * sum(heights) + 0.9 * len(heights)),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )
    axes = [a[0] for a in axes]
    seen: set[str] = set()
    for ax, unit in zip(axes, units, strict=False):
        sub = [r for r in rows if r.unit == unit][::-1]
        ratio = all(r.ratio for r in sub)
        sub = [ForestRow(r.label, r.unit, _to_axis(r.estimate, ratio), _to_axis(r.low, ratio),
                         _to_axis(r.high, ratio), r.verdict, _to_axis(r.null, ratio), r.ratio) for r in sub]
        finite = [v for r in sub for v in (r.estimate, r.low, r.high) if math.isfinite(v)]
        lo_lim = min([*finite, sub[0].null]) if finite else -1
        hi_lim = max([*finite, sub[0].null]) if finite else 1
        pad = 0.08 * (hi_lim - lo_lim or 1)
        lo_lim, hi_lim = lo_lim - pad, hi_lim + pad
        for y, r in enumerate(sub):
            marker, colour, label = VERDICT_STYLE.get(r.verdict, VERDICT_STYLE["unclear"])
            lo = r.low if math.isfinite(r.low) else lo_lim
            hi = r.high if math.isfinite(r.high) else hi_lim
            ax.plot([lo, hi], [y, y], color=colour, lw=2, solid_capstyle="butt")
            for bound, edge in ((r.low, lo_lim), (r.high, hi_lim)):
                if not math.isfinite(bound):  # open interval: an arrow to the panel's edge
                    ax.annotate("", (edge, y), (edge - 0.04 * (hi_lim - lo_lim) * (1 if edge > r.estimate else -1), y),
                                arrowprops={"arrowstyle": "->", "color": colour})
            ax.plot([r.estimate], [y], marker=marker, color=colour, ms=8, ls="none",
                    label=None if r.verdict in seen else label, markeredgecolor=PALETTE["ink"])
            seen.add(r.verdict)
        ax.axvline(sub[0].null if sub else 0, color=PALETTE["ink"], lw=1, ls="--")
        ax.set_yticks(range(len(sub)), [r.label for r in sub], fontsize=9)
        ax.set_xlim(lo_lim, hi_lim)
        if ratio:
            ticks = [t for t in PCT_TICKS if lo_lim <= _to_axis(t, True) <= hi_lim]
            ax.set_xticks([_to_axis(t, True) for t in ticks], [f"{t:+d}%" if t else "0" for t in ticks])
        ax.set_ylim(-0.7, len(sub) - 0.3)
        ax.set_xlabel(unit, fontsize=9)
        ax.grid(axis="y", visible=False)
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig, axes


def save_svg(fig, path: Path) -> Path:
    """Write ``fig`` as SVG with a fixed hash salt and no date, so a rebuild writes the same file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.hashsalt": "sveval", "svg.fonttype": "none"}):
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    return path


def forest_plot_of(rows: Sequence[Mapping[str, Any]], title: str | None = None):
    """:func:`forest_plot` of rows given as the fields of :class:`ForestRow` (plain data)."""
    return forest_plot([ForestRow(**r) for r in rows], title=title)


#: the figures :func:`draw_svg` draws, by name: ``(module, function)``, each returning ``(fig, axes)``
FIGURES = {
    "forest_plot_of": ("sveval.report.plots.overview", "forest_plot_of"),
    "rolling_rates": ("sveval.report.plots.tracking", "rolling_rates"),
    "spc_chart": ("sveval.report.plots.tracking", "spc_chart"),
}


def draw_svg(figure: str, path: Path, *args, **kwargs) -> Path:
    """Draw the figure named ``figure`` (a key of :data:`FIGURES`) with ``args`` and ``kwargs`` and
    :func:`save_svg` it to ``path``: one call, with picklable arguments, that a worker process can
    run (see :mod:`sveval.publish.workers`)."""
    import importlib

    module, name = FIGURES[figure]
    fig, _ = getattr(importlib.import_module(module), name)(*args, **kwargs)
    return save_svg(fig, path)
