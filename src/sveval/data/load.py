"""The one data loader: evaluations, tracking and planning all get their long frame here.

A parameter file's ``data:`` block says where the data come from (the built-in example, or a long
CSV of the user's own). :func:`load_long` returns the long frame (period, area_code, measure,
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
    from sveval.data.ingest import load_example_long

    data_dir = ensure_example(paths.example_data)
    long = load_example_long(data_dir, catalog)
    files = sorted(x for x in data_dir.rglob("*") if x.is_file() and x.suffix in (".csv", ".json"))
    return LoadedData(long, files, data_dir)
