"""The DiD and synthetic-control example evaluations, run through the real entry point
(prepare -> fit), recover the effects injected into the built-in example (<data_dir>/truth.json)
within their headline intervals, with honest single-treated-area inference and meaningful checks."""

from __future__ import annotations

import json
import math

import pytest

from sveval.pipeline.api import build_record as result_record
from sveval.pipeline.api import fit, prepare

pytestmark = pytest.mark.slow


def _truth(data_dir, intervention: str, measure: str) -> float:
    t = json.loads((data_dir / "truth.json").read_text())
    iv = next(i for i in t["interventions"] if i["id"] == intervention)
    return next(e["rate_ratio"] for e in iv["effects"] if e["measure"] == measure and e["primary"])


def _run(project, spec_id):
    ctx = prepare(project / "parameters" / "evaluations" / f"{spec_id}.yaml", root=project)
    return ctx, fit(ctx)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, example_data):
    from conftest import make_project

    project = make_project(tmp_path_factory.mktemp("did-example") / "project", example_data)
    out = {}
    for spec_id in ("did-da-knife-darlington", "did-nte-safe-streets", "synth-da-knife-darlington",
                    "synth-focused-deterrence-durham"):
        ctx, res = _run(project, spec_id)
        out[spec_id] = (ctx, res, result_record(ctx, res).to_json())
    return out


def test_da_knife_poisson_did_covers_truth_with_time_permutation_inference(runs, example_data):
    ctx, res, rec = runs["did-da-knife-darlington"]
    truth = _truth(example_data, ctx.intervention.id, ctx.measure.id)
    h = res.headline
    assert h.scale == "rate_ratio"
    assert h.ci_low <= truth <= h.ci_high, (h.estimate, h.ci_low, h.ci_high, truth)
    assert h.ci_low <= h.estimate <= h.ci_high
    assert res.details["inference"] == "time_permutation" and "Chernozhukov" in res.method
    # the honest interval is much wider than the (anti-conservative) cluster-robust one
    c_lo, c_hi = (math.exp(x) for x in res.details["cluster_interval"])
    assert math.log(h.ci_high / h.ci_low) > 2 * math.log(c_hi / c_lo)
    assert res.check("pre_trend").passed is True
    assert res.check("placebo_in_time").passed is True
    assert rec["evidence"]["level"] == 3
    if h.significant is False:  # an interval including no change must come with its power statement
        assert res.power.mde is not None and res.power.underpowered


def test_nte_staggered_did_uses_comparable_lsoas_and_covers_truth(runs, example_data):
    ctx, res, rec = runs["did-nte-safe-streets"]
    truth = _truth(example_data, ctx.intervention.id, ctx.measure.id)
    cohorts = {c.start for c in ctx.intervention.cohorts}
    assert set(res.details["cohorts"]) == cohorts
    comp = res.details["comparison_units"]
    assert len(comp) == 11 and not set(comp) & set(ctx.intervention.lsoas)
    rr = res.effect("Rate ratio implied by the overall ATT (observed / counterfactual events)")
    assert rr.ci_low <= truth <= rr.ci_high, (rr.estimate, rr.ci_low, rr.ci_high, truth)
    h = res.headline
    assert h.ci_low <= h.estimate <= h.ci_high and h.estimate < 0
    assert res.check("pre_trend").passed is True
    assert res.check("balance").passed is True
    assert abs(res.check("balance").statistic) < 2
    assert rec["evidence"]["level"] == 3


def test_synth_da_knife_covers_truth_and_reports_fit_honestly(runs, example_data):
    ctx, res, rec = runs["synth-da-knife-darlington"]
    truth = _truth(example_data, ctx.intervention.id, ctx.measure.id)
    pct = res.effect("Percent change against the synthetic control")
    assert pct.ci_low <= 100 * (truth - 1) <= pct.ci_high, (pct.estimate, pct.ci_low, pct.ci_high, truth)
    assert "conformal" in res.method and res.details["smooth_months"] == 12
    fit_check = res.check("pre_fit")
    # a poor fit must be flagged and lower the evidence level; a good one must raise it
    assert rec["evidence"]["level"] == (3 if fit_check.passed else 2)
    if not fit_check.passed:
        assert any("fits the pre-period poorly" in w for w in res.warnings)
    if not res.headline.significant:
        assert res.power.mde is not None


def test_synth_focused_deterrence_good_fit_recovers_truth(runs, example_data):
    ctx, res, rec = runs["synth-focused-deterrence-durham"]
    truth = _truth(example_data, ctx.intervention.id, ctx.measure.id)
    pct = res.effect("Percent change against the synthetic control")
    assert pct.ci_low <= 100 * (truth - 1) <= pct.ci_high, (pct.estimate, pct.ci_low, pct.ci_high, truth)
    assert res.check("pre_fit").passed
    assert rec["evidence"]["level"] == 3
    assert pct.ci_high < 0  # a 15% fall on ~200 events a month is detected


def test_comparison_lsoas_are_checked(project):
    from sveval.errors import SpecError

    spec = project / "parameters" / "evaluations" / "did-nte-safe-streets.yaml"
    text = spec.read_text().replace("E01900007, E01900008", "E01900001, E01999999")
    spec.write_text(text)
    with pytest.raises(SpecError) as err:  # refused at validation, before any model is fitted
        prepare(spec, root=project)
    msg = str(err.value)
    assert "comparison.lsoas.0" in msg and "treated LSOA" in msg and "E01999999" in msg
