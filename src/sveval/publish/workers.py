"""A helper process for the slow, independent parts of ``sveval publish``.

Publishing is mostly single-threaded Python: drawing the SVG figures of the home page and the
Home Office measures page (matplotlib), turning executed notebooks into HTML (nbconvert and
BeautifulSoup) and scanning the result. On a machine with a second core, :class:`Helper` hands the
figures, and whichever notebooks it reaches first, to one worker process while this process builds
the pages, renders the rest and waits for nothing until it needs the files.

The worker is started with the ``spawn`` method (a fresh interpreter, never a fork of a process
that may be running threads, as ``sveval pipeline`` is). Work is named as ``"module:function"``
strings so that submitting it imports nothing here (in particular not matplotlib): only the worker
imports the drawing code. Without a second core, or with ``parallel=False``, every call runs in
this process, in the order submitted, through the same functions: the output is the same files,
byte for byte (``tests/test_publish_speed_equality.py``).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

#: modules the worker imports while this process starts up (the drawing code and nbconvert)
WARM_MODULES = ("sveval.report.plots.overview", "sveval.report.plots.tracking", "sveval.publish.render")


def resolve(target: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def call(target: str, *args: Any, **kwargs: Any) -> Any:
    """Call the function named by ``target`` (what the worker runs for every job)."""
    return resolve(target)(*args, **kwargs)


def call_pickled(job: bytes) -> Any:
    """Run a job pickled by :meth:`Helper.submit`."""
    target, args, kwargs = pickle.loads(job)
    return call(target, *args, **kwargs)


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

    Use as a context manager; leaving it stops the worker (unstarted jobs are cancelled).
    """

    def __init__(self, parallel: bool | None = None) -> None:
        if parallel is None:
            parallel = available_cores() > 1
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future] = []
        if parallel:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._pool.submit(warm)

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def submit(self, target: str, *args: Any, **kwargs: Any) -> Future:
        """Run ``target(*args, **kwargs)`` in the worker (inline without one); a future of its result.

        The arguments are pickled here and now, so changing them afterwards does not reach the job.
        """
        if self._pool is not None:
            job = pickle.dumps((target, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            fut = self._pool.submit(call_pickled, job)
            self._futures.append(fut)
            return fut
        fut = Future()
        try:
            fut.set_result(call(target, *args, **kwargs))
        except Exception as exc:  # handed to the caller through the future, as the worker's would be
            fut.set_exception(exc)
        self._futures.append(fut)
        return fut

    def wait(self) -> None:
        """Wait for every job submitted so far (cancelled ones aside); raise the first one's error."""
        for fut in self._futures:
            if not fut.cancelled():
                fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
