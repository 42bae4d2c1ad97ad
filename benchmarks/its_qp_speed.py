"""CPU time of the default ITS evaluation with the quasi-Poisson refits before and after the lean
estimator (issue 15, "Fast"; :func:`sveval.designs.its_refit.fit_quasipoisson_lean`).

In one process, on a project with the example data, ``sveval.fit`` of
``focused-deterrence-violence-its`` (quasi-Poisson with AR(1) working correlation, 200 power
simulations, placebo and sensitivity refits) is timed with ``time.process_time``:

* ``before``  the refits' quasi-Poisson fits routed to the main fit's estimator
              (``its_models.fit_model``, statsmodels IRLS and scipy's bounded search), as before;
* ``after``   the refits by ``refit_model`` as it is now.

Runs alternate (``--repeat`` of each, default 3, after one warm-up of each); the medians, their
ratio and the 1-minute load average are printed as a Markdown table.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/its_qp_speed.py --project DIR`` where ``DIR`` holds a
project made by ``run_speed.project`` (generated when missing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

EVALUATION = "focused-deterrence-violence-its"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("/tmp/its_qp_speed/project"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.project.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        import run_speed

        run_speed.project(args.project)

    import sveval
    from sveval.designs import its, its_models, its_refit, power
    from sveval.pipeline.api import prepare

    new = its_refit.refit_model

    def old(model, *a, **kw):  # the quasi-Poisson refits as before: the main fit's estimator
        return (its_models.fit_model if model == "quasipoisson" else new)(model, *a, **kw)

    spec = args.project / "parameters" / "evaluations" / f"{EVALUATION}.yaml"
    times: dict[str, list[float]] = {"before": [], "after": []}
    loads = []
    for rep in range(args.repeat + 1):
        for case, fn in (("before", old), ("after", new)):
            power.refit_model = its.refit_model = fn
            ctx = prepare(spec, root=args.project)
            loads.append(os.getloadavg()[0])
            t0 = time.process_time()
            sveval.fit(ctx)
            if rep:
                times[case].append(time.process_time() - t0)
    power.refit_model = its.refit_model = new
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"| case | CPU s (median of {args.repeat}) | runs |")
    print("|---|---|---|")
    for case, v in times.items():
        print(f"| {case} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    print(f"\nafter / before = {a / b:.2f}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
