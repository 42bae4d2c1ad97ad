"""CPU time of the default ITS evaluation with the quasi-Poisson refits before and after the lean
estimator (issue 15, "Fast"; :func:`sveval.designs.its_refit.fit_quasipoisson_lean`).

In one process, on a project with the example data, ``sveval.fit`` of
``focused-deterrence-violence-its`` (quasi-Poisson with AR(1) working correlation, 200 power
simulations, placebo and sensitivity refits) is timed with ``time.process_time``:

* ``before``  the refits' quasi-Poisson fits routed to the main fit's estimator
              (``its_models.fit_model``, statsmodels IRLS and scipy's bounded search) and the
              power simulations refitted one by one, as before;
* ``after``   the refits by ``refit_model`` and ``refit_many`` as they are now.

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

    new, new_many = its_refit.refit_model, its_refit.refit_many

    def old(model, *a, **kw):  # the quasi-Poisson refits as before: the main fit's estimator
        return (its_models.fit_model if model == "quasipoisson" else new)(model, *a, **kw)

    def old_many(model, Y, *a, **kw):  # the power simulations as before: one by one
        out = []
        for y in Y:
            try:
                out.append(old(model, y, *a, **kw))
            except Exception as exc:  # noqa: BLE001 - as refit_many
                out.append(exc)
        return out

    spec = args.project / "parameters" / "evaluations" / f"{EVALUATION}.yaml"
    times: dict[str, list[float]] = {"before": [], "after": []}
    loads = []
    for rep in range(args.repeat + 1):
        for case, fn, many in (("before", old, old_many), ("after", new, new_many)):
            power.refit_model = its.refit_model = fn
            power.refit_many = many
            ctx = prepare(spec, root=args.project)
            loads.append(os.getloadavg()[0])
            t0 = time.process_time()
            sveval.fit(ctx)
            if rep:
                times[case].append(time.process_time() - t0)
    power.refit_model = its.refit_model = new
    power.refit_many = new_many
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"| case | CPU s (median of {args.repeat}) | runs |")
    print("|---|---|---|")
    for case, v in times.items():
        print(f"| {case} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    print(f"\nafter / before = {a / b:.2f}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
