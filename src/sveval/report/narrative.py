"""Report text and tables built from a context and a result (used by every notebook).

Notebooks stay thin: they call these functions and display what comes back, so the same words and
tables are reachable from Python and the CLI.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sveval.pipeline.record import ResultRecord
from sveval.report.escape import md_escape
from sveval.report.prose import (  # noqa: F401  (power_paragraph re-exported for notebooks)
    evidence_text,
    fmt_effect,
    plain_english,
    power_paragraph,
    value_for_money_text,
)
from sveval.result import Effect, Result

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
    e = md_escape  # registry text is data: escaped, never live Markdown or HTML
    lines = [
        f"**Intervention:** {e(iv.title)} (priority {e(iv.priority)}). {e(iv.description)}".strip(),
        "",
        f"**Outcome measure:** {e(m.name)}. {e(m.description)}".strip(),
        "",
        f"**Area:** {e(ctx.area_label)}. **Analysed period:** {ctx.start} to {ctx.end} "
        f"({ctx.pre_months} months before, {ctx.post_months} months from the start).",
        "",
        f"**Intervention start:** {ctx.intervention_start}"
        + (f", phased in over {spec.its.phase_in_months} months" if spec.design == "its" and spec.its.phase_in_months else "")
        + ".",
    ]
    if ctx.comparison:
        lines += ["", f"**Comparison:** {e(ctx.catalog.areas_label(ctx.comparison))}."]
    return "\n".join(lines)


def published_series(record: ResultRecord) -> pd.DataFrame:
    """The disclosure-controlled series of a result record as a frame (for the published figure)."""
    df = pd.DataFrame(record.series or {})
    for col in ("observed", "fitted", "counterfactual", "cf_low", "cf_high"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def disclosure_note(record: ResultRecord) -> str:
    dc = record.disclosure_control
    if dc is not None and (dc.suppressed_points or (dc.controlled and dc.class_ == "hospital")):
        return (f"Observed values are shown after disclosure control ({dc.rule}); "
                f"{dc.suppressed_points} suppressed month(s) are not drawn. Model estimates are exempt.")
    return ""


WITHHELD = ("Not published for this measure: it would be computed from counts that disclosure control "
            "suppresses or rounds (see the data and disclosure page).")


def _protected(record: ResultRecord) -> bool:
    """True when the measure's disclosure class changes counts (suppression or rounding)."""
    dc = record.disclosure_control
    return dc is not None and dc.class_ not in ("police", "none", "model")


def published_table(record: ResultRecord, result: Result, name: str) -> pd.DataFrame | None:
    """A figure's or table's frame as it may be published.

    For measures whose counts are not controlled (police recorded crime) this is the design's table.
    For protected measures (hospital data) tables computed from uncontrolled counts are not
    published: the synthetic-control gap is recomputed from the controlled observed series (a
    suppressed month is a gap), and group means, balance tables and donors' placebo gaps (other
    areas' uncontrolled counts) are withheld (None).
    """
    table = result.tables.get(name)
    if table is None:
        return None
    if not _protected(record):
        return table.copy()
    if name == "gaps":
        s = published_series(record)
        treated = result.details.get("treated_unit", "treated")
        return pd.DataFrame({"period": s["period"], treated: s["observed"] - s["counterfactual"]})
    return None


def unit_label(ctx: Any) -> str:
    """The y-axis label of the main figure: the outcome's own unit."""
    m, spec = ctx.measure, ctx.spec
    if spec.design == "synth" and spec.synth.outcome == "rate":
        return f"Rate per {m.rate_per:,} population per month"
    if m.kind == "continuous":
        return "Value per month"
    return "Count per month"


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
                "Unit": "% change" if e.scale in ("rate_ratio", "percent_change") else e.unit,
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
                "Unit": p.unit,
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


def verdict(ctx: Any, result: Result) -> str:
    """Plain-English summary for report readers."""
    return plain_english(result, md_escape(ctx.measure.name.lower()))


def warnings_markdown(result: Result) -> str:
    if not result.warnings:
        return "No warnings were raised."
    return "\n".join(f"- {md_escape(w)}" for w in result.warnings)


def evidence_markdown(record: ResultRecord) -> str:
    """Evidence strength in a report (the same words as the site's)."""
    if record.evidence is None:
        return "Evidence strength was not assessed."
    return f"**Maryland Scientific Methods Scale** {evidence_text(record.evidence.model_dump(), long=True)}"


def value_markdown(record: ResultRecord) -> str:
    """Value for money in a report (the same words as the site's)."""
    return value_for_money_text(record.value_for_money, long=True, reason=record.value_for_money_reason)


def provenance_markdown(record: ResultRecord) -> str:
    prov = record.provenance
    return "\n".join(
        [
            f"- Parameter file: {md_escape(prov.parameter_file or '')}",
            f"- Data source: {md_escape(prov.data_source or '')} ({prov.data_files or 0} files, "
            f"sha256 {str(prov.data_sha256 or '')[:12]}...)",
            f"- sveval {prov.sveval_version}, commit {str(prov.git_commit or 'unknown')[:10]}",
            f"- Generated {prov.generated_at}",
        ]
    )
