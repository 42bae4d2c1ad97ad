"""Figures: one function per figure kind, each returning ``(fig, ax)`` or ``(fig, axes)``.

``core`` holds the figures every design shares; design-specific figures live in sibling modules
(``its``, ``did``, ``tracking``). Every figure is drawn inside :func:`core.styled`, so the
caller's global matplotlib/seaborn settings are left alone.
"""

from sveval.report.plots import core, did, its, tracking
from sveval.report.plots.core import observed_vs_counterfactual

__all__ = ["core", "did", "its", "tracking", "observed_vs_counterfactual"]
