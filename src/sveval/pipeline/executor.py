"""The one notebook executor, shared by evaluations (:mod:`sveval.pipeline.runner`) and outcome
tracking (:mod:`sveval.pipeline.tracking`).

:func:`execute` runs one notebook with papermill into a private work folder inside the output
folder and swaps the executed notebook into place with one atomic rename, so the output path holds
either the previous notebook or the complete new one, never half of one. It

* starts each kernel on the IPC transport where ZeroMQ supports it (no TCP ports to race for:
  papermill issue 511) and retries a kernel that fails to start (no cell ran) up to ``retries``
  times;
* names the failing cell (its position in the notebook, its id and first line) and the exception
  (:class:`CellFailure`); a kernel that dies is reported as a dead kernel, and the cell that was
  running is marked failed with an error output instead of papermill's "completed";
* normalises the executed notebook so that identical inputs give byte-identical files: papermill's
  and nbclient's timing metadata removed, the injected parameters cell given a fixed id, pandas
  Styler table ids (``T_xxxxx``) and object addresses (``0x7f...``) made stable, and the private
  work folder's path replaced by the output folder's.

:func:`cache_key` hashes what decides a run's output (the notebook, the parameter and registry
files, the data files' contents, the sveval sources and the parameters), and :class:`Manifest` keeps
one entry per run, rewritten atomically as each run ends, so a batch killed halfway resumes where it
stopped. :func:`clean_work_folders` removes the work folders a killed run left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat

# WORK_PREFIX: the private work folders inside an output folder (hidden from Quarto)
from sveval.paths import WORK_PREFIX, sha256_file, write_json_atomic

PAPERMILL_TAGS = ("injected-parameters", "papermill-error-cell-tag")
START_TIMEOUT = 60
SHUTDOWN_POLL = 0.005  # seconds between the checks that a kernel being shut down has ended
SOCKETS_PREFIX = "svk"  # <tmp>/svk<pid>-xxxx/k-<n>: a kernel's IPC sockets


# ------------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellFailure:
    """Where and how a notebook failed.

    Attributes
    ----------
    cell : the failing cell's position in the notebook (1-based, counting markdown cells and not
        the cells papermill adds), or None when no cell ran (the kernel did not start)
    cell_id : the failing cell's id
    first_line : the first non-blank line of the failing cell's source
    exception : the exception's class name (``DeadKernelError`` for a kernel that died)
    message : the exception's message (first line, shortened)
    dead_kernel : the kernel process died (out of memory, killed) while the cell ran
    """

    cell: int | None
    cell_id: str | None
    first_line: str
    exception: str
    message: str
    dead_kernel: bool = False

    def describe(self) -> str:
        """``cell 5 (its-04, `display(...)`): KeyError: 'x'`` or ``kernel did not start: ...``."""
        what = f"{self.exception}: {self.message}" if self.message else self.exception
        if self.dead_kernel:
            what = f"the kernel died ({what})"
        if self.cell is None:
            return what
        return f"cell {self.cell} ({self.cell_id}, `{self.first_line}`): {what}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Execution:
    """The outcome of :func:`execute`."""

    ok: bool
    notebook: Path | None
    failure: CellFailure | None
    attempts: int
    seconds: float

    @property
    def error(self) -> str | None:
        return None if self.failure is None else self.failure.describe()


def _short(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_line(source: str) -> str:
    for line in str(source).splitlines():
        if line.strip():
            return _short(line, 120)
    return ""


def _is_papermill_cell(cell: Any) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return any(t in tags for t in PAPERMILL_TAGS)


def _numbered(nb: Any) -> list[tuple[int, Any]]:
    """(position in the source notebook, cell) for every cell that is not papermill's."""
    out, n = [], 0
    for cell in nb.cells:
        if _is_papermill_cell(cell):
            out.append((0, cell))
            continue
        n += 1
        out.append((n, cell))
    return out


