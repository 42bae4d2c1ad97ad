"""Batch execution of evaluation notebooks with papermill.

For each parameter file the runner:

1. validates it fully (schema, registries, data coverage) before anything executes;
2. executes ``evaluations/<design>.ipynb`` through the shared executor
   (:func:`sveval.pipeline.executor.execute`: IPC kernels, start-up retries, the failing cell named,
   a dead kernel reported as such, normalised output) in a private work folder inside
   ``reports/evaluations/``, passing ``spec_path``, ``result_path`` and ``root``;
3. on success, swaps the executed notebook and result JSON into ``reports/evaluations/<id>.ipynb``
   and ``<id>.json`` (atomic renames);
4. on failure, first keeps the last good pair in ``reports/.sveval/last-good/`` (only when the pair in
   place is a completed result, so two failures in a row still leave the last good pair), then puts
   the failed notebook with its error at ``<id>.ipynb`` and a ``failed`` result JSON naming the
   failing cell and exception at ``<id>.json``, and goes on with the other evaluations;
5. records the outcome in ``reports/.sveval/manifest.json`` as each evaluation ends (atomically), so
   a batch that is killed resumes: the next run executes only what is missing or stale.

Runs are cached: an evaluation whose parameter file, registries, notebook, data (by content) and
sveval sources are unchanged since its last successful run, and whose outputs are in place and
readable, is skipped unless ``force`` is given; when the parameter file, registries and notebook
(by content) and the data files (by size and modification time) are as at that run, it is skipped
without being validated and its data loaded again (a rerun with nothing changed takes well under a
second). The whole batch holds the project lock
(:mod:`sveval.pipeline.lock`), and work folders left by a killed run are removed at the start.

Notebooks run longest first on warm kernels (one per worker, reset between notebooks) with a
progress bar, or on a Dask cluster (:mod:`sveval.pipeline.batch`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from sveval._version import __version__
from sveval.errors import PublishError, SvevalError
from sveval.paths import ProjectPaths
from sveval.pipeline import batch, executor, kept
from sveval.pipeline.lock import project_lock

STATE_DIR = ".sveval"  # hidden from Quarto: reports/.sveval/{manifest.json, last-good/, lock}
LAST_GOOD = "last-good"


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
    failure: dict[str, Any] | None = None


@dataclass
class RunReport:
    outcomes: list[RunOutcome] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

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


def validate_all(spec_paths: list[Path], paths: ProjectPaths) -> tuple[dict[Path, Any], dict[Path, str]]:
    """Fully validate every spec; return (contexts by path, error messages by path)."""
    from sveval.catalog import Catalog
    from sveval.data.load import shared_loads
    from sveval.pipeline.api import prepare  # here: the designs' imports are not needed before

    catalog = Catalog.load(paths.parameters)
    contexts: dict[Path, Any] = {}
    errors: dict[Path, str] = {}
    seen_ids: dict[str, Path] = {}
    with shared_loads():  # the store is checked and the long frame read once per batch
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
    """What decides an evaluation's outputs: its parameter file, the registries, the notebook, the
    data files' contents and the sveval sources."""
    registries = sorted(ctx.paths.parameters.glob("*.yaml"))
    return executor.cache_key(notebook=notebook, inputs=[ctx.spec_path, *registries],
                              data=ctx.data_files, code=code_hash)


def _stamp_key(spec_path: Path, paths: ProjectPaths, entry: dict[str, Any], code_hash: str) -> str | None:
    """A quick key for an evaluation whose last run completed: its cache key, its parameter file
    and registries and notebook (by content) and its data files by size and modification time, as
    recorded then. Equal to the recorded ``stamp_key`` only when none of these changed, so the
    evaluation is still valid and current without loading its data again. None when unknown."""
    import hashlib
    import json

    inputs = entry.get("inputs")
    if not isinstance(inputs, dict) or not entry.get("cache_key"):
        return None
    h = hashlib.sha256(f"{entry['cache_key']}\0{code_hash}\0".encode())
    try:
        for f in [spec_path, *sorted(paths.parameters.glob("*.yaml")), paths.root / inputs["notebook"]]:
            h.update(f.name.encode() + b"\0" + Path(f).read_bytes())
        for rel in inputs["data"]:
            st = (paths.root / rel).stat()
            h.update(json.dumps([rel, st.st_size, st.st_mtime_ns]).encode())
    except (OSError, KeyError, TypeError):
        return None
    return h.hexdigest()


