"""The published site: a Quarto website project in ``reports/``, rendered without executing code.

:func:`publish` reads the executed notebooks and result JSON in ``reports/evaluations/`` (and any
executed notebooks in ``reports/tracking/``), writes the Quarto project (``_quarto.yml``,
``index.qmd``, ``methods.qmd``, ``data.qmd``, a raw front-matter cell at the top of every notebook)
and renders it to ``reports/_site/``:

* with Quarto when it is installed (``quarto render reports``); notebooks arrive executed by
  papermill and ``execute: enabled: false`` makes sure Quarto never runs a cell;
* otherwise with a clearly labelled fallback renderer (nbconvert for notebooks, mistune for the
  generated Markdown) that writes the same pages, links and navigation
  (:mod:`sveval.publish.render`).

Everything is built in a staging folder (``reports/.sveval/publish-*``) and swapped in only when the
render succeeded, so a failure never leaves a half-written site.

Disclosure: every table on the site passes through :func:`disclosure_control`, the one gate where
statistical disclosure control is applied (see its docstring).

Example
-------
>>> from sveval.publish.site import publish                       # doctest: +SKIP
>>> report = publish(Path("reports"), quarto=None)        # doctest: +SKIP
>>> report.renderer, len(report.pages)                    # doctest: +SKIP
('fallback', 6)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat
import pandas as pd
import yaml

from sveval.errors import DisclosureError, PublishError
from sveval.pipeline.lock import project_lock
from sveval.publish import pages as overview_pages
from sveval.publish.records import (
    DESIGN_NAMES,
    SiteContent,
    design_name,
    failure_note,
    load_evaluations,
    load_tracking,
    read_notebook,
)
from sveval.publish.text import (  # noqa: F401
    FALLBACK_BANNER,
    _yaml,
    env,
    front_matter,
    md_escape,
    md_link,
    template_text,
    tidy,
)
from sveval.report.prose import power_text

STATE_DIR = ".sveval"  # shared with sveval.pipeline.runner; hidden from Quarto (leading dot)
FRONT_MATTER_CELL_ID = "sveval-front-matter"
GENERATED_PAGES = ("index.qmd", "methods.qmd", "data.qmd")
EXECUTE_OPTIONS = {"enabled": False, "echo": False}

ColumnRole = Literal["label", "estimate", "count"]


# ------------------------------------------------------------------------------------------------
# The disclosure gate
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlledTable:
    """A table that has passed :func:`disclosure_control`; only these can be written to a page."""

    name: str
    frame: pd.DataFrame
    roles: Mapping[str, ColumnRole]


def disclosure_control(
    table: pd.DataFrame,
    *,
    name: str,
    roles: Mapping[str, ColumnRole],
    rule: str = "police",
    rules: Any = None,
    log: list[str] | None = None,
) -> ControlledTable:
    """THE disclosure hook: every table the site publishes passes through here, once.

    Each column must be declared as ``label`` (text: names, periods, verdicts), ``estimate`` (model
    output: effects, intervals, prevented events, power; exempt from disclosure control under the
    NHS and Home Office rules) or ``count`` (observed counts). Undeclared columns are refused, so a
    new column cannot slip past the gate unclassified.

    The site's own pages publish model estimates only. ``count`` columns are controlled here and
    nowhere else, with :func:`sveval.pipeline.disclosure.apply_to_frame` under ``rules`` for the disclosure
    class ``rule`` (``hospital``: counts 1-7 shown as ``*``, others rounded to 5; ``police``:
    unrounded); without ``rules`` they are refused with :class:`~sveval.errors.DisclosureError`.

    Parameters
    ----------
    table : the frame to publish
    name : a short name for the table (recorded in :attr:`PublishReport.tables`)
    roles : column -> ``label`` | ``estimate`` | ``count``
    rule : the disclosure class of any ``count`` columns
    rules : :class:`sveval.pipeline.disclosure.DisclosureRules`, needed only for ``count`` columns
    log : if given, ``name`` is appended (the publish report lists every table that passed)

    Returns
    -------
    ControlledTable, the only input :func:`markdown_table` accepts.
    """
    unknown = [c for c in table.columns if c not in roles]
    if unknown:
        raise DisclosureError(
            f"table '{name}': column(s) {unknown} have no disclosure role; declare each column as "
            "'label', 'estimate' or 'count'"
        )
    bad = {c: r for c, r in roles.items() if r not in ("label", "estimate", "count")}
    if bad:
        raise DisclosureError(f"table '{name}': unknown role(s) {bad}; expected label, estimate or count")
    counts = [c for c in table.columns if roles[c] == "count"]
    out = table.copy()
    if counts:
        if rules is None:
            raise DisclosureError(
                f"table '{name}': column(s) {counts} hold observed counts ({rule} disclosure class) but "
                "no disclosure rules were given; the site publishes model estimates only unless "
                "rules (sveval.pipeline.disclosure.load_rules) are passed"
            )
        from sveval.pipeline.disclosure import apply_to_frame

        out = apply_to_frame(out, rule, rules, count_columns=counts)
    if log is not None:
        log.append(name)
    return ControlledTable(name, out, dict(roles))


def _md_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    text = " ".join(str(value).split())
    return re.sub(r"(?<!\\)\|", r"\\|", text) or "-"  # escape pipes not already escaped


def markdown_table(table: ControlledTable) -> str:
    """A pipe table (Pandoc and CommonMark) of a table that passed :func:`disclosure_control`."""
    if not isinstance(table, ControlledTable):
        raise TypeError("markdown_table() takes a ControlledTable: pass the frame through disclosure_control()")
    df = table.frame
    if df.empty:
        return "_None._"
    header = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    align = "|" + "|".join(":--" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *rows])




# ------------------------------------------------------------------------------------------------
# Pages
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """One page of the site: its source in the Quarto project and its output in ``_site``."""

    source: str
    title: str
    description: str
    kind: Literal["markdown", "notebook"]

    @property
    def output(self) -> str:
        return str(Path(self.source).with_suffix(".html").as_posix())


def _index_description(content: SiteContent, partnership: str | None) -> str:
    where = f" in {partnership}" if partnership else ""
    ids = {r.id for r in content.evaluations}
    n_var = sum(1 for r in content.evaluations if overview_pages.sensitivity_target(r) in ids)
    also = f" and {n_var} sensitivity analyses" if n_var else ""
    return (
        f"Results of {len(content.evaluations) - n_var} evaluation(s){also} of interventions against "
        f"serious violence{where}, by priority and Home Office measure: effects with confidence "
        "intervals and their units, verdicts and strength of evidence."
    )


DESIGN_TEXT: dict[str, str] = {
    "its": (
        "An interrupted time series models the monthly outcome before the intervention (trend, "
        "season, population) and projects it forward as the counterfactual: what would have happened "
        "without the intervention. The effect is the gap between what happened and that projection. "
        "Without a comparison group, anything else that changed at the same time is attributed to the "
        "intervention, so this is a level 2 design on the Maryland scale. Counts are modelled as "
        "counts (quasi-Poisson, allowing for months that follow each other being alike); when there "
        "are fewer than five events a month the intervals come from the likelihood itself (profile "
        "likelihood), which stays honest when events are rare. Continuous measures use regression "
        "with autocorrelated errors."
    ),
    "cits": (
        "A controlled interrupted time series adds comparison areas that did not receive the "
        "intervention, so that changes common to the region (recording practice, economic shocks) are "
        "not mistaken for an effect."
    ),
    "did": (
        "Difference-in-differences compares the change in the treated areas with the change in "
        "comparison areas over the same period. It relies on the two groups following parallel trends "
        "had there been no intervention; the event-study pre-period estimates test that assumption."
    ),
    "twfe": (
        "Two-way fixed effects estimate a difference-in-differences with unit and month effects. With "
        "adoption at different times it can be biased, so staggered designs use cohort-specific "
        "comparisons instead."
    ),
    "event_study": (
        "An event study estimates the effect month by month relative to the start, showing whether "
        "effects build up and whether treated and comparison areas moved together beforehand."
    ),
    "staggered": (
        "Staggered difference-in-differences (Callaway and Sant'Anna) compares each cohort that "
        "started at the same time only with areas not yet treated, avoiding the bias of two-way fixed "
        "effects under staggered adoption, and averages the cohort effects."
    ),
    "synth": (
        "A synthetic control weights untreated comparison areas so that together they track the "
        "treated area before the intervention; after it, the weighted comparison is the "
        "counterfactual. The quality of the pre-period fit is reported and placebo tests in the "
        "comparison areas give the reference distribution."
    ),
}


def _read_coverage(reports_dir: Path) -> pd.DataFrame | None:
    """Optional Monte Carlo coverage evidence: ``reports/coverage.json`` (list of rows)."""
    path = reports_dir / "coverage.json"
    if not path.exists():
        return None
    import json

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        frame = pd.DataFrame(rows)
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path}: not a readable coverage table ({exc}); expected a JSON list of rows") from exc
    need = {"design", "nominal", "coverage"}
    if not need <= set(frame.columns):
        raise PublishError(f"{path}: rows need the fields {sorted(need)}; got {sorted(frame.columns)}")
    return frame


def methods_page(content: SiteContent, reports_dir: Path, tables: list[str]) -> str:
    """Markdown of the methods page: designs, inference, power, coverage evidence, caveats."""
    used: dict[str, list[str]] = {}
    for r in content.evaluations:
        key = str(r.data.get("design") or "")
        if key:
            methods = used.setdefault(key, [])
            m = r.data.get("method")
            if m and md_escape(m) not in methods:
                methods.append(md_escape(m))
    designs = [
        {"name": design_name(k), "text": DESIGN_TEXT.get(k, "See the evaluation report."), "methods": v}
        for k, v in sorted(used.items(), key=lambda kv: list(DESIGN_NAMES).index(kv[0]) if kv[0] in DESIGN_NAMES else 99)
    ]
    power = pd.DataFrame(
        [
            {
                "Evaluation": md_link(r.title, r.page),
                "Minimum detectable fall": (
                    f"{100 * r.data['power']['mde']:.0f}%"
                    if isinstance(r.data.get("power"), dict) and r.data["power"].get("mde") is not None
                    else "-"
                ),
                "Power": md_escape(power_text(r.data.get("power"))),
            }
            for r in content.completed
        ]
    )
    power_table = markdown_table(
        disclosure_control(
            power, name="methods.power", log=tables,
            roles={"Evaluation": "label", "Minimum detectable fall": "estimate", "Power": "estimate"},
        )
    )
    diag_rows = []
    for r in content.completed:
        for c in r.data.get("diagnostics") or []:
            passed = c.get("passed")
            diag_rows.append(
                {
                    "Evaluation": md_escape(r.title),
                    "Check": md_escape(c.get("description") or c.get("name") or "-"),
                    "Result": "Passed" if passed is True else "Failed" if passed is False else "Descriptive",
                    "Statistic": "-" if c.get("statistic") is None else f"{c['statistic']:.3g}",
                    "p-value": "-" if c.get("p_value") is None else f"{c['p_value']:.3f}",
                    "Detail": md_escape(c.get("detail") or ""),
                }
            )
    diag = pd.DataFrame(diag_rows, columns=["Evaluation", "Check", "Result", "Statistic", "p-value", "Detail"])
    diagnostics_table = markdown_table(
        disclosure_control(
            diag, name="methods.diagnostics", log=tables,
            roles={"Evaluation": "label", "Check": "label", "Result": "label",
                   "Statistic": "estimate", "p-value": "estimate", "Detail": "label"},
        )
    )
    coverage = _read_coverage(reports_dir)
    if coverage is None:
        coverage_text = (
            "Interval coverage, the share of simulated evaluations whose 95% interval contains the "
            "true effect, is measured by Monte Carlo simulation in the project's benchmarks "
            "(`nox -s bench`). No coverage results were supplied with this publication."
        )
        coverage_table = ""
    else:
        coverage_text = (
            "Each row is a Monte Carlo experiment: series simulated with a known effect, analysed "
            "with the design, and the share of 95% intervals that contained the truth. Coverage close "
            "to the nominal level means the stated uncertainty can be trusted."
        )
        cov = pd.DataFrame(
            {
                "Design": coverage["design"].map(lambda k: md_escape(design_name(str(k)))),
                "Scenario": coverage.get("scenario", pd.Series(["-"] * len(coverage))).map(md_escape),
                "Nominal": coverage["nominal"].map(lambda v: f"{100 * v:.0f}%"),
                "Coverage": coverage["coverage"].map(lambda v: f"{100 * v:.1f}%"),
                "Simulations": coverage.get("n_sim", pd.Series(["-"] * len(coverage))).astype(str),
            }
        )
        coverage_table = markdown_table(
            disclosure_control(
                cov, name="methods.coverage", log=tables,
                roles={"Design": "label", "Scenario": "label", "Nominal": "estimate",
                       "Coverage": "estimate", "Simulations": "label"},
            )
        )
    fm = {
        "title": "Methods",
        "description": "How the evaluations are designed and estimated, how far the intervals can be "
        "trusted, and the caveats that apply to every result.",
    }
    return tidy(
        env().get_template("methods.qmd.j2").render(
            front_matter=front_matter(fm), designs=designs, power_table=power_table,
            coverage_text=coverage_text, coverage_table=coverage_table,
            diagnostics_table=diagnostics_table,
        )
    )


DISCLOSURE_RULES = """\
- **Hospital data (NHS Hospital Episode Statistics)** below national level: counts from 1 to 7 are
  shown as `*` and other counts are rounded to the nearest 5 (0 stays 0); percentages are computed
  from the rounded figures, and a suppressed cell is never recoverable from a total.
