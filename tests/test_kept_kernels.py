"""Kernels kept between runs (``sveval run --keep-kernels``): adopted by the next run with the same
outputs, never shared, replaced when the code or environment changed, ended when idle, and a
registry that lies cannot make sveval kill or connect to something else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import _outputs, fresh  # noqa: F401 - the fixture, run once on fresh kernels
from test_faults import IDS

from sveval.cli import main
from sveval.errors import SvevalError
from sveval.pipeline import kept
from sveval.pipeline.runner import run

pytestmark = pytest.mark.slow


def _wait_gone(pid: int, start: str | None, seconds: float = 20.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not kept.running(pid, start):
            return True
        time.sleep(0.1)
    return False


def _entries(registry: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(registry.glob("k-*.json"))
            if not p.name.endswith(".connection.json")]


@pytest.fixture
def registry(tmp_path):
    reg = tmp_path / "kernels"
    yield reg
    kept.stop_all(reg)


def _start(registry: Path, tmp_path: Path, fp: str = "fp-a", idle: float = 60.0) -> kept.KeptKernel:
    return kept.KeptKernel.start(registry, "python3", idle, tmp_path, fp, modules=())


def test_kept_kernels_are_adopted_by_the_next_run_with_the_same_outputs(fresh, monkeypatch):  # noqa: F811
    root, expected = fresh
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    registry = root / "reports" / ".sveval" / kept.REGISTRY
    try:
        for attempt in range(2):
            report = run(root=root, force=True, workers=1, echo=lambda s: None, progress=False,
                         keep_kernels=120)
            assert report.ok, report.to_dict()
            got = _outputs(root)
            assert set(got) == {f"{i}.{ext}" for i in IDS for ext in ("ipynb", "json")}
            for name in expected:
                assert got[name] == expected[name], (attempt, name)
            entries = _entries(registry)
            assert len(entries) == 1 and kept.running(entries[0]["pid"], entries[0]["start"])
            if attempt == 0:
                first = entries[0]
            else:
                assert entries[0]["pid"] == first["pid"]  # the second run adopted the first's kernel
        # the connection file (it holds the signing key) is private
        conn = Path(first["connection_file"])
        assert oct(conn.stat().st_mode & 0o777) == "0o600"
        assert json.loads(conn.read_text())["key"]
    finally:
        assert kept.stop_all(registry) == 1
    assert _wait_gone(first["pid"], first["start"])
    assert _entries(registry) == [] and not Path(first["sockets"]).exists()


def test_a_kernel_in_use_is_not_shared_and_a_dead_one_is_cleaned(registry, tmp_path):
    k1 = _start(registry, tmp_path)
    try:
        assert kept.KeptKernel.adopt(registry, "python3", "fp-a") is None  # locked by k1
        assert kept.registered(registry)[0]["in_use"]
    finally:
        k1.close()
    pid, start = k1.doc["pid"], k1.doc["start"]
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid, start)
    assert kept.KeptKernel.adopt(registry, "python3", "fp-a") is None
    assert _entries(registry) == []


def test_other_code_or_environment_ends_the_kept_kernel(registry, tmp_path):
    k1 = _start(registry, tmp_path, fp="before")
    k1.close()
    pid, start = k1.doc["pid"], k1.doc["start"]
    assert kept.KeptKernel.adopt(registry, "python3", "after") is None
    assert _wait_gone(pid, start) and _entries(registry) == []
    # the fingerprint follows the environment and the sveval sources
    base = kept.fingerprint("python3", ())
    os.environ["SVEVAL_TEST_PROBE"] = "1"
    try:
        assert kept.fingerprint("python3", ()) != base
    finally:
        del os.environ["SVEVAL_TEST_PROBE"]
    assert kept.fingerprint("python3", ()) == base
    assert kept.fingerprint("python3", ("pandas",)) != base


def test_an_idle_kernel_ends_itself_and_removes_its_entry(registry, tmp_path):
    k1 = _start(registry, tmp_path, idle=0.5)
    k1.close()
    pid, start = k1.doc["pid"], k1.doc["start"]
    assert _wait_gone(pid, start, seconds=30)
    assert _entries(registry) == [] and not list(registry.glob("k-*"))


def test_an_adopted_kernel_runs_code_and_is_reset(registry, tmp_path):
    k1 = _start(registry, tmp_path)
    k1._run("import os; pid = os.getpid(); leak = 41", timeout=30)
    k1.close()  # no notebook ran: left as it is
    k2 = kept.KeptKernel.adopt(registry, "python3", "fp-a")
    assert k2 is not None and k2.doc["pid"] == k1.doc["pid"]
    try:
        k2._run("assert leak == 41", timeout=30)  # same process
        k2.reset(tmp_path)  # in full: not scrubbed ahead
        with pytest.raises(RuntimeError, match="NameError"):
            k2._run("leak", timeout=30)  # a fresh namespace after the reset
        # after a run with notebooks the kernel resets itself as the run ends (kernel_scrub, not
        # waited for); the next run then only sets the working folder
        k2._run("leak = 42", timeout=30)
        k2.notebooks = 1
    finally:
        k2.close()
    k3 = kept.KeptKernel.adopt(registry, "python3", "fp-a")
    assert k3 is not None and k3.doc["pid"] == k1.doc["pid"]
    try:
        k3._run("import sveval.pipeline.batch as b; assert b._SNAPSHOT.get('scrubbed') is True", timeout=30)
        with pytest.raises(RuntimeError, match="NameError"):
            k3._run("leak", timeout=30)  # scrubbed when k2's run ended
        k3.reset(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)
        k3._run("import os, sveval.pipeline.batch as b; "
                f"assert os.getcwd() == {str(tmp_path / 'sub')!r} and 'scrubbed' not in b._SNAPSHOT",
                timeout=30)
    finally:
        k3.close()


def test_a_lying_registry_entry_is_removed_and_kills_nothing(registry, tmp_path):
    registry.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # another process's pid with a made-up start time, another fingerprint
        (registry / "k-bystander.json").write_text(json.dumps(
            {"pid": bystander.pid, "start": "1", "kernel": "python3", "fingerprint": "x",
             "connection_file": str(registry / "k-bystander.connection.json"), "sockets": "/etc"}))
        (registry / "k-bystander.lock").write_text("")
        (registry / "k-broken.json").write_text("{not json")
        (registry / "k-broken.lock").write_text("")
        assert kept.KeptKernel.adopt(registry, "python3", "fp-a") is None
        assert bystander.poll() is None  # still running: its start time did not match
        assert _entries(registry) == [] and not list(registry.glob("k-*"))
        assert Path("/etc").is_dir()  # a sockets folder outside sveval's own is never removed
    finally:
        bystander.kill()
        bystander.wait()


def test_cli_lists_and_stops_kept_kernels(project, capsys):
    registry = project / "reports" / ".sveval" / kept.REGISTRY
    assert main(["--root", str(project), "kernels"]) == 0
    assert "no kept kernels" in capsys.readouterr().out
    k1 = _start(registry, project)
    k1.close()
    assert main(["--root", str(project), "kernels"]) == 0
    out = capsys.readouterr().out
    assert k1.name in out and "idle" in out
    assert main(["--root", str(project), "kernels", "--stop"]) == 0
    assert "stopped 1 kept kernel(s)" in capsys.readouterr().out
    assert _wait_gone(k1.doc["pid"], k1.doc["start"])


def test_keep_kernels_setting_from_the_environment(monkeypatch):
    monkeypatch.delenv(kept.ENV_VAR, raising=False)
    assert kept.idle_from_env() is None
    assert kept.idle_from_env(30) == 30
    monkeypatch.setenv(kept.ENV_VAR, "45")
    assert kept.idle_from_env() == 45
    monkeypatch.setenv(kept.ENV_VAR, "0")
    assert kept.idle_from_env() is None
    monkeypatch.setenv(kept.ENV_VAR, "ten minutes")
    with pytest.raises(Exception, match="SVEVAL_KEEP_KERNELS"):
        kept.idle_from_env()


def test_one_file_starts_before_validation_and_an_invalid_one_writes_nothing(fresh, monkeypatch):  # noqa: F811
    from sveval.pipeline import runner

    root, expected = fresh
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    started = []
    real = runner._start_early
    monkeypatch.setattr(runner, "_start_early", lambda *a, **k: started.append(r := real(*a, **k)) or r)
    spec = root / "parameters" / "evaluations" / f"{IDS[0]}.yaml"
    report = run([spec], root=root, force=True, workers=1, echo=lambda s: None, progress=False)
    assert report.ok and [o.status for o in report.outcomes] == ["completed"]
    assert len(started) == 1 and started[0] is not None  # the notebook started before validation
    got = _outputs(root)
    for ext in ("ipynb", "json"):
        assert got[f"{IDS[0]}.{ext}"] == expected[f"{IDS[0]}.{ext}"]
    # an invalid file: its early notebook is thrown away, nothing is written, no work folder left
    good = spec.read_text()
    before = _outputs(root)
    spec.write_text(good + "unknown_key: 1\n")
    try:
        report = run([spec], root=root, force=True, workers=1, echo=lambda s: None, progress=False)
    finally:
        spec.write_text(good)
    assert [o.status for o in report.outcomes] == ["invalid"] and "unknown_key" in report.outcomes[0].error
    assert len(started) == 2 and started[1] is not None
    assert _outputs(root) == before
    assert not [p for p in (root / "reports" / "evaluations").iterdir() if p.name.startswith(".")]


def test_kept_by_default_only_for_a_run_typed_at_a_terminal(monkeypatch):
    from sveval.cli import keep_kernels_for

    monkeypatch.delenv(kept.ENV_VAR, raising=False)
    # an evaluator at a terminal rerunning the file they edit: kept for the default idle time
    assert keep_kernels_for(None, local_warm=True, interactive=True) == (kept.DEFAULT_IDLE, True)
    # scripts, pipes and CI leave no process behind; nor do fresh kernels, Dask or shared workers
    assert keep_kernels_for(None, local_warm=True, interactive=False) == (None, False)
    assert keep_kernels_for(None, local_warm=False, interactive=True) == (None, False)
    # the option and the environment variable decide when given, 0 turning it off
    assert keep_kernels_for(0.0, local_warm=True, interactive=True) == (None, False)
    assert keep_kernels_for(30.0, local_warm=True, interactive=False) == (30.0, False)
    monkeypatch.setenv(kept.ENV_VAR, "0")
    assert keep_kernels_for(None, local_warm=True, interactive=True) == (None, False)
    monkeypatch.setenv(kept.ENV_VAR, "45")
    assert keep_kernels_for(None, local_warm=True, interactive=False) == (45.0, False)
    monkeypatch.setenv(kept.ENV_VAR, "soon")
    with pytest.raises(SvevalError, match="SVEVAL_KEEP_KERNELS='soon'"):
        keep_kernels_for(None, local_warm=True, interactive=True)
