"""Running a batch of notebooks fast: warm kernels, longest-first order, progress, and Dask.

* **Warm kernels** (:class:`KernelPool`): one kernel per worker thread, started once and reused for
  every notebook that worker runs, so the imports of sveval, pandas, statsmodels and matplotlib are
  paid once per worker instead of once per notebook. Before each notebook the kernel is reset to the
  state of a fresh kernel that has imported the same modules (:func:`kernel_reset`): the user
  namespace and output history cleared, the execution counter back to 1, the working folder set,
  matplotlib figures closed and its settings, pandas options, NumPy error and print settings and the
  warning filters (with the "shown once" registries) restored, the random generators re-seeded from
  the operating system as in a new process. Executed notebooks are byte-identical to those of a
  fresh kernel after normalisation (``tests/test_batch.py`` checks it). The notebook runs through
  papermill with an engine registered through papermill's engine API (``sveval-warm``) that hands
  nbclient the warm kernel's client. A warm kernel that is dead or does not answer the reset is
  replaced; a notebook whose warm kernel dies while it runs is retried once on a new kernel. The
  fresh-kernel path stays (``sveval run --fresh-kernels``).
* **Scheduling** (:func:`longest_first`): the longest evaluations start first (by the manifest's
  last ``seconds``, else an estimate from the design and its options), so the batch does not end
  with one long notebook running alone.
* **Progress** (:class:`Progress`): a tqdm bar with an ETA weighted by the expected seconds on a
  terminal's stderr, plain lines otherwise.
* **Dask** (:func:`dask_runner`): ``sveval run --executor dask --scheduler ADDRESS`` sends each
  notebook to a Dask distributed worker. Workers read the project folder at the same path (a shared
  filesystem: NFS, Lustre, GPFS ...), so no record-level file is copied; a worker executes the
  notebook into its own temporary folder and returns only the executed notebook and the result
  JSON (a few hundred kilobytes), which the client writes and swaps into place atomically exactly
  as a local run does: a Dask run's outputs are byte-identical to a local run's.

This module is imported inside the kernels too (:func:`kernel_warm_up`): keep its top-level
imports light.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sveval.pipeline import executor

ENGINE = "sveval-warm"
SAVE_EVERY = 30.0  # seconds between papermill's intermediate writes of a running notebook
RESET_TIMEOUT = 60  # seconds for a warm kernel to answer the reset before it is replaced
READY_DRAIN = 1000  # IOPub messages at most dropped once a new kernel answers (see wait_ready)
WARM_IMPORTS = ("sveval", "sveval.report", "sveval.report.narrative", "sveval.report.plots",
                "pandas", "numpy", "scipy.stats", "statsmodels.genmod.generalized_linear_model",
                "statsmodels.regression.linear_model", "statsmodels.tsa.stattools", "matplotlib.pyplot",
                "seaborn")

# one BLAS thread per kernel (unless set otherwise): the workers already use every core, and BLAS
# threads on top of them stall each other (a default ITS fit: 1.2 s with one thread, about 20 s
# with two threads per kernel on a busy 2-core machine)
ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# seconds one evaluation takes on a quiet 2-core machine, by design (before any run is recorded)
DESIGN_SECONDS = {"its": 3.0, "did": 3.5, "synth": 2.0}


# ------------------------------------------------------------------------------------------------
# Scheduling
# ------------------------------------------------------------------------------------------------
def estimate_seconds(ctx: Any, previous: Mapping[str, Any] | None = None) -> float:
    """Expected seconds of one evaluation: the last recorded run's, else an estimate from its design
    (ITS scaled by its power simulations)."""
    seconds = (previous or {}).get("seconds")
    if isinstance(seconds, int | float) and seconds > 0:
        return float(seconds)
    spec = ctx.spec
    base = DESIGN_SECONDS.get(spec.design, 3.0)
    if spec.design == "its":
        its = getattr(spec, "its", None)
        sims = getattr(its, "power_sims", 200) if its is not None else 200
        base = 2.0 + (base - 2.0) * sims / 200  # (ARIMA's refits are as fast as the GLMs' since its_refit)
    return base


def longest_first(items: Iterable[Any], seconds: Callable[[Any], float]) -> list[Any]:
    """``items`` sorted by expected seconds, longest first (ties keep their order)."""
    items = list(items)
    return [it for _, _, it in sorted(((-seconds(it), i, it) for i, it in enumerate(items)),
                                      key=lambda t: (t[0], t[1]))]


def worker_count(requested: int | None, todo: int) -> int:
    """Parallel notebooks: as requested, capped at the cores and at the number of notebooks."""
    cores = os.cpu_count() or 1
    return max(1, min(requested or cores, cores, todo or 1))


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------
class Progress:
    """A progress bar with an ETA weighted by each notebook's expected seconds.

    On a terminal (``stream.isatty()``) a tqdm bar on ``stream``; otherwise one plain line per
    finished notebook through ``echo`` (``[3/14] done x (12.1 s); about 40 s left``).
    """

    def __init__(self, expected: Mapping[str, float], *, echo: Callable[[str], None] = print,
                 stream: Any = None, bar: bool | None = None):
        self.expected = dict(expected)
        self.total = sum(self.expected.values()) or 1.0
        self.done = 0.0
        self.count = 0
        self.echo = echo
        self.t0 = time.perf_counter()
        stream = sys.stderr if stream is None else stream
        use_bar = bar if bar is not None else bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        if use_bar and self.expected:
            from tqdm import tqdm

            self.bar = tqdm(total=round(self.total, 1), file=stream, unit="s", dynamic_ncols=True,
                            desc=f"0/{len(self.expected)} evaluations",
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def eta(self) -> float | None:
        """Seconds left: the expected seconds left, scaled by how fast the batch has gone so far."""
        if self.done <= 0:
            return None
        rate = (time.perf_counter() - self.t0) / self.done
        return max(0.0, (self.total - self.done) * rate)

    def finished(self, eid: str, line: str) -> None:
        self.count += 1
        step = self.expected.get(eid, 0.0)
        self.done += step
        if self.bar is not None:
            with self.bar.external_write_mode():
                self.echo(line)
            self.bar.set_description_str(f"{self.count}/{len(self.expected)} evaluations")
            self.bar.update(round(step, 1))
        else:
            eta = self.eta()
            left = "" if eta is None or self.count == len(self.expected) else f"; about {eta:.0f} s left"
            self.echo(f"[{self.count}/{len(self.expected)}] {line}{left}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------
# Inside the kernel: warm-up and reset
# ------------------------------------------------------------------------------------------------
_SNAPSHOT: dict[str, Any] = {}


def kernel_warm_up(modules: Iterable[str] = WARM_IMPORTS) -> None:
    """Run inside a warm kernel once: import ``modules``, load matplotlib's inline backend and
    record the state a fresh kernel has after those imports (restored by :func:`kernel_reset`)."""
    import copy
    import importlib
    import warnings

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    snap: dict[str, Any] = {"filters": list(warnings.filters), "path": list(sys.path)}
    if "matplotlib" in sys.modules:
        import matplotlib
        import matplotlib.pyplot as plt

        plt.close(plt.figure())  # resolve the (inline) backend: its settings are part of the state
        plt.close("all")
        _one_draw_per_figure()
        snap["rc"] = copy.deepcopy(dict(matplotlib.rcParams))
    if "pandas" in sys.modules:
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snap["pandas"] = {k: pd.get_option(k) for k in _pandas_keys()}
    if "numpy" in sys.modules:
        import numpy as np

        snap["np_err"] = np.geterr()
        snap["np_print"] = np.get_printoptions()
    _SNAPSHOT.clear()
    _SNAPSHOT.update(snap)
    # the imported modules' objects (about 200,000) live as long as the kernel: moved out of the
    # collector's reach, so that the full collections of every reset (IPython's and ours) and the
    # automatic ones while a notebook runs walk only what notebooks create (a reset: 0.16 -> 0.02-0.06 s)
    import gc

    gc.collect()
    gc.freeze()


def _one_draw_per_figure() -> None:
    """Under the inline backend, let each figure of a cell be drawn only for its picture.

    In an IPython kernel pyplot registers a ``post_execute`` hook that draws every new figure after
    each cell (:func:`matplotlib.pyplot.install_repl_displayhook`), and the inline backend's own
    ``post_execute`` hook (registered after it) then draws the same figures again to make their PNGs
    and closes them. With the inline backend closing figures after each cell (its default,
    ``InlineBackend.close_figures``) the first draw is never seen: it was a third of the time the
    figures of an evaluation take (about 9% of a kernel's time in ``sveval run --all``). pyplot's
    public :func:`~matplotlib.pyplot.uninstall_repl_displayhook` removes it; the pictures, the
    outputs and every other behaviour stay those of a fresh kernel (``tests/test_batch.py``
    compares the executed notebooks). Anything that switches the backend again (``%matplotlib``)
    reinstalls the hook, which only costs that draw again.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    if "matplotlib_inline" not in str(matplotlib.get_backend()):
        return
    try:
        from matplotlib_inline.config import InlineBackend
    except ImportError:  # pragma: no cover - the inline backend without its configuration
        return
    if InlineBackend.instance().close_figures:
        plt.uninstall_repl_displayhook()


def _pandas_keys() -> list[str]:
    from pandas._config import config

    return sorted(k for k in config._registered_options if k not in config._deprecated_options)


def kernel_ready(cwd: str) -> None:
    """Run inside a warm kernel before each notebook: :func:`kernel_reset`, or only the working
    folder when :func:`kernel_scrub` has already reset the kernel since its last notebook."""
    if _SNAPSHOT.pop("scrubbed", False):
        os.chdir(cwd)
        return
    kernel_reset(cwd)


def kernel_scrub() -> None:
    """Run inside a kept kernel after its last notebook of a run (sent without waiting for it):
    the reset of :func:`kernel_reset` done ahead, so that the next run's :func:`kernel_ready` has
    only the working folder to set. Marked done only when the reset completed."""
    _SNAPSHOT.pop("scrubbed", None)
    try:
        here = os.getcwd()
    except OSError:  # the working folder was deleted
        here = os.path.expanduser("~")
    kernel_reset(here)
    _SNAPSHOT["scrubbed"] = True


def kernel_reset(cwd: str) -> None:
    """Back to the state after :func:`kernel_warm_up` (see the module docstring), in ``cwd``."""
    import gc
    import random
    import warnings

    ip = get_ipython()  # type: ignore[name-defined]  # noqa: F821 - defined inside IPython
    ip.reset(new_session=True)  # user namespace, In/Out history, _ __ ___; execution count 1
    ip.execution_count = 1
    os.chdir(cwd)
    snap = _SNAPSHOT
    if "rc" in snap:
        import matplotlib
        import matplotlib.pyplot as plt

        plt.close("all")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matplotlib.rcParams.clear()
            matplotlib.rcParams.update(snap["rc"])
    if "pandas" in snap:
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, v in snap["pandas"].items():
                if pd.get_option(k) != v:
                    pd.set_option(k, v)
    if "np_err" in snap:
        import numpy as np

        np.seterr(**snap["np_err"])
        np.set_printoptions(**snap["np_print"])
        np.random.seed()
    if "path" in snap:
        sys.path[:] = snap["path"]
    random.seed()
    warnings.resetwarnings()  # also forgets which warnings were already shown once
    warnings.filters[:] = snap.get("filters", [])
    warnings.onceregistry.clear()
    warnings._filters_mutated()  # invalidate every module's __warningregistry__
    gc.collect()


# ------------------------------------------------------------------------------------------------
# Warm kernels (in the runner's process)
# ------------------------------------------------------------------------------------------------
def _sync(value: Any) -> Any:
    """Wait for ``value`` if it is awaitable, on this thread's event loop: the one nbclient runs
    notebooks on, so the warm kernel's asynchronous client and manager stay on one loop."""
    import inspect

    if not inspect.isawaitable(value):
        return value
    from jupyter_core.utils import ensure_event_loop

    return ensure_event_loop().run_until_complete(value)


async def wait_ready(kc: Any, timeout: float) -> None:
    """Wait until the kernel behind the asynchronous client ``kc`` answers on its shell and IOPub
    channels: jupyter_client's ``wait_for_ready`` without its last step.

    That step waits until IOPub has been silent for 0.2 s, which every kernel start and every
    adoption of a kept kernel paid in full (a quarter of the time an empty notebook takes). Here the
    messages already received are dropped without waiting (at most :data:`READY_DRAIN`); any message
    left or arriving later (the idle status of the ``kernel_info`` request) has another parent
    message than any later request, and ``execute_interactive`` and nbclient skip such messages.
    Raises ``RuntimeError`` as ``wait_for_ready`` does when the kernel dies or does not answer
    within ``timeout`` seconds.
    """
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        kc.kernel_info()
        try:
            msg = await kc.shell_channel.get_msg(timeout=1)
        except Empty:
            msg = None
        if msg is not None and msg["msg_type"] == "kernel_info_reply":
            try:  # IOPub connected: the kernel's welcome or status messages reach it
                await kc.iopub_channel.get_msg(timeout=0.2)
            except Empty:
                pass
            else:
                kc._handle_kernel_info_reply(msg)  # the protocol version the session speaks
                break
        if not await kc.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")
    for _ in range(READY_DRAIN):  # what is already there; a kernel printing on its own never stops
        try:
            await kc.iopub_channel.get_msg(timeout=0)
        except Empty:
            return


class WarmKernel:
    """A started kernel with its client, warmed up once (see :func:`kernel_warm_up`).

    The manager is the one the executor gives nbclient for a new kernel
    (:func:`sveval.pipeline.executor._kernel_manager`: asynchronous, as nbclient's own, so a kernel
    that dies is noticed; IPC sockets; a fixed hash seed).
    """

    def __init__(self, kernel: str = "python3", start_timeout: int = executor.START_TIMEOUT,
                 modules: Iterable[str] = WARM_IMPORTS):
        self.kernel = kernel
        options, self.sockets = executor._kernel_manager(kernel)  # nbclient's options for a new kernel
        self.km = options["kernel_manager_class"](kernel_name=kernel, **(
            {"config": options["config"]} if "config" in options else {}))
        self.kc = None
        self.notebooks = 0
        self.pristine = False  # as a fresh kernel after the imports: no reset needed
        try:
            _sync(self.km.start_kernel(env={**ONE_BLAS_THREAD, **os.environ}))
            self.kc = self.km.client()
            self.kc.start_channels()
            _sync(wait_ready(self.kc, start_timeout))
            self.kc.allow_stdin = False
            self._run("import sveval.pipeline.batch as _svb; "
                      f"_svb.kernel_warm_up({tuple(modules)!r}); del _svb", timeout=max(start_timeout, 120))
            self.pristine = True  # the warm-up ran silently and left no name, output or history
        except BaseException:
            self.close()
            raise

    def _run(self, code: str, timeout: float) -> None:
        reply = _sync(self.kc.execute_interactive(code, silent=True, store_history=False,
                                                  timeout=timeout, output_hook=lambda msg: None))
        content = reply.get("content", {})
        if content.get("status") != "ok":
            raise RuntimeError(f"warm kernel: {content.get('ename')}: {content.get('evalue')}")

    def alive(self) -> bool:
        try:
            return bool(_sync(self.km.is_alive()))
        except Exception:  # noqa: BLE001
            return False

    def discard(self) -> None:
        """End a broken kernel (for a warm kernel of this run: the same as :meth:`close`)."""
        self.close()

    def reset(self, cwd: Path | str, timeout: float = RESET_TIMEOUT) -> None:
        """Back to a fresh kernel's state with ``cwd`` as working folder; raises when the kernel is
        dead or does not answer within ``timeout`` seconds (then replace it)."""
        if not self.alive():
            raise RuntimeError("the warm kernel is not running")
        if self.pristine:  # only warmed up since it started: already in a fresh kernel's state
            self._run(f"__import__('os').chdir({str(cwd)!r})", timeout)
        else:
            self._run(f"import sveval.pipeline.batch as _svb; _svb.kernel_ready({str(cwd)!r})", timeout)
        self.pristine = False  # handed out for a notebook

    def _stop_client(self) -> None:
        if self.kc is not None:
            try:
                self.kc.stop_channels()
            except Exception:  # noqa: BLE001
                pass
            self.kc = None

    def close(self) -> None:
        self._stop_client()
        try:
            if self.km.has_kernel:
                _sync(self.km.shutdown_kernel(now=True))
        except Exception:  # noqa: BLE001 - the kernel may already be gone
            pass
        try:
            _sync(self.km.cleanup_resources())
        except Exception:  # noqa: BLE001
            pass
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)