- **Police recorded crime** is published unrounded at force and community safety partnership level;
  small local counts of identifiable events are still treated with care.
- **Model outputs** (rates standardised by a model, regression estimates and their intervals, events
  prevented as estimated by a model) need no further control, and are what this site shows.
- Every table on this site passes through one disclosure gate in the publishing code, which applies
  these rules to any observed count, and the rendered site is scanned for record-level fields before
  it is published."""

SOURCE_NAMES = {
    "force_extract": "Police force recorded-crime extract",
    "police_uk": "police.uk street-level crime data",
    "hospital": "NHS Hospital Episode Statistics",
    "homicide_index": "Home Office Homicide Index",
    "youth_justice": "Youth Justice Board (first-time entrants)",
    "aggregate": "Published aggregate statistics",
}


def data_page(content: SiteContent, catalog: Any, tables: list[str]) -> str:
    """Markdown of the data and disclosure page: measures, areas, provenance."""
    measures: dict[str, dict[str, str]] = {}
    for r in content.evaluations:
        mid = r.data.get("measure")
        if not mid or mid in measures:
            continue
        spec = catalog.measures.get(mid) if catalog is not None else None
        breaks = ", ".join(f"{b.get('name', 'break')} ({b.get('period', '?')})" for b in spec.breaks) if spec else ""
        measures[mid] = {
            "Measure": md_escape(spec.name if spec else r.measure_name),
            "Definition": md_escape(spec.description if spec else "-"),
            "Source": md_escape(SOURCE_NAMES.get(src := (spec.source if spec else r.data.get("measure_source") or "-"), src)),
            "Disclosure class": md_escape(spec.disclosure if spec else "-"),
            "Recording breaks": md_escape(breaks or "None recorded"),
        }
    mframe = pd.DataFrame(list(measures.values()),
                          columns=["Measure", "Definition", "Source", "Disclosure class", "Recording breaks"])
    measures_table = markdown_table(
        disclosure_control(mframe, name="data.measures", roles={c: "label" for c in mframe.columns}, log=tables)
    )
    areas_table = ""
    if catalog is not None and getattr(catalog, "areas", None):
        aframe = pd.DataFrame(
            [
                {
                    "Area": md_escape(a.name), "ONS code": a.code,
                    "Role": "Partnership" if a.role == "partnership" else "Comparison",
                    "Violence Reduction Unit area": "Yes" if a.vru else "No",
                }
                for a in sorted(catalog.areas.values(), key=lambda a: (a.role != "partnership", a.name))
            ]
        )
        areas_table = markdown_table(
            disclosure_control(aframe, name="data.areas", roles={c: "label" for c in aframe.columns}, log=tables)
        )
    prov_rows = []
    for r in content.evaluations:
        p = r.data.get("provenance") or {}
        prov_rows.append(
            {
                "Evaluation": md_escape(r.title),
                "Parameter file": md_escape(p.get("parameter_file") or "-"),
                "Data": md_escape(p.get("data_source") or "-"),
                "Data fingerprint": (str(p["data_sha256"])[:12] if p.get("data_sha256") else "-"),
                "sveval": md_escape(p.get("sveval_version") or "-"),
                "Commit": (str(p["git_commit"])[:10] if p.get("git_commit") else "-"),
                "Run at": md_escape(p.get("generated_at") or "-"),
            }
        )
    pframe = pd.DataFrame(prov_rows)
    provenance_table = markdown_table(
        disclosure_control(pframe, name="data.provenance", roles={c: "label" for c in pframe.columns}, log=tables)
    )
    fm = {
        "title": "Data and disclosure",
        "description": "The data behind the evaluations, the disclosure rules applied before "
        "publication, and the provenance of every result.",
    }
    return tidy(
        env().get_template("data.qmd.j2").render(
            front_matter=front_matter(fm), disclosure_rules=DISCLOSURE_RULES, measures_table=measures_table,
            areas_table=areas_table, provenance_table=provenance_table,
        )
    )


# ------------------------------------------------------------------------------------------------
# Notebook front matter and the Quarto configuration
# ------------------------------------------------------------------------------------------------
def existing_front_matter(nb: nbformat.NotebookNode) -> dict[str, Any] | None:
    """YAML front matter of a notebook's first cell if it is a raw ``---`` block, else None."""
    if not nb.cells or nb.cells[0].cell_type != "raw":
        return None
    src = nb.cells[0].source.strip()
    if not src.startswith("---"):
        return None
    body = src[3:]
    end = body.rfind("---")
    try:
        data = yaml.safe_load(body[:end] if end >= 0 else body)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def with_front_matter(nb: nbformat.NotebookNode, meta: Mapping[str, Any]) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose first cell is a raw YAML front-matter cell holding ``meta``.

    An existing front-matter cell is merged (its other keys kept, ``meta`` wins) rather than
    duplicated, so publishing twice gives the same notebook.
    """
    nb = nbformat.from_dict(nb)  # deep copy
    old = existing_front_matter(nb)
    merged = {**(old or {}), **meta}
    if isinstance((old or {}).get("execute"), dict):
        merged["execute"] = {**old["execute"], **meta.get("execute", {})}
    cell = nbformat.v4.new_raw_cell(source="---\n" + front_matter(merged) + "\n---")
    cell.metadata = {"sveval": {"generated": "front matter written by sveval publish"}}
    if nb.nbformat_minor >= 5 or nb.nbformat > 4:
        cell.id = FRONT_MATTER_CELL_ID
    else:
        cell.pop("id", None)
    if old is not None:
        nb.cells[0] = cell
    else:
        nb.cells.insert(0, cell)
    return nb


def _escaped_nav(config: dict[str, Any]) -> dict[str, Any]:
    """``_quarto.yml``'s navbar with every menu text escaped (Quarto reads it as Markdown)."""
    import copy

    config = copy.deepcopy(config)
    for item in config.get("website", {}).get("navbar", {}).get("left", []):
        for entry in [item, *item.get("menu", [])]:
            if isinstance(entry.get("text"), str):
                entry["text"] = md_escape(entry["text"])
    site = config.get("website", {})
    if isinstance(site.get("title"), str):
        site["title"] = md_escape(site["title"])
    return config


