"""Fault injection: runs and publishes killed at random points, concurrent runs, corrupted cache and
manifest files, a full disk. Each test checks that nothing completed is lost or corrupted and that
the next run repairs the state.

The project is tiny: two quick ITS evaluations on a small long CSV (a few seconds each). Kill
points are drawn from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import make_project

from sveval.pipeline.lock import LockBusy, project_lock, read_holder
from sveval.pipeline.record import read_record
from sveval.pipeline.runner import run

pytestmark = pytest.mark.slow

IDS = ("tiny-fte", "tiny-violence")
SEED = 20261127


def _tiny_project(dest: Path, example_data: Path) -> Path:
    """Two ITS evaluations (power_sims 20) on a long CSV of the rows they need."""
    from sveval.pipeline.api import prepare

    root = make_project(dest, example_data)
    ev = root / "parameters" / "evaluations"
    src = {"tiny-fte": "youth-navigators-fte-its", "tiny-violence": "focused-deterrence-violence-ols"}
    frames = []
    for new, old in src.items():
        spec = yaml.safe_load((ev / f"{old}.yaml").read_text())
        ctx = prepare(ev / f"{old}.yaml", root=root)
        frames.append(ctx.long[(ctx.long["measure"] == ctx.measure.id)
                               & ctx.long["area_code"].isin(ctx.treated)])
        spec.update(id=new, data={"source": "csv", "path": "../../data/tiny.csv"})
        spec.setdefault("its", {})["power_sims"] = 20
        spec.pop("sensitivity_of", None)
        (ev / f"{new}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    import pandas as pd

    pd.concat(frames).to_csv(root / "data" / "tiny.csv", index=False)
    for p in ev.glob("*.yaml"):
        if p.stem not in IDS:
            p.unlink()
    return root


@pytest.fixture(scope="module", autouse=True)
def _pinned_code():
    """The cache keys of this module's runs (also in the CLI subprocesses) ignore edits made to the
    sveval sources while the tests run (a shared working tree)."""
    from sveval.pipeline.executor import code_hash

    old = os.environ.get("SVEVAL_CODE_HASH")
    os.environ["SVEVAL_CODE_HASH"] = code_hash()
    yield
    if old is None:
        os.environ.pop("SVEVAL_CODE_HASH", None)
    else:
        os.environ["SVEVAL_CODE_HASH"] = old


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, example_data) -> Path:
    """The tiny project after one successful run (copied by each test)."""
    root = _tiny_project(tmp_path_factory.mktemp("faults") / "tiny", example_data)
    report = run(root=root, echo=lambda s: None)
    assert report.ok, report.to_dict()
    return root


def _copy(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest, symlinks=True)
    return dest


def _cli(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sveval.cli", "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the command and everything it started (its kernels)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _state(root: Path) -> dict[str, dict]:
    """Every evaluation's pair, checked: a readable record and a readable notebook, or nothing."""
    res = root / "reports" / "evaluations"
    out = {}
    for eid in IDS:
        js, nb = res / f"{eid}.json", res / f"{eid}.ipynb"
        if not js.exists():
            continue
        record = read_record(js)  # raises on a half-written or invalid record
        if nb.exists():
            nbformat.read(str(nb), as_version=4)
        out[eid] = {"status": record.status.value, "json": js.read_bytes()}
    return out


def _manifest(root: Path) -> dict:
    p = root / "reports" / ".sveval" / "manifest.json"
    return json.loads(p.read_text())["evaluations"] if p.exists() else {}


def _leftovers(root: Path) -> list[str]:
    reports = root / "reports"
    return sorted(str(p.relative_to(reports)) for p in reports.rglob("*")
                  if p.name.startswith((".sveval-work-", "publish-", "old-site-")) or p.name.endswith(".tmp"))


def test_kill_during_run_resumes_with_only_what_is_missing(tiny, tmp_path):
    rng = random.Random(SEED)
    root = _copy(tiny, tmp_path / "p")
    before = _state(root)
    nb_path = root / "evaluations" / "its.ipynb"  # a changed notebook: both evaluations are stale
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("Changed.", id="faults-changed"))
    nbformat.write(nb, str(nb_path))
    proc = _cli(root, "run", "--all", "--workers", "1")
    # wait for the first evaluation to finish, then kill at a random point of the second
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [k for k, v in _manifest(root).items() if v.get("finished_at") and v["status"] == "completed"
                and read_record(root / "reports/evaluations" / f"{k}.json").provenance.generated_at
                != json.loads(before[k]["json"])["provenance"]["generated_at"]]
        if done:
            break
        time.sleep(0.2)
    assert done, "the first evaluation did not finish"
    time.sleep(rng.uniform(0.0, 3.0))
    _kill(proc)
    after = _state(root)  # nothing half-written
    assert set(after) == set(IDS) and all(v["status"] == "completed" for v in after.values())
    # the rerun executes only what the killed run had not finished, and cleans up after it
    report = run(root=root, echo=lambda s: None)
    status = {o.id: o.status for o in report.outcomes}
    other = next(i for i in IDS if i != done[0])
    assert status == {done[0]: "cached", other: "completed"}
    assert report.ok and _leftovers(root) == []
    assert all(v["status"] == "completed" for v in _manifest(root).values())
    import tempfile

    assert not list(Path(tempfile.gettempdir()).glob(f"svk{proc.pid}-*"))  # killed kernels' sockets


