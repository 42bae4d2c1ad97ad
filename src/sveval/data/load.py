"""The one data loader: evaluations, tracking and planning all get their long frame here.

A parameter file's ``data:`` block says where the data come from: the built-in example or the
project's own sources (both described by ``parameters/sources.yaml`` and read through the
incremental store of :mod:`sveval.data.store`), or a long CSV of the user's own. :func:`load_long` returns the long frame (period, area_code, measure,
count, population), the files it came from (for provenance hashes) and, for record-level data, the
folder holding them (for LSOA panels).
"""

from __future__ import annotations

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


def load_long(data: DataSpec, spec_path: Path | None, paths: ProjectPaths, catalog) -> LoadedData:
    """Load the long frame a parameter file asks for (see the module docstring)."""
    if data.source == "csv":
        from sveval.data.ingest import read_long_csv

        p = resolve_data_path(data, spec_path)
        continuous = [m.id for m in catalog.measures.values() if m.kind == "continuous"]
        return LoadedData(read_long_csv(p, continuous=continuous), [p], None)
    from sveval.data.example import ensure_example

    if data.source == "store":
        sources = project_sources(paths, spec_path)
        store = ingest_store(paths, sources, catalog)
        return LoadedData(store.long(sources, catalog.measures.values(), _area_names(catalog)),
                          [store.root / "manifest.json"], store.root)
    data_dir = ensure_example(paths.example_data)
    # the input files only: not the store or caches sveval keeps beside them (hidden folders), whose
    # bookkeeping changes when another step ingests, and would make provenance and caching unstable
    files = sorted(x for x in data_dir.rglob("*") if x.is_file() and x.suffix in (".csv", ".json")
                   and not any(part.startswith(".") for part in x.relative_to(data_dir).parts))
    sources = project_sources(paths, spec_path, required=False)
    if sources is None or sources.spec.base != "example":
        # no catalogue of the example (an older project): the direct ingestion of its layout
        from sveval.data.ingest import load_example_long

        return LoadedData(load_example_long(data_dir, catalog), files, data_dir)
    store = ingest_store(paths, sources, catalog)
    return LoadedData(store.long(sources, catalog.measures.values(), _area_names(catalog)), files,
                      data_dir)


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
