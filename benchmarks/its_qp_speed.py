"""CPU time of the default ITS evaluation before and after the quasi-Poisson refit work
(issue 15, "Fast"; :func:`sveval.designs.its_refit.fit_quasipoisson_lean` and the lockstep power
refits of :func:`sveval.designs.its_refit.refit_many`).

``sveval.fit`` of ``focused-deterrence-violence-its`` (quasi-Poisson with AR(1) working
correlation, 200 power simulations, placebo and sensitivity refits) on a project with the example
data, timed with ``time.process_time`` in a fresh process after one warm-up fit (median of
``--inner`` fits, default 3), one BLAS thread:

* ``before``  the package with ``src/sveval/designs/{its_models,its_refit,power,its}.py`` of
              ``--before`` (a source tree whose ``src`` goes first on ``PYTHONPATH``, e.g. the
              package at the commit before the work with those files), everything else as now;
* ``after``   the package as it is.

The two alternate ``--repeat`` times (default 3); the medians of the per-process medians, their
ratio and the 1-minute load average are printed as a Markdown table.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/its_qp_speed.py --before DIR [--project DIR]``
(the project is made by ``run_speed.project`` when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EVALUATION = "focused-deterrence-violence-its"


def child(project: Path, inner: int) -> None:
    import sveval
    from sveval.pipeline.api import prepare

    spec = project / "parameters" / "evaluations" / f"{EVALUATION}.yaml"
    sveval.fit(prepare(spec, root=project))
    times = []
    for _ in range(inner):
        ctx = prepare(spec, root=project)
        t0 = time.process_time()
        sveval.fit(ctx)
        times.append(time.process_time() - t0)
    print(json.dumps({"median": statistics.median(times), "file": sveval.__file__}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=False)
    ap.add_argument("--project", type=Path, default=Path("/tmp/its_qp_speed/project"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.project, args.inner)
        return
    if not args.project.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        import run_speed

        run_speed.project(args.project)
    cases = {"after": None} if args.before is None else {"before": args.before / "src", "after": None}
    times: dict[str, list[float]] = {c: [] for c in cases}
    loads = []
    for _ in range(args.repeat):
        for case, path in cases.items():
            env = dict(os.environ, OMP_NUM_THREADS="1")
            if path is not None:
                env["PYTHONPATH"] = str(path)
            loads.append(os.getloadavg()[0])
            out = subprocess.run([sys.executable, __file__, "--child", "--project", str(args.project),
                                  "--inner", str(args.inner)], env=env, capture_output=True, text=True,
                                 check=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            if path is not None and not rec["file"].startswith(str(path)):
                raise SystemExit(f"the before case imported {rec['file']}, not the tree under {path}")
            times[case].append(rec["median"])
    print(f"| case | CPU s (median) | per process (median of {args.inner}) |")
    print("|---|---:|---|")
    for case, v in times.items():
        print(f"| {case} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    if "before" in times:
        ratio = statistics.median(times["after"]) / statistics.median(times["before"])
        print(f"\nafter / before = {ratio:.2f}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