def quarto_config(site_title: str, pages: Sequence[Page], content: SiteContent) -> dict[str, Any]:
    """The ``_quarto.yml`` of the site (a website project rendered into ``_site``)."""
    eval_pages = [r for r in content.evaluations if r.page]
    left: list[dict[str, Any]] = [{"text": "Home", "href": "index.qmd"}]
    ids = {r.id for r in content.evaluations}
    mains = [r for r in eval_pages if overview_pages.sensitivity_target(r) not in ids]
    left.append({"text": "Evaluations", "menu": [{"text": "All evaluations (sort and filter)", "href": "evaluations.qmd"},
                                                 *({"text": r.title, "href": r.page} for r in mains)]})
    tracking = [{"text": "Home Office measures", "href": "measures.qmd"}] if any(
        p.source == "measures.qmd" for p in pages) else []
    tracking += [{"text": t.title, "href": t.page} for t in content.tracking]
    if tracking:
        left.append({"text": "Tracking", "menu": tracking})
    left += [{"text": "Methods", "href": "methods.qmd"}, {"text": "Data & disclosure", "href": "data.qmd"}]
    return {
        "project": {"type": "website", "output-dir": "_site", "render": [p.source for p in pages],
                    "resources": [f"{overview_pages.DOWNLOADS_DIR}/**"]},
        "website": {
            "title": site_title,
            "navbar": {"left": left},
            "page-footer": {
                "left": "Model estimates; observed figures only after disclosure control (see Data & disclosure).",
                "right": "Published with sveval and Quarto",
            },
        },
        "format": {"html": {"theme": "cosmo", "css": [overview_pages.SITE_CSS, "styles.css"], "toc": True,
                            "toc-expand": 2, "include-after-body": overview_pages.SCROLL_TABLES}},
        "execute": dict(EXECUTE_OPTIONS),
    }


