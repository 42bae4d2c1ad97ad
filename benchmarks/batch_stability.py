"""Consecutive batches without a failure: ``sveval run --all --force`` on the example, N times in a
row, each a fresh command-line process (warm kernels on IPC sockets, the default), counting
evaluations that failed or did not complete and batches that did not exit 0.

Issue 15 asks for 0 failures in 20 consecutive batches (kernel-launch races such as papermill
issue 511 showed up as one failed evaluation in a few batches). The machine is usually busy while
this runs (other work, and the batch itself uses both cores): a loaded machine is where such races
show, so the load average is recorded, not controlled.

Usage: ``python benchmarks/batch_stability.py [--batches 20] [--out benchmarks/results/batch_stability.md]``
(``nox -s bench -- batch_stability``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run_speed import _exe, project  # noqa: E402 - the same temporary project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--out", help="write the Markdown results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sveval-stability-") as tmp:
        root = project(Path(tmp) / "project")
        n_evals = len(list((root / "parameters" / "evaluations").glob("*.yaml")))
        for i in range(1, args.batches + 1):
            before = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = subprocess.run([_exe("sveval"), "--root", str(root), "run", "--all", "--force"],
                                 capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            manifest = json.loads((root / "reports" / ".sveval" / "manifest.json").read_text())
            entries = manifest.get("evaluations", manifest)
            failed = sorted(k for k, v in entries.items() if isinstance(v, dict) and v.get("status") != "completed")
            completed = sum(1 for v in entries.values() if isinstance(v, dict) and v.get("status") == "completed")
            rows.append({"batch": i, "exit": out.returncode, "completed": completed, "failed": failed,
                         "seconds": seconds, "load": (before, os.getloadavg()[0]),
                         "tail": out.stdout[-400:] if out.returncode else ""})
            print(f"batch {i}: exit {out.returncode}, {completed}/{n_evals} completed, "
                  f"failed {failed or 'none'}, {seconds:.1f} s", file=sys.stderr)
    bad = [r for r in rows if r["exit"] != 0 or r["failed"] or r["completed"] != n_evals]
    lines = [
        "# Batch stability",
        "",
        f"Produced by `python benchmarks/batch_stability.py --batches {args.batches}` "
        f"({time.strftime('%Y-%m-%d')}): `sveval run --all --force` on the example ({n_evals} evaluations), "
        f"{args.batches} consecutive batches, each a fresh process with warm kernels on IPC sockets.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores; "
        "shared with other work (load average before and after each batch below).",
        "",
        f"**Result: {len(bad)} batch(es) with a failure out of {len(rows)}; "
        f"{sum(len(r['failed']) for r in rows)} failed evaluation(s) out of {n_evals * len(rows)}.**",
        "",
        "| batch | exit | completed | failed | seconds | load before | load after |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['exit']} | {r['completed']}/{n_evals} | {', '.join(r['failed']) or '-'} "
                     f"| {r['seconds']:.1f} | {r['load'][0]:.1f} | {r['load'][1]:.1f} |")
    for r in bad:
        lines += ["", f"Batch {r['batch']} output (end):", "", "```", r["tail"], "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
