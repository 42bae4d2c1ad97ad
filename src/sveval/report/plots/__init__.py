"""Figures: one function per figure kind, each returning ``(fig, ax)`` or ``(fig, axes)``.

``core`` holds the figures every design shares; design-specific figures live in sibling modules
(``its``, ``did``, ``tracking``).
"""

from sveval.report.plots.core import observed_vs_counterfactual

__all__ = ["observed_vs_counterfactual"]
