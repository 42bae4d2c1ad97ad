"""Disclosure attacks: an outsider reading the published files tries to rebuild suppressed counts.

Each attack runs on the built-in example and on a second dataset with many small counts (the
example's hospital admissions thinned to about a third, so most months are 1-7). An attack
"succeeds" when it pins a suppressed value; every attack must fail on what is published, and the
record-level attack is shown to succeed on the uncontrolled result (so the test can fail).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_project, small_counts_copy

from sveval.pipeline.api import build_record, fit, prepare
from sveval.pipeline.disclosure import load_rules, scan_published
from sveval.pipeline.tracking import track

EVAL = "focused-deterrence-admissions-cits"


@pytest.fixture(scope="module", params=["example", "small_counts"])
def project(request, tmp_path_factory, example_data):
    tmp = tmp_path_factory.mktemp(request.param)
    data = example_data if request.param == "example" else small_counts_copy(example_data, tmp / "data-small")
    return make_project(tmp / "project", data)


@pytest.fixture(scope="module")
def evaluation(project):
    ctx = prepare(project / "parameters" / "evaluations" / f"{EVAL}.yaml")
    result = fit(ctx)
    record = build_record(ctx, result).to_json()
    out = project / "reports" / "evaluations"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{EVAL}.json").write_text(json.dumps(record))
    return ctx, result, record


def _treated(series: dict | pd.DataFrame, col: str) -> np.ndarray:
    df = pd.DataFrame(series)
    if "group" in df.columns:
        df = df[df["group"] == "treated"]
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _numeric_arrays(obj, n: int, path: str = ""):
    """Every numeric array of length ``n`` anywhere in a JSON document (candidate residuals)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numeric_arrays(v, n, f"{path}.{k}")
    elif isinstance(obj, list):
        if len(obj) == n and all(isinstance(x, int | float) or x is None for x in obj) and any(
                isinstance(x, int | float) for x in obj):
            yield path, np.array([np.nan if x is None else x for x in obj], dtype=float)
        else:
            for i, v in enumerate(obj):
                if isinstance(v, dict | list):
                    yield from _numeric_arrays(v, n, f"{path}[{i}]")


def _best_residual_attack(doc: dict, fitted: np.ndarray, truth: np.ndarray, target: np.ndarray,
                          scale: float) -> tuple[float, str]:
    """Share of target months recovered exactly by fitted + r * sqrt(scale * fitted) (or + r)."""
    best, how = 0.0, "none"
    for path, r in _numeric_arrays(doc, len(fitted)):
        for name, guess in (("pearson", fitted + r * np.sqrt(fitted)),
                            ("pearson*phi", fitted + r * np.sqrt(scale * fitted)),
                            ("response", fitted + r)):
            hit = np.mean(np.round(guess[target]) == truth[target])
            if hit > best:
                best, how = float(hit), f"{path} ({name})"
    return best, how


def test_fitted_plus_residuals_attack(evaluation):
    ctx, result, record = evaluation
    truth = _treated(result.series, "observed")
    fitted = _treated(result.series, "fitted")
    published = _treated(record["series"], "observed")
    target = np.isnan(published) & (truth >= 1)
    assert target.sum() >= 10  # many suppressed months to attack
    scale = float(result.details.get("scale") or 1.0)
    # the attack works on the uncontrolled result (what the issue found: every month recovered)
    raw = {"diagnostics": [c.to_dict() if hasattr(c, "to_dict") else c.__dict__ for c in result.diagnostics]}
    hit_raw, _ = _best_residual_attack(json.loads(json.dumps(raw, default=str)), fitted, truth, target, scale)
    assert hit_raw > 0.95
    # ... and not on the published record: no better than rounding the model's fitted value
    pub_fitted = _treated(record["series"], "fitted")
    baseline = float(np.mean(np.round(pub_fitted[target]) == truth[target]))
    hit, how = _best_residual_attack(record, pub_fitted, truth, target, scale)
    assert hit <= baseline + 0.05, f"{how} recovers {hit:.0%} of suppressed months"
    assert baseline < 0.5
    assert record["disclosure_control"]["withheld"]


def test_published_record_passes_the_scanner(evaluation, project):
    rules = load_rules(project / "parameters")
    assert scan_published([project / "reports" / "evaluations"], rules=rules) == []
    # the scanner finds the residuals if they are put back
    _, result, record = evaluation
    bad = json.loads(json.dumps(record))
    bad["diagnostics"][0]["data"]["residuals"] = [0.5] * 132
    path = project / "bad.json"
    path.write_text(json.dumps(bad))
    assert any("per-period array" in f for f in scan_published([path], rules=rules))
    path.unlink()


def test_figure_data_is_controlled(evaluation):
    """The published figure is drawn from the controlled record (narrative.published_series)."""
    from sveval.pipeline.record import ResultRecord
    from sveval.report.narrative import published_series

    ctx, result, record = evaluation
    fig = published_series(ResultRecord.model_validate(record))
    obs = fig["observed"].dropna().to_numpy()
    assert not ((obs >= 1) & (obs <= 7)).any() and (obs % 5 == 0).all()
    assert set(fig.columns) <= {"period", "observed", "fitted", "counterfactual", "cf_low", "cf_high", "post",
                                "group"}


