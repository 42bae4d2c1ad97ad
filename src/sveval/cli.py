"""The ``sveval`` command.

::

    sveval validate [FILES... | --all]     check parameter files against schema, registries and data
    sveval run [FILES... | --all]          execute evaluation notebooks into reports/evaluations/
        [--fresh-kernels] [--executor dask --scheduler ADDRESS]   (warm kernels; or on a Dask cluster)
    sveval track [FILES... | --all]        execute outcome-tracking reports into reports/tracking/
    sveval returns --year 2025/26          write the Home Office returns workbook and CSVs
    sveval publish                         write the Quarto site project and render it
    sveval pipeline                        all of the above on the built-in example
    sveval example [--force]               generate the built-in illustrative example data
    sveval plan ...                        months after launch until an effect is detectable
    sveval data ingest                     read new or changed source files into the store
    sveval data export [--measure ID] --out FILE.csv
                                           write the aggregated long table

Errors that sveval raises on purpose are printed without a traceback; the exit code is 0 on
success, 1 when an evaluation or step failed, 2 for invalid input.

``run``, ``track``, ``returns``, ``publish`` and ``pipeline`` hold the project lock
(``reports/.sveval/lock``): while one runs, another exits at once with code 1 naming the holder's
pid and command, or waits for it with ``--wait SECONDS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sveval.errors import SpecError, SvevalError
from sveval.paths import ProjectPaths

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _paths(args: argparse.Namespace) -> ProjectPaths:
    return ProjectPaths(Path(args.root).resolve()) if getattr(args, "root", None) else ProjectPaths.discover()


def _specs(args: argparse.Namespace, folder: Path) -> list[Path] | None:
    if args.files and args.all:
        raise SvevalError("give parameter files or --all, not both")
    if not args.files and not args.all:
        raise SvevalError(f"give one or more parameter files, or --all for every file in {folder}")
    if args.all:
        return None
    missing = [f for f in args.files if not Path(f).exists()]
    if missing:
        raise SpecError(missing[0], [("<file>", None, "file not found")])
    return [Path(f) for f in args.files]


def cmd_validate(args: argparse.Namespace) -> int:
    from sveval.pipeline.runner import discover_specs, validate_all

    paths = _paths(args)
    specs = _specs(args, paths.evaluation_specs) or discover_specs(paths)
    contexts, errors = validate_all([Path(p).resolve() for p in specs], paths)
    from sveval.catalog import Catalog
    from sveval.data.filters import check_measure_filters

    try:  # every measure's filter, used by an evaluation or not
        check_measure_filters(Catalog.load(paths.parameters))
    except SpecError as exc:
        errors[paths.parameters / "measures.yaml"] = str(exc)
    if not specs:
        print(f"no evaluation parameter files in {paths.evaluation_specs} yet: registries checked, "
              "nothing else to validate")
    for ctx in contexts.values():
        print(f"ok       {ctx.spec_path.name}: {ctx.spec.design} on {ctx.measure.id} in {ctx.area_label}, "
              f"{ctx.start}..{ctx.end}, start {ctx.intervention_start}")
    for msg in errors.values():
        print(msg, file=sys.stderr)
    return EXIT_INVALID if errors else EXIT_OK


def _interactive() -> bool:
    """Typed at a terminal (not a script, a pipe or CI)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def keep_kernels_for(requested: float | None, *, local_warm: bool, interactive: bool) -> tuple[float | None, bool]:
    """Seconds to keep a run's warm kernels for the next run, and whether that is the default.

    ``--keep-kernels`` as given (0: off), else ``$SVEVAL_KEEP_KERNELS``; else, for a run typed at a
    terminal on this machine's warm kernels (an evaluator rerunning the file they edit), kept for
    :data:`sveval.pipeline.kept.DEFAULT_IDLE` seconds; else off (scripts, pipes and CI leave no
    process behind)."""
    import os

    from sveval.pipeline import kept

    if requested is not None or os.environ.get(kept.ENV_VAR, "").strip():
        return kept.idle_from_env(requested), False
    if local_warm and interactive:
        return kept.DEFAULT_IDLE, True
    return None, False


