"""``sveval pipeline``: outcome tracking runs alongside the evaluations, on one of their worker threads
and its warm kernel; the returns and the site wait for both; a failing step on the tracking thread is
reported and fails the pipeline, never lost."""

from __future__ import annotations

import threading
import time

import pytest
from test_faults import _tiny_project

from sveval import cli

pytestmark = pytest.mark.slow


def _mark(events, name):
    events.append((name, threading.current_thread().name, time.monotonic()))


def _fake_steps(monkeypatch, events, track):
    def run(ns, workers=None):
        _mark(events, "run-start")
        events.append(("run-workers", workers, 0.0))
        time.sleep(1.0)
        _mark(events, "run-end")
        return 0

    def returns(ns):
        _mark(events, "returns")
        return 0

    def publish(ns):
        _mark(events, "publish")
        return 0

    monkeypatch.setattr(cli, "cmd_run", run)
    monkeypatch.setattr(cli, "cmd_track", track)
    monkeypatch.setattr(cli, "cmd_returns", returns)
    monkeypatch.setattr(cli, "cmd_publish", publish)
    monkeypatch.setattr(cli, "cmd_example", lambda ns: 0)


def test_tracking_runs_alongside_the_evaluations_and_returns_wait(tmp_path, example_data, monkeypatch, capsys):
    root = _tiny_project(tmp_path / "tiny", example_data)
    events: list[tuple[str, str, float]] = []

    def track(ns, pool=None):
        _mark(events, "track-start")
        events.append(("track-pool", pool, 0.0))
        time.sleep(1.5)
        _mark(events, "track-end")
        return 0

    _fake_steps(monkeypatch, events, track)
    assert cli.main(["--root", str(root), "pipeline", "--no-quarto"]) == 0
    t = {name: when for name, _, when in events}
    threads = {name: th for name, th, _ in events}
    # tracking runs on one of the evaluations' worker threads, with their warm kernels
    assert threads["track-start"].startswith("sveval-worker") and threads["run-start"] == "MainThread"
    assert threads["track-pool"] is not None and threads["track-pool"] is threads["run-workers"].pool
    assert t["track-start"] < t["run-end"] and t["run-start"] < t["track-end"]  # overlapping
    assert t["returns"] >= max(t["run-end"], t["track-end"]) and t["publish"] >= t["returns"]
    out = capsys.readouterr().out
    assert "ok     outcome tracking (alongside the evaluations)" in out


@pytest.mark.parametrize("failure", ["error", "crash"])
def test_a_failing_tracking_step_fails_the_pipeline_and_the_rest_still_runs(tmp_path, example_data, monkeypatch,
                                                                            capsys, failure):
    root = _tiny_project(tmp_path / "tiny", example_data)
    events: list[tuple[str, str, float]] = []

    def track(ns, pool=None):
        if failure == "error":
            return cli.EXIT_FAILED
        raise RuntimeError("tracking blew up")

    _fake_steps(monkeypatch, events, track)
    assert cli.main(["--root", str(root), "pipeline", "--no-quarto"]) == cli.EXIT_FAILED
    assert [e[0] for e in events] == ["run-start", "run-workers", "run-end", "returns", "publish"]
    captured = capsys.readouterr()
    assert "FAILED outcome tracking (alongside the evaluations)" in captured.out
    if failure == "crash":
        assert "RuntimeError: tracking blew up" in captured.err
