"""Robustness checks of a design's headline effect: placebo dates and sensitivity analyses.

Each check takes a ``refit`` callable, ``refit(intervention_start, *, end=None, **option_changes)
-> Effect``, that refits the same model with another date, data window or options, so the checks
do not depend on how a design fits its model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sveval.errors import SvevalError
from sveval.periods import add_periods, from_index, granularity_of, index_of
from sveval.result import Check, Effect

Refit = Callable[..., Effect]


def _log(e: Effect) -> float:
    return math.log(e.estimate) if e.scale == "rate_ratio" else e.estimate


def _row(label: str, e: Effect | None, err: str | None = None) -> dict:
    if e is None:
        return {"label": label, "estimate": None, "ci_low": None, "ci_high": None, "p_value": None,
                "significant": None, "error": err}
    return {"label": label, "estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
            "p_value": e.p_value, "significant": e.significant, "error": None}


def _try(refit: Refit, *args, **kw) -> tuple[Effect | None, str | None]:
    try:
        return refit(*args, **kw), None
    except (SvevalError, ValueError, np.linalg.LinAlgError) as exc:
        return None, str(exc).splitlines()[0]


def placebo_in_time(
    refit: Refit,
    intervention_start: str,
    actual: Effect,
    periods: list[str] | None = None,
    min_before: int = 12,
    min_after: int = 6,
    max_placebos: int = 15,
) -> Check:
    """Fake intervention dates in the pre-period, fitted on pre-period data only.

    Dates run from ``min_before`` months after the start to ``min_after`` months before the real
    date, at most ``max_placebos`` of them evenly spaced. The check reports how many placebo
    effects are "significant" (about 5% expected if the model is right) and where the real
    estimate falls among them (rank p-value: the share of placebo estimates at least as large in
    absolute value, counting the real one). ``passed`` is False when more than 20% of placebos are
    significant: the model finds effects where there were none.
    """
    periods = periods if periods is not None else list(getattr(refit, "periods", []))
    first = min(periods)
    gran = granularity_of(first)  # months, quarters, years: dates move in the series' own periods
    pre_end = add_periods(intervention_start, -1, gran)
    lo = index_of(first, gran) + min_before
    hi = index_of(intervention_start, gran) - min_after
    if hi < lo:
        return Check(
            name="placebo_in_time",
            description="Placebo-in-time test: fake intervention dates in the pre-period",
            passed=None,
            detail=f"pre-period too short for placebo dates (needs {min_before + min_after} "
            f"{'months' if gran == 'month' else 'periods'})",
            data={"placebos": [], "actual": _row("actual", actual)},
        )
    idx = np.unique(np.round(np.linspace(lo, hi, min(max_placebos, hi - lo + 1))).astype(int))
    rows = []
    for k in idx:
        date = from_index(int(k), gran)
        e, err = _try(refit, date, end=pre_end, change_points=[])
        rows.append(_row(date, e, err) | {"period": date})
    ok = [r for r in rows if r["estimate"] is not None]
    if not ok:
        return Check(name="placebo_in_time", description="Placebo-in-time test: fake intervention dates "
                     "in the pre-period", passed=None, detail="no placebo model could be fitted",
                     data={"placebos": rows, "actual": _row("actual", actual)})
    tr = (lambda v: math.log(v)) if actual.scale == "rate_ratio" else (lambda v: v)
    sizes = np.array([abs(tr(r["estimate"])) for r in ok])
    real = abs(_log(actual))
    rank_p = float((1 + np.sum(sizes >= real)) / (1 + len(sizes)))
    share_sig = float(np.mean([bool(r["significant"]) for r in ok]))
    passed = share_sig <= 0.2
    detail = (
        f"{sum(bool(r['significant']) for r in ok)} of {len(ok)} placebo dates gave a 'significant' "
        f"effect (about 5% expected); the real estimate is larger than {100 * (1 - rank_p):.0f}% of "
        f"placebo estimates (rank p = {rank_p:.2f})"
    )
    if not passed:
        detail += "; the model finds changes where there were none, so treat the headline with caution"
    return Check(
        name="placebo_in_time",
        description="Placebo-in-time test: fake intervention dates in the pre-period",
        statistic=share_sig, p_value=rank_p, passed=passed, detail=detail,
        data={"placebos": rows, "actual": _row("actual", actual) | {"period": intervention_start},
              "scale": actual.scale},
    )


def _same_conclusion(a: Effect, b: Effect) -> bool:
    if a.significant != b.significant:
        return False
    return (not a.significant) or ((_log(a) < 0) == (_log(b) < 0))


def sensitivity_date(refit: Refit, intervention_start: str, actual: Effect, months: int = 3,
                     unit: str = "months") -> Check:
    """Refit with the intervention date moved by -``months`` .. +``months`` periods of the date's
    own granularity (``unit`` names them in the text: months, quarters, years).

    ``passed`` is False when any shifted date changes the conclusion (significance or direction).
    """
    rows = []
    for s in range(-months, months + 1):
        if s == 0:
            rows.append(_row("0", actual) | {"shift": 0, "period": intervention_start})
            continue
        date = add_periods(intervention_start, s)
        e, err = _try(refit, date)
        rows.append(_row(f"{s:+d}", e, err) | {"shift": s, "period": date})
    return _summarise("sensitivity_date", "Sensitivity of the headline effect to the intervention date "
                      f"(+/- {months} {unit})", rows, actual, "date")


SEASONALITY_VARIANTS = (
    ("none", {"seasonality": "none"}),
    ("fourier 1", {"seasonality": "fourier", "fourier_terms": 1}),
    ("fourier 2", {"seasonality": "fourier", "fourier_terms": 2}),
    ("fourier 3", {"seasonality": "fourier", "fourier_terms": 3}),
    ("month indicators", {"seasonality": "month"}),
)


def sensitivity_seasonality(refit: Refit, intervention_start: str, actual: Effect) -> Check:
    """Refit with each seasonality choice; ``passed`` is False if any changes the conclusion."""
    rows = []
    for label, change in SEASONALITY_VARIANTS:
        e, err = _try(refit, intervention_start, **change)
        rows.append(_row(label, e, err))
    return _summarise("sensitivity_seasonality", "Sensitivity of the headline effect to the "
                      "seasonality adjustment", rows, actual, "seasonality choice")


def _summarise(name, description, rows, actual, what) -> Check:
    ok = [r for r in rows if r["estimate"] is not None]
    changed = []
    for r in ok:
        e = Effect("x", actual.scale, r["estimate"], r["ci_low"], r["ci_high"])
        if not _same_conclusion(actual, e):
            changed.append(r["label"])
    ests = [r["estimate"] for r in ok]
    rng_txt = (f"estimates range from {min(ests):.3g} to {max(ests):.3g}" if ests else "no refit succeeded")
    if changed:
        detail = f"the conclusion changes with the {what} ({', '.join(changed)}); {rng_txt}"
    else:
        detail = f"the conclusion is the same for every {what}; {rng_txt}"
    spread = (max(ests) - min(ests)) if ests else None
    return Check(name=name, description=description, statistic=spread, passed=not changed if ok else None,
                 detail=detail, data={"variants": rows, "scale": actual.scale})
