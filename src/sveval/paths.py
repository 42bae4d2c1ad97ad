"""Where things live: the project root and its standard folders.

The project root is the nearest folder (from the current directory upwards) holding a
``parameters/`` folder, or ``$SVEVAL_ROOT`` when set. Example data is generated outside git into
``<root>/data/example`` unless ``$SVEVAL_DATA_DIR`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def find_root(start: Path | None = None) -> Path:
    env = os.environ.get("SVEVAL_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "parameters").is_dir() and (d / "evaluations").is_dir():
            return d
    return here


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @classmethod
    def discover(cls, start: Path | None = None) -> ProjectPaths:
        return cls(find_root(start))

    @property
    def parameters(self) -> Path:
        return self.root / "parameters"

    @property
    def evaluation_specs(self) -> Path:
        return self.parameters / "evaluations"

    @property
    def tracking_specs(self) -> Path:
        return self.parameters / "tracking"

    @property
    def notebooks(self) -> Path:
        return self.root / "evaluations"

    def notebook(self, name: str) -> Path:
        """The notebook ``<name>.ipynb``: the project's own copy in ``evaluations/`` if it has one
        (a project may adapt a design's narrative), otherwise the one installed with sveval."""
        own = self.notebooks / f"{name}.ipynb"
        if own.is_file():
            return own
        return Path(__file__).resolve().parent / "notebooks" / f"{name}.ipynb"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report_evaluations(self) -> Path:
        return self.reports / "evaluations"

    @property
    def example_data(self) -> Path:
        env = os.environ.get("SVEVAL_DATA_DIR")
        return Path(env).resolve() if env else self.root / "data" / "example"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"


#: prefix of the private work folders a run executes notebooks into (sveval.pipeline.executor)
WORK_PREFIX = ".sveval-work-"


def write_json_atomic(path: Path, document: Any, *, create_folder: bool = True) -> None:
    """Write JSON through a temporary file in the same folder and swap it in (never half-written);
    the folder is created unless ``create_folder`` is False (then a missing folder raises)."""
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's contents, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
