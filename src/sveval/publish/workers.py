"""A helper process for the slow, independent parts of ``sveval publish``.

Publishing is mostly single-threaded Python: drawing the SVG figures of the home page and the
Home Office measures page (matplotlib), turning executed notebooks into HTML (nbconvert and
BeautifulSoup) and scanning the result. On a machine with a second core, :class:`Helper` hands the
figures (and the control-chart readings of the measures page, which need scipy, as the drawing
code does) to one worker process, while this process, which then never imports matplotlib or
scipy, builds the pages, renders them and scans them, and waits only for the figure files.
(Notebooks stay here: a worker that took one would first have to import nbconvert.)

The worker is a fresh interpreter (``python -c`` :data:`WORKER_CODE`, started with
:mod:`subprocess`): never a fork of a process that may be running threads, as ``sveval pipeline``
is, and, unlike :mod:`multiprocessing`'s ``spawn``, it does not re-run the caller's ``__main__``
script (a script calling :func:`sveval.publish.site.publish` needs no ``if __name__ ==
"__main__"`` guard). Jobs go to it one at a time, pickled, over its standard input; results come
back over its standard output. A job not yet sent can be cancelled (``Future.cancel()``), as
:meth:`Helper.close` does with whatever is left when a publish fails.

Work is named as ``"module:function"`` strings so that submitting it imports nothing here (in
particular not matplotlib): only the worker imports the drawing code. Without a second core, or
with ``parallel=False``, every call runs in this process, in the order submitted, through the same
functions: the output is the same files, byte for byte (``tests/test_publish_speed_equality.py``).
"""

from __future__ import annotations

import collections
import importlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, BinaryIO

#: modules the worker imports while this process starts up: the control charts' module (pandas and
#: scipy, which the readings, asked for first, need; the first figure imports the drawing code)
WARM_MODULES = ("sveval.designs.spc",)


def resolve(target: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def call(target: str, *args: Any, **kwargs: Any) -> Any:
    """Call the function named by ``target`` (what the worker runs for every job)."""
    return resolve(target)(*args, **kwargs)


def warm(modules: tuple[str, ...] = WARM_MODULES) -> None:
    """Import ``modules`` (the worker's first job, so later jobs find them loaded)."""
    for m in modules:
        importlib.import_module(m)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class Helper:
    """Jobs for one worker process, or run inline (``parallel=False``, or a single core).

    Use as a context manager, or call :meth:`close`: it cancels the jobs not yet started and
    stops the worker.
    """

    def __init__(self, parallel: bool | None = None) -> None:
        if parallel is None:
            parallel = available_cores() > 1
        self._futures: list[Future] = []
        self._proc: subprocess.Popen | None = None
        self.worker_lost: str | None = None  # why the worker's jobs now run in this process
        if not parallel:
            return
        self._jobs: collections.deque[tuple[Future, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as exc:  # no interpreter to start: everything runs here
            self.worker_lost = f"the publish worker process could not start ({exc})"
            return
        assert self._proc.stdin is not None
        try:
            pickle.dump(list(sys.path), self._proc.stdin)  # it imports what this process imports
            self._proc.stdin.flush()
        except OSError as exc:  # it stopped at once: its jobs run here (see _feed)
            self.worker_lost = f"the publish worker process stopped ({exc!r})"
        self._thread = threading.Thread(target=self._feed, name="sveval-publish-worker", daemon=True)
        self._thread.start()
        self.submit("sveval.publish.workers:warm")

    @property
    def parallel(self) -> bool:
        return self._proc is not None

    def submit(self, target: str, *args: Any, **kwargs: Any) -> Future:
        """Run ``target(*args, **kwargs)`` in the worker (inline without one); a future of its result.

        The arguments are pickled here and now, so changing them afterwards does not reach the job.
        """
        fut: Future = Future()
        self._futures.append(fut)
        if self._proc is None:
            try:
                fut.set_result(call(target, *args, **kwargs))
            except Exception as exc:  # handed to the caller through the future, as the worker's would be
                fut.set_exception(exc)
            return fut
        job = pickle.dumps((target, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        with self._cond:
            if self._closing:
                raise RuntimeError("the publish helper is closed")
            self._jobs.append((fut, job))
            self._cond.notify()
        return fut

    def _feed(self) -> None:
        """Send queued jobs one at a time and hand each result to its future (a thread).

        Should the worker process be lost (it could not start, or was killed), this job and the
        ones after it run here, in this thread: slower, the same files.
        """
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    return
                fut, job = self._jobs.popleft()
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled before it was sent
            if self.worker_lost is None:
                try:
                    proc.stdin.write(job)
                    proc.stdin.flush()
                    ok, value = pickle.load(proc.stdout)
                except (OSError, EOFError, pickle.UnpicklingError) as exc:
                    self.worker_lost = f"the publish worker process stopped ({exc!r})"
                else:
                    (fut.set_result if ok else fut.set_exception)(value)
                    continue
            try:
                target, args, kwargs = pickle.loads(job)
                fut.set_result(call(target, *args, **kwargs))
            except Exception as exc:  # the caller's future raises it
                fut.set_exception(exc)

    def wait(self) -> None:
        """Wait for every job submitted so far (cancelled ones aside); raise the first one's error."""
        for fut in list(self._futures):
            if not fut.cancelled():
                fut.result()

    def close(self) -> None:
        """Cancel the jobs not started, let the running one finish, stop the worker."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with self._cond:
            self._closing = True
            for fut, _ in self._jobs:
                fut.cancel()
            self._jobs.clear()
            self._cond.notify()
        self._thread.join()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: what the worker runs: this process's ``sys.path`` first (so it imports the same sveval), then
#: :func:`worker_main`
WORKER_CODE = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
               "from sveval.publish.workers import worker_main; worker_main()")


def worker_main() -> None:
    """The worker process: answers go to a private copy of standard output, and anything the
    jobs print goes to standard error."""
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, results)
    results.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing left to do: skip tearing down matplotlib, pandas and the rest


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker's loop: jobs ``(target, args, kwargs)`` until the input ends, each answered
    with ``(True, result)`` or ``(False, exception)``."""
    while True:
        try:
            target, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, call(target, *args, **kwargs))
        except Exception as exc:  # the caller's future raises it
            answer = (False, exc)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception: say what it was
            data = pickle.dumps((False, RuntimeError(f"{target}: {answer[1]!r} (not picklable: {exc})")))
        out.write(data)
        out.flush()

