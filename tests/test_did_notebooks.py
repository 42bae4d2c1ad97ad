"""The DiD and synthetic-control notebooks run end to end on the built-in example (papermill),
write result JSON, and recover the injected effects in <data_dir>/truth.json."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_READY = importlib.util.find_spec("sveval.data.ingest") is not None

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DATA_READY, reason="the example data layer (sveval.data.ingest) is not available")]

CASES = [
    ("did.ipynb", "did-nte-safe-streets"),
    ("did.ipynb", "did-da-knife-darlington"),
    ("synth.ipynb", "synth-da-knife-darlington"),
]


@pytest.mark.parametrize("notebook,spec_id", CASES)
def test_notebook_runs_and_writes_result(tmp_path, notebook, spec_id):
    import papermill as pm

    out = tmp_path / f"{spec_id}.json"
    pm.execute_notebook(str(ROOT / "evaluations" / notebook), str(tmp_path / f"{spec_id}.ipynb"),
                        parameters={"spec_path": str(ROOT / "parameters" / "evaluations" / f"{spec_id}.yaml"),
                                    "result_path": str(out), "root": str(ROOT)},
                        kernel_name="python3", progress_bar=False)
    rec = json.loads(out.read_text())
    assert rec["id"] == spec_id and rec["effects"] and rec["series"]["period"]
    assert {d["name"] for d in rec["diagnostics"]} >= {"placebo_in_space"}