# ------------------------------------------------------------------------------------------------
# Publishing
# ------------------------------------------------------------------------------------------------
@dataclass
class PublishReport:
    """What :func:`publish` did.

    Attributes
    ----------
    reports_dir : the Quarto project folder
    site_dir : the rendered site (``reports_dir / "_site"``)
    renderer : ``quarto`` or ``fallback``
    pages : every page, with its source, title and description
    warnings : problems that did not stop publishing (orphan files, renderer messages)
    evaluations, failed : number of evaluations listed, and how many of them failed
    tables : names of the tables that passed :func:`disclosure_control`
    """

    reports_dir: Path
    site_dir: Path
    renderer: Literal["quarto", "fallback"]
    pages: list[Page] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evaluations: int = 0
    failed: int = 0
    tables: list[str] = field(default_factory=list)
    fallback_reason: str = ""

    @property
    def message(self) -> str:
        """One line for the command line."""
        what = ("Quarto" if self.renderer == "quarto" else
                f"sveval's fallback renderer ({self.fallback_reason or 'Quarto is not installed'})")
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"site written to {self.site_dir / 'index.html'}: {len(self.pages)} pages, "
                f"{self.evaluations} evaluation(s){failed}; rendered by {what}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reports_dir"], d["site_dir"] = str(self.reports_dir), str(self.site_dir)
        d["pages"] = [{**asdict(p), "output": p.output} for p in self.pages]
        return d


