"""Reading what the site publishes: result JSON, executed notebooks, and their plain-English reading.

The site never recomputes anything. It reads ``reports/evaluations/<id>.json`` (written by
:func:`sveval.pipeline.context.save` or, for a failed run, by :mod:`sveval.pipeline.runner`) and the executed
notebook beside it, and turns the numbers into short text with the same helpers the notebooks use
(:mod:`sveval.report.prose`).

Only model estimates are read for display (effects, prevented events, power); the observed
``series`` in the JSON is never shown by the site.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import nbformat

from sveval.errors import PublishError
from sveval.pipeline.record import read_record as _read_typed
from sveval.report.prose import _finite, plain_english
from sveval.result import Effect, Power, Prevented, Result

DESIGN_NAMES: dict[str, str] = {
    "its": "Interrupted time series",
    "cits": "Controlled interrupted time series",
    "did": "Difference-in-differences",
    "twfe": "Two-way fixed effects DiD",
    "event_study": "Event study",
    "staggered": "Staggered difference-in-differences",
    "synth": "Synthetic control",
}


def design_name(key: str | None) -> str:
    """Readable name of a design key (``its`` -> ``Interrupted time series``)."""
    if not key:
        return "Not recorded"
    return DESIGN_NAMES.get(key, key.replace("_", " ").capitalize())


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation as the site sees it: its result JSON and (if present) its executed notebook.

    Attributes
    ----------
    id : evaluation id (the JSON file's stem)
    data : the parsed result JSON
    json_path : where the JSON was read from
    notebook_path : the executed notebook, or None when there is none
    notebook_error : the first error output in the notebook (``ename: evalue``), if any
    """

    id: str
    data: dict[str, Any]
    json_path: Path
    notebook_path: Path | None = None
    notebook_error: str | None = None
    latest_failure: dict[str, Any] | None = None  # the failed latest run when this is the last good one

    # -- identification -----------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return str(self.data.get("title") or self.id)

    @property
    def failed(self) -> bool:
        return self.data.get("status") == "failed" or (
            self.data.get("status") != "completed" and self.notebook_error is not None
        )

    @property
    def error(self) -> str:
        return str(self.data.get("error") or self.notebook_error or "no error message was recorded")

    @property
    def page(self) -> str | None:
        """Source path of the evaluation's page inside the Quarto project, if it has one."""
        return f"evaluations/{self.id}.ipynb" if self.notebook_path is not None else None

    @property
    def measure_name(self) -> str:
        return str(self.data.get("measure_name") or self.data.get("measure") or "the measure")

    @property
    def area_name(self) -> str:
        name = self.data.get("area_name")
        if name:
            return str(name)
        area = self.data.get("area") or []
        return ", ".join(area) if isinstance(area, list) else str(area)

    @property
    def design(self) -> str:
        return design_name(self.data.get("design_variant") or self.data.get("design"))

    @property
    def description(self) -> str:
        """One sentence for the page's front matter."""
        text = str(self.data.get("description") or "").strip()
        if text:
            return " ".join(text.split())
        what = self.data.get("intervention_title") or self.data.get("intervention") or "the intervention"
        return f"{self.design} evaluation of {what}: {self.measure_name} in {self.area_name}."

    # -- estimates ----------------------------------------------------------------------------------
    @property
    def effects(self) -> list[Effect]:
        return [_effect(d, self.json_path) for d in self.data.get("effects") or []]

    @property
    def headline(self) -> Effect | None:
        effects = self.effects
        return effects[0] if effects else None

    def result(self) -> Result | None:
        """A :class:`~sveval.result.Result` rebuilt from the JSON's estimates (no series)."""
        effects = self.effects
        if not effects:
            return None
        return Result(
            design=str(self.data.get("design") or ""),
            method=str(self.data.get("method") or ""),
            effects=tuple(effects),
            prevented=_from_dict(Prevented, self.data.get("prevented")),
            power=_from_dict(Power, self.data.get("power")),
            warnings=tuple(self.data.get("warnings") or ()),
            n_obs=int(self.data.get("n_obs") or 0),
        )