def find_failure(nb: Any) -> CellFailure | None:
    """The first failed cell of an executed notebook (an error output or papermill's flag)."""
    for n, cell in _numbered(nb):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        flagged = cell.get("metadata", {}).get("papermill", {}).get("exception")
        if errors or flagged:
            err = errors[0] if errors else {}
            ename = str(err.get("ename", "Error"))
            return CellFailure(
                cell=n or None, cell_id=cell.get("id"), first_line=_first_line(cell.source),
                exception=ename, message=_short(err.get("evalue", "")),
                dead_kernel=ename == "DeadKernelError",
            )
    return None


def _started(nb: Any) -> list[Any]:
    """Code cells that began executing (papermill stamps ``start_time`` when a cell starts; its
    status is no guide: it marks never-run cells "completed" when execution stops early)."""
    return [c for c in nb.cells if c.cell_type == "code"
            and c.get("metadata", {}).get("papermill", {}).get("start_time")]


def _mark_interrupted(nb: Any, exc: BaseException) -> bool:
    """Mark the cell that was running when ``exc`` stopped execution as failed; False if none ran."""
    started = _started(nb)
    if not started:
        return False
    cell = started[-1]
    dead = type(exc).__name__ == "DeadKernelError" or "Kernel died" in str(exc)
    ename = "DeadKernelError" if dead else type(exc).__name__
    message = ("the kernel died while this cell ran (out of memory, or the process was killed)"
               if dead else _short(str(exc)) or ename)
    if not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"]))
    meta = cell.setdefault("metadata", {}).setdefault("papermill", {})
    meta["status"] = "failed"
    meta["exception"] = True
    for later in nb.cells[nb.cells.index(cell) + 1:]:  # never ran
        if later.cell_type == "code" and "papermill" in later.get("metadata", {}):
            later.metadata.papermill["status"] = "pending"
    nb.metadata.setdefault("papermill", {})["exception"] = True
    return True


# ------------------------------------------------------------------------------------------------
# Normalisation (byte-identical notebooks from identical inputs)
# ------------------------------------------------------------------------------------------------
_TIMING = ("start_time", "end_time", "duration")
_STYLER = re.compile(r"T_([0-9a-f]{5})(?![0-9a-f])")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def _stable_text(text: str, salt: str) -> str:
    seen: dict[str, str] = {}

    def styler(m: re.Match[str]) -> str:
        uid = m.group(1)
        if uid not in seen:
            seen[uid] = hashlib.sha256(f"{salt}:{len(seen)}".encode()).hexdigest()[:5]
        return "T_" + seen[uid]

    return _ADDRESS.sub("0x0", _STYLER.sub(styler, text))


def _stable_value(value: Any, salt: str) -> Any:
    if isinstance(value, str):
        return _stable_text(value, salt)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _stable_text("".join(value), salt)
    return value


def normalise(nb: Any, replace: Mapping[str, str] | None = None) -> Any:
    """Make an executed notebook a function of its inputs only (see the module docstring)."""
    meta = nb.metadata.get("papermill")
    if isinstance(meta, dict):
        for k in _TIMING:
            meta.pop(k, None)
    banners = 0
    for i, cell in enumerate(nb.cells):
        cmeta = cell.get("metadata", {})
        cmeta.pop("execution", None)
        pm = cmeta.get("papermill")
        if isinstance(pm, dict):
            for k in _TIMING:
                pm.pop(k, None)
        tags = cmeta.get("tags", [])
        if "injected-parameters" in tags:
            cell["id"] = "injected-parameters"
        elif "papermill-error-cell-tag" in tags:
            banners += 1
            cell["id"] = f"papermill-error-{banners}"
        elif not cell.get("id"):
            cell["id"] = f"cell-{i}"
        salt = str(cell.get("id"))
        for k, out in enumerate(cell.get("outputs", []) or []):
            s = f"{salt}:{k}"
            if "data" in out:
                for mime in list(out["data"]):
                    if mime.startswith("text/"):
                        out["data"][mime] = _stable_value(out["data"][mime], s)
            if "text" in out:
                out["text"] = _stable_value(out["text"], s)
            if "traceback" in out:
                out["traceback"] = [_stable_text(t, s) for t in out["traceback"]]
            if "evalue" in out:
                out["evalue"] = _stable_text(out["evalue"], s)
    if replace:
        text = json.dumps(nb)
        for old, new in replace.items():
            text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
        nb = nbformat.from_dict(json.loads(text))
    return nb