def _inputs(ctx: Any, notebook: Path, paths: ProjectPaths) -> dict[str, Any]:
    return {"notebook": os.path.relpath(notebook, paths.root),
            "data": sorted(os.path.relpath(f, paths.root) for f in ctx.data_files)}


def _valid_pair(out_dir: Path, eid: str) -> bool:
    """``<id>.json`` is a readable completed record and ``<id>.ipynb`` a readable notebook."""
    from sveval.pipeline.record import read_record  # here: it imports pandas, which a run of
    # evaluations only needs after its kernels are launched

    try:
        if not read_record(out_dir / f"{eid}.json").completed:
            return False
        nbformat.read(str(out_dir / f"{eid}.ipynb"), as_version=4)
    except (PublishError, OSError, ValueError):
        return False
    return True


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _keep_last_good(out_dir: Path, eid: str) -> dict[str, Any] | None:
    """Copy the pair in place to ``.sveval/last-good/`` when it is a completed result; return where
    the last good result is (None when there has never been one)."""
    from sveval.pipeline.record import read_record

    keep = out_dir.parent / STATE_DIR / LAST_GOOD
    if _valid_pair(out_dir, eid):
        keep.mkdir(parents=True, exist_ok=True)
        _copy_atomic(out_dir / f"{eid}.ipynb", keep / f"{eid}.ipynb")
        _copy_atomic(out_dir / f"{eid}.json", keep / f"{eid}.json")  # last: the pair is complete
    if not (keep / f"{eid}.json").exists():
        return None
    try:
        record = read_record(keep / f"{eid}.json")
    except PublishError:
        return None
    nb = keep / f"{eid}.ipynb"
    return {"result": (keep / f"{eid}.json").relative_to(out_dir.parent).as_posix(),
            "notebook": nb.relative_to(out_dir.parent).as_posix() if nb.exists() else None,
            "generated_at": record.provenance.generated_at}


@dataclass
class _Early:
    """A notebook started before its parameter file was validated (:func:`_start_early`)."""

    spec_path: Path
    notebook: Path
    work: Path
    future: Any
    t0: float


def _start_early(spec_path: Path, paths: ProjectPaths, threads: ThreadPoolExecutor, kernel: str,
                 retries: int, timeout: int, pool: Any) -> _Early | None:
    """Start the one evaluation of a run on its warm kernel while the parameter file is validated.

    A run of one parameter file (an evaluator rerunning the file they edit) would otherwise wait for
    validation (about half a second) before the notebook starts. The notebook writes into a private
    work folder only: :func:`_execute` takes its result once the file is valid and needs running;
    otherwise it is thrown away (:func:`_discard_early`) and nothing is written, as if it had never
    started. The notebook validates the file itself too, so an invalid one fails at once.
    """
    from sveval.spec import read_yaml

    try:
        doc = read_yaml(spec_path)
        design = doc.get("design") if isinstance(doc, dict) else None
        notebook = paths.notebook(str(design)) if isinstance(design, str) else None
    except (SvevalError, OSError, ValueError):
        return None
    if notebook is None or not notebook.is_file():
        return None
    out_dir = paths.report_evaluations
    work = executor.work_folder(out_dir, spec_path.stem)
    params = {"spec_path": str(spec_path), "result_path": str(work / f"{spec_path.stem}.json"),
              "root": str(paths.root)}
    future = threads.submit(executor.execute, notebook, out_dir / f"{spec_path.stem}.ipynb", params,
                            work=work, cwd=paths.root, kernel=kernel, timeout=timeout,
                            retries=retries, swap=False, pool=pool)
    return _Early(spec_path, notebook, work, future, time.perf_counter())


def _discard_early(early: _Early | None) -> None:
    if early is not None:
        try:
            early.future.result()  # the notebook fails fast on an invalid file; wait, then delete
        except Exception:  # noqa: BLE001 - its outcome is not used
            pass
        shutil.rmtree(early.work, ignore_errors=True)


