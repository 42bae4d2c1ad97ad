"""Determinism: identical inputs give byte-identical outputs, apart from declared timestamps.

Two runs of the same evaluation give the same result JSON (all but ``provenance.generated_at``)
and the same executed notebook (all but that timestamp where the notebook prints it); with
``SOURCE_DATE_EPOCH`` set, everything is byte-identical, the site pages and the returns workbook
too. The Poisson fixed-effects DiD gives identical numbers in processes with different hash seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_faults import _tiny_project

from sveval.pipeline.executor import normalise
from sveval.pipeline.runner import run

pytestmark = pytest.mark.slow


def _outputs(root: Path) -> dict[str, bytes]:
    res = root / "reports" / "evaluations"
    return {p.name: p.read_bytes() for p in sorted(res.iterdir()) if p.is_file()}


def _masked(data: bytes, stamp: str) -> bytes:
    return data.replace(stamp.encode(), b"<generated_at>")


def test_two_runs_give_identical_json_notebooks_and_site(tmp_path, example_data, monkeypatch):
    root = _tiny_project(tmp_path / "p", example_data)
    spec = [root / "parameters" / "evaluations" / "tiny-fte.yaml"]
    assert run(spec, root=root, echo=lambda s: None).ok
    first = _outputs(root)
    stamp1 = json.loads(first["tiny-fte.json"])["provenance"]["generated_at"]
    import time

    time.sleep(1.1)  # a different wall-clock second: the declared timestamp differs
    assert run(spec, root=root, force=True, echo=lambda s: None).ok
    second = _outputs(root)
    stamp2 = json.loads(second["tiny-fte.json"])["provenance"]["generated_at"]
    assert stamp1 != stamp2 and set(first) == set(second)
    for name in first:
        assert _masked(first[name], stamp1) == _masked(second[name], stamp2), name
    nb = nbformat.reads(second["tiny-fte.ipynb"].decode(), as_version=4)
    text = second["tiny-fte.ipynb"].decode()
    assert str(tmp_path) in text  # the project's own paths are inputs, but no temporary ones:
    assert ".sveval-work-" not in text and "/tmp/tmp" not in text
    assert [c.id for c in nb.cells][:3] == ["its-00", "its-01", "injected-parameters"]
    assert not any("execution" in c.metadata or "start_time" in c.metadata.get("papermill", {})
                   for c in nb.cells)

    # with SOURCE_DATE_EPOCH, byte-identical: result, notebook and the published site
    from sveval.publish.site import publish

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780000000")
    sites = []
    for _ in range(2):
        assert run(spec, root=root, force=True, echo=lambda s: None).ok
        publish(root / "reports", quarto=None)
        site = root / "reports" / "_site"
        sites.append((_outputs(root), {str(p.relative_to(site)): p.read_bytes()
                                       for p in sorted(site.rglob("*")) if p.is_file()}))
    assert sites[0][0] == sites[1][0]
    assert sites[0][1].keys() == sites[1][1].keys()
    differ = [k for k in sites[0][1] if sites[0][1][k] != sites[1][1][k]]
    assert differ == []
    assert json.loads(sites[0][0]["tiny-fte.json"])["provenance"]["generated_at"] == "2026-05-28T20:26:40Z"


def test_normalise_makes_styler_ids_addresses_and_timings_stable():
    def executed(uid: str, addr: str) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("df.style", id="c-1")
        cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
        cell.metadata["papermill"] = {"start_time": "x", "end_time": "y", "duration": 1.0,
                                      "status": "completed", "exception": False}
        cell.outputs = [nbformat.v4.new_output("display_data", data={
            "text/html": f'<style>#T_{uid}_row0_col0 {{}}</style><table id="T_{uid}">',
            "text/plain": f"<pandas.io.formats.style.Styler at {addr}>"})]
        injected = nbformat.v4.new_code_cell("x = 1")
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells = [cell, injected]
        nb.metadata["papermill"] = {"start_time": "a", "end_time": "b", "duration": 2.0,
                                    "output_path": "/out/.work-1/x.ipynb"}
        return normalise(nb, {"/out/.work-1": "/out"})

    a, b = executed("a1b2c", "0x7f3a2b1c0d90"), executed("9f8e7", "0x7f00deadbeef")
    assert nbformat.writes(a) == nbformat.writes(b)
    html = a.cells[0].outputs[0].data["text/html"]
    assert "T_a1b2c" not in html and html.count(html.split('id="')[1][:7]) == 2  # style and table agree
    assert "0x0" in a.cells[0].outputs[0].data["text/plain"]
    assert a.cells[1].id == "injected-parameters"
    assert a.metadata.papermill == {"output_path": "/out/x.ipynb"}


def test_returns_workbook_is_byte_identical(tmp_path):
    import pandas as pd

    from sveval.publish.returns import _write_xlsx

    sheets = [("Headline", pd.DataFrame({"measure": ["a", "b"], "value": [1.5, 2.25]}))]
    _write_xlsx(tmp_path / "a.xlsx", sheets, "Returns", "2026-04-01T00:00:00Z")
    import time

    time.sleep(1.1)
    _write_xlsx(tmp_path / "b.xlsx", sheets, "Returns", "2026-04-01T00:00:00Z")
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "a.xlsx")
    assert wb.properties.created.isoformat().startswith("2026-04-01T00:00:00")
    assert wb["Headline"]["B3"].value == 2.25


POISSON = """
import hashlib, sys
import numpy as np, pandas as pd
from sveval.designs.did_panel import make_panel
from sveval.designs.did_estimators import poisson_fe
from sveval.periods import period_from_index
from sveval.spec import period_index
rng = np.random.default_rng(7)
rows = []
b = period_index("2018-01")
for u in range(12):
    base = rng.uniform(3, 30)
    for t in range(36):
        eff = 0.8 if (u < 4 and t >= 24) else 1.0
        rows.append({"unit": f"u{u:02d}", "period": period_from_index(b + t),
                     "count": rng.poisson(base * eff * (1 + 0.1 * np.sin(t))), "pop": 1000.0 + 50 * u})
f = pd.DataFrame(rows)
panel = make_panel(f, {f"u{u:02d}": period_from_index(b + 24) for u in range(4)}, population="pop",
                   outcome="count", unit_kind="area")
fit = poisson_fe(panel)
print(repr(fit.coef), repr(fit.se), hashlib.sha256(np.asarray(fit.fitted).tobytes()).hexdigest())
"""


def test_poisson_fixed_effects_did_is_identical_across_processes():
    import os

    outs = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        p = subprocess.run([sys.executable, "-c", POISSON], capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.add(p.stdout.strip())
    assert len(outs) == 1, outs
