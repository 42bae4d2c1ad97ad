"""The DiD and synthetic-control notebooks run end to end on the built-in example (papermill),
write result JSON, and recover the injected effects in <data_dir>/truth.json."""

import json

import pytest

pytestmark = pytest.mark.slow

CASES = [
    ("did.ipynb", "did-nte-safe-streets"),
    ("did.ipynb", "did-da-knife-darlington"),
    ("synth.ipynb", "synth-da-knife-darlington"),
]


@pytest.mark.parametrize("notebook,spec_id", CASES)
def test_notebook_runs_and_writes_result(project, example_data, notebook, spec_id):
    import papermill as pm

    out = project / "reports" / "evaluations" / f"{spec_id}.json"
    pm.execute_notebook(str(project / "evaluations" / notebook), str(project / "reports" / f"{spec_id}.ipynb"),
                        parameters={"spec_path": str(project / "parameters" / "evaluations" / f"{spec_id}.yaml"),
                                    "result_path": str(out), "root": str(project)},
                        kernel_name="python3", progress_bar=False, cwd=str(project))
    rec = json.loads(out.read_text())
    assert rec["id"] == spec_id and rec["effects"] and rec["series"]["period"]
    assert {d["name"] for d in rec["diagnostics"]} >= {"placebo_in_space"}
    assert rec["evidence"]["level"] in (2, 3)
    truth = json.loads((example_data / "truth.json").read_text())
    iv = next(i for i in truth["interventions"] if i["id"] == rec["intervention"])
    rr = next(e["rate_ratio"] for e in iv["effects"] if e["measure"] == rec["measure"] and e["primary"])
    # the effect on the truth's scale: a rate ratio, or a percent change
    eff = next((e for e in rec["effects"] if e["scale"] == "rate_ratio"), None)
    if eff is not None:
        assert eff["ci_low"] <= rr <= eff["ci_high"]
    else:
        eff = next(e for e in rec["effects"] if e["scale"] == "percent_change")
        assert eff["ci_low"] <= 100 * (rr - 1) <= eff["ci_high"]