def _site_title(catalog: Any) -> str:
    partnership = getattr(catalog, "partnership", None)
    return f"{partnership}: what works against serious violence" if partnership else "What works against serious violence"


def _disclosure_rules(catalog: Any) -> Any:
    """The disclosure rules beside the catalog's registries, or None without a catalog."""
    pdir = getattr(catalog, "parameters_dir", None)
    if pdir is None or not (Path(pdir) / "disclosure.yaml").exists():
        return None
    from sveval.pipeline.disclosure import load_rules

    return load_rules(pdir)


def _resolve_quarto(quarto: str | None) -> str | None:
    if quarto is None:
        return None
    if quarto == "auto":
        return shutil.which("quarto")
    found = shutil.which(quarto)
    if found is None:
        raise PublishError(f"quarto executable {quarto!r} not found or not executable; pass quarto=None for the fallback renderer")
    return found


def build_project(reports_dir: Path, stage: Path, catalog: Any = None,
                  figures: Any = None) -> tuple[list[Page], SiteContent, list[str]]:
    """Write the Quarto project sources for ``reports_dir`` into the folder ``stage``.

    Returns the pages, the content they were built from, and the names of the published tables.
    ``figures`` (a :class:`sveval.publish.workers.Helper`) draws the SVG figures in its worker:
    call its ``wait()`` before reading ``stage/figures``; without it they are drawn here.
    """
    evaluations_dir = reports_dir / "evaluations"
    if not evaluations_dir.is_dir():
        raise PublishError(
            f"{evaluations_dir}: no such folder; run the evaluations first (`sveval run`), which write "
            "<id>.ipynb and <id>.json there"
        )
    records, warnings = load_evaluations(evaluations_dir)
    if not records:
        raise PublishError(
            f"{evaluations_dir}: no evaluations to publish (expected <id>.json result files and "
            "<id>.ipynb executed notebooks); run the evaluations first (`sveval run`)"
        )
    content = SiteContent(records, load_tracking(reports_dir / "tracking", existing_front_matter), warnings)
    title = _site_title(catalog)
    tables: list[str] = []
    pages: list[Page] = [
        Page("index.qmd", title, _index_description(content, getattr(catalog, "partnership", None)), "markdown"),
    ]
    rules = _disclosure_rules(catalog)
    gate = overview_pages.Gate(
        control=lambda frame, **kw: disclosure_control(frame, log=tables, **{"rules": rules, **kw}),
        markdown=markdown_table, rules=rules,
    )
    downloads = overview_pages.write_downloads(content, stage, gate)
    returns = overview_pages.copy_latest_returns(reports_dir.parent / "outputs", stage)
    measures = overview_pages.measures_page_deferred(reports_dir, catalog, gate, stage, figures)
    texts: dict[str, Any] = {"index.qmd": overview_pages.index_page(
        content, title, catalog, gate, stage, description=pages[0].description, downloads=downloads,
        returns=returns, measures_page=measures[0] if measures else None, figures=figures)}
    listing_qmd, listing_yml = overview_pages.listing_page(content, catalog)
    texts["evaluations.qmd"] = listing_qmd
    (stage / "evaluations.yml").write_text(listing_yml, encoding="utf-8")
    if measures:
        texts[measures[0]] = measures[1]  # made last: its chart readings may come from the worker
    for rec in records:
        if rec.notebook_path is None:
            continue
        meta: dict[str, Any] = {"title": rec.title, "description": rec.description,
                                "execute": dict(EXECUTE_OPTIONS)}
        if rec.failed:
            meta["execute"]["error"] = True
        links = [("result JSON", downloads[rec.id])] if rec.id in downloads else []
        if f"{rec.id}:csv" in downloads:
            links.append(("figure data (CSV)", downloads[f"{rec.id}:csv"]))
        nb = overview_pages.prepare_notebook_page(read_notebook(rec.notebook_path), rec.title, downloads=links)
        note = failure_note(rec)  # the latest run failed: say so above the last good report
        if note is not None:
            cell = nbformat.v4.new_markdown_cell(f"::: {{.callout-warning}}\n{md_escape(note)}\n:::")
            cell["id"] = "sveval-latest-run-failed"
            nb.cells.insert(0, cell)
        _write_notebook(stage / rec.page, with_front_matter(nb, meta))
        pages.append(Page(rec.page, rec.title, rec.description, "notebook"))
    for t in content.tracking:
        meta = {"title": t.title, "description": t.description, "execute": dict(EXECUTE_OPTIONS)}
        nb = overview_pages.prepare_notebook_page(read_notebook(t.notebook_path), t.title)
        _write_notebook(stage / t.page, with_front_matter(nb, meta))
        pages.append(Page(t.page, t.title, t.description, "notebook"))
    texts["methods.qmd"] = methods_page(content, reports_dir, tables)
    texts["data.qmd"] = data_page(content, catalog, tables)
    for src, text in texts.items():
        if callable(text):
            text = text()
        fm = yaml.safe_load(text.split("---", 2)[1])
        if src != "index.qmd":
            pages.append(Page(src, fm["title"], fm["description"], "markdown"))
        (stage / src).write_text(text, encoding="utf-8")
    styles = reports_dir / "styles.css"
    if styles.exists():
        shutil.copy2(styles, stage / "styles.css")
    else:
        (stage / "styles.css").write_text(template_text("styles.css"), encoding="utf-8")
        warnings.append(f"{styles}: missing; wrote sveval's default stylesheet")
    overview_pages.site_assets(stage)
    (stage / "_quarto.yml").write_text(
        "# Generated by `sveval publish`; edit the templates in sveval/templates, not this file.\n"
        + yaml.safe_dump(_escaped_nav(quarto_config(title, pages, content)), sort_keys=False, allow_unicode=True,
                         width=4096),
        encoding="utf-8",
    )
    return pages, content, tables


