"""The batch runner: warm kernels give the same outputs as fresh ones, a dead warm kernel is
replaced, longest-first order, progress lines, and a Dask run writes the same bytes as a local run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from test_faults import IDS, _tiny_project

from sveval.pipeline import batch, executor
from sveval.pipeline.runner import run


def _outputs(root: Path) -> dict[str, bytes]:
    res = root / "reports" / "evaluations"
    return {p.name: p.read_bytes() for p in sorted(res.iterdir()) if p.is_file()}


def _ctx(design: str, **options):
    return SimpleNamespace(spec=SimpleNamespace(design=design, its=SimpleNamespace(**options)))


# ------------------------------------------------------------------------------------------------
# Scheduling and progress (no kernels)
# ------------------------------------------------------------------------------------------------
def test_longest_first_uses_recorded_seconds_then_design_estimates():
    its = _ctx("its", power_sims=200, model="quasipoisson")
    quick = _ctx("its", power_sims=20, model="ols")
    arima = _ctx("its", power_sims=200, model="arima")
    assert batch.estimate_seconds(quick) < batch.estimate_seconds(its) == batch.estimate_seconds(arima)
    assert batch.estimate_seconds(_ctx("did")) > batch.estimate_seconds(_ctx("synth"))
    assert batch.estimate_seconds(quick, {"seconds": 99.0}) == 99.0  # the last run wins
    assert batch.estimate_seconds(its, {"seconds": None}) == batch.estimate_seconds(its)
    seconds = {"a": 3.0, "b": 10.0, "c": 3.0, "d": 7.0}
    assert batch.longest_first("abcd", seconds.get) == ["b", "d", "a", "c"]  # ties keep order
    cores = os.cpu_count() or 1
    assert batch.worker_count(None, 100) == cores
    assert batch.worker_count(1000, 100) == cores
    assert batch.worker_count(None, 1) == 1 and batch.worker_count(None, 0) == 1


def test_progress_prints_plain_lines_with_a_weighted_eta():
    lines: list[str] = []
    bar = batch.Progress({"long": 30.0, "short": 10.0}, echo=lines.append, bar=False)
    bar.finished("long", "done     long (30.0 s)")
    bar.finished("short", "done     short (10.0 s)")
    bar.close()
    assert lines[0].startswith("[1/2] done     long (30.0 s); about ") and lines[0].endswith(" s left")
    assert lines[1] == "[2/2] done     short (10.0 s)"


# ------------------------------------------------------------------------------------------------
# Warm kernels
# ------------------------------------------------------------------------------------------------
def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_warm_kernel_starts_clean_and_a_dead_one_is_replaced(tmp_path):
    nb = _notebook(tmp_path / "probe.ipynb",
                   "import os, warnings\n"
                   "print(sorted(k for k in globals() if not k.startswith('_') and k not in "
                   "('In', 'Out', 'get_ipython', 'exit', 'quit', 'open', 'os', 'warnings', 'x')))",
                   f"print(os.getcwd() == {str(tmp_path)!r}, x)",
                   "leak = 1\nwarnings.warn('once per kernel?')",
                   "if x == 9:\n    os.kill(os.getpid(), 9)")
    out = tmp_path / "out"
    with batch.KernelPool(modules=()) as pool:  # nothing to import: quick kernels
        results = []
        for i, x in enumerate((1, 2)):
            work = executor.work_folder(out, f"probe{i}")
            ex = executor.execute(nb, out / f"probe{i}.ipynb", {"x": x}, work=work, cwd=tmp_path,
                                  pool=pool)
            assert ex.ok, ex.error
            results.append(nbformat.read(out / f"probe{i}.ipynb", as_version=4))
        assert pool.started == 1  # the second notebook reused the first one's kernel
        for x, res in zip((1, 2), results, strict=True):
            code = [c for c in res.cells if c.cell_type == "code"]
            assert code[2].outputs[0]["text"] == "[]\n"  # nothing left from the previous notebook
            assert code[3].outputs[0]["text"] == f"True {x}\n"
            assert "once per kernel?" in code[4].outputs[0]["text"]  # warnings shown again
            assert [c.execution_count for c in code] == list(range(1, len(code) + 1))

        # a warm kernel killed between notebooks is replaced before the next one
        warm = pool._kernels[next(iter(pool._kernels))]
        os.kill(warm.km.provisioner.process.pid, signal.SIGKILL)
        warm.km.provisioner.process.wait()
        ex = executor.execute(nb, out / "after.ipynb", {"x": 3}, work=executor.work_folder(out, "a"),
                              cwd=tmp_path, pool=pool)
        assert ex.ok and pool.replaced == 1 and pool.started == 2

        # a notebook whose warm kernel dies is retried once on a new kernel, then reported dead
        ex = executor.execute(nb, out / "dies.ipynb", {"x": 9}, work=executor.work_folder(out, "d"),
                              cwd=tmp_path, pool=pool)
        assert not ex.ok and ex.failure.dead_kernel and ex.attempts == 2
        assert ex.failure.cell == 5 and pool.started == 3


def test_a_kernel_only_warmed_up_skips_the_reset_and_later_ones_do_not(tmp_path, monkeypatch):
    """A new warm kernel is in a fresh kernel's state: its first notebook needs only the working
    folder (no reset: 0.2-0.45 s each); every later hand-out resets it in full. Prestarted kernels
    (also on shared workers, whose threads may be busy) stay pristine until their first notebook."""
    calls: list[str] = []
    run_code = batch.WarmKernel._run

    def spy(self, code, timeout):
        calls.append("reset" if "kernel_ready" in code else "chdir" if "chdir" in code else "other")
        return run_code(self, code, timeout)

    monkeypatch.setattr(batch.WarmKernel, "_run", spy)
    with batch.Workers(1) as workers:
        workers.pool.modules = ()  # nothing to import: a quick kernel
        batch.prestart(workers.pool, workers.threads, 1, tmp_path, together=False)[0].result()
        assert workers.pool.started == 1 and calls == ["other"]  # the warm-up only
        warm = workers.threads.submit(workers.pool.acquire, "python3", tmp_path).result()
        assert calls == ["other", "chdir"] and not warm.pristine
        warm._run(f"import os; assert os.getcwd() == {str(tmp_path)!r}; leak = 1", timeout=30)
        # the warm-up froze what the imports made (resets then collect only notebooks' objects)
        warm._run("import gc; assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()", timeout=30)
        workers.pool.release(warm)  # (on another thread: kept for that thread)
        warm.reset(tmp_path)
        assert calls[-1] == "reset"
        with pytest.raises(RuntimeError, match="NameError"):
            run_code(warm, "leak", timeout=30)


@pytest.mark.slow
def test_a_warm_kernel_draws_each_figure_only_for_its_picture(tmp_path):
    """pyplot's post-cell draw of new figures is dropped under the inline backend (the inline
    backend draws them again for their PNGs and closes them): a figure is drawn exactly as many
    times as making its PNG takes, and its picture is still shown."""
    warm = batch.WarmKernel(modules=("matplotlib.pyplot",))
    try:
        warm.reset(tmp_path)
        outputs: list[dict] = []

        def run(code: str) -> None:
            reply = batch._sync(warm.kc.execute_interactive(
                code, timeout=60, output_hook=lambda m: outputs.append(m)
                if m["msg_type"] in ("stream", "display_data", "error") else None))
            assert reply["content"]["status"] == "ok", reply["content"]

        run("import io\nimport matplotlib.pyplot as plt\ndraws = []\nfig, ax = plt.subplots()\n"
            "fig.canvas.mpl_connect('draw_event', lambda e: draws.append(1))\nax.plot([1, 2])")
        assert any("image/png" in m["content"].get("data", {}) for m in outputs)  # still shown
        run("shown = len(draws)\nfig2, ax2 = plt.subplots()\nax2.plot([1, 2])\nd2 = []\n"
            "fig2.canvas.mpl_connect('draw_event', lambda e: d2.append(1))\n"
            "fig2.canvas.print_figure(io.BytesIO(), format='png', bbox_inches='tight')\n"
            "plt.close(fig2)\nprint(shown, len(d2))")
        shown, png_only = map(int, outputs[-1]["content"]["text"].split())
        assert shown == png_only >= 1
    finally:
        warm.close()


def test_ipython_kernels_keep_no_history_database_and_other_kernels_get_no_options(tmp_path):
    """Kernels sveval starts write no input history to the user's IPython database (an SQLite file
    in the home folder written after every cell and shared by the parallel kernels); a kernel
    that is not IPython's gets no option it might not know."""
    from sveval.pipeline import kept

    assert executor.kernel_options(["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]) == \
        list(executor.IPYKERNEL_OPTIONS)
    assert executor.kernel_options(["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]) == []
    assert kept.kernel_argv("python3", tmp_path / "c.json")[-len(executor.IPYKERNEL_OPTIONS):] == \
        list(executor.IPYKERNEL_OPTIONS)
    warm = batch.WarmKernel(modules=())
    try:
        warm.reset(tmp_path)
        out: list[str] = []
        reply = batch._sync(warm.kc.execute_interactive(
            "h = get_ipython().history_manager\nprint(h.enabled, type(h.db).__name__)\nprint(In[-1][:6])",
            timeout=60, output_hook=lambda m: out.append(m["content"]["text"]) if m["msg_type"] == "stream" else None))
        assert reply["content"]["status"] == "ok"
        assert "".join(out) == "False DummyDB\nh = ge\n"  # In still holds the session's cells, in memory
    finally:
        warm.close()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, example_data):
    """The tiny project (two ITS evaluations) run once on fresh kernels, with SOURCE_DATE_EPOCH."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "1780000000")
    root = _tiny_project(tmp_path_factory.mktemp("batch") / "tiny", example_data)
    report = run(root=root, fresh_kernels=True, workers=1, echo=lambda s: None)
    assert report.ok, report.to_dict()
    yield root, _outputs(root)
    mp.undo()


@pytest.mark.slow
def test_warm_kernels_write_the_same_bytes_as_fresh_kernels(fresh, monkeypatch):
    root, expected = fresh
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    lines: list[str] = []
    report = run(root=root, force=True, workers=1, echo=lines.append, progress=False)
    assert report.ok, report.to_dict()
    assert [o.id for o in report.outcomes] == sorted(IDS)
    assert any("warm kernels" in s for s in lines)
    assert sum(s.startswith("[") and "done" in s for s in lines) == len(IDS)
    got = _outputs(root)
    assert set(got) == {f"{i}.{ext}" for i in IDS for ext in ("ipynb", "json")} == set(expected)
    for name in expected:
        assert got[name] == expected[name], name


@pytest.mark.slow
def test_dask_run_writes_the_same_bytes_as_a_local_run(fresh, monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, expected = fresh
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    for name in expected:  # nothing left from the local run
        (root / "reports" / "evaluations" / name).unlink()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, local_directory=str(tmp_path)) as cluster:
        lines: list[str] = []
        report = run(root=root, force=True, scheduler=cluster.scheduler_address,
                     echo=lines.append, progress=False)
    assert report.ok, report.to_dict()
    assert any("Dask cluster" in s and "2 worker(s)" in s for s in lines)
    assert _outputs(root) == expected
    assert not list((root / "reports" / "evaluations").glob(".sveval-work-*"))
