"""Batch execution of evaluation notebooks with papermill.

For each parameter file the runner:

1. validates it fully (schema, registries, data coverage) before anything executes;
2. executes ``evaluations/<design>.ipynb`` with papermill into a temporary file, passing ``spec_path``,
   ``result_path`` and ``root``;
3. on success, moves the executed notebook and result JSON into ``reports/evaluations/<id>.ipynb``
   and ``<id>.json`` (the previous pair is kept in ``reports/.sveval/previous/``);
4. on failure, keeps the failed notebook with its error at ``<id>.ipynb`` and writes a ``failed``
   result JSON carrying the error, keeps the previous pair in ``reports/.sveval/previous/``, and goes on
   with the other evaluations.

Runs are cached: an evaluation whose parameter file, notebook, data and sveval version are unchanged
since its last successful run is skipped unless ``force`` is given. Workers are capped at the number
of cores, and a kernel that dies at start is retried (a measured failure mode of papermill).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sveval._version import __version__
from sveval.catalog import Catalog
from sveval.errors import SvevalError
from sveval.paths import ProjectPaths, write_json_atomic
from sveval.pipeline.api import prepare
from sveval.pipeline.record import failure_record, write_record

KERNEL_START_ERRORS = ("Kernel died before replying to kernel_info", "Kernel didn't respond", "DeadKernelError")
STATE_DIR = ".sveval"  # hidden from Quarto: reports/.sveval/{manifest.json, previous/}


@dataclass
class RunOutcome:
    id: str
    spec_path: str
    status: str  # "completed" | "failed" | "cached" | "invalid"
    notebook: str | None = None
    result: str | None = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 0


@dataclass
class RunReport:
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.status in ("completed", "cached") for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "outcomes": [asdict(o) for o in self.outcomes]}


def discover_specs(paths: ProjectPaths) -> list[Path]:
    """All evaluation parameter files, sorted."""
    return sorted(paths.evaluation_specs.glob("*.yaml")) + sorted(paths.evaluation_specs.glob("*.yml"))


def _hash_files(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.name).encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def _sveval_source_hash() -> str:
    """Hash of the installed sveval sources, so a code change invalidates the cache."""
    pkg = Path(__file__).resolve().parents[1]  # the sveval package folder
    return _hash_files(sorted(pkg.rglob("*.py")))


def validate_all(spec_paths: list[Path], paths: ProjectPaths) -> tuple[dict[Path, Any], dict[Path, str]]:
    """Fully validate every spec; return (contexts by path, error messages by path)."""
    catalog = Catalog.load(paths.parameters)
    contexts: dict[Path, Any] = {}
    errors: dict[Path, str] = {}
    seen_ids: dict[str, Path] = {}
    for p in spec_paths:
        try:
            ctx = prepare(p, root=paths.root, catalog=catalog)
        except SvevalError as exc:
            errors[p] = str(exc)
            continue
        if ctx.spec.id in seen_ids:
            errors[p] = f"{p}: id '{ctx.spec.id}' is also used by {seen_ids[ctx.spec.id]}"
            continue
        seen_ids[ctx.spec.id] = p
        contexts[p] = ctx
    return contexts, errors


def _cache_key(ctx: Any, notebook: Path, code_hash: str) -> str:
    h = hashlib.sha256()
    h.update(ctx.spec_path.read_bytes())
    h.update(notebook.read_bytes())
    for f in ctx.data_files:
        h.update(str(f).encode())
        h.update(str(f.stat().st_size).encode())
        h.update(str(int(f.stat().st_mtime)).encode())
    params_dir = ctx.paths.parameters
    for reg in ("measures.yaml", "areas.yaml", "interventions.yaml"):
        if (params_dir / reg).exists():
            h.update((params_dir / reg).read_bytes())
    h.update(code_hash.encode())
    return h.hexdigest()


def _load_manifest(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def _keep_previous(out_dir: Path, eid: str) -> None:
    prev = out_dir.parent / STATE_DIR / "previous"
    for suffix in (".ipynb", ".json"):
        src = out_dir / f"{eid}{suffix}"
        if src.exists():
            prev.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, prev / src.name)


def _execute(ctx: Any, notebook: Path, out_dir: Path, kernel: str, retries: int, timeout: int) -> RunOutcome:
    import papermill as pm

    eid = ctx.spec.id
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"sveval-{eid}-"))
    tmp_nb = tmp / f"{eid}.ipynb"
    tmp_json = tmp / f"{eid}.json"
    params = {"spec_path": str(ctx.spec_path), "result_path": str(tmp_json), "root": str(ctx.paths.root)}
    attempts = 0
    error: str | None = None
    while True:
        attempts += 1
        try:
            pm.execute_notebook(
                str(notebook), str(tmp_nb), parameters=params, kernel_name=kernel,
                cwd=str(ctx.paths.root), progress_bar=False, log_output=False,
                execution_timeout=timeout,
            )
            error = None
        except pm.PapermillExecutionError as exc:
            error = f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # kernel start-up and other papermill failures
            error = f"{type(exc).__name__}: {exc}"
            if attempts <= retries and any(k in error for k in KERNEL_START_ERRORS):
                time.sleep(1.0)
                continue
        break
    if error is None and not tmp_json.exists():
        error = "the notebook finished without writing its result JSON (is save() called?)"
    out_dir.mkdir(parents=True, exist_ok=True)
    final_nb = out_dir / f"{eid}.ipynb"
    final_json = out_dir / f"{eid}.json"
    _keep_previous(out_dir, eid)
    if tmp_nb.exists():
        os.replace(tmp_nb, final_nb)
    if error is None:
        os.replace(tmp_json, final_json)
        status = "completed"
    else:
        write_record(final_json, failure_record(ctx, error, notebook=final_nb.name if final_nb.exists() else None))
        status = "failed"
    shutil.rmtree(tmp, ignore_errors=True)
    return RunOutcome(
        id=eid, spec_path=str(ctx.spec_path), status=status,
        notebook=str(final_nb) if final_nb.exists() else None, result=str(final_json),
        error=error, seconds=round(time.perf_counter() - t0, 2), attempts=attempts,
    )


def run(
    spec_paths: list[Path] | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
    workers: int | None = None,
    keep_going: bool = False,
    kernel: str = "python3",
    retries: int = 2,
    timeout: int = 1800,
    echo: Callable[[str], None] = print,
) -> RunReport:
    """Validate and execute evaluations; see the module docstring.

    Parameters
    ----------
    spec_paths : parameter files; all of ``parameters/evaluations`` when None
    force : rerun even when the cache says nothing changed
    workers : parallel notebooks (default and cap: number of cores)
    keep_going : run the valid evaluations even if some parameter files are invalid
        (by default an invalid file stops the whole batch before anything runs)
    """
    paths = ProjectPaths(root) if root else ProjectPaths.discover()
    specs = [Path(p).resolve() for p in (spec_paths or discover_specs(paths))]
    report = RunReport()
    if not specs:
        echo(f"no evaluation parameter files found in {paths.evaluation_specs}")
        return report
    echo(f"validating {len(specs)} evaluation(s)...")
    contexts, errors = validate_all(specs, paths)
    for p, msg in errors.items():
        report.outcomes.append(RunOutcome(id=p.stem, spec_path=str(p), status="invalid", error=msg))
        echo(f"INVALID {msg}")
    if errors and not keep_going:
        echo(f"{len(errors)} invalid parameter file(s): nothing was run (fix them, or use --keep-going)")
        return report

    out_dir = paths.report_evaluations
    manifest_path = paths.reports / STATE_DIR / "manifest.json"
    manifest = _load_manifest(manifest_path)
    code_hash = _sveval_source_hash()
    todo = []
    for p, ctx in contexts.items():
        notebook = paths.notebooks / f"{ctx.spec.design}.ipynb"
        if not notebook.exists():
            report.outcomes.append(
                RunOutcome(id=ctx.spec.id, spec_path=str(p), status="failed",
                           error=f"no notebook for design '{ctx.spec.design}' at {notebook}")
            )
            continue
        key = _cache_key(ctx, notebook, code_hash)
        prev = manifest.get("evaluations", {}).get(ctx.spec.id, {})
        if (
            not force and prev.get("cache_key") == key and prev.get("status") == "completed"
            and (out_dir / f"{ctx.spec.id}.json").exists() and (out_dir / f"{ctx.spec.id}.ipynb").exists()
        ):
            report.outcomes.append(
                RunOutcome(id=ctx.spec.id, spec_path=str(p), status="cached",
                           notebook=str(out_dir / f"{ctx.spec.id}.ipynb"),
                           result=str(out_dir / f"{ctx.spec.id}.json"))
            )
            echo(f"cached   {ctx.spec.id} (unchanged; use --force to rerun)")
            continue
        todo.append((ctx, notebook, key))

    n_workers = max(1, min(workers or os.cpu_count() or 1, os.cpu_count() or 1, len(todo) or 1))
    keys = {ctx.spec.id: key for ctx, _, key in todo}

    def _one(item):
        ctx, notebook, _ = item
        try:
            return _execute(ctx, notebook, out_dir, kernel, retries, timeout)
        except Exception as exc:  # never let one evaluation stop the batch
            return RunOutcome(id=ctx.spec.id, spec_path=str(ctx.spec_path), status="failed",
                              error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")

    if todo:
        echo(f"running {len(todo)} evaluation(s) with {n_workers} worker(s)...")
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for outcome in pool.map(_one, todo):
            report.outcomes.append(outcome)
            if outcome.status == "completed":
                echo(f"done     {outcome.id} ({outcome.seconds:.1f} s)")
            else:
                echo(f"FAILED   {outcome.id}: {outcome.error} (notebook kept: {outcome.notebook})")

    entries = manifest.get("evaluations", {})
    for o in report.outcomes:
        if o.status in ("completed", "failed"):
            entries[o.id] = {
                "status": o.status, "cache_key": keys.get(o.id) if o.status == "completed" else None,
                "spec_path": os.path.relpath(o.spec_path, paths.root), "seconds": o.seconds,
                "error": o.error,
                "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
    if entries:
        write_json_atomic(manifest_path, {"sveval_version": __version__, "evaluations": dict(sorted(entries.items()))})
    return report
