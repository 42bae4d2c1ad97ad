"""Report text and tables built from a context and a result (used by every notebook).

Notebooks stay thin: they call these functions and display what comes back, so the same words and
tables are reachable from Python and the CLI.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sveval.result import Effect, Result, fmt_effect, plain_english

EFFECT_LABELS = {
    "level_change": "Immediate change in level",
    "slope_change": "Change in trend (per year)",
    "average_post_effect": "Average effect over the post period",
}


def _fmt_p(p: float | None) -> str:
    if p is None or pd.isna(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def overview(ctx: Any) -> str:
    """Markdown: what was evaluated, where, when, against what."""
    spec, m, iv = ctx.spec, ctx.measure, ctx.intervention
    lines = [
        f"**Intervention:** {iv.title} (priority {iv.priority}). {iv.description}".strip(),
        "",
        f"**Outcome measure:** {m.name}. {m.description}".strip(),
        "",
        f"**Area:** {ctx.area_label}. **Analysed period:** {ctx.start} to {ctx.end} "
        f"({ctx.pre_months} months before, {ctx.post_months} months from the start).",
        "",
        f"**Intervention start:** {ctx.intervention_start}"
        + (f", phased in over {spec.its.phase_in_months} months" if spec.design == "its" and spec.its.phase_in_months else "")
        + ".",
    ]
    if ctx.comparison:
        lines += ["", f"**Comparison:** {ctx.catalog.areas_label(ctx.comparison)}."]
    return "\n".join(lines)


def published_series(record: dict[str, Any]) -> pd.DataFrame:
    """The disclosure-controlled series of a result JSON as a frame (for the published figure)."""
    series = record.get("series") or {}
    df = pd.DataFrame(series)
    for col in ("observed", "fitted", "counterfactual", "cf_low", "cf_high"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def disclosure_note(record: dict[str, Any]) -> str:
    dc = record.get("disclosure_control") or {}
    if dc.get("suppressed_points") or (dc.get("controlled") and dc.get("class") == "hospital"):
        return (f"Observed values are shown after disclosure control ({dc.get('rule', '')}); "
                f"{dc.get('suppressed_points', 0)} suppressed month(s) are not drawn. Model estimates are exempt.")
    return ""


def effect_label(e: Effect) -> str:
    return EFFECT_LABELS.get(e.name, e.name.replace("_", " ").capitalize())


def effects_table(result: Result) -> pd.DataFrame:
    """The effects as a reader-facing table (model estimates only: exempt from disclosure control)."""
    rows = []
    for e in result.effects:
        rows.append(
            {
                "Effect": effect_label(e),
                "Scale": e.scale.replace("_", " "),
                "Estimate (95% CI)": fmt_effect(e),
                "p-value": _fmt_p(e.p_value),
            }
        )
    if result.prevented is not None:
        p = result.prevented
        rows.append(
            {
                "Effect": f"{p.unit.capitalize()} prevented ({p.months} months)",
                "Scale": "count",
                "Estimate (95% CI)": f"{p.estimate:.0f} ({p.ci_low:.0f} to {p.ci_high:.0f})",
                "p-value": "-",
            }
        )
    return pd.DataFrame(rows)


def diagnostics_table(result: Result) -> pd.DataFrame:
    rows = []
    for c in result.diagnostics:
        verdict = {True: "passed", False: "concern", None: "-"}[c.passed]
        rows.append(
            {
                "Check": c.name.replace("_", " ").capitalize(),
                "What it tests": c.description,
                "Statistic": "-" if c.statistic is None or pd.isna(c.statistic) else f"{c.statistic:.3g}",
                "p-value": _fmt_p(c.p_value),
                "Verdict": verdict,
                "Detail": c.detail,
            }
        )
    return pd.DataFrame(rows)


def power_text(result: Result) -> str:
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


def verdict(ctx: Any, result: Result) -> str:
    """Plain-English summary for report readers."""
    return plain_english(result, ctx.measure.name.lower())


def warnings_markdown(result: Result) -> str:
    if not result.warnings:
        return "No warnings were raised."
    return "\n".join(f"- {w}" for w in result.warnings)


def evidence_markdown(record: dict[str, Any]) -> str:
    ev = record.get("evidence")
    if not ev:
        return "Evidence strength was not assessed."
    return f"**Maryland Scientific Methods Scale level {ev.get('level')}** ({ev.get('label', '')}). {ev.get('reason', '')}"


def value_markdown(record: dict[str, Any]) -> str:
    v = record.get("value_for_money")
    if not v:
        reason = record.get("value_for_money_reason") or "no cost or no unit cost of crime for this measure"
        return f"Value for money was not computed: {reason}."
    def gbp(x):
        return "-" if x is None else f"£{x:,.0f}"
    text = (
        f"Estimated benefit {gbp(v.get('benefit_gbp'))} (95% CI {gbp(v.get('benefit_ci_low'))} to "
        f"{gbp(v.get('benefit_ci_high'))}) at {v.get('price_year', '')} prices, against a cost of "
        f"{gbp(v.get('cost_gbp'))}"
    )
    if v.get("bcr") is not None:
        text += f": benefit-cost ratio {v['bcr']:.2f}"
        if v.get("bcr_ci_low") is not None:
            text += f" (95% CI {v['bcr_ci_low']:.2f} to {v['bcr_ci_high']:.2f})"
    text += "."
    caveats = v.get("caveats") or []
    if caveats:
        text += "\n\n" + "\n".join(f"- {c}" for c in caveats)
    return text


def provenance_markdown(record: dict[str, Any]) -> str:
    prov = record.get("provenance", {})
    return "\n".join(
        [
            f"- Parameter file: `{prov.get('parameter_file', '')}`",
            f"- Data source: {prov.get('data_source', '')} ({prov.get('data_files', 0)} files, "
            f"sha256 {str(prov.get('data_sha256', ''))[:12]}...)",
            f"- sveval {prov.get('sveval_version', '')}, commit {str(prov.get('git_commit') or 'unknown')[:10]}",
            f"- Generated {prov.get('generated_at', '')}",
        ]
    )