class KernelPool:
    """One warm kernel per thread, started on first use; :meth:`acquire` hands it reset for a
    notebook, :meth:`release` gives it back (a broken one is shut down and replaced next time).

    Use as a context manager: every kernel is closed at the end (shut down; a kept kernel,
    :mod:`sveval.pipeline.kept`, is left for the next run). ``modules`` are imported once by every
    kernel when it starts. ``starter(kernel, cwd)`` gives a new warm kernel (default: a
    :class:`WarmKernel` of this run).
    """

    def __init__(self, kernel: str = "python3", start_timeout: int = executor.START_TIMEOUT,
                 modules: Iterable[str] = WARM_IMPORTS,
                 starter: Callable[[str, Path | str], WarmKernel] | None = None):
        self.kernel = kernel
        self.start_timeout = start_timeout
        self.modules = tuple(modules)
        self.starter = starter or (lambda kernel, cwd: WarmKernel(kernel, self.start_timeout, self.modules))
        self._kernels: dict[int, WarmKernel] = {}
        self._lock = threading.Lock()
        self.started = 0
        self.replaced = 0

    def acquire(self, kernel: str, cwd: Path | str) -> WarmKernel:
        """This thread's warm kernel, reset for a notebook in ``cwd``; a dead or wedged kernel is
        replaced by a new one."""
        tid = threading.get_ident()
        with self._lock:
            warm = self._kernels.pop(tid, None)
        if warm is not None and warm.kernel != kernel:
            warm.close()
            warm = None
        if warm is not None:
            try:
                warm.reset(cwd)
            except Exception:  # noqa: BLE001 - dead or wedged: replace it
                warm.discard()
                warm = None
                self.replaced += 1
        if warm is None:
            warm = self.starter(kernel, cwd)
            self.started += 1
            try:
                warm.reset(cwd)
            except BaseException:
                warm.discard()
                raise
        return warm

    def start_here(self, kernel: str, cwd: Path | str) -> None:
        """Start this thread's warm kernel if it has none, without handing it out (a kernel only
        warmed up needs no reset before its first notebook)."""
        with self._lock:
            if threading.get_ident() in self._kernels:
                return
        warm = self.starter(kernel, cwd)
        self.started += 1
        self.release(warm, started=True)

    def release(self, warm: WarmKernel, *, broken: bool = False, started: bool = False) -> None:
        """Give back this thread's kernel after a notebook (``started``: after starting it only)."""
        warm.notebooks += 0 if started else 1
        if broken or not warm.alive():
            warm.discard()
            self.replaced += 1
            return
        tid = threading.get_ident()
        with self._lock:
            old = self._kernels.pop(tid, None)
            self._kernels[tid] = warm
        if old is not None and old is not warm:
            old.close()

    def engine(self) -> str:
        """The papermill engine that runs a notebook on a warm kernel (registered on first use)."""
        return register_engine()

    def close(self) -> None:
        with self._lock:
            kernels, self._kernels = list(self._kernels.values()), {}
        for warm in kernels:
            warm.close()

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prestart(pool: KernelPool, threads: Any, n: int, cwd: Path | str, *, together: bool = True) -> list[Any]:
    """Start one warm kernel in each of ``n`` threads of the thread pool ``threads`` (the threads
    that will run the notebooks: a kernel's client stays on its thread's event loop), in the
    background; returns the futures. A kernel that fails to start is started again when needed.
    ``together=False`` for threads that may be busy with other work (:class:`Workers`): the start
    tasks then do not wait for one another, and a busy thread starts its kernel when it needs one."""
    barrier = threading.Barrier(n) if together else None
    # jupyter_client's manager imported and the kernelspec found (which imports IPython) here,
    # before the start tasks: done by them instead, it competes for the interpreter with the
    # caller's next work (validating the parameter files) and the kernels start about 0.1 s later
    from jupyter_client import manager  # noqa: F401
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        KernelSpecManager().get_kernel_spec(pool.kernel)
    except Exception:  # noqa: BLE001 - no such kernel: the start tasks report it
        pass

    def start() -> None:
        try:
            if barrier is not None:
                barrier.wait(timeout=60)  # n tasks held together: n different threads
        except threading.BrokenBarrierError:
            pass
        try:
            pool.start_here(pool.kernel, cwd)
        except Exception:  # noqa: BLE001 - the notebook's own acquire tries again
            pass

    return [threads.submit(start) for _ in range(n)]


