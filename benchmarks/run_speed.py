"""Speed of running evaluations: one ITS evaluation, the example batch, the README's first command
and a warm rerun, each against plain papermill measured in the same run.

Cases (every one a fresh ``sveval`` or ``papermill`` command-line process, wall-clock time, on a
copy of the repository's parameters and notebooks in a temporary project whose example data are
generated first, outside the timings):

* ``empty``     ``papermill empty.ipynb out.ipynb``: the papermill CLI executing a notebook with
                one empty code cell (the unit the targets are stated in);
* ``one_its``   ``sveval run --force parameters/evaluations/focused-deterrence-violence-its.yaml``:
                one default ITS evaluation of 132 months with all its checks and power
                (target: at most 3x ``empty``);
* ``one_its_script`` the same evaluation's work as a plain Python script (``its_floor.py``: the
                imports, the fit with its checks and power, the record, the figures to PNG), no
                kernel, papermill or notebook: a floor for ``one_its`` (no target);
* ``one_its_kept`` the same command with ``--keep-kernels``, run twice: the second run, timed,
                adopts the warm kernel the first left (an evaluator rerunning one parameter file;
                :mod:`sveval.pipeline.kept`); the kernel is stopped afterwards;
* ``loop``      a sequential ``papermill`` CLI loop over every example evaluation's notebook and
                parameter file (``-p spec_path ... -p result_path ... -p root ...``);
* ``run_all``   ``sveval run --all --force`` on the same evaluations (target: ``loop`` / ``run_all``
                at least 2.5);
* ``pipeline``  ``sveval pipeline`` on a project whose example data exist and whose reports are
                empty: evaluations, tracking, returns and the site (target: at most 25x ``empty``,
                about 60 s);
* ``rerun``     ``sveval run --all`` again with nothing changed (target: under 2 s);
* ``pipeline_fresh`` ``sveval pipeline`` on a project with no data, caches, reports or outputs: the
                README's first command after the install (the example data generated, the store
                read, every evaluation, tracking, returns and the site; target: at most 25x ``empty``).

The machine is shared: the 1-minute load average is recorded before and after each case, and
``--repeat`` runs the whole set several times, interleaved, keeping each case's fastest run.

Usage: ``python benchmarks/run_speed.py [--out benchmarks/results/run_speed.md] [--repeat 2]``
(run by ``nox -s bench -- run_speed``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
ONE_ITS = "focused-deterrence-violence-its"
BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def project(dest: Path) -> Path:
    """A project with the repository's parameters, notebooks and static report files, and the
    example data generated (not timed)."""
    dest.mkdir(parents=True)
    shutil.copytree(REPO / "parameters", dest / "parameters")
    shutil.copytree(REPO / "evaluations", dest / "evaluations")
    (dest / "reports").mkdir()
    for static in (REPO / "reports").glob("*"):
        if static.is_file():
            shutil.copy2(static, dest / "reports" / static.name)
    subprocess.run([_exe("sveval"), "--root", str(dest), "example"], check=True, capture_output=True)
    return dest


def clear_reports(root: Path) -> None:
    for p in (root / "reports").iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif not (REPO / "reports" / p.name).is_file():
            p.unlink()


def clear_all(root: Path) -> None:
    """As a fresh clone: no data (the example, its store and the caches), outputs or reports."""
    for folder in ("data", "outputs"):
        shutil.rmtree(root / folder, ignore_errors=True)
    clear_reports(root)
    shutil.rmtree(root / "reports" / ".sveval", ignore_errors=True)


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """(seconds, load before, load after) of one command, which must succeed."""
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds, before, os.getloadavg()[0]


def specs(root: Path) -> list[tuple[Path, Path]]:
    """(parameter file, notebook) of every evaluation, as ``sveval run`` pairs them."""
    import yaml

    out = []
    for spec in sorted((root / "parameters" / "evaluations").glob("*.yaml")):
        design = yaml.safe_load(spec.read_text())["design"]
        out.append((spec, root / "evaluations" / f"{design}.ipynb"))
    return out


def papermill_loop(root: Path, out: Path) -> list[str]:
    """One shell command running papermill on every evaluation in turn."""
    out.mkdir(exist_ok=True)
    cmds = []
    for spec, notebook in specs(root):
        cmds.append(" ".join([
            _exe("papermill"), "--no-progress-bar", str(notebook), str(out / f"{spec.stem}.ipynb"),
            "-p", "spec_path", str(spec), "-p", "result_path", str(out / f"{spec.stem}.json"),
            "-p", "root", str(root), "--cwd", str(root)]))
    return ["bash", "-c", " && ".join(cmds)]


def run_once(root: Path, tmp: Path, one_only: bool = False) -> dict[str, tuple[float, float, float]]:
    sveval = _exe("sveval")
    empty = tmp / "empty.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    nbformat.write(nb, empty)
    res: dict[str, tuple[float, float, float]] = {}
    res["empty"] = timed([_exe("papermill"), "--no-progress-bar", str(empty), str(tmp / "empty-out.ipynb")], tmp)
    one = root / "parameters" / "evaluations" / f"{ONE_ITS}.yaml"
    res["one_its"] = timed([sveval, "--root", str(root), "run", "--force", str(one)], root)
    res["one_its_script"] = timed([sys.executable, str(Path(__file__).with_name("its_floor.py")), str(root),
                                   ONE_ITS], root)
    keep = [sveval, "--root", str(root), "run", "--force", "--keep-kernels", "300", str(one)]
    try:
        timed(keep, root)  # leaves its warm kernel
        res["one_its_kept"] = timed(keep, root)
    finally:
        subprocess.run([sveval, "--root", str(root), "kernels", "--stop"], capture_output=True)
    if one_only:
        res["empty_after"] = timed([_exe("papermill"), "--no-progress-bar", str(empty), str(tmp / "empty-out.ipynb")], tmp)
        return res
    res["loop"] = timed(papermill_loop(root, tmp / "loop"), root)
    res["run_all"] = timed([sveval, "--root", str(root), "run", "--all", "--force"], root)
    res["rerun"] = timed([sveval, "--root", str(root), "run", "--all"], root)
    clear_reports(root)
    res["pipeline"] = timed([sveval, "--root", str(root), "pipeline"], root)
    clear_all(root)
    res["pipeline_fresh"] = timed([sveval, "--root", str(root), "pipeline"], root)
    res["empty_after"] = timed([_exe("papermill"), "--no-progress-bar", str(empty), str(tmp / "empty-out.ipynb")], tmp)
    return res


def report(runs: list[dict[str, tuple[float, float, float]]], n_evals: int, quarto: bool) -> str:
    best = {k: min(r[k][0] for r in runs) for k in runs[0]}
    empty = min(best["empty"], best["empty_after"])
    lines = [
        "# Run speed",
        "",
        "Produced by `python benchmarks/run_speed.py` (`nox -s bench -- run_speed`): every case a fresh",
        "command-line process, wall-clock seconds, on a temporary copy of the repository's parameters",
        f"and notebooks ({n_evals} example evaluations) with the example data generated beforehand (not",
        "timed). Each case's fastest of the repeats is used; every ratio compares figures of the same",
        "run of this script.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores"
        f" ({platform.processor() or platform.machine()}); Quarto {'found' if quarto else 'not found (the site uses the fallback renderer)'}.",
        "The machine is shared with other work: the 1-minute load average before and after each",
        "case is in the last table.",
        *([] if not os.environ.get("PYTHONDONTWRITEBYTECODE") else [
            "PYTHONDONTWRITEBYTECODE is set here: every process compiles the sveval modules it imports",
            "(an editable install; about 0.1 s of a cold evaluation), which a usual setup caches after",
            "the first run (the installed libraries are compiled at install either way).",
        ]),
        "",
        "| target | measured | ratio | target met |",
        "|---|---:|---:|:---:|",
    ]
    if "one_its" in best:
        lines += [
            f"| one default ITS evaluation <= 3x an empty papermill notebook | {best['one_its']:.1f} s vs {empty:.2f} s"
            f" | {best['one_its'] / empty:.2f}x | {'yes' if best['one_its'] <= 3 * empty else 'no'} |",
            f"| the same, rerun with its kernel kept (the default at a terminal; `--keep-kernels` here) <= 3x"
            f" | {best['one_its_kept']:.2f} s vs {empty:.2f} s | {best['one_its_kept'] / empty:.2f}x"
            f" | {'yes' if best['one_its_kept'] <= 3 * empty else 'no'} |",
        ]
        if "one_its_script" in best:
            lines += [
                f"| (for scale, no target) the same evaluation's work as a plain Python script, no kernel or"
                f" notebook (`its_floor.py`) | {best['one_its_script']:.2f} s vs {empty:.2f} s"
                f" | {best['one_its_script'] / empty:.2f}x | |",
            ]
    if "run_all" in best:
        lines += [
            f"| `sveval run --all --force` >= 2.5x faster than a sequential papermill CLI loop | {best['run_all']:.1f} s vs"
            f" {best['loop']:.1f} s | {best['loop'] / best['run_all']:.2f}x faster | {'yes' if best['loop'] >= 2.5 * best['run_all'] else 'no'} |",
            f"| `sveval pipeline` (data already generated) <= 25x an empty notebook | {best['pipeline']:.1f} s vs"
            f" {empty:.2f} s | {best['pipeline'] / empty:.1f}x | {'yes' if best['pipeline'] <= 25 * empty else 'no'} |",
            f"| warm rerun, nothing changed, < 2 s | {best['rerun']:.2f} s | | {'yes' if best['rerun'] < 2 else 'no'} |",
            f"| the README's first command after the install (`sveval pipeline` from no data) <= 25x | "
            f"{best['pipeline_fresh']:.1f} s vs {empty:.2f} s | {best['pipeline_fresh'] / empty:.1f}x | "
            f"{'yes' if best['pipeline_fresh'] <= 25 * empty else 'no'} |",
        ]
    lines += [
        "",
        "| repeat | case | seconds | load before | load after |",
        "|---|---|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        for k, (s, a, b) in r.items():
            lines.append(f"| {i} | {k} | {s:.2f} | {a:.1f} | {b:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the Markdown results here")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole set this many times")
    ap.add_argument("--one-only", action="store_true",
                    help="only the empty notebook and the one-evaluation cases (a few seconds a repeat)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sveval-run-speed-") as tmp:
        tmp = Path(tmp)
        root = project(tmp / "project")
        runs = []
        for i in range(args.repeat):
            runs.append(run_once(root, tmp, one_only=args.one_only))
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[0]:.1f} s" for k, v in runs[-1].items()),
                  file=sys.stderr)
        text = report(runs, len(specs(root)), shutil.which("quarto") is not None)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
