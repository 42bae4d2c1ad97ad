"""Each injected ITS effect of the built-in example is recovered within its interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from sveval.pipeline.api import fit, prepare
from sveval.spec import load_evaluation

pytestmark = pytest.mark.slow

ITS_SPECS = sorted(
    p.stem for p in (REPO / "parameters" / "evaluations").glob("*.yaml") if load_evaluation(p).design == "its"
)


def truth_for(truth: dict, intervention: str, measure: str, areas: list[str]) -> dict:
    for iv in truth["interventions"]:
        if iv["id"] != intervention:
            continue
        for eff in iv["effects"]:
            if eff["measure"] == measure and sorted(eff["areas"]) == sorted(areas):
                return eff
    raise LookupError(f"no injected truth for {intervention} on {measure} in {areas}")


@pytest.mark.parametrize("eid", ITS_SPECS)
def test_injected_effect_recovered(project, eid):
    ctx = prepare(project / "parameters" / "evaluations" / f"{eid}.yaml", root=project)
    # fewer power simulations: power is not what this test is about
    ctx.spec = ctx.spec.model_copy(update={"its": ctx.spec.its.model_copy(update={"power_sims": 50})})
    truth = json.loads((Path(ctx.data_dir) / "truth.json").read_text())
    eff = truth_for(truth, ctx.intervention.id, ctx.measure.id, ctx.treated)
    result = fit(ctx)
    level = result.effect("level_change")
    if level.scale == "rate_ratio":
        target = eff["rate_ratio"]
    else:
        # continuous models estimate a difference in events a month: the injected rate ratio
        # applied to the counterfactual once the effect is fully phased in
        s = result.series
        full = s[s["post"]].iloc[ctx.spec.its.phase_in_months :]
        target = (eff["rate_ratio"] - 1.0) * float(full["counterfactual"].mean())
    assert level.ci_low <= target <= level.ci_high, (
        f"{eid}: injected {target:.3f} outside {level.ci_low:.3f}-{level.ci_high:.3f} "
        f"(estimate {level.estimate:.3f})"
    )
    if eff["null"]:
        assert not level.significant or level.p_value > 0.01
    elif result.power is not None and not result.power.underpowered:
        # a real, detectable effect should be detected in the right direction
        assert level.estimate < level.null_value