def test_kill_during_publish_leaves_the_site_and_cleans_up(tiny, tmp_path):
    rng = random.Random(SEED + 1)
    root = _copy(tiny, tmp_path / "p")
    proc = _cli(root, "publish", "--no-quarto")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    site = root / "reports" / "_site"
    pages = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    for attempt in range(3):
        proc = _cli(root, "publish", "--no-quarto")
        time.sleep(rng.uniform(0.5, 4.0))
        _kill(proc)
        # the site in place is the complete earlier one (the swap is the last step)
        now = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
        assert set(pages) <= set(now), f"attempt {attempt}: pages lost"
        assert _state(root) and all(v["status"] == "completed" for v in _state(root).values())
    proc = _cli(root, "publish", "--no-quarto")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert _leftovers(root) == []  # staging folders of the killed publishes removed
    assert not (root / "reports" / ".sveval" / "publish").exists()


def test_concurrent_runs_take_turns(tiny, tmp_path):
    root = _copy(tiny, tmp_path / "p")
    first = _cli(root, "run", "--all", "--force")
    lock = root / "reports" / ".sveval" / "lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and read_holder(lock).get("pid") is None:
        time.sleep(0.05)
    holder = read_holder(lock)
    assert holder.get("pid") is not None and holder.get("command") == "sveval run"
    # a second run exits at once, naming the holder
    second = subprocess.run([sys.executable, "-m", "sveval.cli", "--root", str(root), "run", "--all"],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"process {holder['pid']}" in second.stderr and "--wait" in second.stderr
    # a third waits for the first and then finds nothing left to do
    third = _cli(root, "run", "--all", "--wait", "300")
    assert first.wait(timeout=300) == 0
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out
    assert "summary: 2 cached" in out and "running" not in out


def test_a_lock_left_by_a_dead_process_is_cleared(tmp_path):
    reports = tmp_path / "reports"
    # a killed holder: flock released by the OS, its pid still written in the file
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from sveval.pipeline.lock import project_lock\n"
        f"with project_lock(Path({str(reports)!r}), 'holder'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LockBusy, match=f"process {proc.pid}"):
        with project_lock(reports, "second"):
            pass
    proc.kill()
    proc.wait()
    assert read_holder(reports / ".sveval" / "lock")["pid"] == proc.pid  # stale pid file
    with project_lock(reports, "second"):
        assert read_holder(reports / ".sveval" / "lock")["pid"] == os.getpid()
    # the flock still held by a live orphan while the recorded holder is dead: cleared too
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({str(reports / '.sveval' / 'lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.write(fd, json.dumps({{'pid': {dead}, 'command': 'x', 'host': {socket.gethostname()!r}}}).encode())\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "held"
        with project_lock(reports, "third"):
            assert read_holder(reports / ".sveval" / "lock")["pid"] == os.getpid()
    finally:
        orphan.kill()
        orphan.wait()


def test_a_waiting_process_times_out_with_a_clear_message(tmp_path):
    reports = tmp_path / "reports"
    with project_lock(reports, "sveval run"):
        proc = subprocess.run(
            [sys.executable, "-m", "sveval.cli", "--root", str(tmp_path), "run", "--all", "--wait", "0.5"],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"process {os.getpid()} (`sveval run`" in proc.stderr and "after waiting" in proc.stderr


def test_steps_nested_in_one_holder_run_side_by_side(tmp_path):
    # `sveval pipeline` holds the lock and runs tracking on a thread alongside the evaluations:
    # both enter the lock again (re-entrant), and neither may wait for the other
    import threading

    reports = tmp_path / "reports"
    inside = threading.Barrier(2, timeout=20)
    seen = []

    def step(name):
        with project_lock(reports, name):
            inside.wait()  # raises BrokenBarrierError if the other step cannot get in meanwhile
            seen.append(name)

    with project_lock(reports, "sveval pipeline"):
        t = threading.Thread(target=step, args=("track",))
        t.start()
        step("run")
        t.join()
        assert sorted(seen) == ["run", "track"]
        assert read_holder(reports / ".sveval" / "lock")["command"] == "sveval pipeline"
    # released once the outer holder leaves: another process can take it at once
    proc = subprocess.run([sys.executable, "-c", "from pathlib import Path; from sveval.pipeline.lock "
                           f"import project_lock\nwith project_lock(Path({str(reports)!r}), 'x'): pass"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_corrupted_outputs_and_manifest_are_repaired(tiny, tmp_path):
    root = _copy(tiny, tmp_path / "p")
    res = root / "reports" / "evaluations"
    # a half-written result JSON: that evaluation reruns, the other stays cached
    js = res / "tiny-fte.json"
    js.write_bytes(js.read_bytes()[: len(js.read_bytes()) // 2])
    report = run(root=root, echo=lambda s: None)
    assert {o.id: o.status for o in report.outcomes} == {"tiny-fte": "completed", "tiny-violence": "cached"}
    assert read_record(js).completed
    # a corrupted manifest (and a stray temporary file of a killed writer) is rebuilt
    manifest = root / "reports" / ".sveval" / "manifest.json"
    manifest.write_text('{"evaluations": {"tiny-fte": [1, 2')
    (manifest.parent / ".manifest.json.999.tmp").write_text("{")
    said = []
    report = run([root / "parameters" / "evaluations" / "tiny-violence.yaml"], root=root, echo=said.append)
    assert report.ok and any("unreadable" in s for s in said)
    assert {o.id: o.status for o in report.outcomes} == {"tiny-violence": "completed"}
    assert set(_manifest(root)) == {"tiny-violence"} and _leftovers(root) == []
    # a corrupted notebook with an intact record also reruns
    (res / "tiny-violence.ipynb").write_text("{not json")
    report = run([root / "parameters" / "evaluations" / "tiny-violence.yaml"], root=root, echo=lambda s: None)
    assert report.outcomes[0].status == "completed"
    nbformat.read(str(res / "tiny-violence.ipynb"), as_version=4)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def test_full_disk_loses_nothing_and_the_next_run_repairs(tiny, tmp_path, monkeypatch):
    root = _copy(tiny, tmp_path / "p")
    reports = root / "reports"
    saved = tmp_path / "saved-reports"
    shutil.copytree(reports, saved)
    shutil.rmtree(reports)
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    mounted = _mount_tmpfs(reports, f"{used // 1024 + 96}k")  # room for the old files, not the new
    try:
        if mounted:
            shutil.copytree(saved, reports, dirs_exist_ok=True)
        else:  # no tmpfs (not root): a simulated full disk for every notebook and JSON write
            shutil.copytree(saved, reports)
            import errno

            import sveval.pipeline.executor
            import sveval.pipeline.record

            def full(*a, **k):
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")

            monkeypatch.setattr(nbformat, "write", full)
            monkeypatch.setattr(sveval.pipeline.record, "write_json_atomic", full)
            monkeypatch.setattr(sveval.pipeline.executor, "write_json_atomic", full)
        before = _state(root)
        report = run(root=root, force=True, echo=lambda s: None)
        assert not report.ok
        after = _state(root)  # every pair still readable: the good ones untouched
        for eid in IDS:
            assert after[eid]["json"] == before[eid]["json"] or after[eid]["status"] == "failed"
            if after[eid]["status"] == "failed":  # then the good pair is kept
                assert read_record(reports / ".sveval" / "last-good" / f"{eid}.json").completed
        assert _leftovers(root) == []
        # space again: the next run repairs everything
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(reports)], check=True, timeout=30)
        else:
            monkeypatch.undo()
        report = run(root=root, echo=lambda s: None)
        assert report.ok and all(v["status"] == "completed" for v in _state(root).values())
        assert {o.status for o in report.outcomes} <= {"completed", "cached"}
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(reports)], timeout=30)


def test_an_orphaned_kernel_does_not_recreate_a_cleaned_work_folder(tiny, tmp_path):
    """A kernel whose run was killed may finish its cell after the next run removed the killed run's
    work folder: saving its result then raises instead of creating the folder again (it would be
    left behind)."""
    from sveval.errors import SvevalError
    from sveval.pipeline.api import prepare
    from sveval.pipeline.executor import WORK_PREFIX
    from sveval.pipeline.record import save

    root = _copy(tiny, tmp_path / "p")
    ctx = prepare(root / "parameters" / "evaluations" / f"{IDS[0]}.yaml", root=root)
    import sveval

    result = sveval.fit(ctx)
    gone = root / "reports" / "evaluations" / f"{WORK_PREFIX}{IDS[0]}-999999-1"
    with pytest.raises(SvevalError, match="has ended"):
        save(ctx, result, gone / f"{IDS[0]}.json")
    assert not gone.exists()
    # an ordinary folder is still created for a caller of the Python API
    record = save(ctx, result, tmp_path / "new" / "folder" / f"{IDS[0]}.json")
    assert (tmp_path / "new" / "folder" / f"{IDS[0]}.json").is_file() and record.completed
