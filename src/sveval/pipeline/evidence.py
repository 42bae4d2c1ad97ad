"""Strength of evidence: a Maryland Scientific Methods Scale (SMS) level for each evaluation.

The level is derived from the design and the checks recorded in the result JSON (domain notes,
section 7; the scale as used by the College of Policing and the Youth Endowment Fund):

====  ==========================================================================================
1     before and after without a credible counterfactual (including an ITS whose placebo-in-time
      check failed or was not run)
2     a counterfactual from the treated series or a comparison without evidence of comparable
      pre-trends (single-series ITS; DiD whose pre-trend check failed or is missing; synthetic
      control with poor or unreported pre-period fit)
3     a comparison group with evidence of comparable pre-trends (controlled ITS or DiD with a
      passed pre-trend check; synthetic control with good pre-period fit)
4     quasi-random variation in exposure (declared in ``details.assignment = 'quasi_random'`` and
      with the level-3 conditions met)
5     randomised assignment (``details.assignment = 'randomised'``)
====  ==========================================================================================

Failed robustness checks (a placebo in space that finds an "effect") are reported in the reason
and lower the level by one, never below 1.
"""

from __future__ import annotations

from typing import Any

LABELS = {
    1: "Level 1: before and after, no credible comparison",
    2: "Level 2: comparison without evidence of comparable trends",
    3: "Level 3: comparison group with comparable pre-trends",
    4: "Level 4: quasi-random variation",
    5: "Level 5: randomised",
}

SHORT = {
    1: "weak",
    2: "limited",
    3: "moderate",
    4: "strong",
    5: "very strong",
}


def _checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for c in record.get("diagnostics") or []:
        if isinstance(c, dict) and c.get("name"):
            out[str(c["name"])] = c
    return out


def _status(checks: dict[str, dict[str, Any]], name: str) -> bool | None | str:
    """True/False when the check ran with a verdict, None when descriptive, 'missing' if absent."""
    if name not in checks:
        return "missing"
    return checks[name].get("passed")


def _is_controlled_its(record: dict[str, Any]) -> bool:
    comp = record.get("comparison")
    details = record.get("details") or {}
    return bool(comp) or bool(details.get("controlled")) or str(details.get("design", "")).lower() == "cits"


def assess(record: dict[str, Any]) -> dict[str, Any]:
    """Maryland SMS level of one evaluation from its result JSON.

    Parameters
    ----------
    record : result JSON document (keys ``design``, ``method``, ``diagnostics`` as a list of
        ``{name, passed, ...}``, ``comparison``, ``details``, ``status``)

    Returns
    -------
    dict with ``level`` (1-5), ``label``, ``short`` (weak ... very strong) and ``reason`` (one or
    two plain-English sentences).

    Examples
    --------
    >>> assess({"design": "did", "comparison": ["E06000001"],
    ...         "diagnostics": [{"name": "pre_trend", "passed": True}]})["level"]
    3
    """
    design = str(record.get("design") or "").lower()
    checks = _checks(record)
    details = record.get("details") or {}
    notes: list[str] = []
    status = record.get("status", "completed")
    if status not in (None, "completed"):
        return _out(1, f"The evaluation did not complete (status '{status}'), so it provides no evidence beyond a description.")

    if design == "its":
        placebo = _status(checks, "placebo_in_time")
        if _is_controlled_its(record):
            pre = _status(checks, "pre_trend")
            if pre is True:
                level, why = 3, "Controlled interrupted time series: the comparison series had trends comparable to the treated series before the start (pre-trend check passed)."
            elif pre is False:
                level, why = 2, "Controlled interrupted time series, but the pre-trend check failed: the comparison series did not move like the treated series before the start."
            else:
                level, why = 2, "Controlled interrupted time series without a recorded pre-trend check, so comparable trends are not shown."
        else:
            level, why = 2, "Single-series interrupted time series: the counterfactual is the area's own projected trend and seasonality, with no comparison group."
        if placebo is False:
            level = max(1, level - 1)
            notes.append("the placebo-in-time check found an 'effect' at a date with no intervention, so the projected trend is not reliable")
        elif placebo == "missing":
            level = max(1, level - 1)
            notes.append("no placebo-in-time check was recorded")
        for name, what in (("autocorrelation", "autocorrelation"), ("overdispersion", "overdispersion")):
            if _status(checks, name) == "missing":
                notes.append(f"no {what} check was recorded")
    elif design == "did":
        pre = _status(checks, "pre_trend")
        if pre is True:
            level, why = 3, "Difference-in-differences with a comparison group whose pre-intervention trends were comparable (pre-trend check passed)."
        elif pre is False:
            level, why = 2, "Difference-in-differences, but the pre-trend check failed: treated and comparison areas were already diverging before the start."
        else:
            level, why = 2, "Difference-in-differences without a recorded pre-trend check, so comparable trends are not shown."
        if not record.get("comparison") and not details.get("comparison_units"):
            notes.append("the comparison group is not listed in the result")
    elif design == "synth":
        fit = _status(checks, "pre_fit")
        if fit is True:
            level, why = 3, "Synthetic control with a good pre-intervention fit to the treated area."
        elif fit is False:
            level, why = 2, "Synthetic control, but its pre-intervention fit was poor, so the synthetic comparison is not credible."
        else:
            level, why = 2, "Synthetic control without a recorded pre-fit check."
    else:
        return _out(1, f"Unrecognised design '{design or 'none'}': treated as a before-and-after comparison.")

    space = _status(checks, "placebo_in_space")
    if space is False and level > 1:
        level -= 1
        notes.append("placebo tests in untreated areas found 'effects' of similar size, so the estimate may reflect chance or wider trends")

    assignment = str(details.get("assignment", "")).lower()
    if assignment in ("randomised", "randomized") and level >= 2:
        level, why = 5, "Areas or people were randomly assigned to the intervention."
    elif assignment in ("quasi_random", "quasi-random") and level >= 3:
        level, why = 4, why + " Exposure varied quasi-randomly."
    reason = why
    if notes:
        reason += " Lowered or qualified because " + "; ".join(notes) + "."
    return _out(level, reason)


def _out(level: int, reason: str) -> dict[str, Any]:
    return {"level": int(level), "label": LABELS[level], "short": SHORT[level], "reason": reason}