def cmd_run(args: argparse.Namespace, workers: Any = None) -> int:
    from sveval.pipeline.runner import run

    paths = _paths(args)
    specs = _specs(args, paths.evaluation_specs)
    executor = getattr(args, "executor", "local")
    scheduler = getattr(args, "scheduler", None)
    if executor == "dask" and not scheduler:
        raise SvevalError("--executor dask needs --scheduler ADDRESS (tcp://host:8786 or a scheduler file)")
    if executor == "local" and scheduler:
        raise SvevalError("--scheduler is for --executor dask")
    fresh = getattr(args, "fresh_kernels", False)
    keep, by_default = keep_kernels_for(getattr(args, "keep_kernels", None), interactive=_interactive(),
                                        local_warm=executor == "local" and not fresh and workers is None)
    report = run(specs, root=paths.root, force=args.force, workers=args.workers, keep_going=args.keep_going,
                 wait=getattr(args, "wait", 0.0), fresh_kernels=fresh,
                 scheduler=scheduler if executor == "dask" else None,
                 keep_kernels=keep if keep else 0.0, workers_shared=workers)
    counts = report.counts()
    print("summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if by_default and keep:
        from sveval.pipeline import kept
        from sveval.pipeline.runner import STATE_DIR

        n = sum(r["running"] for r in kept.registered(paths.reports / STATE_DIR / kept.REGISTRY))
        if n:
            print(f"kept {n} warm kernel(s) for {keep / 60:.0f} min so that your next run starts at once "
                  "(`sveval kernels --stop` ends them; --keep-kernels 0 or SVEVAL_KEEP_KERNELS=0 turns "
                  "this off)")
    if any(o.status == "invalid" for o in report.outcomes):
        return EXIT_INVALID
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_publish(args: argparse.Namespace) -> int:
    from sveval.publish.workers import Helper

    with Helper() as helper:  # first: its worker imports the drawing code while this process loads the rest
        from sveval.catalog import Catalog
        from sveval.publish.site import collect_coverage, publish

        paths = _paths(args)
        catalog = Catalog.load(paths.parameters)
        from sveval.pipeline.lock import project_lock

        with project_lock(paths.reports, "sveval publish", wait=getattr(args, "wait", 0.0)):
            collect_coverage(paths.root / "benchmarks" / "results", paths.reports)
            rep = publish(paths.reports, catalog=catalog, quarto=None if args.no_quarto else "auto", helper=helper)
    print(rep.message)
    for w in rep.warnings:
        print(f"warning: {w}")
    return EXIT_OK


def cmd_track(args: argparse.Namespace, pool: Any = None) -> int:
    from sveval.pipeline.tracking import run_tracking

    paths = _paths(args)
    specs = _specs(args, paths.tracking_specs)
    if specs is None:
        specs = sorted(paths.tracking_specs.glob("*.yaml"))
        if not specs:
            raise SvevalError(f"no tracking parameter files in {paths.tracking_specs}")
    ok = run_tracking(specs, root=paths.root, force=getattr(args, "force", False),
                      wait=getattr(args, "wait", 0.0), pool=pool)
    return EXIT_OK if ok else EXIT_FAILED


def quarter_arg(text: str) -> int:
    """``--quarter``: Q1..Q4 (or 1..4), the quarter of the financial year (Q1 is April-June)."""
    t = text.strip().upper()
    t = t[1:] if t.startswith("Q") else t
    if t not in ("1", "2", "3", "4"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected Q1, Q2, Q3 or Q4 (Q1 is April to June)")
    return int(t)


def cmd_returns(args: argparse.Namespace) -> int:
    from sveval.pipeline.lock import project_lock
    from sveval.publish.returns import build_returns

    paths = _paths(args)
    with project_lock(paths.reports, "sveval returns", wait=getattr(args, "wait", 0.0)):
        rep = build_returns(paths.root, year=args.year, quarter=args.quarter,
                            out_dir=Path(args.out) if args.out else None)
    print(getattr(rep, "message", None) or f"returns written: {rep}")
    return EXIT_OK


def cmd_example(args: argparse.Namespace) -> int:
    from sveval.data.example import ensure_example

    paths = _paths(args)
    t0 = time.perf_counter()
    if args.force and paths.example_data.exists():
        import shutil

        shutil.rmtree(paths.example_data)
    out = ensure_example(paths.example_data)
    print(f"illustrative example data ready in {out} ({time.perf_counter() - t0:.1f} s)")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from sveval.pipeline.planning import plan

    paths = _paths(args)
    if not 0 < args.effect < 1:
        raise SvevalError(f"--effect is a proportional fall between 0 and 1 (0.2 = 20%), got {args.effect}")
    result, measure = plan(args.spec, args.effect, power=args.power, max_months=args.max_months,
                           n_sim=args.sims, root=paths.root)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(result.text(measure.name.lower()))
        for m, pw in result.power_by_months.items():
            print(f"  {m:3d} months after launch: power {pw:.0%}")
    return EXIT_OK


#: modules the returns and the site import, loaded in the background while the evaluations run
TAIL_MODULES = ("scipy.stats", "openpyxl", "sveval.publish.returns", "sveval.publish.site",
                "sveval.publish.render")


def _preload(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the step that needs it imports it again and reports
            pass


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Example data -> every evaluation -> tracking -> returns -> site."""
    paths = _paths(args)
    status = EXIT_OK
    steps = []
    t_all = time.perf_counter()

    import threading

    record = threading.Lock()  # steps may finish on two threads (tracking runs alongside)

    def step(name, fn, *, background=False):
        nonlocal status
        t0 = time.perf_counter()
        print(f"== {name}")
        try:
            rc = fn()
        except SvevalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            rc = EXIT_FAILED
        except Exception as exc:  # a step on its own thread: report it, never lose it
            if not background:
                raise
            import traceback

            print(f"error: {name} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}",
                  file=sys.stderr)
            rc = EXIT_FAILED
        with record:
            steps.append((name, rc, time.perf_counter() - t0))
            status = max(status, rc)

    ns = argparse.Namespace(root=str(paths.root), files=[], all=True, force=args.force, workers=None,
                            keep_going=True, no_quarto=args.no_quarto, year=args.year, quarter=None, out=None,
                            wait=getattr(args, "wait", 0.0))
    from sveval.pipeline.lock import project_lock

    with project_lock(paths.reports, "sveval pipeline", wait=ns.wait):  # one lock for every step
        from sveval.data.example import is_current
        from sveval.pipeline import batch

        # outcome tracking does not read the evaluations: it runs alongside them, first on one of
        # their worker threads and its warm kernel (no kernel of its own); the returns read both
        from sveval.pipeline.runner import discover_specs

        with batch.Workers(batch.worker_count(None, 1 + len(discover_specs(paths)))) as workers:
            if not is_current(paths.example_data):  # new data: everything after runs, so the kernels
                # start and import while the data are generated (one core each)
                batch.prestart(workers.pool, workers.threads, workers.n, paths.root)
            step("example data", lambda: cmd_example(argparse.Namespace(root=str(paths.root), force=False)))
            def track_then_preload() -> int:
                rc = cmd_track(ns, pool=workers.pool)
                # the evaluations are running by now: load what the returns and the site import
                # (about 0.9 s of one core, off the single-core end of the pipeline)
                threading.Thread(target=_preload, args=(TAIL_MODULES,), daemon=True,
                                 name="sveval-preload").start()
                return rc

            tracking = None
            if paths.tracking_specs.is_dir() and any(paths.tracking_specs.glob("*.yaml")):
                tracking = workers.threads.submit(step, "outcome tracking (alongside the evaluations)",
                                                  track_then_preload, background=True)
            try:
                step("evaluations", lambda: cmd_run(ns, workers=workers))
            finally:
                if tracking is not None:
                    tracking.result()
        step("Home Office returns", lambda: cmd_returns(ns))
        step("publish site", lambda: cmd_publish(ns))
    print("\n".join(f"{'ok    ' if rc == 0 else 'FAILED'} {name} ({sec:.1f} s)" for name, rc, sec in steps))
    print(f"total {time.perf_counter() - t_all:.1f} s; site: {paths.reports / '_site' / 'index.html'}")
    return status


def cmd_kernels(args: argparse.Namespace) -> int:
    """List the project's kept kernels (``sveval run --keep-kernels``), or end them."""
    from sveval.pipeline import kept
    from sveval.pipeline.runner import STATE_DIR

    registry = _paths(args).reports / STATE_DIR / kept.REGISTRY
    if args.stop:
        print(f"stopped {kept.stop_all(registry)} kept kernel(s)")
        return EXIT_OK
    rows = kept.registered(registry)
    if not rows:
        print("no kept kernels (sveval run --keep-kernels keeps a run's warm kernels for the next run)")
    for r in rows:
        state = "in use" if r["in_use"] else ("idle" if r["running"] else "gone")
        print(f"{r['name']}  pid {r['pid']}  {state}  started {r['started_at']}  "
              f"ends after {r['idle_seconds']:.0f} s idle")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the result record (reports/evaluations/<id>.json)."""
    import json

    from sveval.pipeline.record import record_schema

    print(json.dumps(record_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from sveval.pipeline.scaffold import init_project

    out = init_project(Path(args.dir), name=args.name, areas=args.areas, code_system=args.code_system,
                       force=args.force)
    print(out.message)
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    from sveval.catalog import Catalog
    from sveval.data.check import check_project, write_report

    paths = _paths(args)
    report = check_project(paths, Catalog.load(paths.parameters))
    print(report.summary())
    out = Path(args.out) if args.out else paths.reports
    js, md = write_report(report, out)
    print(f"written: {md} and {js.name}")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from sveval.catalog import Catalog
    from sveval.data.load import ingest_store, project_sources

    paths = _paths(args)
    catalog = Catalog.load(paths.parameters)
    store = ingest_store(paths, project_sources(paths), catalog, progress=not args.quiet, log=print)
    print(f"store: {store.root}")
    return EXIT_OK


def cmd_data_export(args: argparse.Namespace) -> int:
    from sveval.catalog import Catalog
    from sveval.data.load import ingest_store, project_sources

    paths = _paths(args)
    catalog = Catalog.load(paths.parameters)
    if args.measure and args.measure not in catalog.measures:
        raise SvevalError(f"unknown measure '{args.measure}'; known: {', '.join(sorted(catalog.measures))}")
    measures = [catalog.measures[args.measure]] if args.measure else list(catalog.measures.values())
    sources = project_sources(paths)
    store = ingest_store(paths, sources, catalog, progress=not args.quiet)
    n = store.export(sources, measures, {c: a.name for c, a in catalog.areas.items()}, args.out)
    print(f"written {args.out}: {n:,} rows (period, area_code, measure, count, population)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from sveval._version import __version__

    p = argparse.ArgumentParser(prog="sveval", description="Evaluate what works against serious violence.")
    p.add_argument("--version", action="version", version=f"sveval {__version__}")
    p.add_argument("--root", help="project folder (default: found from the current directory)")
    sub = p.add_subparsers(dest="command", required=True)

    def files_args(sp):
        sp.add_argument("files", nargs="*", help="parameter files")
        sp.add_argument("--all", action="store_true", help="every parameter file")

    def wait_arg(sp):
        sp.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another sveval run, track, returns or publish holds the project lock, "
                             "wait up to SECONDS for it (default: exit at once with code 1)")

    sp = sub.add_parser("validate", help="check evaluation parameter files")
    files_args(sp)
    sp.set_defaults(fn=cmd_validate)

    sp = sub.add_parser("run", help="execute evaluations with papermill")
    files_args(sp)
    sp.add_argument("--force", action="store_true", help="rerun even if unchanged")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel notebooks (capped at the cores, or at the Dask cluster's threads)")
    sp.add_argument("--keep-going", action="store_true", help="run valid files even if some are invalid")
    sp.add_argument("--fresh-kernels", action="store_true",
                    help="start a new kernel for every notebook (default: one warm kernel per worker, "
                         "reset between notebooks)")
    sp.add_argument("--keep-kernels", nargs="?", type=float, const=600.0, default=None, metavar="SECONDS",
                    help="leave this run's warm kernels running for SECONDS (default 600) for the next run "
                         "to adopt: rerunning one evaluation then skips the kernel start and imports "
                         "(also $SVEVAL_KEEP_KERNELS; 0: off; `sveval kernels --stop` ends them). "
                         "Default: on for 600 s when typed at a terminal, off in scripts, pipes and CI")
    sp.add_argument("--executor", choices=("local", "dask"), default="local",
                    help="where notebooks run: this machine (default) or a Dask distributed cluster")
    sp.add_argument("--scheduler", metavar="ADDRESS",
                    help="the Dask scheduler (tcp://host:8786) or its scheduler file, with --executor dask; "
                         "workers must see the project folder at the same path")
    wait_arg(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("kernels", help="list or stop the kernels kept by `sveval run --keep-kernels`")
    sp.add_argument("--stop", action="store_true", help="end every kept kernel not in use")
    sp.set_defaults(fn=cmd_kernels)

    sp = sub.add_parser("track", help="execute outcome-tracking reports")
    files_args(sp)
    sp.add_argument("--force", action="store_true")
    wait_arg(sp)
    sp.set_defaults(fn=cmd_track)

    sp = sub.add_parser("returns", help="write the Home Office returns workbook")
    sp.add_argument("--year", default="2025/26", help="financial year, e.g. 2025/26")
    sp.add_argument("--quarter", default=None, type=quarter_arg,
                    help="quarter within the financial year: Q1..Q4 (Q1 is April to June)")
    sp.add_argument("--out", default=None, help="output folder (default outputs/returns/<year>)")
    wait_arg(sp)
    sp.set_defaults(fn=cmd_returns)

    sp = sub.add_parser("publish", help="write and render the Quarto site")
    sp.add_argument("--no-quarto", action="store_true", help="use the fallback renderer even if Quarto exists")
    wait_arg(sp)
    sp.set_defaults(fn=cmd_publish)

    sp = sub.add_parser("example", help="generate the built-in illustrative example data")
    sp.add_argument("--force", action="store_true", help="regenerate even if present")
    sp.set_defaults(fn=cmd_example)

    sp = sub.add_parser("pipeline", help="example data, evaluations, tracking, returns and site")
    sp.add_argument("--force", action="store_true", help="rerun evaluations even if unchanged")
    sp.add_argument("--no-quarto", action="store_true")
    sp.add_argument("--year", default="2025/26")
    wait_arg(sp)
    sp.set_defaults(fn=cmd_pipeline)

    sp = sub.add_parser("init", help="scaffold a new partnership project")
    sp.add_argument("dir", help="the new project's folder")
    sp.add_argument("--name", required=True, help="the partnership's name")
    sp.add_argument("--areas", required=True, help="its area codes, comma-separated: CODE,CODE")
    sp.add_argument("--code-system", default="ons", choices=["ons", "other"],
                    help="ons: 9-character ONS codes (checked); other: any codes")
    sp.add_argument("--force", action="store_true", help="write into a non-empty folder")
    sp.set_defaults(fn=cmd_init)

    sp = sub.add_parser("data", help="the project's data: check (data quality), ingest, export")
    data_sub = sp.add_subparsers(dest="data_command", required=True)
    dp = data_sub.add_parser("check", help="data-quality report: missing sources, months, gaps, "
                             "duplicates, zeros, out-of-area records, population coverage")
    dp.add_argument("--out", default=None, help="folder for data-quality.md/.json (default reports/)")
    dp.set_defaults(fn=cmd_data_check)
    dp = data_sub.add_parser("ingest", help="read new or changed source files into the store "
                             "(parameters/sources.yaml -> data/store)")
    dp.add_argument("--quiet", action="store_true", help="no progress bar")
    dp.set_defaults(fn=cmd_data_ingest)
    dp = data_sub.add_parser("export", help="write the aggregated long table (period, area_code, "
                             "measure, count, population) as CSV")
    dp.add_argument("--measure", default=None, help="only this measure (default: every measure)")
    dp.add_argument("--out", required=True, help="the CSV file to write")
    dp.add_argument("--quiet", action="store_true", help="no progress bar")
    dp.set_defaults(fn=cmd_data_export)

    sp = sub.add_parser("schema", help="print the JSON Schema of the result record")
    sp.set_defaults(fn=cmd_schema)

    sp = sub.add_parser("plan", help="power planning: months after launch until an effect is detectable")
    sp.add_argument("spec", help="evaluation parameter file (its pre-period is used)")
    sp.add_argument("--effect", type=float, default=0.2, help="proportional fall to detect (0.2 = 20%%)")
    sp.add_argument("--power", type=float, default=0.8)
    sp.add_argument("--max-months", type=int, default=60)
    sp.add_argument("--sims", type=int, default=200, help="simulated series per post-period length")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(fn=cmd_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except SpecError as exc:
        print(f"error: invalid parameters\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    except SvevalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # pragma: no cover
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

