"""The one data loader: evaluations, tracking and planning all get their long frame here.

A parameter file's ``data:`` block says where the data come from: the built-in example or the
project's own sources (both described by ``parameters/sources.yaml`` and read through the
incremental store of :mod:`sveval.data.store`), or a long CSV of the user's own. :func:`load_long` returns the long frame (period, area_code, measure,
count, population), the files it came from (for provenance hashes) and, for record-level data, the
folder holding them (for LSOA panels).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sveval.errors import SpecError
from sveval.paths import ProjectPaths
from sveval.spec import DataSpec


@dataclass
class LoadedData:
    long: pd.DataFrame = field(repr=False)
    files: list[Path] = field(default_factory=list)
    data_dir: Path | None = None  # record-level data folder (LSOA panels), None for a long CSV


def resolve_data_path(data: DataSpec, spec_path: Path | None) -> Path:
    """A ``data.path`` made absolute (relative to the parameter file) and checked to be a file."""
    p = Path(str(data.path))
    if not p.is_absolute() and spec_path is not None:
        p = (spec_path.parent / p).resolve()
    if not p.exists():
        raise SpecError(spec_path, [("data.path", data.path, f"file not found: {p}")])
    if not p.is_file():
        raise SpecError(spec_path, [("data.path", data.path, f"not a regular file: {p} (give a CSV file)")])
    return p


_SHARED: dict | None = None  # see shared_loads


@contextlib.contextmanager
def shared_loads():
    """Inside the block, :func:`load_long` gives the same data for the same ``data:`` block once
    loaded: a batch validating many parameter files checks the store for new files and reads the
    long frame once, not once per file. (Outside a block every call loads afresh: a long-lived
    process, such as a kept kernel, sees files that changed since.) The frames are shared: treat
    them as read-only."""
    global _SHARED
    outer = _SHARED
    _SHARED = {} if outer is None else outer
    try:
        yield
    finally:
        _SHARED = outer


def load_long(data: DataSpec, spec_path: Path | None, paths: ProjectPaths, catalog) -> LoadedData:
    """Load the long frame a parameter file asks for (see the module docstring)."""
    if _SHARED is None:
        return _load_long(data, spec_path, paths, catalog)
    where = str(resolve_data_path(data, spec_path)) if data.source == "csv" else ""
    key = (data.model_dump_json(), where, str(paths.root), id(catalog))
    if key not in _SHARED:
        _SHARED[key] = (_load_long(data, spec_path, paths, catalog), catalog)  # catalog: keeps id(catalog) unique
    return _SHARED[key][0]


def _load_long(data: DataSpec, spec_path: Path | None, paths: ProjectPaths, catalog) -> LoadedData:
    if data.source == "csv":
        from sveval.data.ingest import read_long_csv

        p = resolve_data_path(data, spec_path)
        continuous = [m.id for m in catalog.measures.values() if m.kind == "continuous"]
        return LoadedData(read_long_csv(p, continuous=continuous), [p], None)
    from sveval.data.example import ensure_example
    from sveval.data.sources import files_under

    if data.source == "store":
        sources = project_sources(paths, spec_path)
        store = ingest_store(paths, sources, catalog)
        return LoadedData(cached_long(store, sources, catalog), [store.root / "manifest.json"], store.root)
    data_dir = ensure_example(paths.example_data)
    # the input files only: not the store or caches sveval keeps beside them (hidden folders), whose
    # bookkeeping changes when another step ingests, and would make provenance and caching unstable
    files = [x for x in files_under(data_dir, hidden_folders=False) if x.suffix in (".csv", ".json")]
    sources = project_sources(paths, spec_path, required=False)
    if sources is None or sources.spec.base != "example":
        # no catalogue of the example (an older project): the direct ingestion of its layout
        from sveval.data.ingest import load_example_long

        return LoadedData(load_example_long(data_dir, catalog), files, data_dir)
    store = ingest_store(paths, sources, catalog)
    return LoadedData(cached_long(store, sources, catalog), files, data_dir)


#: the long frame's columns and their types in the cache
_CACHE_DTYPES = {"period": "str", "area_code": "str", "measure": "str", "count": "float64",
                 "population": "float64"}
_CACHE_KEEP = 8  # cached long frames kept per store (one per recent data or registry version)
_CODE_FILES = ("load.py", "store.py", "policeuk.py", "sources.py", "filters.py", "series.py")


def long_cache_key(store, sources, catalog) -> str | None:
    """What decides the store's long frame: the store's manifest (every ingested file's CRC-32 and
    parts), the sources catalogue, the measures, the area names and the data layer's code. None when the
    store has no manifest."""
    import hashlib

    try:
        manifest = (store.root / "manifest.json").read_bytes()
    except OSError:
        return None
    here = Path(__file__).parent
    h = hashlib.sha256()
    source_spec = sources.spec.model_dump_json().encode()
    for part in (manifest, source_spec, str(getattr(sources, "base_dir", "")).encode(),
                 json.dumps([m.model_dump(mode="json") for m in catalog.measures.values()],
                            sort_keys=True, default=str).encode(),
                 json.dumps(_area_names(catalog), sort_keys=True).encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    for name in _CODE_FILES:
        try:
            h.update(name.encode() + (here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


def cached_long(store, sources, catalog) -> pd.DataFrame:
    """:meth:`sveval.data.store.Store.long` of every measure, kept beside the store.

    Building the long frame (LSOA to area mapping, zero fill, populations) takes about a second on
    the example and is needed by every evaluation, every notebook and every tracking report; it
    depends only on what :func:`long_cache_key` hashes, so it is kept as ``<store>/long-cache/<key>.csv``
    with a ``<key>.json`` holding the granularities, the row count and the CSV's SHA-256 (written
    last: a cache entry without it, or whose CSV does not match it, is ignored and rebuilt). The
    cache lives in the store's folder (data, not published, not in git).
    """
    import hashlib

    key = long_cache_key(store, sources, catalog)
    folder = store.root / "long-cache"
    if key is not None:
        hit = _read_cached_long(folder, key)
        if hit is not None:
            return hit
    long = store.long(sources, catalog.measures.values(), _area_names(catalog))
    if key is None:
        return long
    try:
        folder.mkdir(exist_ok=True)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        csv_tmp, meta_tmp = folder / f".{key}.{tag}.csv", folder / f".{key}.{tag}.json"
        long.to_csv(csv_tmp, index=False, na_rep="")
        digest = hashlib.sha256(csv_tmp.read_bytes()).hexdigest()
        meta_tmp.write_text(json.dumps({"key": key, "rows": len(long), "sha256": digest,
                                        "granularity": dict(long.attrs.get("granularity", {}))}),
                            encoding="utf-8")
        os.replace(csv_tmp, folder / f"{key}.csv")
        os.replace(meta_tmp, folder / f"{key}.json")  # last: the entry is complete
        old = sorted((p for p in folder.glob("*.json") if not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)[_CACHE_KEEP:]
        for p in old:
            p.unlink(missing_ok=True)
            p.with_suffix(".csv").unlink(missing_ok=True)
    except OSError:  # a read-only or full disk: the frame is still right, only not kept
        for p in folder.glob(f".{key}.*"):
            p.unlink(missing_ok=True)
    return long


def _read_cached_long(folder: Path, key: str) -> pd.DataFrame | None:
    """The cached long frame of ``key``, or None when absent, incomplete or not what was written."""
    import hashlib

    try:
        meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        raw = (folder / f"{key}.csv").read_bytes()
    except (OSError, ValueError):
        return None
    if (not isinstance(meta, dict) or meta.get("key") != key
            or meta.get("sha256") != hashlib.sha256(raw).hexdigest()
            or not isinstance(meta.get("granularity"), dict)):
        return None
    try:
        long = pd.read_csv(io.BytesIO(raw), dtype=_CACHE_DTYPES, keep_default_na=False,
                           na_values={"count": [""], "population": [""]})
    except (ValueError, pd.errors.ParserError):
        return None
    if list(long.columns) != list(_CACHE_DTYPES) or len(long) != meta.get("rows"):
        return None
    long.attrs["granularity"] = {str(k): str(v) for k, v in meta["granularity"].items()}
    return long


def _area_names(catalog) -> dict[str, str]:
    return {c: a.name for c, a in getattr(catalog, "areas", {}).items()}


def project_sources(paths: ProjectPaths, spec_path: Path | None = None, required: bool = True):
    """The project's ``parameters/sources.yaml`` (:class:`sveval.data.sources.Sources`).

    ``base: example`` resolves paths against the example data folder (generated when missing).
    Returns None when the file does not exist and ``required`` is false.
    """
    from sveval.data.sources import Sources

    path = paths.parameters / "sources.yaml"
    if not path.is_file():
        if not required:
            return None
        raise SpecError(spec_path or path, [("data.source", "store", f"no sources file: {path} "
                                             "(list the project's data files there)")])
    example_dir = None
    from sveval.spec import read_yaml

    raw = read_yaml(path)
    if isinstance(raw, dict) and raw.get("base") == "example":
        from sveval.data.example import ensure_example

        example_dir = ensure_example(paths.example_data)
    return Sources.load(path, paths.root, example_dir)


def store_for(paths: ProjectPaths, sources):
    """The store of a catalogue: ``<example>/.store`` for the example, else ``data/store``."""
    from sveval.data.store import Store

    if sources.spec.base == "example":
        return Store(sources.base_dir / ".store")
    return Store(paths.root / "data" / "store")


def ingest_store(paths: ProjectPaths, sources, catalog, progress: bool = False, log=None):
    """Bring the store up to date with the sources (reads only new or changed files)."""
    store = store_for(paths, sources)
    store.ingest(sources, catalog.measures.values(), progress=progress, log=log)
    return store
