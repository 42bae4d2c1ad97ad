"""The layers flow one way (ARCHITECTURE.md), and no sveval modules import each other in a cycle.

Both checks read every import statement, including imports inside functions and under
``TYPE_CHECKING``, through grimp (the graph library behind import-linter).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("sveval", cache_dir=None)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in modules:
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle():
    class Fake:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": set()}[m]

    assert _cycles(Fake) == [["a", "b"]]


def test_nothing_imports_the_root_package(graph):
    """``sveval/__init__`` is the public API (it reaches into the pipeline): modules import the
    module they need, never the root package, or the API would close a cycle."""
    importers = sorted(graph.find_modules_that_directly_import("sveval"))
    assert importers == []


def test_designs_never_see_the_pipeline(graph):
    for m in sorted(graph.modules):
        if m.startswith("sveval.designs"):
            bad = [x for x in graph.find_modules_directly_imported_by(m)
                   if x.startswith(("sveval.pipeline", "sveval.report", "sveval.publish", "sveval.cli"))]
            assert bad == [], f"{m} imports {bad}"


def test_layers_contract_holds():
    """The import-linter contract in pyproject.toml (also run by ``nox -s lint``)."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_committed_record_schema_is_current(capsys):
    """The committed JSON Schema of the result record is what the models generate (regenerate with
    ``sveval schema > src/sveval/schemas/result-record.schema.json``)."""
    import json

    from sveval.cli import main
    from sveval.pipeline.record import SCHEMA_VERSION, record_schema

    committed = json.loads((ROOT / "src/sveval/schemas/result-record.schema.json").read_text())
    assert committed == json.loads(json.dumps(record_schema()))
    assert committed["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == committed


def test_public_api():
    import sveval

    for name in ("prepare", "fit", "save", "plan", "Result", "ResultRecord", "SvevalError"):
        assert callable(getattr(sveval, name)) or isinstance(getattr(sveval, name), type)
    from sveval.errors import SvevalError
    from sveval.result import Result

    assert sveval.Result is Result and sveval.SvevalError is SvevalError


def test_design_code_raises_typed_errors():
    """Design code raises sveval's typed errors (SvevalError subclasses), never a bare ValueError."""
    import re

    offenders = []
    for path in sorted((ROOT / "src/sveval/designs").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"raise (ValueError|KeyError|TypeError|RuntimeError)\b", line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []
