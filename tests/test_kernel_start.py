"""Starting and stopping the kernels sveval runs notebooks on: readiness without waiting for IOPub
silence (:func:`sveval.pipeline.batch.wait_ready`), quick shutdowns, and the kernel machinery
prepared before the start tasks (:func:`sveval.pipeline.batch.prestart`)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from queue import Empty

import pytest

from sveval.pipeline import batch, executor


class _Channel:
    def __init__(self, messages):
        self.messages = messages  # a list (consumed) or a callable giving the next message
        self.timeouts: list[float | None] = []

    async def get_msg(self, timeout=None):
        self.timeouts.append(timeout)
        if callable(self.messages):
            return self.messages()
        if not self.messages:
            raise Empty
        return self.messages.pop(0)


class _Client:
    """The part of an asynchronous kernel client :func:`batch.wait_ready` uses."""

    def __init__(self, shell, iopub, alive=True):
        self.shell_channel, self.iopub_channel = _Channel(shell), _Channel(iopub)
        self.alive, self.requests, self.handled = alive, 0, []

    def kernel_info(self):
        self.requests += 1

    async def is_alive(self):
        return self.alive

    def _handle_kernel_info_reply(self, msg):
        self.handled.append(msg)


def _reply():
    return {"msg_type": "kernel_info_reply", "content": {"protocol_version": "5.4"}}


def _status():
    return {"msg_type": "status", "parent_header": {}, "content": {"execution_state": "idle"}}


def _ready(kc, timeout=30.0):
    asyncio.run(batch.wait_ready(kc, timeout))


def test_ready_once_shell_and_iopub_answer_and_the_queued_messages_are_dropped_without_waiting():
    kc = _Client([_reply()], [_status(), _status(), _status()])
    _ready(kc)
    assert kc.requests == 1 and kc.handled == [_reply()]
    assert kc.iopub_channel.messages == []  # the two left were dropped ...
    assert kc.iopub_channel.timeouts[1:] == [0, 0, 0]  # ... without waiting for more


def test_ready_asks_again_until_iopub_is_connected():
    # the first reply comes before IOPub is subscribed: nothing on IOPub, so kernel_info again
    iopub: list = []
    shell = [_reply(), _reply()]
    kc = _Client(shell, iopub)
    first = kc.iopub_channel.get_msg

    async def late(timeout=None):
        if kc.requests == 2:
            iopub.append(_status())
        return await first(timeout)

    kc.iopub_channel.get_msg = late
    _ready(kc)
    assert kc.requests == 2 and len(kc.handled) == 1


def test_ready_stops_dropping_messages_of_a_kernel_that_prints_on_its_own():
    kc = _Client([_reply()], _status)  # IOPub never silent
    _ready(kc)
    assert len(kc.iopub_channel.timeouts) == 1 + batch.READY_DRAIN


def test_a_dead_or_silent_kernel_is_an_error():
    with pytest.raises(RuntimeError, match="died"):
        _ready(_Client([], [], alive=False))
    kc = _Client([], [])
    kc.shell_channel.get_msg = _no_reply
    with pytest.raises(RuntimeError, match="didn't respond in 0 seconds"):
        _ready(kc, timeout=0.0)


async def _no_reply(timeout=None):
    raise Empty


def test_ready_with_a_real_kernel_that_keeps_printing(tmp_path):
    """jupyter_client's ``wait_for_ready`` ends by waiting for 0.2 s of IOPub silence: a second
    client of a kernel whose thread prints every few milliseconds would wait for ever. sveval's
    returns and the client then runs code."""
    warm = batch.WarmKernel(modules=())  # nothing to import: a quick kernel
    try:
        warm._run("import threading, time\n"
                  "def _chatter():\n"
                  "    while True:\n"
                  "        print('.', end='', flush=True)\n"
                  "        time.sleep(0.005)\n"
                  "threading.Thread(target=_chatter, daemon=True).start()", timeout=30)
        done: dict = {}

        def second_client() -> None:
            kc = warm.km.client()
            kc.start_channels()
            try:
                batch._sync(batch.wait_ready(kc, 30))
                reply = batch._sync(kc.execute_interactive("40 + 2", timeout=30, output_hook=lambda m: None))
                done["status"] = reply["content"]["status"]
            finally:
                kc.stop_channels()

        t = threading.Thread(target=second_client, daemon=True)
        t.start()
        t.join(120)  # a bound against hanging the suite, not a speed check
        assert done.get("status") == "ok"
    finally:
        warm.close()


def test_kernel_shutdown_checks_often_whether_the_kernel_has_gone(monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    seen: list[float] = []

    async def wait(self, pollinterval=0.1):
        seen.append(pollinterval)

    monkeypatch.setattr(AsyncKernelManager, "_async_wait", wait)
    km = executor._manager_class()(kernel_name="python3")
    asyncio.run(km._async_wait())
    asyncio.run(km._async_wait(pollinterval=0.001))
    assert seen == [executor.SHUTDOWN_POLL, 0.001]


def test_prestart_of_an_unknown_kernel_leaves_the_error_to_the_notebook(tmp_path):
    pool = batch.KernelPool("no-such-kernel-xyz")
    with ThreadPoolExecutor(max_workers=1) as threads:
        futures = batch.prestart(pool, threads, 1, tmp_path)
        assert [f.result(timeout=60) for f in futures] == [None]
    assert pool.started == 0
    pool.close()