# ------------------------------------------------------------------------------------------------
# Execution
# ------------------------------------------------------------------------------------------------
def _ipc_supported() -> bool:
    try:
        import zmq

        return bool(zmq.has("ipc"))
    except Exception:  # noqa: BLE001 - no zmq features: use TCP
        return False


#: options for an IPython kernel (``ipykernel``): no input history in the user's IPython history
#: database. A notebook's history serves no one (its cells are in the notebook), and the database is
#: an SQLite file in the home folder that every kernel writes after every cell (about 4 ms a cell,
#: a second of a kernel's time in ``sveval run --all``) and which the parallel kernels share.
IPYKERNEL_OPTIONS = ("--HistoryManager.enabled=False",)


def kernel_options(argv: list[str]) -> list[str]:
    """What sveval adds to a kernelspec's command ``argv``: :data:`IPYKERNEL_OPTIONS` for an IPython
    kernel, nothing for another kernel (whose command line sveval does not know)."""
    return list(IPYKERNEL_OPTIONS) if any("ipykernel" in str(a) for a in argv) else []


def _manager_class() -> type:
    """nbclient's own asynchronous kernel manager, starting kernels with a fixed hash seed (and
    :func:`kernel_options`)."""
    from jupyter_client.manager import AsyncKernelManager

    class SvevalKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            # a fixed hash seed: set and dict orders alike in every run
            kw["env"] = {**kw.get("env", os.environ), "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
            extra = kernel_options(self.kernel_spec.argv)
            if extra:
                kw["extra_arguments"] = [*kw.get("extra_arguments", []), *extra]
            return await super()._async_pre_start_kernel(**kw)

        async def _async_wait(self, pollinterval: float = 0.1) -> None:
            # a kernel being shut down is polled every 0.1 s until its process has gone: a killed
            # kernel is gone within milliseconds, so every shutdown waited about 0.1 s for nothing
            await super()._async_wait(pollinterval=min(pollinterval, SHUTDOWN_POLL))

    return SvevalKernelManager


def _kernel_manager(kernel: str) -> tuple[dict[str, Any], Path | None]:
    """papermill (nbclient) options for a kernel on IPC sockets in a private short-path folder (TCP
    where unsupported). nbclient creates and owns the manager, so it also stops the client's
    channels and shuts the kernel down, whatever happened."""
    from traitlets.config import Config

    options: dict[str, Any] = {"kernel_manager_class": _manager_class()}
    if not _ipc_supported():
        return options, None
    _clean_socket_folders()
    # short: Unix socket paths are limited to ~100 bytes; the pid tells a stale folder
    sockets = Path(tempfile.mkdtemp(prefix=f"{SOCKETS_PREFIX}{os.getpid()}-"))
    options["config"] = Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "k")}})
    return options, sockets