def _execute(ctx: Any, notebook: Path, out_dir: Path, kernel: str, retries: int, timeout: int,
             execute: Callable[..., executor.Execution] = executor.execute, pool: Any = None,
             early: _Early | None = None) -> RunOutcome:
    from sveval.pipeline.record import failure_record, read_record, write_record

    eid = ctx.spec.id
    t0 = time.perf_counter()
    final_nb = out_dir / f"{eid}.ipynb"
    final_json = out_dir / f"{eid}.json"
    if early is not None:  # started before validation, into its own work folder
        work, t0 = early.work, early.t0
    else:
        work = executor.work_folder(out_dir, eid)
    try:
        tmp_json = work / final_json.name
        if early is not None:
            ex = early.future.result()
        else:
            params = {"spec_path": str(ctx.spec_path), "result_path": str(tmp_json), "root": str(ctx.paths.root)}
            ex = execute(notebook, final_nb, params, work=work, cwd=ctx.paths.root, kernel=kernel,
                         timeout=timeout, retries=retries, swap=False, pool=pool)
        failure = ex.failure.to_dict() if ex.failure else None
        error = ex.error
        if ex.ok:
            try:
                if not read_record(tmp_json).completed:
                    error = "the notebook wrote a result JSON whose status is not 'completed'"
            except PublishError as exc:
                error = ("the notebook finished without writing its result JSON (is save() called?)"
                         if not tmp_json.exists() else str(exc).replace(str(work), str(out_dir)))
        if error is None:
            os.replace(work / final_nb.name, final_nb)
            os.replace(tmp_json, final_json)
            for stale in (out_dir.parent / STATE_DIR / LAST_GOOD).glob(f"{eid}.*"):
                stale.unlink(missing_ok=True)  # the result in place is now the last good one
            status = "completed"
        else:
            # keep the last good pair and write the failure record before touching the outputs:
            # a full disk stops here with the pair in place unchanged
            last_good = _keep_last_good(out_dir, eid)
            record_tmp = work / f"{eid}.failed.json"
            write_record(record_tmp, failure_record(
                ctx, error, notebook=final_nb.name if ex.notebook is not None else None,
                failure=failure, last_good=last_good))
            if ex.notebook is not None:
                os.replace(work / final_nb.name, final_nb)
            elif final_nb.exists():
                final_nb.unlink()  # never leave an older notebook beside a failure record
            os.replace(record_tmp, final_json)
            status = "failed"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RunOutcome(
        id=eid, spec_path=str(ctx.spec_path), status=status,
        notebook=str(final_nb) if final_nb.exists() else None, result=str(final_json),
        error=error, seconds=round(time.perf_counter() - t0, 2), attempts=ex.attempts, failure=failure,
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
    wait: float = 0.0,
    fresh_kernels: bool = False,
    scheduler: str | None = None,
    progress: bool | None = None,
    keep_kernels: float | None = None,
    workers_shared: batch.Workers | None = None,
) -> RunReport:
    """Validate and execute evaluations; see the module docstring.

    Parameters
    ----------
    spec_paths : parameter files; all of ``parameters/evaluations`` when None
    force : rerun even when the cache says nothing changed
    workers : parallel notebooks (default and cap: number of cores)
    keep_going : run the valid evaluations even if some parameter files are invalid
        (by default an invalid file stops the whole batch before anything runs)
    wait : seconds to wait for the project lock when another run holds it (0: fail at once
        with :class:`sveval.pipeline.lock.LockBusy`)
    fresh_kernels : a new kernel for every notebook instead of one warm kernel per worker
    scheduler : a Dask distributed scheduler's address (``tcp://host:8786``) or scheduler file:
        the notebooks run on that cluster's workers, which must see the project folder at the same
        path; the outputs are written here (see :mod:`sveval.pipeline.batch`). None: run locally
    progress : a progress bar on stderr (None: when stderr is a terminal; plain lines otherwise)
    keep_kernels : seconds to keep this run's warm kernels after it ends, for the next run in the
        project to adopt (:mod:`sveval.pipeline.kept`); None: ``$SVEVAL_KEEP_KERNELS``, unset or
        0: off (the kernels are shut down at the end)
    workers_shared : worker threads and warm kernels shared with other steps of the same command
        (:class:`sveval.pipeline.batch.Workers`; ``sveval pipeline``), used instead of this run's
        own (``workers`` and ``keep_kernels`` then do not apply)
    """
    paths = ProjectPaths(root) if root else ProjectPaths.discover()
    with project_lock(paths.reports, "sveval run", wait=wait):
        return _run(paths, spec_paths, force=force, workers=workers, keep_going=keep_going,
                    kernel=kernel, retries=retries, timeout=timeout, echo=echo,
                    fresh_kernels=fresh_kernels, scheduler=scheduler, progress=progress,
                    keep_kernels=kept.idle_from_env(keep_kernels), shared=workers_shared)


