"""The runner: papermill execution, result JSON, caching, failure isolation, plain papermill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sveval.cli import main
from sveval.pipeline.runner import run

pytestmark = pytest.mark.slow

SPEC = "youth-navigators-fte-its"
REQUIRED = {"id", "title", "design", "measure", "area", "intervention_start", "effects", "prevented",
            "warnings", "provenance"}


def _quick(project: Path, eid: str = SPEC, new_id: str | None = None) -> Path:
    """A copy of a repository spec with few power simulations, so the notebook runs fast."""
    import yaml

    src = project / "parameters" / "evaluations" / f"{eid}.yaml"
    data = yaml.safe_load(src.read_text())
    data.setdefault("its", {})["power_sims"] = 40
    if new_id:
        data["id"] = new_id
    dest = project / "parameters" / "evaluations" / f"{data['id']}.yaml"
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _plant_failure(project: Path) -> None:
    nb_path = project / "evaluations" / "its.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell(
        'if "boom" in str(spec_path):\n    raise RuntimeError("planted failure for the test")'))
    nbformat.write(nb, nb_path)


def test_run_writes_notebook_and_result_json(project, capsys):
    spec = _quick(project)
    rc = main(["--root", str(project), "run", str(spec)])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = project / "reports" / "evaluations"
    record = json.loads((res / f"{SPEC}.json").read_text())
    assert REQUIRED <= set(record)
    assert record["status"] == "completed" and record["design"] == "its"
    assert record["area"] == ["E06000047"] and record["measure"] == "fte_youth"
    for e in record["effects"]:
        assert {"name", "scale", "estimate", "ci_low", "ci_high", "p_value"} <= set(e)
        assert e["ci_low"] <= e["estimate"] <= e["ci_high"]
    assert set(record["prevented"]) >= {"estimate", "ci_low", "ci_high"}
    prov = record["provenance"]
    assert prov["parameters"]["id"] == SPEC and prov["sveval_version"] and prov["data_sha256"]
    nb = nbformat.read(res / f"{SPEC}.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # main figure and diagnostics
    # Unchanged inputs: the second run is served from the cache.
    rc = main(["--root", str(project), "run", str(spec)])
    assert rc == 0 and "cached" in capsys.readouterr().out


def test_failed_notebook_is_kept_and_others_go_on(project):
    _plant_failure(project)
    good = _quick(project)
    bad = _quick(project, new_id="boom-fte-its")
    report = run([good, bad], root=project, echo=lambda s: None)
    status = {o.id: o.status for o in report.outcomes}
    assert status == {SPEC: "completed", "boom-fte-its": "failed"}
    assert not report.ok
    res = project / "reports" / "evaluations"
    failed = json.loads((res / "boom-fte-its.json").read_text())
    assert failed["status"] == "failed" and "planted failure" in failed["error"]
    # the failing cell is named: its position, id and first line, and the exception
    assert failed["failure"] == {
        "cell": 4, "cell_id": failed["failure"]["cell_id"], "first_line": 'if "boom" in str(spec_path):',
        "exception": "RuntimeError", "message": "planted failure for the test", "dead_kernel": False}
    assert failed["error"].startswith('cell 4 (') and "RuntimeError: planted failure" in failed["error"]
    nb = nbformat.read(res / "boom-fte-its.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert json.loads((res / f"{SPEC}.json").read_text())["status"] == "completed"


def test_earlier_results_survive_a_failed_rerun(project):
    good = _quick(project, new_id="boom-later")
    assert run([good], root=project, echo=lambda s: None).ok
    res = project / "reports" / "evaluations"
    first = json.loads((res / "boom-later.json").read_text())
    assert first["status"] == "completed"
    _plant_failure(project)
    for _ in range(2):  # two failed runs in a row still leave the last good pair
        assert not run([good], root=project, force=True, echo=lambda s: None).ok
        kept = project / "reports" / ".sveval" / "last-good" / "boom-later.json"
        assert json.loads(kept.read_text())["effects"] == first["effects"]
        assert (kept.parent / "boom-later.ipynb").exists()
        failed = json.loads((res / "boom-later.json").read_text())
        assert failed["status"] == "failed"
        assert failed["last_good"]["generated_at"] == first["provenance"]["generated_at"]
        assert failed["failure"]["exception"] == "RuntimeError"
        assert failed["failure"]["first_line"].startswith('if "boom" in str(spec_path)')
    # the site shows the failure beside the last good report and its date
    from sveval.publish.records import load_evaluations, verdict_text

    (rec,), _ = load_evaluations(res)
    assert not rec.failed and rec.notebook_path == kept.parent / "boom-later.ipynb"
    text = verdict_text(rec)
    assert "latest run" in text and "planted failure" in text and first["provenance"]["generated_at"] in text
    from sveval.publish.site import publish

    publish(project / "reports", quarto=None)
    page = (project / "reports" / "_site" / "evaluations" / "boom-later.html").read_text()
    assert "latest run of this evaluation" in page and "planted failure" in page
    assert first["provenance"]["generated_at"] in page
    # a good run replaces the kept pair
    nb = nbformat.read(project / "evaluations" / "its.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "planted failure" not in c.source]
    nbformat.write(nb, project / "evaluations" / "its.ipynb")
    assert run([good], root=project, echo=lambda s: None).ok
    assert not kept.exists()


def test_cli_exit_code_when_an_evaluation_fails(project, capsys):
    _plant_failure(project)
    bad = _quick(project, new_id="boom-exit")
    rc = main(["--root", str(project), "run", str(bad)])
    assert rc == 1
    assert "FAILED" in capsys.readouterr().out


def test_plain_papermill_with_parameter_file(project, tmp_path):
    spec = _quick(project)
    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(project / "evaluations" / "its.ipynb"), str(out),
           "-f", str(spec), "--cwd", str(project), "-k", "python3", "--no-progress-bar"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "first-time entrants" in text.lower()


def test_dead_kernel_is_reported_as_such(project, capsys):
    nb_path = project / "evaluations" / "its.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(5, nbformat.v4.new_code_cell(
        'import os, signal\nif "deadk" in str(spec_path):\n    os.kill(os.getpid(), signal.SIGKILL)'))
    nbformat.write(nb, nb_path)
    spec = _quick(project, new_id="deadk-fte-its")
    rc = main(["--root", str(project), "run", str(spec)])
    out = capsys.readouterr().out
    assert rc == 1 and "the kernel died" in out and "cell 6" in out, out
    res = project / "reports" / "evaluations"
    failed = json.loads((res / "deadk-fte-its.json").read_text())
    assert failed["failure"]["dead_kernel"] is True and failed["failure"]["cell"] == 6
    assert failed["failure"]["first_line"] == "import os, signal"
    executed = nbformat.read(res / "deadk-fte-its.ipynb", as_version=4)
    killing = next(c for c in executed.cells if c.source.startswith("import os, signal"))
    assert killing.metadata.papermill["status"] == "failed"  # not "completed"
    assert any(o.output_type == "error" and o.ename == "DeadKernelError" for o in killing.outputs)
    later = [c for c in executed.cells[executed.cells.index(killing) + 1:] if c.cell_type == "code"]
    assert all(c.metadata.papermill["status"] == "pending" for c in later)