def _clean_socket_folders() -> None:
    """Remove the IPC socket folders of killed runs (their process is gone)."""
    for d in Path(tempfile.gettempdir()).glob(f"{SOCKETS_PREFIX}*-*"):
        try:
            pid = int(d.name[len(SOCKETS_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if d.is_dir() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _remove_sockets(sockets: Path | None) -> None:
    if sockets is not None:
        shutil.rmtree(sockets, ignore_errors=True)


def work_folder(out_dir: Path, name: str) -> Path:
    """A fresh private work folder for one run inside ``out_dir`` (removed by :func:`execute`'s
    caller when done, or by :func:`clean_work_folders` after a kill)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f"{WORK_PREFIX}{name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_work_folders(out_dir: Path, *, all_: bool = False) -> list[Path]:
    """Remove work folders and temporary files left in ``out_dir`` by runs that were killed.

    A folder whose process is still alive is kept unless ``all_`` (the caller holds the project
    lock, so no other run can be using it). Returns the removed paths.
    """
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for p in sorted(out_dir.iterdir()):
        if p.name.startswith(WORK_PREFIX) and p.is_dir():
            try:
                pid = int(p.name[len(WORK_PREFIX):].split("-")[-2])
            except (ValueError, IndexError):
                pid = -1
            if all_ or pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)  # write_json_atomic's temporary file of a killed writer
            removed.append(p)
    return removed


def write_notebook_atomic(path: Path, nb: Any) -> None:
    """Write a notebook through a temporary file in the same folder and swap it in."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        nbformat.write(nb, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def execute(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    work: Path,
    cwd: Path,
    kernel: str = "python3",
    timeout: int | None = 1800,
    retries: int = 2,
    start_timeout: int = START_TIMEOUT,
    swap: bool = True,
    pool: Any = None,
) -> Execution:
    """Execute ``notebook`` with ``parameters`` and swap the executed notebook into ``output``.

    Parameters
    ----------
    notebook : the notebook to execute
    output : where the executed notebook goes (replaced atomically, also when it failed)
    parameters : papermill parameters; paths inside ``work`` are shown as paths in ``output``'s
        folder in the executed notebook
    work : a private folder (:func:`work_folder`) for the notebook being written
    cwd : the kernel's working folder
    retries : kernel start-up failures retried (no cell ran), each on a fresh kernel
    swap : move the executed notebook into ``output``; with False it is left (normalised) at
        ``work / output.name`` for the caller to swap in with other files
    pool : warm kernels (:class:`sveval.pipeline.batch.KernelPool`): the notebook runs on this
        thread's warm kernel, reset to a fresh kernel's state, instead of a new kernel; a warm
        kernel that dies while the notebook runs is replaced and the notebook retried once (a
        kernel that cannot be warmed falls back to a new kernel). None: a new kernel per notebook
    """
    import papermill as pm

    t0 = time.perf_counter()
    tmp_nb = work / output.name
    attempts = 0
    failure: CellFailure | None = None
    warm_retried = False
    while True:
        attempts += 1
        tmp_nb.unlink(missing_ok=True)
        warm = None
        if pool is not None:
            try:
                warm = pool.acquire(kernel, cwd)
            except Exception:  # noqa: BLE001 - no warm kernel: a new kernel below, with its retries
                warm = None
        if warm is None:
            options, sockets = _kernel_manager(kernel)
            engine: dict[str, Any] = {}
        else:
            options, sockets = {"km": warm.km}, None
            engine = {"engine_name": pool.engine(), "warm_kc": warm.kc}
        interrupted: BaseException | None = None
        warm_died = False
        try:
            pm.execute_notebook(
                str(notebook), str(tmp_nb), parameters=dict(parameters), kernel_name=kernel, **options,
                resources={"metadata": {"path": str(cwd)}}, progress_bar=False, log_output=False,
                execution_timeout=timeout, start_timeout=start_timeout, **engine,
            )
        except pm.PapermillExecutionError:
            pass  # the error is in the notebook: found below
        except Exception as exc:  # noqa: BLE001 - kernel start-up, death, timeout, papermill errors
            interrupted = exc
        finally:
            if warm is None:
                _remove_sockets(sockets)
            else:
                warm_died = interrupted is not None and not warm.alive()
                pool.release(warm, broken=interrupted is not None)
        try:
            nb = nbformat.read(str(tmp_nb), as_version=4) if tmp_nb.exists() else None
        except (OSError, ValueError):  # not written, or cut short (a full disk): no notebook
            nb = None
        if warm_died and not warm_retried:  # the warm kernel died: once more on a new one
            warm_retried = True
            continue
        if interrupted is not None:
            ran = nb is not None and _mark_interrupted(nb, interrupted)
            if not ran and attempts <= retries:
                time.sleep(0.5 * attempts)
                continue
            if not ran:
                failure = CellFailure(None, None, "", type(interrupted).__name__,
                                      "the kernel did not start: " + _short(str(interrupted)))
        break
    if nb is not None:
        failure = find_failure(nb) or failure
        nb = normalise(nb, {str(work): str(output.parent)})
        final = work / (output.name + ".final")
        nbformat.write(nb, str(final))
        target = output if swap else tmp_nb
        os.replace(final, target)  # same folder tree, same file system: one atomic rename
    return Execution(ok=failure is None, notebook=target if nb is not None else None, failure=failure,
                     attempts=attempts, seconds=round(time.perf_counter() - t0, 2))


# ------------------------------------------------------------------------------------------------
# Caching
# ------------------------------------------------------------------------------------------------
_sha256 = sha256_file


_CODE_HASH: dict[str, str] = {}


def code_hash() -> str:
    """Hash of the installed sveval sources (a code change invalidates every cached run).

    ``$SVEVAL_CODE_HASH``, when set, is used instead: a deployment that pins its code, or tests
    that must not see edits made to the working tree while they run.
    """
    pinned = os.environ.get("SVEVAL_CODE_HASH")
    if pinned:
        return pinned
    pkg = Path(__file__).resolve().parents[1]
    files = sorted(p for p in pkg.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".json"))
    stamp = "|".join(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in files)
    if stamp not in _CODE_HASH:
        h = hashlib.sha256()
        for p in files:
            h.update(p.relative_to(pkg).as_posix().encode())
            h.update(_sha256(p).encode())
        _CODE_HASH.clear()
        _CODE_HASH[stamp] = h.hexdigest()
    return _CODE_HASH[stamp]


def cache_key(*, notebook: Path, inputs: Iterable[Path], data: Iterable[Path],
              parameters: Mapping[str, Any] | None = None, code: str | None = None) -> str:
    """The hash that decides whether a run's outputs are current.

    ``inputs`` are parameter and registry files, ``data`` the data files (hashed by content, so a
    copied or touched file with the same bytes does not force a rerun), ``parameters`` anything else
    passed to the notebook that changes its output.
    """
    h = hashlib.sha256()
    h.update(b"notebook\0" + _sha256(Path(notebook)).encode())
    for f in inputs:
        f = Path(f)
        h.update(f"input\0{f.name}\0".encode() + (_sha256(f).encode() if f.exists() else b"-"))
    for name, digest in sorted((Path(x).name, _sha256(Path(x))) for x in data):
        h.update(f"data\0{name}\0{digest}".encode())  # by content: a moved project stays cached
    h.update(json.dumps(dict(parameters or {}), sort_keys=True, default=str).encode())
    h.update((code or code_hash()).encode())
    return h.hexdigest()


class Manifest:
    """One JSON document of run entries (``{"evaluations": {id: entry}}``), rewritten atomically
    after every change so that a kill loses at most the run in progress.

    A missing or corrupted manifest reads as empty (everything reruns: nothing is trusted that
    cannot be read).
    """

    def __init__(self, path: Path, section: str = "evaluations", header: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.section = section
        self.header = dict(header or {})
        self._lock = threading.Lock()
        self.corrupt = False
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                entries = doc.get(section, {}) if isinstance(doc, dict) else None
                if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
                    raise ValueError("not a manifest")
                self.entries = entries
            except (OSError, UnicodeDecodeError, ValueError):
                self.corrupt = True

    def get(self, key: str) -> dict[str, Any]:
        return dict(self.entries.get(key, {}))

    def update(self, key: str, entry: Mapping[str, Any]) -> None:
        with self._lock:
            self.entries[key] = dict(entry)
            write_json_atomic(self.path, {**self.header, self.section: dict(sorted(self.entries.items()))})
