"""Shared fixtures: the built-in example generated once per test session, and a throw-away
project folder (a copy of parameters/ and evaluations/ whose data/example points at it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SVEVAL_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """The illustrative example, generated once per session (deterministic)."""
    from sveval.data.example import ensure_example

    return ensure_example(tmp_path_factory.mktemp("example") / "example")


def make_project(dest: Path, example_data: Path) -> Path:
    """A project folder with the repository's parameters and notebooks and the session's data."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "parameters", dest / "parameters")
    shutil.copytree(REPO / "evaluations", dest / "evaluations")
    (dest / "reports").mkdir()
    for static in (REPO / "reports").glob("*"):
        if static.is_file():
            shutil.copy2(static, dest / "reports" / static.name)
    (dest / "data").mkdir()
    (dest / "data" / "example").symlink_to(example_data, target_is_directory=True)
    return dest


@pytest.fixture
def project(tmp_path, example_data) -> Path:
    """A fresh, writable project folder for one test."""
    return make_project(tmp_path / "project", example_data)


HES = "aggregates/hes_sharp_object_admissions.csv"  # the example's hospital admissions table


def small_counts_copy(example: Path, dest: Path) -> Path:
    """A copy of the example whose hospital admissions are binomially thinned (p = 0.3, seed 11):
    many small counts, several rounds of the disclosure audit."""
    import numpy as np
    import pandas as pd

    shutil.copytree(example, dest, symlinks=True)
    hes = pd.read_csv(dest / HES)
    rng = np.random.default_rng(11)
    hes["admissions"] = rng.binomial(hes["admissions"].to_numpy(), 0.3)
    (dest / HES).unlink()
    hes.to_csv(dest / HES, index=False)
    return dest


@pytest.fixture(autouse=True)
def _no_figures_left_open(request):
    """Close the pyplot figures a test leaves open: tests share a process (pytest-xdist runs many
    files in one worker), and a test that turns warnings into errors must not fail on matplotlib's
    "more than 20 figures" warning about figures another test left. Tests that import pyplot only."""
    yield
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and plt.get_fignums():
        if os.environ.get("SVEVAL_REPORT_OPEN_FIGURES"):
            print(f"\n{request.node.nodeid} left {len(plt.get_fignums())} figure(s) open")
        plt.close("all")