def _run(paths: ProjectPaths, spec_paths: list[Path] | None, *, force: bool, workers: int | None,
         keep_going: bool, kernel: str, retries: int, timeout: int, echo: Callable[[str], None],
         fresh_kernels: bool = False, scheduler: str | None = None,
         progress: bool | None = None, keep_kernels: float | None = None,
         shared: batch.Workers | None = None) -> RunReport:
    specs = [Path(p).resolve() for p in (spec_paths or discover_specs(paths))]
    report = RunReport()
    out_dir = paths.report_evaluations
    state = paths.reports / STATE_DIR
    for folder in (out_dir, state, state / LAST_GOOD):  # left by a killed run (we hold the lock)
        report.cleaned += [str(p) for p in executor.clean_work_folders(folder, all_=True)]
    if report.cleaned:
        echo(f"removed {len(report.cleaned)} temporary file(s) or folder(s) left by an interrupted run")
    if not specs:
        echo(f"no evaluation parameter files found in {paths.evaluation_specs}")
        return report
    manifest = executor.Manifest(state / "manifest.json", header={"sveval_version": __version__})
    if manifest.corrupt:
        echo(f"warning: {manifest.path} was unreadable; it is rebuilt and every evaluation reruns")
    code_hash = executor.code_hash()
    cached_ids: dict[str, Path] = {}
    if not force:  # unchanged since a completed run (validated then): cached without loading data
        by_path = {(paths.root / str(e.get("spec_path"))).resolve(): (eid, e)
                   for eid, e in manifest.entries.items() if e.get("status") == "completed"}
        unchanged = []
        for p in specs:
            eid, entry = by_path.get(p, (None, {}))
            if (eid and entry.get("stamp_key") and entry["stamp_key"] == _stamp_key(p, paths, entry, code_hash)
                    and _valid_pair(out_dir, eid)):
                unchanged.append(p)
                cached_ids[eid] = p
                report.outcomes.append(RunOutcome(id=eid, spec_path=str(p), status="cached",
                                                  notebook=str(out_dir / f"{eid}.ipynb"),
                                                  result=str(out_dir / f"{eid}.json")))
                echo(f"cached   {eid} (unchanged; use --force to rerun)")
        specs = [p for p in specs if p not in unchanged]
        if not specs:
            return report
    # warm kernels start (and import sveval, pandas, statsmodels ...) while the files are validated
    prestart = not fresh_kernels and not scheduler
    own = shared is None or not prestart or shared.kernel != kernel
    if own:
        n_threads = batch.worker_count(workers, len(specs))
        threads = ThreadPoolExecutor(max_workers=n_threads) if prestart else None
        pool = batch.KernelPool(kernel, starter=_kept_starter(paths, keep_kernels)) if prestart else None
    else:  # the command's shared workers, some perhaps busy with another step's notebook
        n_threads, threads, pool = min(shared.n, len(specs)), shared.threads, shared.pool
    try:
        if pool is not None:
            batch.prestart(pool, threads, n_threads, paths.root, together=own)
        return _validate_and_run(paths, specs, report, manifest, code_hash, cached_ids, force=force,
                                 workers=workers, keep_going=keep_going, kernel=kernel, retries=retries,
                                 timeout=timeout, echo=echo, fresh_kernels=fresh_kernels,
                                 scheduler=scheduler, progress=progress, threads=threads, pool=pool)
    finally:
        if own and threads is not None:
            threads.shutdown(wait=True)
        if own and pool is not None:
            pool.close()


