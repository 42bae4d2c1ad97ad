"""Warm kernels kept between ``sveval run`` commands (``--keep-kernels``), for an evaluator who edits a
parameter file and runs it again and again.

Without it every ``sveval run`` starts its kernels and imports pandas, statsmodels, matplotlib and
sveval in them (about 2.5 s on a quiet 2-core machine) before the first notebook can start. With
``sveval run --keep-kernels [SECONDS]`` (or ``SVEVAL_KEEP_KERNELS=SECONDS``) the warm kernels of the
run are left running when it ends, and the next run in the same project adopts them: each is reset
to a fresh kernel's state before every notebook exactly as inside one batch
(:func:`sveval.pipeline.batch.kernel_reset`), so the outputs do not change.

How a kept kernel is found, used and ended:

* it is registered in ``reports/.sveval/kernels/<name>.json`` (its process id and start time, its
  connection file and IPC socket folder, and a *fingerprint*: sveval's version and sources, the
  Python executable, the kernelspec and the environment); a run adopts only a kernel whose
  fingerprint equals its own: a kernel started before the code, the environment or the Python
  changed is shut down instead, and a fresh one started;
* a run holds ``<name>.lock`` (``flock``) while it uses the kernel, so two runs never share one,
  and touches it when done;
* the kernel ends itself (a watchdog thread started in it) once nobody holds its lock and the lock
  was last touched more than SECONDS ago (default 600), or its registry files are deleted;
  ``sveval kernels --stop`` ends every kept kernel of the project at once;
* the connection file is readable by its owner only and the sockets sit in a private folder
  (``mkdtemp``: mode 0700) on the IPC transport: no TCP port is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sveval.pipeline import batch

REGISTRY = "kernels"
SOCKETS_PREFIX = "sveval-keep-"
DEFAULT_IDLE = 600.0  # seconds a kept kernel waits for the next run
ENV_VAR = "SVEVAL_KEEP_KERNELS"
# variables that change between two commands of one shell without changing what a kernel computes
_VOLATILE_ENV = {"PWD", "OLDPWD", "_", "SHLVL", "COLUMNS", "LINES", "PS1", "PS2", "PROMPT_COMMAND",
                 "TERM_SESSION_ID", "WINDOWID", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY",
                 "PYTEST_CURRENT_TEST", "JPY_PARENT_PID"}


def idle_from_env(value: float | None = None) -> float | None:
    """Seconds to keep kernels: ``value`` if given, else ``$SVEVAL_KEEP_KERNELS`` (0 or unset: off)."""
    if value is None:
        raw = os.environ.get(ENV_VAR, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            from sveval.errors import SvevalError

            raise SvevalError(f"{ENV_VAR}={raw!r}: expected a number of seconds (0: off)") from None
    return value if value and value > 0 else None


def fingerprint(kernel: str, modules: tuple[str, ...]) -> str:
    """What a kept kernel must share with a run to be adopted by it (see the module docstring)."""
    from jupyter_client.kernelspec import KernelSpecManager

    from sveval._version import __version__
    from sveval.pipeline.executor import code_hash

    argv = KernelSpecManager().get_kernel_spec(kernel).argv
    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV)
    doc = json.dumps([__version__, code_hash(), sys.executable, argv, env, list(modules), kernel])
    return hashlib.sha256(doc.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/<pid>/stat`` field 22), None when it is gone or a zombie;
    tells a kept kernel from a later process that got the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:  # no /proc: the pid alone
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def running(pid: int, start: str | None) -> bool:
    now = _start_time(pid)
    return now is not None and (start in (None, "?") or now == "?" or now == start)


def _kill(pid: int, start: str | None) -> None:
    if not running(pid, start):
        return
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)  # the kernel leads its own session (and process group)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            if not running(pid, start):
                return
            time.sleep(0.05)


def _spawn_detached(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start ``argv`` in a new session as a grandchild (re-parented to init at once: no zombie, and
    it outlives this process); returns its pid."""
    launcher = ("import os, subprocess, sys\n"
                "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
                " stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)\n"
                "print(p.pid)\n")
    out = subprocess.run([sys.executable, "-c", launcher, *argv], env=env, cwd=str(cwd),
                         capture_output=True, text=True, check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"could not start a kept kernel: {out.stderr.strip()[-500:]}")
    return int(out.stdout.strip())


# ------------------------------------------------------------------------------------------------
# Inside the kernel
# ------------------------------------------------------------------------------------------------
def kernel_watch(lock: str, files: list[str], folders: list[str], idle: float, poll: float = 2.0) -> None:
    """Run inside a kept kernel once: a daemon thread that ends the kernel (removing ``files`` and
    ``folders``) when nobody holds ``lock`` and it was last touched more than ``idle`` seconds ago,
    or when ``lock`` is gone."""
    import fcntl
    import threading

    def end() -> None:
        for f in files:
            try:
                os.unlink(f)
            except OSError:
                pass
        for d in folders:
            shutil.rmtree(d, ignore_errors=True)
        os._exit(0)

    def loop() -> None:
        while True:
            time.sleep(poll)
            try:
                if time.time() - os.stat(lock).st_mtime < idle:
                    continue
                fd = os.open(lock, os.O_RDWR)
            except OSError:  # the registry entry was removed: nobody can adopt this kernel
                end()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a run is using it
                os.close(fd)
                continue
            end()  # exits holding the lock: an adopting run then finds the entry gone

    threading.Thread(target=loop, name="sveval-kept-kernel", daemon=True).start()