def _effect(d: dict[str, Any], path: Path) -> Effect:
    known = {f.name for f in fields(Effect)}
    try:
        return Effect(**{k: v for k, v in d.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise PublishError(f"{path}: effect {d.get('name', '?')!r} is malformed: {exc}") from exc


def _from_dict(cls: type, d: Any) -> Any:
    """Build a frozen result dataclass from JSON, or None when missing or incomplete."""
    if not isinstance(d, dict):
        return None
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in known}
    if cls is Prevented and any(kwargs.get(k) is None for k in ("estimate", "ci_low", "ci_high")):
        return None
    try:
        return cls(**kwargs)
    except TypeError:
        return None


# ------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------
def short_verdict(rec: EvaluationRecord) -> str:
    """A few words for the index table: what the headline interval says."""
    if rec.failed:
        return "Failed: no result"
    res = rec.result()
    if res is None:
        return "No estimate"
    e = res.headline
    if not _finite(e.estimate, e.ci_low, e.ci_high):
        return "No interval: inconclusive"
    if e.improved is True:
        return "Improvement: the interval excludes no change"
    if e.improved is False:
        return "Worse: the interval excludes no change"
    if res.power is not None and res.power.underpowered:
        return "No clear change (underpowered)"
    return "No clear change"


def _lower_first(name: str) -> str:
    if len(name) > 1 and name[0].isupper() and not name[1].isupper():
        return name[0].lower() + name[1:]
    return name


def failure_note(rec: EvaluationRecord) -> str | None:
    """For the last good result of an evaluation whose latest run failed: when it failed, where
    and why, and the date of the result shown (plain text); None otherwise."""
    f = rec.latest_failure
    if not f:
        return None
    good = (rec.data.get("provenance") or {}).get("generated_at") or "an earlier run"
    return (f"The latest run of this evaluation ({f.get('generated_at') or 'date unknown'}) failed: "
            f"{f.get('error') or 'no error message was recorded'}. Shown here is the last good "
            f"result, from {good}.")


def verdict_text(rec: EvaluationRecord) -> str:
    """The plain-English reading of the headline result (from :func:`plain_english`); for the last
    good result of a failed evaluation, followed by :func:`failure_note`."""
    note = failure_note(rec)
    if note is not None:
        text = verdict_text(EvaluationRecord(rec.id, rec.data, rec.json_path, rec.notebook_path,
                                             rec.notebook_error))
        return f"{text} {note}"
    if rec.failed:
        return f"This evaluation failed and produced no estimate. The error was: {rec.error}"
    res = rec.result()
    if res is None:
        return "The evaluation recorded no effect estimate."
    if not _finite(res.headline.estimate, res.headline.ci_low, res.headline.ci_high):
        return "The headline effect has no confidence interval, so the result is inconclusive."
    return plain_english(res, _lower_first(rec.measure_name))


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def notebook_error(nb: nbformat.NotebookNode) -> str | None:
    """The first error output of an executed notebook (``ename: evalue``), or None."""
    for cell in nb.cells:
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
    return None


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook, raising :class:`PublishError` naming the file when it cannot be read."""
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise PublishError(f"{path}: not a readable Jupyter notebook ({exc})") from exc


def read_record(path: Path) -> dict[str, Any]:
    """Read one result JSON through the typed record (:func:`sveval.pipeline.record.read_record`),
    raising :class:`PublishError` naming the file and the field; returns its JSON form."""
    return _read_typed(path).to_json()


def load_evaluations(evaluations_dir: Path) -> tuple[list[EvaluationRecord], list[str]]:
    """Every evaluation in ``evaluations_dir``, sorted by id, and warnings about orphan files.

    A notebook without a result JSON is listed as failed (the run stopped before writing it). A
    JSON without a notebook is listed without a page.
    """
    warnings: list[str] = []
    jsons = {p.stem: p for p in sorted(evaluations_dir.glob("*.json"))}
    notebooks = {p.stem: p for p in sorted(evaluations_dir.glob("*.ipynb"))}
    records: list[EvaluationRecord] = []
    for eid in sorted(set(jsons) | set(notebooks)):
        nb_path = notebooks.get(eid)
        nb_err = notebook_error(read_notebook(nb_path)) if nb_path else None
        if eid in jsons:
            data = read_record(jsons[eid])
            data.setdefault("id", eid)
            if nb_path is None:
                warnings.append(f"{jsons[eid]}: no executed notebook beside it; listed without a page")
            elif data.get("status") == "completed" and nb_err:
                warnings.append(f"{nb_path}: notebook has an error output ({nb_err}) but its JSON says completed")
        else:
            warnings.append(f"{nb_path}: no result JSON beside it; listed as failed")
            data = {"id": eid, "title": eid, "status": "failed",
                    "error": nb_err or "the notebook wrote no result JSON", "effects": []}
        good = _last_good(evaluations_dir, eid, data)
        if good is not None:
            records.append(good)
            continue
        records.append(EvaluationRecord(eid, data, jsons.get(eid, evaluations_dir / f"{eid}.json"), nb_path, nb_err))
    return records, warnings


def _last_good(evaluations_dir: Path, eid: str, failed: dict[str, Any]) -> EvaluationRecord | None:
    """The last good result kept by the runner (``reports/.sveval/last-good/<id>.json``) of an
    evaluation whose latest run failed, carrying that failure; None when there is none."""
    if failed.get("status") != "failed":
        return None
    keep = evaluations_dir.parent / ".sveval" / "last-good"
    js, nb = keep / f"{eid}.json", keep / f"{eid}.ipynb"
    if not js.exists() or not nb.exists():
        return None
    try:
        data = read_record(js)
        nb_err = notebook_error(read_notebook(nb))
    except PublishError:
        return None
    if data.get("status") != "completed" or nb_err:
        return None
    latest = {"error": failed.get("error"), "failure": failed.get("failure"),
              "generated_at": (failed.get("provenance") or {}).get("generated_at")}
    return EvaluationRecord(eid, data, js, nb, None, latest_failure=latest)


@dataclass(frozen=True)
class TrackingPage:
    """An executed tracking notebook (``reports/tracking/<name>.ipynb``)."""

    name: str
    notebook_path: Path
    title: str
    description: str
    error: str | None = None

    @property
    def page(self) -> str:
        return f"tracking/{self.name}.ipynb"


_H1 = re.compile(r"^\s*#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _first_markdown(nb: nbformat.NotebookNode) -> tuple[str | None, str | None]:
    """Title (first level-1 heading) and first paragraph of the notebook's markdown."""
    title = para = None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        src = cell.source
        if title is None:
            m = _H1.search(src)
            if m:
                title = m.group(1).strip()
        if para is None:
            for block in re.split(r"\n\s*\n", src):
                b = block.strip()
                if b and not b.startswith(("#", "<", "|", "-", "*", "!", "`")):
                    para = " ".join(b.split())
                    break
        if title and para:
            break
    return title, para


def load_tracking(tracking_dir: Path, existing_front_matter: Any) -> list[TrackingPage]:
    """Executed tracking notebooks, titled from their front matter or first heading."""
    pages = []
    for path in sorted(tracking_dir.glob("*.ipynb")) if tracking_dir.is_dir() else []:
        nb = read_notebook(path)
        fm = existing_front_matter(nb) or {}
        h1, para = _first_markdown(nb)
        nice = path.stem.replace("_", " ").replace("-", " ").strip().capitalize()
        title = str(fm.get("title") or h1 or nice)
        desc = str(fm.get("description") or para or f"Outcome tracking: {title}.")
        pages.append(TrackingPage(path.stem, path, title, desc, notebook_error(nb)))
    return pages


@dataclass
class SiteContent:
    """Everything the pages are built from."""

    evaluations: list[EvaluationRecord]
    tracking: list[TrackingPage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def completed(self) -> list[EvaluationRecord]:
        return [r for r in self.evaluations if not r.failed]

    @property
    def failed(self) -> list[EvaluationRecord]:
        return [r for r in self.evaluations if r.failed]