def _project_files(stage: Path) -> list[str]:
    """Every source file of the staged project (pages, listing metadata, figures, downloads, assets)."""
    skip = {"_site", ".quarto", "_freeze"}
    return sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*")
                  if p.is_file() and p.relative_to(stage).parts[0] not in skip)


def _site_files(site: Path) -> list[Path]:
    """Every file of the rendered site, in the order :func:`sveval.pipeline.disclosure.scan_published`
    scans a folder."""
    return sorted(x for x in site.rglob("*") if x.is_file())


def _scan_files(files: Sequence[Path], rules: Any) -> dict[Path, list[str]]:
    """The disclosure findings of each file (``scan_published`` looks at one file at a time, so
    the findings of a folder are these, file after file)."""
    from sveval.pipeline.disclosure import scan_published

    return {f: scan_published([f], rules=rules) for f in files}


def _write_notebook(path: Path, nb: nbformat.NotebookNode) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _swap_in(stage: Path, reports_dir: Path, sources: Sequence[str]) -> None:
    """Move the staged sources and site into ``reports_dir`` (each move an atomic rename)."""
    for rel in dict.fromkeys((*sources, "_quarto.yml", "styles.css")):
        dst = reports_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, dst)
    site = reports_dir / "_site"
    old = None
    if site.exists():
        old = Path(tempfile.mkdtemp(prefix="old-site-", dir=reports_dir / STATE_DIR))
        os.replace(site, old / "_site")
    os.replace(stage / "_site", site)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def publish(reports_dir: Path, *, catalog: Any = None, quarto: str | None = "auto",
            parallel: bool | None = None, helper: Any = None) -> PublishReport:
    """Write ``reports_dir`` as a Quarto website project and render it to ``reports_dir/_site``.

    Parameters
    ----------
    reports_dir : the project's ``reports/`` folder, holding ``evaluations/<id>.{ipynb,json}`` and
        optionally ``tracking/*.ipynb``
    catalog : a :class:`~sveval.catalog.Catalog` for area names, measure definitions and the
        partnership's name (optional; the JSON alone is enough)
    quarto : ``"auto"`` uses Quarto when it is on the PATH and the fallback renderer otherwise;
        ``None`` forces the fallback; a path or command name forces that Quarto
    parallel : draw the figures and render notebooks partly in a second process
        (:mod:`sveval.publish.workers`); ``None`` does when this machine has a second core. The
        files written are the same either way.
    helper : a :class:`sveval.publish.workers.Helper` started by the caller (``parallel`` is then
        ignored), so that its worker imports the drawing code while the caller loads the catalog;
        publish closes it

    Returns
    -------
    PublishReport naming the renderer used, every page and any warnings.

    Raises
    ------
    PublishError
        no evaluations, an unreadable JSON or notebook (named), or a failed render; ``reports_dir``
        is then left as it was.
    """
    try:
        reports_dir = Path(reports_dir).resolve()
        if not reports_dir.is_dir():
            raise PublishError(f"{reports_dir}: no such reports folder")
        quarto_bin = _resolve_quarto(quarto)
        state = reports_dir / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        why = "Quarto not used (--no-quarto)" if quarto is None else "Quarto is not installed"
        with project_lock(reports_dir, "sveval publish"):
            return _publish_locked(reports_dir, state, catalog, quarto_bin, why, parallel, helper)
    finally:
        if helper is not None:
            helper.close()