def _kept_starter(paths: ProjectPaths, idle: float | None) -> Callable[[str, Path | str], Any] | None:
    """Warm kernels that outlive the run (adopted from an earlier run, else started detached), or
    None for the run's own kernels."""
    if not idle:
        return None
    registry = paths.reports / STATE_DIR / kept.REGISTRY
    fingerprints: dict[str, str] = {}

    def start(kernel: str, cwd: Path | str) -> Any:
        fp = fingerprints.setdefault(kernel, kept.fingerprint(kernel, batch.WARM_IMPORTS))
        return (kept.KeptKernel.adopt(registry, kernel, fp)
                or kept.KeptKernel.start(registry, kernel, idle, cwd, fp))

    return start


def _validate_and_run(paths: ProjectPaths, specs: list[Path], report: RunReport, manifest: Any,
                      code_hash: str, cached_ids: dict[str, Path], *, force: bool, workers: int | None,
                      keep_going: bool, kernel: str, retries: int, timeout: int,
                      echo: Callable[[str], None], fresh_kernels: bool, scheduler: str | None,
                      progress: bool | None, threads: ThreadPoolExecutor | None,
                      pool: Any) -> RunReport:
    # one parameter file on warm kernels: its notebook starts now, while the file is validated
    early = (_start_early(specs[0], paths, threads, kernel, retries, timeout, pool)
             if len(specs) == 1 and pool is not None and threads is not None else None)
    try:
        return _validated_run(paths, specs, report, manifest, code_hash, cached_ids, force=force,
                              workers=workers, keep_going=keep_going, kernel=kernel, retries=retries,
                              timeout=timeout, echo=echo, fresh_kernels=fresh_kernels,
                              scheduler=scheduler, progress=progress, threads=threads, pool=pool,
                              early=early)
    finally:
        if early is not None and early.work.exists():  # not used: invalid, cached or failed
            _discard_early(early)