# ------------------------------------------------------------------------------------------------
# In the runner's process
# ------------------------------------------------------------------------------------------------
class KeptManager:
    """The few kernel-manager calls nbclient makes on a kernel it does not own, for a kernel this
    process did not start."""

    has_kernel = True
    ipykernel = True

    def __init__(self, pid: int, start: str | None):
        self.pid = pid
        self.start = start

    async def is_alive(self) -> bool:
        return running(self.pid, self.start)

    async def interrupt_kernel(self) -> None:
        try:
            os.kill(self.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        _kill(self.pid, self.start)

    async def cleanup_resources(self, restart: bool = False) -> None:
        return None


class KeptKernel(batch.WarmKernel):
    """A warm kernel that outlives the run (see the module docstring): started detached and
    registered, or adopted from the registry. Used by :class:`sveval.pipeline.batch.KernelPool`
    like any warm kernel; :meth:`close` leaves it running for the next run, :meth:`discard` ends it."""

    def __init__(self, registry: Path, name: str, doc: dict[str, Any], lock_fd: int, kc: Any):
        # not WarmKernel.__init__: the kernel is already running
        self.kernel = doc["kernel"]
        self.registry = registry
        self.name = name
        self.doc = doc
        self.lock_fd = lock_fd
        self.km = KeptManager(int(doc["pid"]), doc.get("start"))
        self.kc = kc
        self.sockets = None
        self.notebooks = 0
        self.pristine = False  # adopted: reset by kernel_ready (cheap when it scrubbed itself)

    # -- files of an entry ---------------------------------------------------------------------------
    @staticmethod
    def _files(registry: Path, name: str) -> tuple[Path, Path, Path]:
        return registry / f"{name}.json", registry / f"{name}.lock", registry / f"{name}.connection.json"

    @classmethod
    def start(cls, registry: Path, kernel: str, idle: float, cwd: Path | str, fp: str,
              start_timeout: int = batch.executor.START_TIMEOUT,
              modules: tuple[str, ...] = batch.WARM_IMPORTS) -> KeptKernel:
        """Start a kernel that outlives this process, warm it up and register it (locked by us)."""
        import fcntl

        from jupyter_client.connect import write_connection_file

        registry = Path(registry).resolve()
        registry.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"k-{uuid.uuid4().hex[:12]}"
        entry, lock, conn = cls._files(registry, name)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        sockets = Path(tempfile.mkdtemp(prefix=SOCKETS_PREFIX))
        pid = None
        start = None
        try:
            key = uuid.uuid4().hex.encode()  # messages are signed (HMAC-SHA256) with it
            if batch.executor._ipc_supported():
                write_connection_file(str(conn), transport="ipc", ip=str(sockets / "k"), key=key)
            else:  # pragma: no cover - ZeroMQ without IPC: loopback TCP
                write_connection_file(str(conn), transport="tcp", ip="127.0.0.1", key=key)
            os.chmod(conn, 0o600)
            argv = kernel_argv(kernel, conn)
            env = {**batch.ONE_BLAS_THREAD, **os.environ,
                   "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
            env.pop("JPY_PARENT_PID", None)  # no parent poller: the kernel outlives this process
            pid = _spawn_detached(argv, env, Path(cwd))
            start = _start_time(pid)
            doc = {"pid": pid, "start": start, "kernel": kernel, "fingerprint": fp,
                   "connection_file": str(conn), "sockets": str(sockets), "idle": idle,
                   "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            kc = _client(conn, start_timeout)
            self = cls(registry, name, doc, fd, kc)
            self._run("import sveval.pipeline.batch as _svb; "
                      f"_svb.kernel_warm_up({tuple(modules)!r}); del _svb", timeout=max(start_timeout, 120))
            self._run("import sveval.pipeline.kept as _svk; "
                      f"_svk.kernel_watch({str(lock)!r}, {[str(entry), str(conn), str(lock)]!r}, "
                      f"{[str(sockets)]!r}, {float(idle)!r}); del _svk", timeout=30)
            self.pristine = True  # warmed up and watched, silently: no reset before its first notebook
            tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, entry)
            return self
        except BaseException:
            if pid is not None:
                _kill(pid, start)
            for f in (entry, conn, lock):
                f.unlink(missing_ok=True)
            shutil.rmtree(sockets, ignore_errors=True)
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, registry: Path, kernel: str, fp: str, start_timeout: int = 10) -> KeptKernel | None:
        """A registered kernel with this fingerprint that no run is using, locked for this run; kept
        kernels that are dead, or from other code or another environment, are ended and removed."""
        import fcntl

        for name, entry in _entries(registry):
            _, lock, conn = cls._files(registry, name)
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # in use by another run (or its watchdog, for a moment)
                os.close(fd)
                continue
            try:
                doc = json.loads(entry.read_text(encoding="utf-8"))
                pid, start = int(doc["pid"]), doc.get("start")
            except (OSError, ValueError, KeyError, TypeError):
                cls._remove(registry, name, None, fd)
                continue
            if doc.get("fingerprint") != fp or doc.get("kernel") != kernel or not running(pid, start):
                _kill(pid, start)
                cls._remove(registry, name, doc, fd)
                continue
            try:
                kc = _client(conn, start_timeout)
            except Exception:  # noqa: BLE001 - registered but not answering: end it
                _kill(pid, start)
                cls._remove(registry, name, doc, fd)
                continue
            return cls(registry, name, doc, fd, kc)
        return None

    @classmethod
    def _remove(cls, registry: Path, name: str, doc: dict[str, Any] | None, fd: int | None) -> None:
        for f in cls._files(registry, name):
            f.unlink(missing_ok=True)
        sockets = (doc or {}).get("sockets")
        if isinstance(sockets, str) and Path(sockets).name.startswith(SOCKETS_PREFIX):
            shutil.rmtree(sockets, ignore_errors=True)
        if fd is not None:
            os.close(fd)

    # -- WarmKernel interface --------------------------------------------------------------------------
    def alive(self) -> bool:
        return running(self.km.pid, self.km.start)

    def close(self) -> None:
        """Leave the kernel running for the next run: ask it to reset itself now
        (:func:`sveval.pipeline.batch.kernel_scrub`, without waiting: the next run then starts its
        notebook at once), touch its lock (the idle clock starts now) and release it."""
        if self.kc is not None and self.notebooks:
            try:
                self.kc.execute("import sveval.pipeline.batch as _svb; _svb.kernel_scrub(); del _svb",
                                silent=True, store_history=False)
            except Exception:  # noqa: BLE001 - the next run resets it in full instead
                pass
        self._stop_client()
        if self.lock_fd is not None:
            _, lock, _ = self._files(self.registry, self.name)
            try:
                os.utime(lock)
            except OSError:
                pass
            os.close(self.lock_fd)
            self.lock_fd = None

    def discard(self) -> None:
        """End the kernel and remove its registry entry."""
        self._stop_client()
        _kill(self.km.pid, self.km.start)
        fd, self.lock_fd = self.lock_fd, None
        self._remove(self.registry, self.name, self.doc, fd)


def kernel_argv(kernel: str, conn: Path) -> list[str]:
    """The kernelspec's command for ``conn``, with ``python`` meaning this Python (as jupyter_client's
    kernel manager does), and the options every sveval kernel gets
    (:func:`sveval.pipeline.executor.kernel_options`)."""
    from jupyter_client.kernelspec import KernelSpecManager

    from sveval.pipeline.executor import kernel_options

    argv = [a.format(connection_file=str(conn)) for a in KernelSpecManager().get_kernel_spec(kernel).argv]
    if argv and argv[0] in ("python", f"python{sys.version_info[0]}",
                            f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        argv[0] = sys.executable
    return argv + kernel_options(argv)


def _entries(registry: Path) -> list[tuple[str, Path]]:
    """(name, entry file) of every kept kernel registered in ``registry``."""
    if not registry.is_dir():
        return []
    return [(p.name[: -len(".json")], p) for p in sorted(registry.glob("k-*.json"))
            if not p.name.endswith(".connection.json")]


def _client(conn: Path, timeout: float) -> Any:
    from jupyter_client.asynchronous import AsyncKernelClient

    kc = AsyncKernelClient()
    kc.load_connection_file(str(conn))
    # no heartbeat channel: without a kernel manager the client would take a heartbeat not yet
    # received for a dead kernel; liveness is the process's (KeptManager), readiness kernel_info's
    kc.start_channels(hb=False)
    try:
        batch._sync(batch.wait_ready(kc, timeout))
    except BaseException:
        kc.stop_channels()
        raise
    kc.allow_stdin = False
    return kc


def registered(registry: Path) -> list[dict[str, Any]]:
    """The kept kernels of a registry folder (for ``sveval kernels``): name, pid, running, in use."""
    import fcntl

    out = []
    for name, entry in _entries(registry):
        try:
            doc = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        busy = False
        try:
            fd = os.open(registry / f"{name}.lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                busy = True
            finally:
                os.close(fd)
        except OSError:
            pass
        out.append({"name": name, "pid": doc.get("pid"), "running": running(int(doc.get("pid", 0) or 0), doc.get("start")),
                    "in_use": busy, "started_at": doc.get("started_at"), "idle_seconds": doc.get("idle")})
    return out


def stop_all(registry: Path) -> int:
    """End every kept kernel of a registry folder that no run is using; returns how many."""
    import fcntl

    n = 0
    for name, entry in _entries(registry):
        try:
            fd = os.open(registry / f"{name}.lock", os.O_RDWR)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
        try:
            doc = json.loads(entry.read_text(encoding="utf-8"))
            _kill(int(doc["pid"]), doc.get("start"))
        except (OSError, ValueError, KeyError, TypeError):
            doc = None
        KeptKernel._remove(registry, name, doc, fd)
        n += 1
    return n
