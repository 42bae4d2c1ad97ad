"""Speed of ``sveval publish`` (fallback renderer) before and after the parallel publish, same site.

The old code is checked out in a temporary ``git worktree`` (by default the commit before
``src/sveval/publish/workers.py`` was added) and run with ``PYTHONPATH`` pointing at it; the new
code is this checkout's ``src``. Both publish copies of one example project whose evaluations,
tracking and returns were run beforehand (not timed): each run is a fresh command-line process
(``sveval publish --no-quarto``), wall-clock, with the 1-minute load average before and after.
Repeats are interleaved (old, new, then new, old, ...). Afterwards every file of the two
``reports/`` folders (sources, figures, downloads and ``_site``) is compared byte for byte: the
script fails if any differs.

Usage: ``python benchmarks/publish_speed.py [--project DIR] [--repeat 5] [--old COMMIT]
[--out benchmarks/results/publish_speed.md]``. ``--project`` reuses a project where
``sveval run --all``, ``sveval track --all`` and ``sveval returns`` have been run (it is copied,
not changed); without it one is built first (about a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_speed  # noqa: E402 - benchmarks/ is not a package

PUBLISH = "import sys; sys.argv = ['sveval', 'publish', '--no-quarto']; from sveval.cli import main; sys.exit(main())"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def default_old() -> str:
    """The commit before the parallel publish (``sveval/publish/workers.py``) was added."""
    added = git("log", "--diff-filter=A", "--format=%H", "--", "src/sveval/publish/workers.py").splitlines()
    if not added:
        raise SystemExit("src/sveval/publish/workers.py is not committed: pass --old")
    return git("rev-parse", f"{added[-1]}^")


def build_project(dest: Path) -> Path:
    root = run_speed.project(dest)
    for cmd in (["run", "--all"], ["track", "--all"], ["returns"]):
        subprocess.run([run_speed._exe("sveval"), *cmd], cwd=root, check=True, capture_output=True)
    return root


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_publish(root: Path, src: Path) -> tuple[float, float, float, float]:
    """(wall seconds, CPU seconds of the command and its worker, load before, load after)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before, cpu0 = os.getloadavg()[0], _cpu()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PUBLISH], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"publish with {src} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds, _cpu() - cpu0, before, os.getloadavg()[0]


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".sveval" not in p.parts
    }


def report(runs: list[tuple[int, str, float, float, float, float]], old: str, new: str, n_files: int,
           n_site: int, pages: int) -> str:
    secs = {k: [r[2] for r in runs if r[1] == k] for k in ("old", "new")}
    cpu = {k: statistics.median([r[3] for r in runs if r[1] == k]) for k in ("old", "new")}
    med = {k: statistics.median(v) for k, v in secs.items()}
    best = {k: min(v) for k, v in secs.items()}
    loads = [x for r in runs for x in r[4:]]
    lines = [
        "# Publish speed",
        "",
        "Produced by `python benchmarks/publish_speed.py`: `sveval publish --no-quarto` (the fallback",
        "renderer: Quarto is not installed here) on copies of one example project (15 evaluations,",
        f"tracking and the Home Office return run beforehand, not timed; {pages} pages), every run a fresh",
        "command-line process, wall-clock seconds. The old code is a `git worktree` of the commit before",
        "the parallel publish, the new one this checkout, both run with `PYTHONPATH` set to their `src`",
        "in the same run of the script, repeats interleaved (old, new, then new, old, ...).",
        "",
        f"Old code: commit {old[:7]}. New code: commit {new}.",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores"
        f" ({platform.processor() or platform.machine()}), shared with other work: the 1-minute load",
        f"average was {min(loads):.1f} to {max(loads):.1f} during the runs (per run below).",
        "",
        "| | old | new | old / new |",
        "|---|---:|---:|---:|",
        f"| median of {len(secs['old'])} runs | {med['old']:.2f} s | {med['new']:.2f} s | {med['old'] / med['new']:.2f}x |",
        f"| fastest run | {best['old']:.2f} s | {best['new']:.2f} s | {best['old'] / best['new']:.2f}x |",
        f"| CPU (user + system, with the worker), median | {cpu['old']:.2f} s | {cpu['new']:.2f} s | "
        f"{cpu['old'] / cpu['new']:.2f}x |",
        "",
        "The new code draws the figures in a second process (`sveval.publish.workers`), so its wall-clock",
        "gain needs the machine's second core to be free; when other work holds both cores it has about",
        "the old CPU time to get through (the CPU row: both processes together).",
        "",
        f"Same output: all {n_files} files of the two `reports/` folders ({n_site} of them under",
        "`reports/_site`; the rest the generated Quarto project, figures and downloads) are byte-identical",
        "after the runs.",
        "",
        "| repeat | code | seconds | CPU seconds | load before | load after |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {i} | {k} | {s:.2f} | {c:.2f} | {b:.2f} | {a:.2f} |" for i, k, s, c, b, a in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="an example project with evaluations, tracking and returns run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--old", help="commit of the old code (default: the one before the parallel publish)")
    ap.add_argument("--out", type=Path, help="write the Markdown results here")
    args = ap.parse_args()
    old = git("rev-parse", args.old) if args.old else default_old()
    dirty = bool(git("status", "--porcelain", "--", "src/sveval/publish", "src/sveval/report/plots"))
    new = git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
    with tempfile.TemporaryDirectory(prefix="sveval-publish-speed-") as tmp:
        tmp = Path(tmp)
        worktree = tmp / "old-code"
        git("worktree", "add", "--detach", str(worktree), old)
        try:
            source = args.project.resolve() if args.project else build_project(tmp / "built")
            roots = {k: tmp / k for k in ("old", "new")}
            for root in roots.values():
                shutil.copytree(source, root, symlinks=True)
            srcs = {"old": worktree / "src", "new": REPO / "src"}
            runs = []
            for i in range(1, args.repeat + 1):
                for k in (("old", "new") if i % 2 else ("new", "old")):
                    s, c, b, a = timed_publish(roots[k], srcs[k])
                    runs.append((i, k, s, c, b, a))
                    print(f"repeat {i} {k}: {s:.2f} s, CPU {c:.2f} s (load {b:.2f} -> {a:.2f})", file=sys.stderr)
            d_old, d_new = digests(roots["old"] / "reports"), digests(roots["new"] / "reports")
            if d_old != d_new:
                differ = sorted(k for k in d_old.keys() | d_new.keys() if d_old.get(k) != d_new.get(k))
                raise SystemExit(f"the sites differ: {differ[:20]}")
            n_site = sum(1 for k in d_new if k.startswith("_site/"))
            pages = sum(1 for k in d_new if k.startswith("_site/") and k.endswith(".html"))
        finally:
            git("worktree", "remove", "--force", str(worktree))
    text = report(runs, old, new, len(d_new), n_site, pages)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
