"""Report prose: every sentence that states an effect, its uncertainty, power or value, once.

The notebooks, the site and the returns all use these functions, so an effect reads the same
wherever it appears.
"""

from __future__ import annotations

import math
from typing import Any

from sveval.result import DEFAULT_UNITS, Effect, Result


def fmt_effect(e: Effect, digits: int = 1) -> str:
    """Human-readable effect with interval and unit, e.g. ``-18.2% (95% CI -29.0% to -5.8%)`` for a
    rate ratio, ``-0.42 events per month (95% CI -0.80 to -0.05)`` for a difference."""
    level = int(round(e.ci_level * 100))

    def bound(v: float, unit: str, d: int) -> str:
        # an infinite bound (profile likelihood when the data set no limit) is said in words
        if math.isinf(v):
            return "no upper limit" if v > 0 else "no lower limit"
        return f"{v:+.{d}f}{unit}"

    if e.scale in ("rate_ratio", "percent_change"):
        est, lo, hi = e.percent()
        return f"{est:+.{digits}f}% ({level}% CI {bound(lo, '%', digits)} to {bound(hi, '%', digits)})"
    unit = f" {e.unit}" if e.unit and e.unit != DEFAULT_UNITS["difference"] else ""
    return (f"{e.estimate:+.{digits + 1}f}{unit} ({level}% CI {bound(e.ci_low, '', digits + 1)} to "
            f"{bound(e.ci_high, '', digits + 1)})")


def plain_english(result: Result, measure_name: str = "the measure") -> str:
    """A short plain-English reading of a result, honest about uncertainty and power."""
    e = result.headline
    parts: list[str] = []
    if e.scale in ("rate_ratio", "percent_change"):
        est, lo, hi = e.percent()
        direction = "lower" if est < 0 else "higher"
        parts.append(
            f"After the intervention, {measure_name} was an estimated {abs(est):.0f}% {direction} "
            f"than expected had it not happened (95% confidence interval {lo:+.0f}% to {hi:+.0f}%)."
        )
    else:
        direction = "lower" if e.estimate < 0 else "higher"
        parts.append(
            f"After the intervention, {measure_name} was an estimated {abs(e.estimate):.2f}"
            f"{' ' + e.unit if e.unit and e.unit != DEFAULT_UNITS['difference'] else ''} "
            f"{direction} than expected had it not happened (95% confidence interval "
            f"{e.ci_low:+.2f} to {e.ci_high:+.2f})."
        )
    if e.improved is True:
        parts.append("The interval excludes no change: the data support a reduction.")
    elif e.improved is False:
        parts.append("The interval excludes no change: the measure got worse, not better.")
    else:
        if result.power is not None and result.power.underpowered:
            parts.append(
                "The interval includes no change, and the evaluation is underpowered "
                f"(it could only reliably detect a fall of {100 * (result.power.mde or float('nan')):.0f}% "
                "or more), so this is not evidence that the intervention had no effect."
            )
        else:
            parts.append(
                "The interval includes no change, so the data cannot rule out that the "
                "intervention made no difference."
            )
    p = result.prevented
    if p is not None:
        parts.append(
            f"That is about {p.estimate:.0f} {p.unit} prevented over {p.months} months "
            f"(95% CI {p.ci_low:.0f} to {p.ci_high:.0f}); negative numbers mean more than expected."
        )
    return " ".join(parts)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v == v for v in values)


def effect_text(e: Effect | None) -> str:
    """Effect with its interval; rate ratios shown as % change (as :func:`fmt_effect`)."""
    if e is None:
        return "No estimate"
    if _finite(e.estimate, e.ci_low, e.ci_high):
        return fmt_effect(e)
    if _finite(e.estimate, e.ci_low) and e.ci_high is None and e.scale == "rate_ratio":
        # JSON stores an infinite bound as null: a profile-likelihood interval the data leave open
        return f"{100 * (e.estimate - 1):+.1f}% ({int(round(e.ci_level * 100))}% CI " \
               f"{100 * (e.ci_low - 1):+.1f}% to no upper limit)"
    if _finite(e.estimate):
        if e.scale == "rate_ratio":
            return f"{100 * (e.estimate - 1):+.1f}% (interval not available)"
        return f"{e.estimate:+.2f} (interval not available)"
    return "No estimate"


def effect_unit(e: Effect | None) -> str:
    """The unit an effect is stated in, in words.

    Rate ratios and percentage changes are a percentage change against what was expected without
    the intervention; a difference is on the scale its description names (``difference in the rate
    per 100,000 population per month``), else on the measure's own scale, per month.
    """
    if e is None:
        return ""
    if e.scale == "rate_ratio":
        return "percentage change against the expected level without the intervention"
    desc = " ".join(str(e.description or "").split())
    if e.scale == "percent_change":
        head = desc.split(";")[0].strip()
        return f"percentage change ({head})" if head else "percentage change"
    head = desc.split(";")[0].strip()
    if head.lower().startswith("difference"):
        return head
    return "difference on the measure's own scale (events per month)"


def effect_with_unit(e: Effect | None) -> str:
    """:func:`effect_text` followed by the effect's unit (:func:`effect_unit`)."""
    text = effect_text(e)
    unit = effect_unit(e)
    return f"{text}; {unit}" if e is not None and unit and text != "No estimate" else text


def effect_unit_short(e: Effect | None) -> str:
    """A short axis or column label for the unit: ``% change`` or the difference's unit."""
    if e is None:
        return ""
    if e.scale in ("rate_ratio", "percent_change"):
        return "% change against expected"
    return effect_unit(e)