def _clean_staging(state: Path) -> None:
    """Remove staging and old-site folders left by a publish that was killed (the lock is held)."""
    for p in state.glob("publish-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in state.glob("old-site-*"):
        shutil.rmtree(p, ignore_errors=True)


def _publish_locked(reports_dir: Path, state: Path, catalog: Any, quarto_bin: str | None,
                    why: str = "Quarto is not installed", parallel: bool | None = None,
                    helper: Any = None) -> PublishReport:
    from sveval.publish.workers import Helper

    if helper is None:
        helper = Helper(parallel)  # started first: the worker imports while this process does
    from sveval.publish.render import copy_figures, render_fallback, render_quarto

    _clean_staging(state)
    stage = Path(tempfile.mkdtemp(prefix="publish-", dir=state))
    try:
        pages, content, tables = build_project(reports_dir, stage, catalog, helper)
        rules = _disclosure_rules(catalog)
        scanned: dict[Path, list[str]] = {}
        if quarto_bin is not None:
            renderer: Literal["quarto", "fallback"] = "quarto"
            helper.wait()  # the figures
            render_warnings = render_quarto(stage, quarto_bin)
        else:
            renderer = "fallback"
            render_warnings = render_fallback(stage, pages, quarto_config(_site_title(catalog), pages, content),
                                              why=why, helper=helper, with_figures=False)
            if rules is not None and helper.parallel:  # scan the pages while the worker draws
                scanned = _scan_files(_site_files(stage / "_site"), rules)
            copy_figures(stage, helper)
        missing = [p.output for p in pages if not (stage / "_site" / p.output).exists()]
        if missing:
            raise PublishError(f"the {renderer} render did not produce {missing}; the site was left unchanged")
        if rules is not None:
            files = _site_files(stage / "_site")
            scanned.update(_scan_files([f for f in files if f not in scanned], rules))
            findings = [x for f in files for x in scanned[f]]  # as scan_published([site]) lists them
            if findings:
                shown = "\n  - ".join(f.replace(str(stage), str(reports_dir)) for f in findings[:20])
                raise PublishError(
                    f"disclosure scan of the rendered site found {len(findings)} problem(s); the site "
                    f"was left unchanged:\n  - {shown}"
                )
        _swap_in(stage, reports_dir, _project_files(stage))
    finally:
        helper.close()  # before the staging folder goes: a failed publish may leave a job running
        shutil.rmtree(stage, ignore_errors=True)
    return PublishReport(
        reports_dir=reports_dir,
        site_dir=reports_dir / "_site",
        renderer=renderer,
        pages=pages,
        warnings=[*content.warnings, *render_warnings],
        evaluations=len(content.evaluations),
        failed=len(content.failed),
        tables=tables,
        fallback_reason=why if renderer == "fallback" else "",
    )


def collect_coverage(results_dir: Path, reports_dir: Path) -> Path | None:
    """Write ``reports/coverage.json`` for the methods page from the committed ITS benchmark results.

    Reads ``benchmarks/results/its_coverage_*.json`` (rows written by ``benchmarks/its_coverage.py
    --json``) and keeps the default estimator of each cell. Returns the file written, or None when
    there are no benchmark results.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(results_dir).glob("its_coverage_*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PublishError(f"{path}: not a readable benchmark result ({exc})") from exc
        for r in data:
            if not r.get("default"):
                continue
            rows.append({
                "design": "its",
                "scenario": f"{r['dgp']}, {r['n']} months, "
                            + ("count default (model: auto)" if r["estimator"] == "auto" else r["estimator"]),
                "nominal": 0.95,
                "coverage": r["coverage"],
                "n_sim": r["reps"],
            })
    if not rows:
        return None
    out = Path(reports_dir) / "coverage.json"
    out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return out
