"""Speed of one default ITS evaluation (all checks and power) on a 132-month count series.

Cases (each in a fresh subprocess, timed after the imports):

* ``fast``    ``sveval.designs.its.fit_its`` with the default options: AR(1) quasi-Poisson by REML
              with Kackar-Harville/Satterthwaite inference, placebo dates, date and seasonality
              sensitivity, and the power study (at most 200 simulations, sequential stopping);
* ``dense``   the same fit with the AR whitening replaced by the dense reference (Cholesky of the
              n x n AR correlation matrix of each series and a triangular solve): the in-run
              reference, stable across versions; its estimates must equal ``fast``'s (run with one
              BLAS thread: with threads, its many small n x n solves stall on a shared machine);
* ``glm``     one plain statsmodels quasi-Poisson GLM fit of the same design (the floor per fit);
* ``before``  (only with ``--before SRC``) the same default fit run with another version of the
              package on ``PYTHONPATH`` (e.g. an export of the previous commit), with the default
              BLAS threads and with ``OPENBLAS_NUM_THREADS=1``.

Usage: ``python benchmarks/its_speed.py [--out benchmarks/results/its_speed.md] [--before SRC]``
(run by ``nox -s bench -- its_speed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_MONTHS = 132
START_INDEX = 96  # intervention at month 96: 96 pre-period and 36 post-period months


def series():
    import pandas as pd

    from sveval.spec import add_months

    rng = np.random.default_rng(20240601)
    t = np.arange(N_MONTHS)
    months = (t + 3) % 12 + 1
    u = np.zeros(N_MONTHS)
    z = rng.standard_normal(N_MONTHS) * 0.08
    for i in range(N_MONTHS):
        u[i] = (0.4 * u[i - 1] if i else 0.0) + z[i]
    lam = 40.0 * np.exp(0.002 * t + 0.15 * np.sin(2 * np.pi * months / 12) + math.log(0.8) * (t >= START_INDEX) + u)
    periods = [add_months("2014-04", i) for i in range(N_MONTHS)]
    df = pd.DataFrame({"period": periods, "count": rng.poisson(lam).astype(float), "population": 500_000.0})
    return df, periods[START_INDEX]


class DenseWhitener:
    """Reference whitening: ``L^-1 Z`` with ``L`` the dense Cholesky factor of each series'
    n x n AR correlation matrix (O(n^2) memory, O(n^3) time)."""

    def __init__(self, t, series_id):
        self.t, self.sid = np.asarray(t, float), np.asarray(series_id)

    def whiten(self, Z, phi):
        import scipy.linalg as sla

        from sveval.designs.its_models import ar_acf

        phi = np.asarray(phi, float)
        if len(phi) == 0:
            return Z, 0.0
        out, logdet = np.empty_like(Z, dtype=float), 0.0
        for s in np.unique(self.sid):
            b = np.flatnonzero(self.sid == s)
            tb = self.t[b]
            acf = ar_acf(phi, int(tb.max() - tb.min()))
            L = np.linalg.cholesky(acf[np.abs(tb[:, None] - tb[None, :]).astype(int)])
            out[b] = sla.solve_triangular(L, Z[b], lower=True)
            logdet += 2.0 * float(np.sum(np.log(np.diag(L))))
        return out, logdet


def _count_fits():
    """Wrap the quasi-Poisson estimator to count model fits; returns the counter list."""
    from sveval.designs import its_models

    calls = [0]
    orig = its_models.fit_quasipoisson

    def counted(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    its_models.fit_quasipoisson = counted
    return calls


def run_case(case: str) -> dict:
    from sveval.designs import its_models
    from sveval.designs.its import fit_its
    from sveval.spec import ITSOptions

    df, start = series()
    if case == "glm":
        import statsmodels.api as sm

        from sveval.designs.its_design import build_design

        d = build_design(df, start, ITSOptions())
        y, off = d.frame["y"].to_numpy(float), d.frame["offset"].to_numpy(float)
        sm.GLM(y, d.X, family=sm.families.Poisson(), offset=off).fit(scale="X2")  # warm-up
        reps = 50
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            sm.GLM(y, d.X, family=sm.families.Poisson(), offset=off).fit(scale="X2")
        return {"case": case, "wall_s": (time.perf_counter() - w0) / reps,
                "cpu_s": (time.process_time() - c0) / reps, "fits": 1}
    if case == "dense":
        its_models.ARWhitener = DenseWhitener
    calls = _count_fits() if hasattr(its_models, "fit_quasipoisson") else [None]
    w0, c0 = time.perf_counter(), time.process_time()
    res = fit_its(df, start, ITSOptions())
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    h = res.headline
    pw = res.power
    return {"case": case, "wall_s": wall, "cpu_s": cpu, "fits": calls[0],
            "estimate": h.estimate, "ci_low": h.ci_low, "ci_high": h.ci_high,
            "n_sim": pw.n_sim if pw else None, "mc_se": getattr(pw, "mc_se", None),
            "mde": pw.mde if pw else None, "power_0.2": pw.power_at.get("0.2") if pw else None}


def _sub(case: str, env_extra: dict | None = None, pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(env_extra or {})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--case", case], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}; "
            f"load average at the start {load} (the machine is shared, so wall times vary; CPU times "
            "are steadier)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    ap.add_argument("--before", default=None, help="src folder of another version to time as 'before'")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    rows = [_sub("fast"), _sub("dense", {"OPENBLAS_NUM_THREADS": "1"}), _sub("glm")]
    if args.before:
        rows.append(_sub("fast", pythonpath=args.before) | {"case": "before (default BLAS threads)"})
        rows.append(_sub("fast", {"OPENBLAS_NUM_THREADS": "1"}, pythonpath=args.before)
                    | {"case": "before (OPENBLAS_NUM_THREADS=1)"})
    fast, dense, glm = rows[0], rows[1], rows[2]
    lines = [
        "# ITS speed: one default evaluation of a 132-month count series",
        "",
        f"Machine: {_machine()}.",
        "",
        "`fit_its` with the default options (AR(1) quasi-Poisson by REML with Kackar-Harville / "
        "Satterthwaite inference, placebo dates, date and seasonality sensitivity, power study of at "
        "most 200 simulations with sequential stopping). `dense` is the same fit with the dense n x n "
        "Cholesky whitening (the in-run reference, one BLAS thread); `glm` one plain statsmodels "
        "quasi-Poisson GLM fit. Each case runs in a fresh process, timed after the imports. "
        "Command: `python benchmarks/its_speed.py --out benchmarks/results/its_speed.md"
        + (" --before <previous version's src>`." if args.before else "`."),
        "",
        "| case | wall s | CPU s | model fits | CPU ms / fit | level change (95% CI) | power sims | MC se |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ci = (f"{r['estimate']:.6f} ({r['ci_low']:.6f} to {r['ci_high']:.6f})" if "estimate" in r else "-")
        per = 1000 * r["cpu_s"] / r["fits"] if r.get("fits") else float("nan")
        mc = f"{r['mc_se']:.3f}" if r.get("mc_se") is not None else "-"
        lines.append(f"| {r['case']} | {r['wall_s']:.3g} | {r['cpu_s']:.3g} | {r.get('fits') or '-'} | "
                     f"{per:.2f} | {ci} | {r.get('n_sim') or '-'} | {mc} |")
    rel = max(abs(fast[k] - dense[k]) / abs(dense[k]) for k in ("estimate", "ci_low", "ci_high"))
    lines += [
        "",
        f"- fast vs dense reference: {dense['cpu_s'] / fast['cpu_s']:.1f}x less CPU; headline estimate and "
        f"interval agree to {rel:.1e} relative.",
        f"- one default evaluation costs about {fast['cpu_s'] / glm['cpu_s']:.0f} plain GLM fits "
        f"({fast['fits']} REML model fits).",
    ]
    if args.before:
        b1, b2 = rows[3], rows[4]
        relb = max(abs(fast[k] - b1[k]) / abs(b1[k]) for k in ("estimate", "ci_low", "ci_high"))
        lines.append(f"- before: {b1['wall_s'] / fast['wall_s']:.1f}x the wall time with the default BLAS "
                     f"threads, {b2['cpu_s'] / fast['cpu_s']:.1f}x the CPU time with one BLAS thread; "
                     f"headline agrees to {relb:.1e} relative.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