class Workers:
    """Worker threads, each with its warm kernel, shared by the steps of one command: ``sveval
    pipeline`` runs the outcome-tracking notebook on one of them, ahead of the evaluations (it is
    the longest notebook), so it needs no kernel of its own. ``threads`` and ``pool`` are handed to
    :func:`sveval.pipeline.runner.run` (``workers_shared=``) and the tracking run (``pool=``); nothing starts
    until a step submits work. Use as a context manager: the threads are joined and the kernels
    shut down at the end."""

    def __init__(self, n: int, kernel: str = "python3"):
        from concurrent.futures import ThreadPoolExecutor

        self.n = max(1, int(n))
        self.kernel = kernel
        self.threads = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="sveval-worker")
        self.pool = KernelPool(kernel)

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        self.pool.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _register_engine() -> None:
    """The ``sveval-warm`` papermill engine: nbclient on a kernel that is already running, through
    its existing client (papermill's own engine would open a new client for every notebook)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    if ENGINE in papermill_engines._engines:
        return

    class WarmEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None,
                                     **kwargs):
            kc = kwargs.pop("warm_kc")
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log=__import__("logging").getLogger("papermill"),
                                 log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            client = PapermillNotebookClient(nb_man, **final)
            client.kc = kc  # the warm kernel's client: nbclient neither starts nor stops anything
            # papermill writes the whole notebook as each cell starts and ends (32 writes of a
            # notebook with its figures for the ITS report); the file is in a private work folder
            # nobody reads before the end, so write at most every SAVE_EVERY seconds (progress of
            # a long notebook) and once at the end (papermill's notebook_complete, failures too)
            full_save = nb_man.save
            last = [time.monotonic()]

            def save(**kw):
                if time.monotonic() - last[0] >= SAVE_EVERY:
                    full_save(**kw)
                    last[0] = time.monotonic()

            nb_man.save = save
            try:
                return client.execute()
            finally:
                nb_man.save = full_save

    papermill_engines.register(ENGINE, WarmEngine)


_register_lock = threading.Lock()


def register_engine() -> str:
    with _register_lock:
        _register_engine()
    return ENGINE


# ------------------------------------------------------------------------------------------------
# Dask
# ------------------------------------------------------------------------------------------------
_WORKER_POOL: KernelPool | None = None
_WORKER_POOL_LOCK = threading.Lock()


def _worker_pool(kernel: str) -> KernelPool:
    """The warm kernels of this Dask worker process (one per worker thread), shut down at exit."""
    global _WORKER_POOL
    with _WORKER_POOL_LOCK:
        if _WORKER_POOL is None:
            import atexit

            _WORKER_POOL = KernelPool(kernel)
            atexit.register(_WORKER_POOL.close)
        return _WORKER_POOL


def remote_execute(notebook: str, output: str, parameters: dict[str, Any], work: str, cwd: str,
                   kernel: str, timeout: int | None, retries: int, warm: bool) -> dict[str, Any]:
    """Run on a Dask worker: execute one notebook into a private temporary folder and return the
    executed notebook's and result files' bytes (every other file the notebook wrote there, by name).

    Paths under the client's work folder ``work`` in ``parameters`` are mapped to the worker's
    folder, and mapped back in the notebook by :func:`sveval.pipeline.executor.execute`'s
    normalisation, so the notebook reads as if it had run on the client.
    """
    local = Path(tempfile.mkdtemp(prefix="sveval-dask-"))
    try:
        params = {k: (v.replace(work, str(local)) if isinstance(v, str) else v)
                  for k, v in parameters.items()}
        ex = executor.execute(Path(notebook), Path(output), params, work=local, cwd=Path(cwd),
                              kernel=kernel, timeout=timeout, retries=retries, swap=False,
                              pool=_worker_pool(kernel) if warm else None)
        files = {p.name: p.read_bytes() for p in sorted(local.iterdir()) if p.is_file()}
        return {"files": files, "notebook": ex.notebook is not None, "failure": ex.failure,
                "attempts": ex.attempts, "seconds": ex.seconds}
    finally:
        shutil.rmtree(local, ignore_errors=True)


class DaskRunner:
    """Executes notebooks on a Dask cluster for the runner: a callable with the signature of
    :func:`sveval.pipeline.executor.execute` that submits the notebook and writes what comes back
    into the client's work folder. ``priority`` (higher first) keeps the longest-first order on the
    cluster."""

    def __init__(self, client: Any, *, warm: bool = True):
        self.client = client
        self.warm = warm
        self.priority: dict[str, int] = {}

    def __call__(self, notebook: Path, output: Path, parameters: Mapping[str, Any], *, work: Path,
                 cwd: Path, kernel: str = "python3", timeout: int | None = 1800, retries: int = 2,
                 swap: bool = True, pool: Any = None) -> executor.Execution:
        t0 = time.perf_counter()
        future = self.client.submit(
            remote_execute, str(notebook), str(output), dict(parameters), str(work), str(cwd),
            kernel, timeout, retries, self.warm, pure=False,
            priority=self.priority.get(output.stem, 0), key=f"sveval-{output.stem}-{os.urandom(4).hex()}")
        got = future.result()
        for name, data in got["files"].items():
            (work / name).write_bytes(data)
        nb = work / output.name if got["notebook"] else None
        if nb is not None and swap:
            os.replace(nb, output)
            nb = output
        return executor.Execution(ok=got["failure"] is None, notebook=nb, failure=got["failure"],
                                  attempts=got["attempts"], seconds=round(time.perf_counter() - t0, 2))


def connect(scheduler: str) -> Any:
    """A Dask distributed client for ``scheduler`` (an address such as ``tcp://host:8786``, or a
    scheduler file's path)."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - the optional extra is missing
        from sveval.errors import SvevalError

        raise SvevalError("--executor dask needs Dask distributed: pip install 'sveval[dask]'") from exc
    if scheduler.endswith(".json") and Path(scheduler).exists():
        return Client(scheduler_file=scheduler)
    return Client(scheduler)
