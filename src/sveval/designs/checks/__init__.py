"""Diagnostics and robustness checks, each returning a :class:`~sveval.result.Check`.

Residual diagnostics (:mod:`sveval.designs.checks.residuals`) take a fitted model; robustness checks
(:mod:`sveval.designs.checks.robustness`) take a ``refit`` callable so any design can use them.
"""

from sveval.designs.checks.residuals import (
    acf,
    autocorrelation,
    breusch_godfrey,
    ljung_box,
    overdispersion,
)
from sveval.designs.checks.robustness import (
    placebo_in_time,
    sensitivity_date,
    sensitivity_seasonality,
)

__all__ = [
    "acf",
    "autocorrelation",
    "breusch_godfrey",
    "ljung_box",
    "overdispersion",
    "placebo_in_time",
    "sensitivity_date",
    "sensitivity_seasonality",
]
