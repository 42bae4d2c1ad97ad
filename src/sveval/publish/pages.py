"""Page builders of the site's overview: the home page, the listing, the Home Office measures page,
downloads and the tidying of notebook pages.

The home page answers, on arrival, "what works for each of our four priorities, against the three
Home Office measures?": an at-a-glance matrix (priority x measure: verdict in words and colour,
evidence level, link), a forest plot of every headline effect with its unit, then per priority its
interventions and their evaluations, each sensitivity variant grouped under the evaluation it tests
(``sensitivity_of`` in the parameter file, carried by the result record).

Tables pass the disclosure gate of :mod:`sveval.publish.site`, which is handed in as a
:class:`Gate` (this module never imports ``site``, so the two do not import each other).
Text is escaped by :mod:`sveval.publish.text`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import yaml

from sveval.errors import PublishError
from sveval.publish.records import EvaluationRecord, SiteContent, short_verdict, verdict_text
from sveval.publish.text import env, front_matter, md_escape, md_link, tidy
from sveval.report.prose import (
    effect_text,
    effect_unit_short,
    effect_with_unit,
    evidence_text,
    power_text,
    value_for_money_text,
)

#: The Serious Violence Duty's three headline measures (fixed nationally by the Home Office), used
#: when no catalog is given; with a catalog they are the measures marked ``headline: true`` that
#: split no other measure.
HOME_OFFICE_MEASURES: dict[str, str] = {
    "homicide": "Homicide",
    "knife_admissions": "Hospital admissions for assault with a sharp object",
    "knife_crime": "Police-recorded knife crime",
}
LOCAL = "local"

#: verdict class -> the words shown (colour is never the only signal)
VERDICT_WORDS = {
    "improvement": "Improvement",
    "worse": "Worse",
    "unclear": "No clear change",
    "failed": "Failed",
    "none": "Not evaluated",
}
VERDICT_ICON = {"improvement": "▼", "worse": "▲", "unclear": "◆", "failed": "✖", "none": "–"}

FIGURES_DIR = "figures"
DOWNLOADS_DIR = "downloads"
SITE_CSS = "sveval-site.css"
DOWNLOADS_CELL = "downloads written by sveval publish"
SCROLL_TABLES = "scroll-tables.html"


@dataclass(frozen=True)
class Gate:
    """The disclosure gate, handed in by :mod:`sveval.publish.site`.

    ``control(frame, name=..., roles=...)`` returns a controlled table (it logs the table's name);
    ``markdown(controlled)`` writes it as a pipe table.
    """

    control: Callable[..., Any]
    markdown: Callable[[Any], str]
    rules: Any = None  # disclosure rules for observed counts; without them counts are not published

    def table(self, frame: pd.DataFrame, name: str, roles: Mapping[str, str]) -> str:
        return self.markdown(self.control(frame, name=name, roles=dict(roles)))




def span(text: str, *classes: str) -> str:
    """A Pandoc bracketed span (``[text]{.a .b}``); the fallback renderer turns it into <span>."""
    return f"[{text}]{{{' '.join('.' + c for c in classes)}}}"


# ------------------------------------------------------------------------------------------------
# Grouping: priorities, measures, main evaluations and their sensitivity variants
# ------------------------------------------------------------------------------------------------
def sensitivity_target(rec: EvaluationRecord) -> str | None:
    """The evaluation ``rec`` is a sensitivity variant of (record field, else its parameters)."""
    target = rec.data.get("sensitivity_of")
    if not target:
        params = (rec.data.get("provenance") or {}).get("parameters") or {}
        target = params.get("sensitivity_of") if isinstance(params, dict) else None
    return str(target) if target else None


def verdict_class(rec: EvaluationRecord) -> str:
    """``improvement``, ``worse``, ``unclear`` or ``failed`` from the headline interval."""
    words = short_verdict(rec)
    if words.startswith("Failed"):
        return "failed"
    if words.startswith("Improvement"):
        return "improvement"
    if words.startswith("Worse"):
        return "worse"
    return "unclear"


def verdict_span(kind: str) -> str:
    return span(f"{VERDICT_ICON[kind]} {VERDICT_WORDS[kind]}", "verdict", f"verdict-{kind}")


@dataclass
class Overview:
    """Evaluations grouped for the home page."""

    mains: list[EvaluationRecord]
    variants: dict[str, list[EvaluationRecord]]
    priorities: dict[int, str]
    measures: dict[str, str]  # Home Office measure id -> name
    parents: dict[str, str]  # measure id -> Home Office measure it counts under (itself or parent)
    interventions: dict[str, Any] = field(default_factory=dict)
    short_names: dict[str, str] = field(default_factory=dict)  # measure id -> short name

    def column(self, rec: EvaluationRecord) -> str:
        return self.parents.get(str(rec.data.get("measure")), LOCAL)

    def priority(self, rec: EvaluationRecord) -> int | None:
        p = rec.data.get("priority")
        return int(p) if isinstance(p, int | float) else None


def priority_names(catalog: Any) -> dict[int, str]:
    """Priority number -> name, from ``priorities:`` in ``interventions.yaml`` when present."""
    pdir = getattr(catalog, "parameters_dir", None)
    names: dict[int, str] = {}
    if pdir is not None and (Path(pdir) / "interventions.yaml").is_file():
        from sveval.spec import InterventionRegistry, load_model

        names = dict(load_model(InterventionRegistry, Path(pdir) / "interventions.yaml").priorities)
    return names


def overview(content: SiteContent, catalog: Any) -> Overview:
    ids = {r.id for r in content.evaluations}
    variants: dict[str, list[EvaluationRecord]] = {}
    mains = []
    for r in content.evaluations:
        target = sensitivity_target(r)
        if target and target in ids and target != r.id:
            variants.setdefault(target, []).append(r)
        else:
            mains.append(r)
    if catalog is not None and getattr(catalog, "measures", None):
        ho = {m.id: m.short_name or m.name for m in catalog.measures.values() if m.headline and not m.parent}
        parents = {m.id: (m.parent or m.id) for m in catalog.measures.values() if m.headline}
        parents = {k: v for k, v in parents.items() if v in ho}
    else:
        ho = dict(HOME_OFFICE_MEASURES)
        parents = {**{k: k for k in ho}, **{f"{k}_u25": k for k in ho}}
    names = priority_names(catalog)
    for r in content.evaluations:
        p = r.data.get("priority")
        if isinstance(p, int) and p not in names:
            names[p] = f"Priority {p}"
    shorts = {m.id: (m.short_name or m.name) for m in getattr(catalog, "measures", {}).values()} \
        if catalog is not None and getattr(catalog, "measures", None) else {}
    return Overview(mains, variants, dict(sorted(names.items())), ho, parents,
                    dict(getattr(catalog, "interventions", {}) or {}), shorts)


# ------------------------------------------------------------------------------------------------
# Effects with units (the forest plot's rows)
# ------------------------------------------------------------------------------------------------
def _display(e: Any) -> tuple[float, float, float, float] | None:
    """(estimate, low, high, null) on the display scale: % change for ratios, else the difference."""
    if e is None or e.estimate is None or not math.isfinite(e.estimate):
        return None

    def conv(v: Any, open_: float) -> float:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return open_
        return 100.0 * (v - 1.0) if e.scale == "rate_ratio" else float(v)

    return conv(e.estimate, math.nan), conv(e.ci_low, -math.inf), conv(e.ci_high, math.inf), 0.0


def forest_rows(ov: Overview) -> list[dict[str, Any]]:
    """The forest plot's rows: the fields of :class:`sveval.report.plots.overview.ForestRow`, as
    plain data (picklable, and built without importing matplotlib)."""
    rows = []
    for r in ov.mains:
        if r.failed or r.headline is None:
            continue
        shown = _display(r.headline)
        if shown is None:
            continue
        est, lo, hi, null = shown
        p = ov.priority(r)
        label = f"P{p} · " if p is not None else ""
        measure = ov.short_names.get(str(r.data.get("measure")), r.measure_name)
        label += f"{_short(measure, 40)} · {DESIGN_SHORT.get(r.design, r.design)}"
        rows.append({"label": label, "unit": _upper_first(effect_unit_short(r.headline)),
                     "estimate": est, "low": lo, "high": hi, "verdict": verdict_class(r), "null": null,
                     "ratio": r.headline.scale == "rate_ratio"})
    return rows


DESIGN_SHORT = {
    "Interrupted time series": "ITS", "Controlled interrupted time series": "CITS",
    "Difference-in-differences": "DiD", "Two-way fixed effects DiD": "TWFE DiD",
    "Staggered difference-in-differences": "staggered DiD", "Synthetic control": "synthetic control",
}


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def forest_alt(rows: Sequence[Mapping[str, Any]]) -> str:
    """Alt text of the forest plot: what it shows and every row (:func:`forest_rows`) in words."""
    parts = [f"Forest plot of {len(rows)} headline effect(s) with 95% confidence intervals, one panel per unit."]
    for r in rows:
        lo = "no lower limit" if not math.isfinite(r["low"]) else f"{r['low']:+.1f}"
        hi = "no upper limit" if not math.isfinite(r["high"]) else f"{r['high']:+.1f}"
        parts.append(f"{r['label']}: {r['estimate']:+.1f} ({lo} to {hi}) {r['unit'].lower()}, "
                     f"{VERDICT_WORDS.get(r['verdict'], r['verdict']).lower()}.")
    return " ".join(parts)


def draw_figure(figures: Any, figure: str, path: Path, *args: Any, **kwargs: Any) -> Path:
    """Draw ``figure`` (a name in :data:`sveval.report.plots.overview.FIGURES`) to the SVG ``path``:
    here and now when ``figures`` is None, else handed to ``figures`` (a
    :class:`sveval.publish.workers.Helper`, which draws it in its worker; wait for it with
    ``figures.wait()`` before reading the file). Returns ``path``."""
    if figures is None:
        from sveval.report.plots.overview import draw_svg

        return draw_svg(figure, path, *args, **kwargs)
    figures.submit("sveval.report.plots.overview:draw_svg", figure, Path(path), *args, **kwargs)
    return Path(path)


def write_forest(ov: Overview, stage: Path, figures: Any = None) -> tuple[str, str] | None:
    """Draw the forest plot into ``stage/figures/forest.svg`` (see :func:`draw_figure` for
    ``figures``); returns (path, alt) or None."""
    rows = forest_rows(ov)
    if not rows:
        return None
    draw_figure(figures, "forest_plot_of", stage / FIGURES_DIR / "forest.svg", rows)
    return f"{FIGURES_DIR}/forest.svg", forest_alt(rows)


# ------------------------------------------------------------------------------------------------
# The home page
# ------------------------------------------------------------------------------------------------
def _cell(recs: Sequence[EvaluationRecord], ov: Overview) -> str:
    if not recs:
        return verdict_span("none")
    bits = []
    for r in recs:
        kind = verdict_class(r)
        ev = r.data.get("evidence") or {}
        level = f"evidence level {ev['level']}" if isinstance(ev, dict) and ev.get("level") else "evidence not assessed"
        split = "(under 25)" if str(r.data.get("measure", "")).endswith("_u25") else ""
        bits.append(f"{verdict_span(kind)}{(' ' + md_escape(split)) if split else ''}, {level}: "
                    f"{md_link(r.design, r.page)}")
    return " <br> ".join(bits)


def matrix_table(ov: Overview, gate: Gate) -> str:
    columns = list(ov.measures)
    rows = []
    for p, name in ov.priorities.items():
        mains = [r for r in ov.mains if ov.priority(r) == p]
        row = {"Priority": f"**{p}.** {md_escape(name)}"}
        for mid in columns:
            row[md_escape(ov.measures[mid])] = _cell([r for r in mains if ov.column(r) == mid], ov)
        row["Local measures"] = _cell([r for r in mains if ov.column(r) == LOCAL], ov)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["Priority", *[md_escape(ov.measures[m]) for m in columns], "Local measures"])
    return gate.table(frame, "index.matrix", {c: "label" for c in frame.columns})


def _details(r: EvaluationRecord, catalog: Any, downloads: Mapping[str, str]) -> str:
    d = r.data
    comparison = d.get("comparison") or []
    names = [catalog.area_name(c) if catalog is not None else c for c in comparison]
    items = [
        ("Outcome", r.measure_name),
        ("Area", r.area_name),
        ("Compared with", ", ".join(names) if names else None),
        ("Design", f"{r.design}: {d['method']}" if d.get("method") else r.design),
        ("Headline effect", effect_with_unit(r.headline)),
        ("Strength of evidence", evidence_text(d.get("evidence"), long=True)),
        ("Value for money", value_for_money_text(d.get("value_for_money"), long=True,
                                                 reason=d.get("value_for_money_reason"))),
        ("Power", power_text(d.get("power"))),
    ]
    lines = [f"- **{k}:** {md_escape(v)}" for k, v in items if v not in (None, "", [])]
    links = [md_link("full report", r.page)] if r.page else []
    if r.id in downloads:
        links.append(md_link("result JSON", downloads[r.id]))
    if f"{r.id}:csv" in downloads:
        links.append(md_link("figure data (CSV)", downloads[f"{r.id}:csv"]))
    if links:
        lines.append("- **Read and download:** " + " · ".join(links))
    return "\n".join(lines)


def _variants_table(main: EvaluationRecord, variants: Sequence[EvaluationRecord], gate: Gate) -> str:
    frame = pd.DataFrame(
        [
            {
                "Sensitivity analysis": md_link(v.title, v.page),
                "Model": md_escape(v.data.get("method") or v.design),
                "Headline effect (95% CI)": "-" if v.failed else md_escape(effect_with_unit(v.headline)),
                "Verdict": verdict_span(verdict_class(v)),
            }
            for v in variants
        ]
    )
    return gate.table(frame, f"index.sensitivity.{main.id}",
                      {"Sensitivity analysis": "label", "Model": "label",
                       "Headline effect (95% CI)": "estimate", "Verdict": "label"})


def index_page(content: SiteContent, site_title: str, catalog: Any, gate: Gate, stage: Path,
               *, description: str, downloads: Mapping[str, str], returns: Sequence[tuple[str, str]],
               measures_page: str | None, figures: Any = None) -> str:
    """Markdown of the home page (see the module docstring); ``figures`` as for :func:`draw_figure`."""
    ov = overview(content, catalog)
    partnership = getattr(catalog, "partnership", None)
    who = f"the {partnership} partnership" if partnership else "the partnership"
    n_var = sum(len(v) for v in ov.variants.values())
    intro = (
        f"What works against serious violence for {who}, under the Serious Violence Duty: "
        f"{len(ov.mains)} evaluation{'s' if len(ov.mains) != 1 else ''} of the partnership's "
        "interventions, read against its four priorities and the Home Office's three headline "
        "measures" + (f", with {n_var} sensitivity analyses grouped under the evaluation each tests" if n_var else "")
        + ". How results are estimated is under [Methods](methods.qmd); what is published and how it "
        "is protected under [Data and disclosure](data.qmd); every evaluation, sortable and "
        "filterable, under [All evaluations](evaluations.qmd)."
    )
    forest = write_forest(ov, stage, figures)
    priorities = []
    for p, name in ov.priorities.items():
        recs = [r for r in ov.mains if ov.priority(r) == p and not r.failed]
        by_iv: dict[str, list[EvaluationRecord]] = {}
        for r in recs:
            by_iv.setdefault(str(r.data.get("intervention") or r.id), []).append(r)
        interventions = []
        for iv_id, ivrecs in by_iv.items():
            iv = ov.interventions.get(iv_id)
            title = (getattr(iv, "title", None) or ivrecs[0].data.get("intervention_title") or iv_id)
            evals = [
                {
                    "heading": md_link(r.title, r.page),
                    "verdict": verdict_span(verdict_class(r)) + " " + md_escape(verdict_text(r)),
                    "details": _details(r, catalog, downloads),
                    "variants": _variants_table(r, ov.variants[r.id], gate) if ov.variants.get(r.id) else "",
                    "n_variants": len(ov.variants.get(r.id, [])),
                }
                for r in ivrecs
            ]
            interventions.append({"title": md_escape(title),
                                  "description": md_escape(" ".join(str(getattr(iv, "description", "") or "").split())),
                                  "evaluations": evals})
        heading = f"Priority {p}" + ("" if name == f"Priority {p}" else f": {md_escape(name)}")
        priorities.append({"heading": heading, "interventions": interventions})
    others = [r for r in ov.mains if ov.priority(r) not in ov.priorities and not r.failed]
    failed = [
        {
            "heading": md_link(r.title, r.page),
            "summary": md_escape(
                f"{r.design} of {r.measure_name} in {r.area_name}. This evaluation failed and has no "
                "estimate." + (" Its notebook, with the error, is linked above." if r.page else "")
            ),
            "error": r.error.replace("```", "'''"),
        }
        for r in content.evaluations if r.failed
    ]
    fm = {"title": site_title, "description": description}
    return tidy(
        env().get_template("index.qmd.j2").render(
            front_matter=front_matter(fm),
            intro=intro,
            matrix=matrix_table(ov, gate) if ov.priorities else "",
            legend=" ".join(f"{verdict_span(k)}" for k in VERDICT_WORDS),
            forest=forest,
            priorities=priorities,
            others=[{"heading": md_link(r.title, r.page), "verdict": md_escape(verdict_text(r)),
                     "details": _details(r, catalog, downloads)} for r in others],
            failed=failed,
            failed_intro=(
                "These evaluations did not produce a result. They are listed so that no evaluation "
                "is silently dropped; fix the error and run them again."
            ),
            measures_page=measures_page,
            tracking=[md_link(t.title, t.page) + f": {md_escape(t.description)}" for t in content.tracking],
            returns=[md_link(label, href) for label, href in returns],
        )
    )


# ------------------------------------------------------------------------------------------------
# The listing of all evaluations (Quarto listing over generated metadata)
# ------------------------------------------------------------------------------------------------
LISTING_FIELDS = ["title", "priority", "measure", "design", "effect", "verdict", "evidence", "role"]
LISTING_NAMES = {"title": "Evaluation", "priority": "Priority", "measure": "Measure", "design": "Design",
                 "effect": "Headline effect (95% CI, unit)", "verdict": "Verdict",
                 "evidence": "Evidence", "role": "Role"}


def listing_items(content: SiteContent, catalog: Any) -> list[dict[str, Any]]:
    ov = overview(content, catalog)
    main_ids = {r.id for r in ov.mains}
    items = []
    for r in content.evaluations:
        p = ov.priority(r)
        pname = f"{p}. {ov.priorities.get(p, '')}".strip() if p is not None else "No priority"
        kind = verdict_class(r)
        ev = r.data.get("evidence")
        evidence = evidence_text(ev) if isinstance(ev, dict) and ev else "Not assessed"
        target = sensitivity_target(r)
        role = "Headline evaluation" if r.id in main_ids else f"Sensitivity analysis of {target}"
        column = ov.column(r)
        measure = ov.measures.get(column, "Local measure") if column != LOCAL else "Local measure"
        items.append({
            "title": r.title,
            "path": r.page or "index.qmd",
            "description": r.description,
            "priority": pname,
            "measure": f"{r.measure_name} ({measure})",
            "design": r.design,
            "effect": "-" if r.failed or r.headline is None else f"{effect_text(r.headline)}; {effect_unit_short(r.headline)}",
            "verdict": VERDICT_WORDS[kind],
            "evidence": evidence,
            "role": "Headline evaluation" if r.id in main_ids else "Sensitivity analysis",
            "categories": [f"Priority {p}" if p is not None else "No priority", measure, r.design,
                           VERDICT_WORDS[kind], evidence.split(" (")[0],
                           "Headline evaluation" if r.id in main_ids else "Sensitivity analysis"],
        })
        if r.id not in main_ids:
            items[-1]["description"] += f" ({role}.)"
    return items


def listing_page(content: SiteContent, catalog: Any) -> tuple[str, str]:
    """(``evaluations.qmd``, ``evaluations.yml``): a Quarto table listing with sort, filter and
    categories over metadata generated from the result records."""
    items = listing_items(content, catalog)
    fm = {
        "title": "All evaluations",
        "description": "Every evaluation with its headline effect, verdict and evidence: sort by any "
        "column, filter by text, or pick a category (priority, Home Office measure, design, verdict, "
        "evidence level, headline or sensitivity analysis).",
        "listing": {
            "id": "all-evaluations",
            "contents": "evaluations.yml",
            "type": "table",
            "fields": LISTING_FIELDS,
            "field-display-names": LISTING_NAMES,
            "sort": ["priority", "title"],
            "sort-ui": ["title", "priority", "measure", "design", "verdict", "evidence"],
            "filter-ui": True,
            "categories": True,
            "page-size": 50,
        },
    }
    body = (
        "Headline evaluations answer the partnership's questions; sensitivity analyses refit the same "
        "evaluation with another model to show how much the answer depends on the model. Effects are "
        "stated with their unit: a percentage change against the level expected without the "
        "intervention, or a difference on the scale named.\n\n"
        "::: {#all-evaluations}\n:::\n"
    )
    return (f"---\n{front_matter(fm)}\n---\n\n{body}",
            yaml.safe_dump(items, sort_keys=False, allow_unicode=True, width=4096))


# ------------------------------------------------------------------------------------------------
# Downloads
# ------------------------------------------------------------------------------------------------
def write_downloads(content: SiteContent, stage: Path, gate: Gate) -> dict[str, str]:
    """Each evaluation's result JSON (as published: disclosure-controlled by the record builder)
    and its figure data as CSV (the record's controlled ``series``, through the gate).

    Returns ``{id: json path, "id:csv": csv path}`` relative to the project root.
    """
    out: dict[str, str] = {}
    folder = stage / DOWNLOADS_DIR / "evaluations"
    for r in content.evaluations:
        if not r.json_path.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if gate.rules is None:  # no disclosure rules: the download keeps model estimates only
            doc = json.loads(r.json_path.read_text(encoding="utf-8"))
            if isinstance(doc.get("series"), dict):
                doc["series"].pop("observed", None)
            (folder / f"{r.id}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        else:  # as the record builder wrote it: disclosure-controlled by its rules
            shutil.copy2(r.json_path, folder / f"{r.id}.json")
        out[r.id] = f"{DOWNLOADS_DIR}/evaluations/{r.id}.json"
        series = r.data.get("series")
        if isinstance(series, dict) and series:
            try:
                frame = pd.DataFrame(series)
            except ValueError as exc:
                raise PublishError(f"{r.json_path}: 'series' is not a table ({exc})") from exc
            if gate.rules is None:  # no disclosure rules: model estimates only
                frame = frame.drop(columns=[c for c in ("observed",) if c in frame.columns])
            roles = {c: ("count" if c == "observed" else "label" if c in ("period", "post", "group") else "estimate")
                     for c in frame.columns}
            # the series was controlled when the record was built; 'observed' passes the gate as
            # the measure's disclosure class again (idempotent on already rounded values)
            rule = str(r.data.get("measure_disclosure") or "police")
            controlled = gate.control(frame, name=f"downloads.{r.id}.series", roles=roles, rule=rule,
                                      rules=gate.rules)
            controlled.frame.to_csv(folder / f"{r.id}-figure-data.csv", index=False)
            out[f"{r.id}:csv"] = f"{DOWNLOADS_DIR}/evaluations/{r.id}-figure-data.csv"
    return out


def copy_latest_returns(outputs_dir: Path, stage: Path) -> list[tuple[str, str]]:
    """Copy the newest Home Office return (``outputs/returns/<year>[-Qn]/``) into the site's
    downloads; returns ``(label, path)`` links, the workbook first."""
    root = Path(outputs_dir) / "returns"
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    folders = [p for p in folders if any(p.glob("*.xlsx"))]
    if not folders:
        return []
    latest = max(folders, key=lambda p: (max(f.stat().st_mtime for f in p.glob("*.xlsx")), p.name))
    dest = stage / DOWNLOADS_DIR / "returns" / latest.name
    dest.mkdir(parents=True, exist_ok=True)
    links = []
    for f in sorted(latest.iterdir(), key=lambda f: (f.suffix != ".xlsx", f.name)):
        if f.is_file() and f.suffix in (".xlsx", ".csv"):
            shutil.copy2(f, dest / f.name)
            kind = "workbook" if f.suffix == ".xlsx" else "CSV"
            links.append((f"Home Office return {latest.name}: {f.name} ({kind})",
                          f"{DOWNLOADS_DIR}/returns/{latest.name}/{f.name}"))
    return links


# ------------------------------------------------------------------------------------------------
# Notebook pages: one title, real headings, alt text, downloads
# ------------------------------------------------------------------------------------------------
_H1_LINE = re.compile(r"^\s*#\s+(.+?)\s*#*\s*$")
_HEADING = re.compile(r"^\s*#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _drop_h1(nb: nbformat.NotebookNode) -> None:
    """Remove the notebook's level-1 heading(s): the page title comes from the front matter, and a
    second title would also make the table of contents one entry deep."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        kept = [ln for ln in lines if not _H1_LINE.match(ln)]
        if len(kept) != len(lines):
            cell.source = "\n".join(kept).strip("\n")


def _md_heading(text: str) -> str | None:
    found = _HEADING.findall(text or "")
    return re.sub(r"[*_`]", "", found[-1]).strip() if found else None


def add_figure_alt(nb: nbformat.NotebookNode, page_title: str) -> int:
    """Give every figure output alt text (Quarto's ``fig-alt`` cell option and nbconvert's
    ``alt`` output metadata), from the nearest heading above it. Returns the number of figures."""
    heading = page_title
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = _md_heading(cell.source) or heading
            continue
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs") or []
        alts: list[str] = []
        local = heading
        count: dict[str, int] = {}
        for out in outputs:
            data = out.get("data") or {}
            md = data.get("text/markdown")
            if md:
                local = _md_heading(md if isinstance(md, str) else "".join(md)) or local
            images = [k for k in ("image/png", "image/svg+xml", "image/jpeg") if k in data]
            if not images:
                alts.append("")
                continue
            count[local] = count.get(local, 0) + 1
            existing = (out.get("metadata") or {}).get(images[0], {})
            alt = existing.get("alt") if isinstance(existing, dict) else None
            alt = alt or (f"Chart {count[local]} for {local} ({page_title}); its reading is in the "
                          "text beside it.")
            alts.append(alt)
            meta = out.setdefault("metadata", {})
            meta.setdefault(images[0], {})
            if isinstance(meta[images[0]], dict):
                meta[images[0]]["alt"] = alt
            n += 1
        heading = local
        if any(alts):
            cell.metadata["fig-alt"] = alts
    return n


def headings_as_document(nb: nbformat.NotebookNode) -> int:
    """Make headings written by a cell's Markdown output the page's own headings: Quarto leaves
    headings inside a cell's output out of the table of contents, so such a cell is split, in the
    published copy, into its Markdown outputs (as Markdown cells) and code cells holding the other
    outputs in their order (the code is never shown nor run). Returns the number of cells split."""
    cells, n = [], 0
    for cell in nb.cells:
        outputs = cell.get("outputs") or [] if cell.cell_type == "code" else []
        texts = [(out.get("data") or {}).get("text/markdown") for out in outputs]
        texts = [t if isinstance(t, str) or t is None else "".join(t) for t in texts]
        if not any(t and _md_heading(t) for t in texts):
            cells.append(cell)
            continue
        n += 1
        part, pending = 0, []

        def flush(cell: nbformat.NotebookNode = cell) -> None:
            nonlocal part, pending
            if pending:
                clone = nbformat.from_dict(cell)
                clone.outputs = pending
                if "id" in clone:
                    clone.id = f"{cell.get('id', 'cell')}-{part}"
                cells.append(clone)
                part += 1
                pending = []

        for out, text in zip(outputs, texts, strict=True):
            if text:
                flush()
                md = nbformat.v4.new_markdown_cell(text)
                if "id" in cell:
                    md.id = f"{cell.get('id', 'cell')}-{part}"
                else:
                    md.pop("id", None)
                part += 1
                cells.append(md)
            else:
                pending.append(out)
        flush()
    nb.cells = cells
    return n


def prepare_notebook_page(nb: nbformat.NotebookNode, title: str, *, downloads: Sequence[tuple[str, str]] = (),
                          prefix: str = "../") -> nbformat.NotebookNode:
    """The published copy of a notebook: no second title, alt text on every figure, and a
    downloads line at the top (links relative to the page)."""
    nb = nbformat.from_dict(nb)
    # the published notebook replaces its source, so a second publish must find its own cell
    nb.cells = [c for c in nb.cells
                if (c.get("metadata") or {}).get("sveval", {}).get("generated") != DOWNLOADS_CELL]
    _drop_h1(nb)
    headings_as_document(nb)
    add_figure_alt(nb, title)
    if downloads:
        links = " · ".join(md_link(label, prefix + href) for label, href in downloads)
        cell = nbformat.v4.new_markdown_cell(f"**Downloads:** {links}")
        cell.metadata = {"sveval": {"generated": DOWNLOADS_CELL}}
        if nb.nbformat_minor >= 5 or nb.nbformat > 4:
            cell.id = "sveval-downloads"
        else:
            cell.pop("id", None)
        pos = 1 if nb.cells and nb.cells[0].cell_type == "raw" else 0
        nb.cells.insert(pos, cell)
    return nb


# ------------------------------------------------------------------------------------------------
# The Home Office measures page
# ------------------------------------------------------------------------------------------------
MDC_COLOURS = {"improvement": "#41b6e6", "concern": "#ed8b00", "common": "#a6a6a6",
               "pass": "#41b6e6", "fail": "#ed8b00", "hit_and_miss": "#a6a6a6"}


def mdc_icon(kind: str, letter: str, label: str) -> str:
    """A small inline SVG in the NHS Making Data Count style, with its text equivalent beside it
    (the SVG itself is decorative: ``aria-hidden``)."""
    colour = MDC_COLOURS[kind]
    svg = (f'<svg class="mdc-icon" width="28" height="28" viewBox="0 0 28 28" aria-hidden="true" '
           f'focusable="false"><circle cx="14" cy="14" r="12" fill="#ffffff" stroke="{colour}" '
           f'stroke-width="3"/><text x="14" y="19" text-anchor="middle" font-size="13" '
           f'font-family="Arial, sans-serif" font-weight="700" fill="#212529">{letter}</text></svg>')
    return f'<span class="mdc mdc-{kind}">{svg} <span class="mdc-text">{md_escape(label)}</span></span>'


def variation_icon(chart: pd.DataFrame, better_if: str, last: int = 6) -> str:
    """Variation icon of the recent points (the same window as
    :func:`sveval.designs.spc.latest_variation`): common cause, or special cause of improvement or
    concern, high or low."""
    tail = chart.tail(last)
    kinds = set(tail["variation"].astype(str))
    if "concern" in kinds and "improvement" not in kinds:
        kind = "concern"
    elif "improvement" in kinds and "concern" not in kinds:
        kind = "improvement"
    elif kinds <= {"common"}:
        return mdc_icon("common", "~", "Common cause variation: no significant change")
    else:
        return mdc_icon("common", "!", "Mixed special-cause signals in recent points: read the chart")
    sides = set(tail.loc[tail["variation"] == kind, "side"].astype(str))
    hl, word = ("H", "higher") if sides == {"high"} else ("L", "lower")
    return mdc_icon(kind, hl, f"Special cause {kind}: {word} values in recent points")


def assurance_icon(chart: pd.DataFrame, target: float | None, better_if: str, baseline: str) -> str:
    """Assurance against a target (here the baseline year's monthly mean: the Duty sets no
    national target): pass/fail consistently when both process limits of the latest segment are on
    one side of it, else hit and miss."""
    if target is None or not math.isfinite(target):
        return mdc_icon("hit_and_miss", "?", "Assurance not assessed: no baseline-year figure")
    seg = chart[chart["segment"] == chart["segment"].iloc[-1]]
    ucl, lcl = float(seg["ucl"].iloc[-1]), float(seg["lcl"].iloc[-1])
    good_low = better_if == "lower"
    if (ucl < target) if good_low else (lcl > target):
        return mdc_icon("pass", "P", f"Consistently better than the {baseline} baseline (process limits "
                        f"{'below' if good_low else 'above'} it)")
    if (lcl > target) if good_low else (ucl < target):
        return mdc_icon("fail", "F", f"Consistently worse than the {baseline} baseline (process limits "
                        f"{'above' if good_low else 'below'} it)")
    return mdc_icon("hit_and_miss", "?", f"Hit and miss against the {baseline} baseline (it lies within "
                    "the process limits)")


def _signals(chart: pd.DataFrame) -> str:
    rules = {"outside": "point outside the limits", "shift": "shift (run of points on one side)",
             "trend": "trend", "two_of_three": "two of three points near a limit"}
    recent = chart.tail(12)
    found = [text for key, text in rules.items() if key in recent.columns and recent[key].astype(bool).any()]
    return ("In the last 12 points: " + ", ".join(found) + ".") if found else "No special-cause signal in the last 12 points."


def measures_page(reports_dir: Path, catalog: Any, gate: Gate, stage: Path,
                  figures: Any = None) -> tuple[str, str] | None:
    """``(source, markdown)`` of the Home Office measures page, or None without tracking output.

    Reads the controlled tracking tables in ``reports/tracking/`` (``<id>_monthly.csv``,
    ``<id>_spc.csv``, ``<id>.json``, written by :meth:`sveval.pipeline.tracking.TrackingResult.save`).
    Its figures are drawn as :func:`draw_figure` says for ``figures``.
    """
    page = measures_page_deferred(reports_dir, catalog, gate, stage, figures)
    return None if page is None else (page[0], page[1]())


def measures_page_deferred(reports_dir: Path, catalog: Any, gate: Gate, stage: Path,
                           figures: Any = None) -> tuple[str, Callable[[], str]] | None:
    """:func:`measures_page` with its Markdown left to a call: ``(source, make_markdown)``.

    Everything but the readings of the control charts is done here (tables through ``gate``, in
    order); with ``figures`` (a :class:`sveval.publish.workers.Helper`) the readings
    (:func:`sveval.designs.spc.latest_variation`) are asked of it first, so that a worker, which
    imports scipy to draw anyway, answers them while this process builds the other pages.
    """
    tdir = Path(reports_dir) / "tracking"
    summaries = sorted(tdir.glob("*.json")) if tdir.is_dir() else []
    summary = None
    for p in summaries:
        if (tdir / f"{p.stem}_monthly.csv").exists():
            summary = p
            break
    if summary is None:
        return None
    doc = json.loads(summary.read_text(encoding="utf-8"))
    tid = summary.stem
    monthly = pd.read_csv(tdir / f"{tid}_monthly.csv", dtype={"period": str})
    spc_path = tdir / f"{tid}_spc.csv"
    spc = pd.read_csv(spc_path, dtype={"period": str, "change_point": str}).fillna({"change_point": "", "side": ""}) \
        if spc_path.exists() else None
    baseline = str(doc.get("baseline_year") or "")
    start = f"{baseline[:4]}-04" if re.match(r"^\d{4}/\d{2}$", baseline) else None
    ov_measures = overview(SiteContent([]), catalog)
    ho = ov_measures.measures
    order = [m for m in ho]
    splits = {}
    if catalog is not None:
        for m in catalog.measures.values():
            if m.headline and m.parent in ho:
                splits.setdefault(m.parent, []).append(m.id)
    else:
        splits = {k: [f"{k}_u25"] for k in ho}
    charts = {mid: spc[spc["measure"] == mid].reset_index(drop=True)
              for parent in order for mid in [parent, *splits.get(parent, [])]
              if spc is not None and (spc["measure"] == mid).any()}
    if figures is not None:
        readings = {mid: figures.submit("sveval.designs.spc:latest_variation", ch) for mid, ch in charts.items()}
    else:
        from sveval.designs.spc import latest_variation

        readings = {mid: _done(latest_variation(ch)) for mid, ch in charts.items()}

    sections = []
    annual = pd.DataFrame(((doc.get("tables") or {}).get("annual")) or [])
    for parent in order:
        for mid in [parent, *splits.get(parent, [])]:
            m = monthly[monthly["measure"] == mid]
            if m.empty:
                continue
            spec = catalog.measures.get(mid) if catalog is not None else None
            name = str(m["measure_name"].iloc[0])
            better_if = getattr(spec, "better_if", "lower")
            per = int(m["rate_per"].iloc[0])
            per_text = "per million people" if per == 1_000_000 else f"per {per:,} people"
            since = m[m["period"] >= start] if start else m
            rr_path = draw_figure(figures, "rolling_rates", stage / FIGURES_DIR / f"measure-{mid}-rolling.svg",
                                  since, mid, title=None)
            areas = ", ".join(sorted(since["area_name"].dropna().unique()))
            since = since.assign(rolling_12m_rate=pd.to_numeric(since["rolling_12m_rate"], errors="coerce"))
            last = since.dropna(subset=["rolling_12m_rate"])
            latest_rates = []
            for area, g in last.groupby("area_name", sort=True):
                g = g.sort_values("period")
                latest_rates.append(f"{area} {float(g['rolling_12m_rate'].iloc[-1]):.1f}")
            alt_rr = (f"Line chart of the rolling 12-month rate of {name.lower()} {per_text} since "
                      f"{start or 'the data start'}, for {areas}. Latest values ({last['period'].max() if len(last) else '-'}): "
                      + "; ".join(latest_rates) + ".")
            item: dict[str, Any] = {
                "id": mid, "name": md_escape(name), "split": mid != parent,
                "rolling": {"src": rr_path.relative_to(stage).as_posix(), "alt": alt_rr,
                            "caption": md_escape(f"Rolling 12-month rate {per_text}, since {start or 'the data start'}")},
                "per": per_text,
            }
            a = annual[(annual.get("measure") == mid) & (annual.get("area_type") == "partnership")] if not annual.empty else annual
            if not a.empty and "financial_year" in a.columns:
                a = a.sort_values("financial_year")
                rows = [{
                    "Year": md_escape(y["financial_year"]),
                    f"Rate {per_text}": _fmt(y.get("rate"), "{:.1f}"),
                    "Change against baseline": _fmt(y.get("change_pct"), "{:+.1f}%"),
                    "Comparison areas' rate ratio": _fmt(y.get("comparison_rate_ratio"), "{:.2f}"),
                } for _, y in a.iterrows()]
                frame = pd.DataFrame(rows)
                item["annual"] = gate.table(frame, f"measures.{mid}.annual",
                                            {c: ("label" if c == "Year" else "estimate") for c in frame.columns})
            if mid in charts:
                ch = charts[mid]
                spc_path_out = draw_figure(
                    figures, "spc_chart", stage / FIGURES_DIR / f"measure-{mid}-spc.svg", ch, title=None,
                    ylabel="Count" + (" a quarter" if ch["aggregation"].iloc[0] == "quarter" else " a month"))
                base_mask = m["area_type"].eq("partnership") & m["period"].between(start or "", _fy_end(baseline))
                base_counts = pd.to_numeric(m.loc[base_mask, "count"], errors="coerce")
                target = float(base_counts.mean()) * (3 if ch["aggregation"].iloc[0] == "quarter" else 1) \
                    if base_counts.notna().all() and len(base_counts) == 12 else None
                note = (doc.get("chart_notes") or {}).get(mid, "")
                item["spc"] = {
                    "src": spc_path_out.relative_to(stage).as_posix(),
                    "alt": (f"Statistical process control chart of {name.lower()} for the partnership ("
                            f"{'quarterly' if ch['aggregation'].iloc[0] == 'quarter' else 'monthly'} counts, "
                            f"{ch['period'].iloc[0]} to {ch['period'].iloc[-1]}), with the mean and process "
                            "limits. "),  # + the reading and signals, in make_markdown()
                    "caption": md_escape(note or "Statistical process control chart"),
                    "variation": variation_icon(ch, better_if),
                    "assurance": assurance_icon(ch, target, better_if, baseline),
                    "signals": _signals(ch),
                }
            reading = (doc.get("readings") or {}).get(mid)
            item["reading"] = md_escape(reading) if reading else ""
            sections.append(item)
    if not sections:
        return None
    comparison = [md_escape(c) for c in doc.get("comparison_areas") or []]
    fm = {
        "title": "Home Office measures",
        "description": "The Serious Violence Duty's three headline measures and their under-25 splits: "
        f"rolling 12-month rates since {baseline or 'the baseline year'}, statistical process control "
        "signals with Making Data Count icons, and the comparison areas.",
    }
    tracking_page = f"tracking/{tid}.ipynb" if (tdir / f"{tid}.ipynb").exists() else None

    def make_markdown() -> str:
        done = []
        for item in sections:
            if "spc" in item:
                reading, signals = readings[item["id"]].result(), item["spc"]["signals"]
                item = {**item, "spc": {**item["spc"], "alt": item["spc"]["alt"] + f"{reading} {signals}",
                                        "reading": md_escape(reading + " " + signals)}}
            done.append(item)
        text = env().get_template("measures.qmd.j2").render(
            front_matter=front_matter(fm), sections=done, baseline=baseline, comparison=comparison,
            data_end=doc.get("data_end") or "", tracking_page=tracking_page,
        )
        return tidy(text)

    return "measures.qmd", make_markdown


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def _fmt(value: Any, pattern: str) -> str:
    """A controlled figure as text: a number formatted, a suppression mark (``*``) as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return pattern.format(float(value))
    except (TypeError, ValueError):
        return md_escape(value)


def _fy_end(fy: str) -> str:
    m = re.match(r"^(\d{4})/\d{2}$", fy or "")
    return f"{int(m.group(1)) + 1}-03" if m else "9999-12"


def site_assets(stage: Path) -> list[str]:
    """Write the site's own stylesheet and the table-scrolling script; return their names."""
    from sveval.publish.text import template_text

    (stage / SITE_CSS).write_text(template_text(SITE_CSS), encoding="utf-8")
    (stage / SCROLL_TABLES).write_text(template_text(SCROLL_TABLES), encoding="utf-8")
    return [SITE_CSS, SCROLL_TABLES]