def evidence_text(evidence: Any, *, long: bool = False) -> str:
    """``evidence`` {level, label, short, reason} (from :mod:`sveval.pipeline.evidence`) as text.

    Short form: ``Level 2 (limited)``; long form: the label and the reason.
    """
    if not isinstance(evidence, dict) or not evidence:
        return "Not assessed"
    level, label = evidence.get("level"), str(evidence.get("label") or "").strip()
    if level is not None and not label.lower().startswith("level"):
        label = f"Level {level}: {label}" if label else f"Level {level}"
    if not long:
        head = f"Level {level}" if level is not None else label
        return f"{head} ({evidence['short']})" if evidence.get("short") else (head or "Not assessed")
    reason = str(evidence.get("reason") or "").strip()
    return f"{label}. {reason}".strip() if reason else (label or "Not assessed")


def _gbp(v: Any) -> str:
    return f"£{v:,.0f}" if _finite(v) else "-"


def value_for_money_text(vfm: Any, *, long: bool = False, reason: Any = None) -> str:
    """``value_for_money`` (from :mod:`sveval.pipeline.value`) as text.

    Reads ``bcr`` with ``bcr_ci_low``/``bcr_ci_high``, ``benefit_gbp`` with its interval,
    ``cost_gbp``, ``price_year`` and ``caveats``; ``reason`` (the record's
    ``value_for_money_reason``) explains a missing assessment. A plain string is shown as it is.
    """
    if isinstance(vfm, str) and vfm.strip():
        return vfm.strip()
    if not isinstance(vfm, dict) or not vfm:
        why = str(reason or "").strip()
        if why.lower().startswith("not assessed"):
            # an unclear effect: said as such, short form without the explanation
            head, _, rest = why.partition(" (")
            return (why[0].upper() + why[1:]) if long else (head[0].upper() + head[1:])
        if long and why:
            return f"Not estimated: {why}"
        return "Not estimated"
    bcr, lo, hi = vfm.get("bcr"), vfm.get("bcr_ci_low"), vfm.get("bcr_ci_high")
    year = vfm.get("price_year")
    if not long:
        if _finite(bcr):
            text = f"Benefit-cost ratio {bcr:.2f}"
            return text + (f" (95% CI {lo:.2f} to {hi:.2f})" if _finite(lo, hi) else "")
        if _finite(vfm.get("benefit_gbp")):
            return f"Benefit {_gbp(vfm['benefit_gbp'])}; no cost recorded"
        return "Not estimated"
    parts = []
    if _finite(vfm.get("benefit_gbp")):
        parts.append(
            f"Estimated benefit {_gbp(vfm['benefit_gbp'])} (95% CI {_gbp(vfm.get('benefit_ci_low'))} to "
            f"{_gbp(vfm.get('benefit_ci_high'))})" + (f" at {year} prices" if year else "")
        )
    if _finite(vfm.get("cost_gbp")):
        parts.append(f"against a cost of {_gbp(vfm['cost_gbp'])}")
    text = ", ".join(parts)
    if _finite(bcr):
        text += f": benefit-cost ratio {bcr:.2f}" + (f" (95% CI {lo:.2f} to {hi:.2f})" if _finite(lo, hi) else "")
    text = (text + ".") if text else "Not estimated."
    caveats = [str(c) for c in vfm.get("caveats") or [] if c]
    return text + (" " + " ".join(caveats) if caveats else "")


def power_text(power: Any) -> str:
    if not isinstance(power, dict) or power.get("mde") is None:
        return "Not computed"
    text = f"Could detect a fall of {100 * power['mde']:.0f}% or more"
    tp = power.get("target_power")
    if _finite(tp):
        text += f" with {100 * tp:.0f}% power"
    if power.get("underpowered"):
        text += " (underpowered)"
    return text


def value_paragraph(value: dict[str, Any] | None, reason: str | None = None) -> str:
    """One plain-English paragraph on value for money."""
    if value is None:
        if str(reason or "").lower().startswith("not assessed"):
            return f"Value for money is {reason}."
        return f"Value for money is not estimated: {reason or 'not computable'}."
    py = value["price_year"]
    s = (
        f"At {py} prices, the estimated {value['prevented']:.0f} events prevented are worth about "
        f"{value['benefit_gbp']:,.0f} pounds in avoided costs of crime (95% CI {value['benefit_ci_low']:,.0f} "
        f"to {value['benefit_ci_high']:,.0f})"
    )
    if value["cost_gbp"] is not None:
        s += f", against a cost of {value['cost_gbp']:,.0f} pounds"
        if value["bcr"] is not None:
            s += (f": a benefit-cost ratio of {value['bcr']:.2f} (95% CI {value['bcr_ci_low']:.2f} to "
                  f"{value['bcr_ci_high']:.2f})")
    return s + ". " + " ".join(value["caveats"][:1])


def power_paragraph(result: Result) -> str:
    pw = result.power
    if pw is None:
        return "Power was not computed for this evaluation."
    if pw.mde is None:
        return (
            f"With {pw.post_months} post-period months, no fall of up to the largest simulated size reached "
            f"{pw.target_power:.0%} power: the evaluation is underpowered."
        )
    text = (
        f"With {pw.post_months} post-period months, a fall of {pw.mde:.0%} or more would be detected "
        f"{pw.target_power:.0%} of the time at the {pw.alpha:.0%} level (minimum detectable effect)."
    )
    if pw.underpowered:
        text += (
            f" This is above the {pw.threshold:.0%} threshold: the evaluation is **underpowered**, and a "
            "non-significant result must not be read as evidence that the intervention had no effect."
        )
    return text