def _validated_run(paths: ProjectPaths, specs: list[Path], report: RunReport, manifest: Any,
                   code_hash: str, cached_ids: dict[str, Path], *, force: bool, workers: int | None,
                   keep_going: bool, kernel: str, retries: int, timeout: int,
                   echo: Callable[[str], None], fresh_kernels: bool, scheduler: str | None,
                   progress: bool | None, threads: ThreadPoolExecutor | None, pool: Any,
                   early: _Early | None) -> RunReport:
    out_dir = paths.report_evaluations
    echo(f"validating {len(specs)} evaluation(s)...")
    contexts, errors = validate_all(specs, paths)
    for p, ctx in list(contexts.items()):  # an id taken by an unchanged evaluation
        if ctx.spec.id in cached_ids:
            errors[p] = f"{p}: id '{ctx.spec.id}' is also used by {cached_ids[ctx.spec.id]}"
            del contexts[p]
    for p, msg in errors.items():
        report.outcomes.append(RunOutcome(id=p.stem, spec_path=str(p), status="invalid", error=msg))
        echo(f"INVALID {msg}")
    if errors and not keep_going:
        echo(f"{len(errors)} invalid parameter file(s): nothing was run (fix them, or use --keep-going)")
        return report

    todo = []
    for p, ctx in contexts.items():
        notebook = paths.notebook(ctx.spec.design)
        if not notebook.exists():
            msg = f"no notebook for design '{ctx.spec.design}' at {notebook}"
            report.outcomes.append(RunOutcome(id=ctx.spec.id, spec_path=str(p), status="failed", error=msg))
            echo(f"FAILED   {ctx.spec.id}: {msg}")
            continue
        key = _cache_key(ctx, notebook, code_hash)
        prev = manifest.get(ctx.spec.id)
        if (not force and prev.get("cache_key") == key and prev.get("status") == "completed"
                and _valid_pair(out_dir, ctx.spec.id)):
            if not prev.get("stamp_key"):  # recorded by an older version: the next rerun is quick
                prev["inputs"] = _inputs(ctx, notebook, paths)
                prev["stamp_key"] = _stamp_key(Path(p), paths, prev, code_hash)
                try:
                    manifest.update(ctx.spec.id, prev)
                except OSError:
                    pass
            report.outcomes.append(
                RunOutcome(id=ctx.spec.id, spec_path=str(p), status="cached",
                           notebook=str(out_dir / f"{ctx.spec.id}.ipynb"),
                           result=str(out_dir / f"{ctx.spec.id}.json"))
            )
            echo(f"cached   {ctx.spec.id} (unchanged; use --force to rerun)")
            continue
        todo.append((ctx, notebook, key))

    if todo and pool is not None and not scheduler:
        batch.register_engine()  # imports papermill now, while the kernels warm up, not after
    expected = {ctx.spec.id: batch.estimate_seconds(ctx, manifest.get(ctx.spec.id)) for ctx, _, _ in todo}
    todo = batch.longest_first(todo, lambda item: expected[item[0].spec.id])
    client = batch.connect(scheduler) if scheduler and todo else None
    if client is not None:  # the cluster's threads, not this machine's cores
        n_workers = max(1, min(workers or len(todo), len(todo),
                               sum(client.nthreads().values()) or 1))
        execute: Callable[..., executor.Execution] = batch.DaskRunner(client, warm=not fresh_kernels)
        execute.priority = {ctx.spec.id: len(todo) - i for i, (ctx, _, _) in enumerate(todo)}
    else:
        n_workers = batch.worker_count(workers, len(todo))
        execute = executor.execute

    def _one(item):
        ctx, notebook, key = item
        pre = early if (early is not None and client is None and Path(ctx.spec_path) == early.spec_path
                        and notebook == early.notebook and ctx.spec.id == early.spec_path.stem) else None
        try:
            outcome = _execute(ctx, notebook, out_dir, kernel, retries, timeout, execute, pool, pre)
        except Exception as exc:  # never let one evaluation stop the batch
            outcome = RunOutcome(id=ctx.spec.id, spec_path=str(ctx.spec_path), status="failed",
                                 error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        try:  # as each evaluation ends: a killed batch resumes from here
            entry = {
                "status": outcome.status, "cache_key": key if outcome.status == "completed" else None,
                "spec_path": os.path.relpath(outcome.spec_path, paths.root), "seconds": outcome.seconds,
                "error": outcome.error, "failure": outcome.failure,
                "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if outcome.status == "completed":
                entry["inputs"] = _inputs(ctx, notebook, paths)
                entry["stamp_key"] = _stamp_key(Path(ctx.spec_path), paths, entry, code_hash)
            manifest.update(outcome.id, entry)
        except OSError as exc:  # a full disk: the outputs are consistent, the next run redoes this one
            echo(f"warning: could not record {outcome.id} in {manifest.path} ({exc})")
        return outcome

    if todo:
        where = f"on the Dask cluster at {scheduler}" if client is not None else "locally"
        kernels = "a new kernel per notebook" if fresh_kernels else "warm kernels"
        echo(f"running {len(todo)} evaluation(s) {where} with {n_workers} worker(s), {kernels}...")
    bar = batch.Progress(expected, echo=echo, bar=progress) if todo else None
    done: dict[str, RunOutcome] = {}
    try:
        with (ThreadPoolExecutor(max_workers=n_workers) if threads is None else contextlib.nullcontext(threads)) as run_in:
            futures = [run_in.submit(_one, item) for item in todo]  # started longest first
            for future in as_completed(futures):
                outcome = future.result()
                done[outcome.id] = outcome
                if outcome.status == "completed":
                    line = f"done     {outcome.id} ({outcome.seconds:.1f} s)"
                else:
                    line = f"FAILED   {outcome.id}: {outcome.error} (notebook kept: {outcome.notebook})"
                bar.finished(outcome.id, line)
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    order = {ctx.spec.id: i for i, ctx in enumerate(contexts.values())}
    report.outcomes += sorted(done.values(), key=lambda o: order.get(o.id, len(order)))
    return report