# ------------------------------------------------------------------------------------------------
# Tables: tracking
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracking(project):
    rules = load_rules(project / "parameters")
    tr = track(project / "parameters" / "tracking" / "partnership.yaml", root=project)
    return tr, tr.published(rules), rules


def _hospital(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["disclosure"] == "hospital") & df["area_type"].isin(["partnership", "area"])]


def test_rates_times_populations_give_only_rounded_counts(tracking):
    tr, pub, rules = tracking
    m = _hospital(pub["monthly"])
    assert len(m)
    raw = tr.monthly.set_index(["measure", "area_code", "period"])["count"]
    for _, row in m.iterrows():
        if row["count"] == "*":
            assert row["rate"] == "*"
            continue
        if pd.isna(row["count"]):  # withheld: a breakdown of a suppressed small total
            assert pd.isna(row["rate"])
            continue
        back = float(row["rate"]) * float(row["population"]) / float(row["rate_per"])
        assert back == pytest.approx(float(row["count"]), abs=1e-6)  # the rounded count, no more
        true = raw[(row["measure"], row["area_code"], row["period"])]
        assert float(row["count"]) % 5 == 0 or true == 0


# ------------------------------------------------------------------------------------------------
# Model estimates: exact totals from a Poisson GLM's score equations, with every published table
# ------------------------------------------------------------------------------------------------
def test_fitted_totals_with_the_tables_attack(evaluation, project, tmp_path):
    """A Poisson GLM's score equations make the fitted values sum to the observed counts over the
    rows of each indicator column: without AR (the low-count default, quasi-Poisson) the published
    fitted values give each group's exact total over the analysed months. The attacker adds those
    totals to the linear system of every tracking table (months, quarters, years, SPC points;
    tests/test_disclosure_tables.py) and the record's observed series: no suppressed count may be
    narrowed. With AR(1) (GLS-IRLS, the example's default) the sums are not exact and are not used.
    The observed series controlled month by month (no shared plan) is shown to narrow some on the
    example, so the attack can succeed."""
    from test_disclosure_tables import _project, breaches, publish_all

    from sveval.pipeline.disclosure import control_record
    from sveval.pipeline.tracking import project_plan

    ctx, result, record = evaluation
    rules = load_rules(project / "parameters")
    raw = pd.DataFrame(result.series)
    fitted = pd.DataFrame(record["series"])
    iid = int(result.details.get("ar_order") or 0) == 0
    # the tracking tables of the hospital measures (a copy of the project tracking only those)
    tables = _project(tmp_path, (project / "data" / "example").resolve())
    reader, _ = publish_all(tables, tmp_path / "out", returns=False)
    attack = reader.attack
    units = {"treated": reader.areas, "comparison": ["COMPARISON"]}
    assert sorted(record["area"]) == sorted(reader.areas)
    for g, us in units.items():
        months = list(fitted.loc[fitted["group"] == g, "period"].astype(str))
        atoms = attack.atoms("knife_admissions", us, months)
        total = float(pd.to_numeric(fitted.loc[fitted["group"] == g, "fitted"]).sum())
        true = float(raw.loc[raw["group"] == g, "observed"].sum())
        assert true == sum(attack.truth[a] for a in atoms)  # the record's series is these cells
        if iid:
            assert total == pytest.approx(true, abs=1e-6)  # the exact total leaks from the fit
            attack.add(atoms, total - 1e-6, total + 1e-6, f"its fitted total {g}")
    plan = project_plan(project / "parameters", rules, "knife_admissions")
    uncontrolled = {**record, "series": {**record["series"], "observed": list(raw["observed"])}}
    published = control_record(uncontrolled, rules, plan=plan)["series"]
    # build_record publishes exactly these (the plan of the project's tracking report)
    assert record["series"]["observed"] == published["observed"]
    assert any(v is not None for v in published["observed"])
    monthwise = [None if rules.rule("hospital").suppresses(v) else rules.rule("hospital").round(v)
                 for v in raw["observed"]]
    attacks = {}
    variants = [("plan", published["observed"])]
    if "example" in str(project):  # where month-by-month control is shown to be attackable
        variants.append(("month by month", monthwise))
    for name, shown in variants:
        extra = []
        for g, p, v, t in zip(raw["group"], raw["period"].astype(str), shown, raw["observed"],
                              strict=True):
            atoms = attack.atoms("knife_admissions", units[g], [p])
            extra.append((atoms, "*" if v is None else v, 1 <= t <= 7, f"record {name} {g} {p}"))
        n_rows, n_targets = len(attack.rows), dict(attack.targets)
        for atoms, v, primary, label in extra:
            attack.cell(atoms, v, round_to=5, primary=primary, label=label)
        assert attack.feasible_truth() == []
        attacks[name] = breaches(attack.run())
        del attack.rows[n_rows:]
        attack.targets = n_targets
    assert attacks["plan"] == {}, list(attacks["plan"].items())[:5]
    if "month by month" in attacks:
        assert len(attacks["month by month"]) > 0
