"""The Home Office return: a checked xlsx workbook plus one CSV per sheet.

``sveval returns --year 2025/26 [--quarter 2]`` calls :func:`build_returns`, which

1. computes the tracking tables of ``parameters/tracking/<tracking>.yaml`` (the partnership, its
   areas and the comparison areas) for the reporting window and the same window of the baseline year;
2. reads every result JSON in ``reports/evaluations/`` and adds, per intervention in the registry,
   its evaluations' status, headline effect and interval, evidence level
   (:func:`sveval.pipeline.evidence.assess`) and value for money (:func:`sveval.pipeline.value.assess`);
3. applies disclosure control (:mod:`sveval.pipeline.disclosure`) to every cell;
4. checks the return: every month of the window (and of the baseline window) present, the areas
   summing to the partnership total before rounding, no suppressed cell recoverable from a total,
   no record-level field anywhere; and only then
5. writes the workbook and CSVs atomically into ``outputs/returns/<year>[-Q<n>]/``.

The layout (sheet names, order, columns) is configuration: ``parameters/returns.yaml``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from sveval._version import __version__
from sveval.catalog import Catalog
from sveval.errors import PublishError
from sveval.paths import ProjectPaths
from sveval.periods import COVID_END, COVID_START
from sveval.pipeline.lock import project_lock
from sveval.pipeline.record import declared_timestamp
from sveval.spec import StrictModel, load_model

Content = Literal["headline", "local", "interventions", "data_quality", "metadata"]


_Strict = StrictModel


class SheetSpec(_Strict):
    name: str = Field(max_length=31, description="Excel sheet names are at most 31 characters")
    content: Content
    csv: str | None = Field(default=None, description="CSV file stem (default: from the name)")


class ReturnsConfig(_Strict):
    """``parameters/returns.yaml``: the layout of the return."""

    title: str
    tracking: str = "partnership"
    prefix: str = "sv_return"
    sheets: list[SheetSpec]
    measure_columns: list[str] = Field(default_factory=list)

    @field_validator("sheets")
    @classmethod
    def _sheets(cls, v: list[SheetSpec]) -> list[SheetSpec]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("sheet names must be unique")
        return v


class ReturnsCheckError(PublishError):
    """The return failed a check and was not written."""

    def __init__(self, failures: list[str]):
        self.failures = failures
        shown = "\n  - ".join(failures[:25])
        super().__init__(f"the return was not written: {len(failures)} check(s) failed:\n  - {shown}")


@dataclass(frozen=True)
class ReturnsReport:
    """What :func:`build_returns` wrote and the checks it passed."""

    out_dir: Path
    workbook: Path
    csvs: dict[str, Path]
    checks: list[dict[str, Any]]
    period: str
    baseline: str
    sheets: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)

    @property
    def message(self) -> str:
        return (f"Home Office return for {self.period} (baseline {self.baseline}) written to {self.workbook} "
                f"and {len(self.csvs)} CSV files; {len(self.checks)} checks passed.")


def _window(year: str, quarter: int | None) -> tuple[str, list[str]]:
    from sveval.periods import fy_months, quarter_months
    from sveval.periods import parse_financial_year as _fy

    year = _fy(year)
    if quarter is None:
        return year, fy_months(year)
    return f"{year} Q{quarter}", quarter_months(year, int(quarter))


def _read_evaluations(folder: Path) -> list[dict[str, Any]]:
    """Every result record in ``folder``, validated (:func:`sveval.pipeline.record.read_record`)."""
    from sveval.pipeline.record import read_record

    return [read_record(p).to_json() for p in (sorted(folder.glob("*.json")) if folder.is_dir() else [])]


def _fmt_num(v: Any, digits: int = 4) -> Any:
    if isinstance(v, float | np.floating):
        if not np.isfinite(v):
            return None
        return round(float(v), digits)
    if isinstance(v, np.integer):
        return int(v)
    return v


def interventions_table(catalog: Catalog, records: list[dict[str, Any]], year: str) -> pd.DataFrame:
    """One row per evaluation of each registered intervention (or one 'not evaluated' row)."""
    from sveval.pipeline import evidence, value

    rows = []
    by_iv: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_iv.setdefault(str(r.get("intervention")), []).append(r)
    for iv in catalog.interventions.values():
        base = {"intervention": iv.id, "title": iv.title, "priority": iv.priority,
                "areas": "; ".join(catalog.area_name(c) for c in iv.areas), "start": iv.start,
                "cost_gbp": iv.cost_gbp, "cost_price_year": iv.cost_price_year}
        recs = by_iv.get(iv.id, [])
        if not recs:
            rows.append({**base, "evaluation": None, "status": "not evaluated"})
            continue
        for rec in sorted(recs, key=lambda r: r["id"]):
            row = {**base, "evaluation": rec["id"], "status": rec.get("status", "completed"),
                   "design": rec.get("design"), "measure": rec.get("measure")}
            effs = rec.get("effects") or []
            if row["status"] == "completed" and effs:
                e = effs[0]
                row.update({"effect": e.get("name"), "scale": e.get("scale"), "estimate": e.get("estimate"),
                            "ci_low": e.get("ci_low"), "ci_high": e.get("ci_high"), "p_value": e.get("p_value")})
                prev = rec.get("prevented") or {}
                row.update({"prevented": prev.get("estimate"), "prevented_ci_low": prev.get("ci_low"),
                            "prevented_ci_high": prev.get("ci_high")})
            else:
                row["note"] = str(rec.get("error") or "no effect estimate")[:300]
            ev = rec.get("evidence") if isinstance(rec.get("evidence"), dict) else evidence.assess(rec)
            row.update({"evidence_level": ev["level"], "evidence_label": ev["label"], "evidence_reason": ev["reason"]})
            ms = catalog.measures.get(str(rec.get("measure")))
            if ms is not None and row["status"] == "completed":
                vfm, why = value.assess_with_reason(rec, iv, ms, reporting_year=year.split(" ")[0],
                                                    parameters_dir=catalog.parameters_dir)
            else:
                vfm, why = None, "the evaluation did not complete" if row["status"] != "completed" else "unknown measure"
            if vfm is not None:
                row.update({"benefit_gbp": vfm["benefit_gbp"], "benefit_ci_low": vfm["benefit_ci_low"],
                            "benefit_ci_high": vfm["benefit_ci_high"], "vfm_cost_gbp": vfm["cost_gbp"],
                            "net_gbp": vfm["net_gbp"], "bcr": vfm["bcr"], "bcr_ci_low": vfm["bcr_ci_low"],
                            "bcr_ci_high": vfm["bcr_ci_high"], "vfm_price_year": vfm["price_year"],
                            "vfm_caveats": " ".join(vfm["caveats"])})
            else:
                row["vfm_caveats"] = f"Not estimated: {why}."
            rows.append(row)
    df = pd.DataFrame(rows)
    return df.map(_fmt_num) if len(df) else df


def _data_quality(tr, window: list[str], base_window: list[str], measure_rows: pd.DataFrame, rules) -> pd.DataFrame:
    rows = []
    m = tr.monthly
    for ms in tr.measures:
        d = m[(m["measure"] == ms.id) & m["area_type"].isin(["partnership", "area"])]
        for (_code, name), g in d.groupby(["area_code", "area_name"]):
            gaps = g.loc[g["count"].isna(), "period"].tolist()
            if gaps:
                rows.append({"measure": ms.id, "area": name, "kind": "gap",
                             "detail": f"{len(gaps)} month(s) without data: {', '.join(gaps[:12])}" + (" ..." if len(gaps) > 12 else "")})
            nopop = g.loc[g["population"].isna(), "period"].tolist()
            if nopop:
                rows.append({"measure": ms.id, "area": name, "kind": "population",
                             "detail": f"{len(nopop)} month(s) without population: rates not given there"})
        for b in ms.breaks:
            rows.append({"measure": ms.id, "area": "all", "kind": "break",
                         "detail": f"Recording break in {b.get('period')}: {b.get('name', '')}. Compare periods either side with care."})
        rule = rules.rule(ms.disclosure)
        sub = measure_rows[measure_rows["measure"] == ms.id]
        n_sup = int((sub[["fy_count", "baseline_count"]].astype(str) == rule.symbol).sum().sum())
        if not rule.exempt and (rule.suppress_min is not None or rule.round_to > 1):
            rows.append({"measure": ms.id, "area": "all", "kind": "disclosure",
                         "detail": f"{rule.description or ms.disclosure}; {n_sup} count cell(s) suppressed in this return."})
    covid = [p for p in (COVID_START, COVID_END) if p >= min(base_window)]
    if covid:
        rows.append({"measure": "all", "area": "all", "kind": "break",
                     "detail": "COVID-19 restrictions (March 2020 to June 2021) overlap the baseline or reporting window."})
    for n in tr.notes:
        if "no population" in n:
            rows.append({"measure": "all", "area": "all", "kind": "population", "detail": n})
    return pd.DataFrame(rows, columns=["measure", "area", "kind", "detail"])


def _metadata(cfg, tr, catalog, period, baseline, rules, long_hash, generated, parameters_dir) -> pd.DataFrame:
    from sveval.pipeline.record import git_commit
    from sveval.pipeline.value import load_tables

    costs, defl = load_tables(parameters_dir)
    rows = [
        ("title", cfg.title),
        ("partnership", f"{tr.partnership_name} ({tr.partnership_code})"),
        ("areas", "; ".join(f"{catalog.area_name(c)} ({c})" for c in catalog.partnership_areas)),
        ("reporting period", period),
        ("baseline period", baseline),
        ("comparison areas", "; ".join(sorted(set(tr.monthly.loc[tr.monthly['area_type'] == 'comparison_area', 'area_name'])))
         or "none"),
        ("rates", "per 100,000 of the measure's population band (per million for homicide)"),
        ("change", "rate ratio reporting window / baseline window with exact conditional Poisson 95% interval; "
                   "relative to comparison: ratio of rate ratios with a log-normal 95% interval"),
        ("price year", f"{period.split(' ')[0]} prices"),
        ("costs of crime", f"{costs.source.strip()} ({costs.price_year} prices)"),
        ("deflators", f"{defl.source.strip()} Release: {defl.release}" + (" (ILLUSTRATIVE)" if defl.illustrative else "")),
        ("evidence levels", "Maryland Scientific Methods Scale derived from each evaluation's design and checks"),
        ("disclosure", rules.source.strip()),
    ]
    for k, r in rules.rules.items():
        rows.append((f"disclosure rule: {k}", r.description or ("exempt" if r.exempt else "")))
    for ms in tr.measures:
        rows.append((f"definition: {ms.id}", f"{ms.name}. {ms.description} Source: {ms.source}."
                     + (f" Under-25 split of {ms.parent}." if ms.parent else "")))
    rows += [
        ("data sha256", long_hash),
        ("generated at", generated),
        ("sveval version", __version__),
        ("git commit", git_commit(parameters_dir.parent) or "unknown"),
        ("layout", "parameters/returns.yaml"),
    ]
    return pd.DataFrame(rows, columns=["key", "value"])


def _fix_xlsx(path: Path, generated: str) -> None:
    """Make the workbook a function of its content: the ZIP entries' times fixed and the document
    properties' created/modified times set to the declared ``generated`` time (openpyxl writes the
    wall-clock time into both)."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = [(i, z.read(i.filename)) for i in z.infolist()]
    tmp = path.with_name(f".{path.name}.fix.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:)",
                              lambda m: m.group(1) + generated.encode() + m.group(3), data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            z.writestr(fixed, data)
    os.replace(tmp, path)


def _write_xlsx(path: Path, sheets: list[tuple[str, pd.DataFrame]], title: str,
                generated: str | None = None) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    for name, df in sheets:
        ws = wb.create_sheet(name)
        ws.append([str(c) for c in df.columns])
        for c in ws[1]:
            c.font = Font(bold=True)
        for row in df.itertuples(index=False):
            ws.append([None if (isinstance(v, float) and not np.isfinite(v)) else v for v in row])
        ws.freeze_panes = "A2"
        for j, col in enumerate(df.columns, start=1):
            width = max([len(str(col))] + [len(str(v)) for v in df[col].head(200)])
            ws.column_dimensions[get_column_letter(j)].width = min(60, max(9, width + 2))
    wb.properties.title = title
    wb.properties.creator = f"sveval {__version__}"
    wb.save(path)
    if generated is not None:
        _fix_xlsx(path, generated)


def build_returns(
    root: Path | str,
    year: str = "2025/26",
    quarter: int | None = None,
    out_dir: Path | None = None,
    *,
    long: pd.DataFrame | None = None,
    catalog: Catalog | None = None,
    planted_values: list[str] | None = None,
) -> ReturnsReport:
    """Build, check and write the Home Office return.

    Parameters
    ----------
    root : project root (holds ``parameters/``, ``reports/``)
    year : financial year ``YYYY/YY``
    quarter : 1-4 for a quarterly return (April-June = 1); None for the whole year
    out_dir : where to write (default ``<root>/outputs/returns/<YYYY-YY>[-Q<n>]``)
    long : the long frame (default: loaded as the tracking spec's ``data`` says)
    catalog : registries (default: loaded from ``<root>/parameters``)
    planted_values : extra strings that must not appear in the output (record-level values)

    Returns
    -------
    ReturnsReport

    Raises
    ------
    ReturnsCheckError
        when a check fails (nothing is written)
    """
    from sveval.pipeline.disclosure import check_table, load_rules
    from sveval.pipeline.tracking import load_spec, period_totals, publish_totals, track

    paths = ProjectPaths(Path(root))
    catalog = catalog or Catalog.load(paths.parameters)
    cfg = load_model(ReturnsConfig, paths.parameters / "returns.yaml")
    rules = load_rules(paths.parameters)
    spec_path = paths.tracking_specs / f"{cfg.tracking}.yaml"
    spec = load_spec(spec_path)
    period, window = _window(year, quarter)
    baseline, base_window = _window(spec.baseline_year, quarter)
    if period == baseline:
        raise PublishError(f"the reporting year {year} is the baseline year of {spec_path}")
    tr = track(spec_path, root=paths.root, long=long, catalog=catalog)
    failures: list[str] = []
    checks: list[dict[str, Any]] = []

    # 1. complete periods
    mon = tr.monthly[tr.monthly["area_type"].isin(["partnership", "area"])]
    for label, months in ((period, window), (baseline, base_window)):
        sub = mon[mon["period"].isin(months)]
        for (mid, code), g in sub.groupby(["measure", "area_code"]):
            have = set(g.dropna(subset=["count"])["period"])
            lack = [p for p in months if p not in have]
            if lack:
                failures.append(f"{mid} / {code}: {label} incomplete, no data for {', '.join(lack)}")
        present = set(sub["measure"])
        for ms in tr.measures:
            if ms.id not in present:
                failures.append(f"{ms.id}: no data at all in {label} ({months[0]} to {months[-1]})")
    checks.append({"check": "periods complete", "passed": not failures})

    totals = period_totals(tr.monthly, {period: window, baseline: base_window}, label="period")
    # 2. areas sum to the partnership total (before rounding)
    sum_fail = []
    for (mid, lab), g in totals[totals["area_type"].isin(["partnership", "area"])].groupby(["measure", "period"]):
        tot = g.loc[g["area_type"] == "partnership", "fy_count"]
        parts = g.loc[g["area_type"] == "area", "fy_count"]
        if len(parts) and len(tot) and not np.isclose(parts.sum(), tot.iloc[0]):
            sum_fail.append(f"{mid} {lab}: areas sum to {parts.sum():g}, partnership total {tot.iloc[0]:g}")
    failures += sum_fail
    checks.append({"check": "areas sum to the partnership total", "passed": not sum_fail})
    if failures:
        raise ReturnsCheckError(failures)

    # protected measures: the cells of the one plan shared with the tracking tables and every
    # other return (sveval.pipeline.disclosure.plan_cells)
    pub = publish_totals(totals[totals["area_type"] != "comparison_area"], rules, baseline, label="period",
                         plan=tr.cell_plan(rules), windows={period: window, baseline: base_window})
    pub = pub[pub["period"] == period].copy()
    pub["baseline_period"] = baseline
    pub["split_of"] = pub["measure"].map(lambda m: catalog.measures[m].parent or "")
    cols = cfg.measure_columns or list(pub.columns)
    unknown = [c for c in cols if c not in pub.columns]
    if unknown:
        raise PublishError(f"{paths.parameters / 'returns.yaml'}: measure_columns {unknown} are not available; "
                           f"allowed: {', '.join(pub.columns)}")
    if "disclosure" not in cols:
        cols = [*cols, "disclosure"]
    if "area_type" not in cols:
        cols = [*cols, "area_type"]
    pub = pub[cols].map(_fmt_num)
    headline_ids = {m.id for m in tr.measures if m.headline}
    headline = pub[pub["measure"].isin(headline_ids)].reset_index(drop=True)
    local = pub[~pub["measure"].isin(headline_ids)].reset_index(drop=True)

    records = _read_evaluations(paths.report_evaluations)
    interventions = interventions_table(catalog, records, period)
    quality = _data_quality(tr, window, base_window, pub, rules)
    src = (long if long is not None else tr.monthly)[["period", "area_code", "measure", "count"]]
    h = hashlib.sha256(src.sort_values(["period", "area_code", "measure"]).to_csv(index=False).encode()).hexdigest()
    generated = declared_timestamp()
    meta = _metadata(cfg, tr, catalog, period, baseline, rules, h, generated, paths.parameters)
    content = {"headline": headline, "local": local, "interventions": interventions,
               "data_quality": quality, "metadata": meta}

    # 3. disclosure: nothing recoverable, nothing unrounded
    disc = []
    for s in cfg.sheets:
        disc += check_table(content[s.content], f"sheet '{s.name}'", rules)
    checks.append({"check": "disclosure control of every cell", "passed": not disc})
    if disc:
        raise ReturnsCheckError(disc)

    # 4. write to a temporary folder, scan it, then move into place
    tag = year.replace("/", "-") + (f"-Q{quarter}" if quarter else "")
    out_dir = Path(out_dir) if out_dir else paths.outputs / "returns" / tag
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with project_lock(paths.reports, "sveval returns"):
        for stale in out_dir.parent.glob(".returns-*"):  # left by a returns run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        return _write_returns(out_dir, cfg, content, tag, rules, planted_values, checks, period, baseline,
                              generated)


def _write_returns(out_dir, cfg, content, tag, rules, planted_values, checks, period, baseline, generated):
    """Write the workbook and CSVs into a temporary folder, scan them, then move them into place."""
    from sveval.pipeline.disclosure import scan_published

    tmp = Path(tempfile.mkdtemp(prefix=".returns-", dir=out_dir.parent))
    try:
        wb_name = f"{cfg.prefix}_{tag}.xlsx"
        ordered = [(s.name, content[s.content]) for s in cfg.sheets]
        _write_xlsx(tmp / wb_name, ordered, cfg.title, generated)
        csvs = {}
        for s in cfg.sheets:
            stem = s.csv or s.name.lower().replace(" ", "_")
            name = f"{cfg.prefix}_{tag}_{stem}.csv"
            content[s.content].to_csv(tmp / name, index=False)
            csvs[s.content] = name
        findings = scan_published([tmp], rules=rules, planted_values=planted_values or [])
        checks.append({"check": "published-file scan (counts, recoverable cells, record-level fields)",
                       "passed": not findings})
        if findings:
            raise ReturnsCheckError(findings)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReturnsReport(out_dir, out_dir / wb_name, {k: out_dir / v for k, v in csvs.items()}, checks,
                         period, baseline, content)
