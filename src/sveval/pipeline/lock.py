"""The project lock: one ``run``, ``track``, ``returns`` or ``publish`` at a time per project.

The lock is an exclusive :func:`fcntl.flock` on ``reports/.sveval/lock``; the holder writes its pid,
command and start time inside, so a second process can say who holds it. The operating system
releases a flock when its holder dies, so a killed run never leaves the project locked. A lock file
whose recorded holder is no longer running while the flock is still held (a forked child of a
killed run kept the open file) is cleared: the file is replaced by a fresh one and locked anew.

The lock is re-entrant within one process (``sveval pipeline`` runs every step under it), and a
second process either waits up to ``wait`` seconds or fails at once with :class:`LockBusy`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sveval.errors import SvevalError

LOCK_NAME = "lock"
STATE_DIR = ".sveval"
POLL = 0.2

_held: dict[str, int] = {}  # lock path -> depth in this process
_guard = threading.RLock()


class LockBusy(SvevalError):
    """Another process holds the project lock."""

    def __init__(self, path: Path, holder: dict[str, Any], waited: float):
        self.path = path
        self.holder = holder
        who = (f"process {holder.get('pid', '?')} (`{holder.get('command', '?')}`, started "
               f"{holder.get('started_at', '?')})") if holder else "another process"
        waited_txt = f" after waiting {waited:g} s" if waited else ""
        super().__init__(
            f"the project is locked by {who}{waited_txt}: only one sveval run, track, returns or "
            f"publish at a time. Wait for it to finish, or use --wait SECONDS (lock file: {path})"
        )


def lock_path(reports_dir: Path) -> Path:
    return Path(reports_dir) / STATE_DIR / LOCK_NAME


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its holder (empty when unreadable or released)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _stale(holder: dict[str, Any]) -> bool:
    """The recorded holder ran on this machine and is no longer running."""
    return bool(holder) and holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))


def _try_lock(path: Path) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # the file may have been replaced (a stale lock cleared) between open and flock
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            os.close(fd)
            return None
    except FileNotFoundError:
        os.close(fd)
        return None
    return fd


@contextmanager
def project_lock(reports_dir: Path, command: str | None = None, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the project lock for the ``with`` block.

    Parameters
    ----------
    reports_dir : the project's ``reports/`` folder (the lock is ``reports/.sveval/lock``)
    command : what the holder is doing, shown to a process that finds the project locked
    wait : seconds to wait for the lock; 0 fails at once

    Raises
    ------
    LockBusy
        the lock is still held by a running process after ``wait`` seconds
    """
    path = lock_path(reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.parent.resolve() / LOCK_NAME)
    with _guard:  # held only to count: threads nested in one holder run side by side
        nested = bool(_held.get(key))
        if nested:
            _held[key] += 1
    if nested:
        try:
            yield path
        finally:
            with _guard:
                if key in _held:
                    _held[key] -= 1
        return
    deadline = time.monotonic() + max(0.0, wait)
    t0 = time.monotonic()
    while True:
        fd = _try_lock(path)
        if fd is not None:
            break
        holder = read_holder(path)
        if _stale(holder):  # flock held by an orphan of a dead holder: start a fresh lock file
            try:
                os.replace(path, path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}"))
                os.unlink(path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}"))
            except OSError:
                pass
            continue
        if time.monotonic() >= deadline:
            raise LockBusy(path, holder, round(time.monotonic() - t0, 1))
        time.sleep(POLL)
    info = {"pid": os.getpid(), "command": command or " ".join(["sveval", *sys.argv[1:]]),
            "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": socket.gethostname()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    os.fsync(fd)
    with _guard:
        _held[key] = 1
    try:
        yield path
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock
