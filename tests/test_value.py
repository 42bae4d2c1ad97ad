"""Value for money: prevented offences x uprated unit costs against uprated cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sveval.errors import SpecError
from sveval.periods import financial_year
from sveval.pipeline.value import (
    Deflators,
    assess,
    assess_with_reason,
    load_tables,
    unit_cost,
)
from sveval.report.prose import value_paragraph as summary_text
from sveval.spec import InterventionSpec, MeasureSpec

REPO = Path(__file__).resolve().parents[1]
PDIR = REPO / "parameters"

KNIFE = MeasureSpec(id="knife_crime", name="Knife crime", description="d", source="force_extract",
                    cost_category="violence_with_injury")
FTE = MeasureSpec(id="fte_youth", name="First-time entrants", description="d", source="youth_justice")
IV = InterventionSpec(id="fd", title="Focused deterrence", priority=3, areas=["E06000047"], start="2024-01",
                      cost_gbp=250000, cost_price_year="2024/25", measures=["knife_crime"])
REC = {"prevented": {"estimate": 40.0, "ci_low": -5.0, "ci_high": 80.0, "months": 27},
       "period": {"start": "2019-04", "end": "2026-03"}}


def test_tables_have_source_and_price_year():
    costs, defl = load_tables(PDIR)
    assert costs.price_year == "2015/16" and "Research Report 99" in costs.source
    assert costs.categories["violence_with_injury"].unit_cost_gbp == 14050
    assert costs.categories["homicide"].unit_cost_gbp == pytest.approx(3.2e6, rel=0.02)
    assert defl.index[defl.base_year] == 100
    assert defl.factor("2015/16", "2015/16") == 1


def test_uprating_hand_worked():
    _, defl = load_tables(PDIR)
    uc = unit_cost("violence_with_injury", "2025/26", PDIR)
    f = defl.index["2025/26"] / defl.index["2015/16"]
    assert uc["unit_cost_gbp"] == pytest.approx(14050 * f)
    assert uc["price_year"] == "2025/26"


def test_assess_hand_worked():
    _, defl = load_tables(PDIR)
    v = assess(REC, IV, KNIFE, reporting_year="2025/26", parameters_dir=PDIR)
    u = 14050 * defl.index["2025/26"] / defl.index["2015/16"]
    cost = 250000 * defl.index["2025/26"] / defl.index["2024/25"]
    assert v["unit_cost_gbp"] == pytest.approx(u)
    assert v["benefit_gbp"] == pytest.approx(40 * u)
    assert (v["benefit_ci_low"], v["benefit_ci_high"]) == (pytest.approx(-5 * u), pytest.approx(80 * u))
    assert v["cost_gbp"] == pytest.approx(cost) and v["net_gbp"] == pytest.approx(40 * u - cost)
    assert v["bcr"] == pytest.approx(40 * u / cost)
    assert v["bcr_ci_low"] < 0 < v["bcr_ci_high"]
    text = " ".join(v["caveats"])
    assert "includes zero" in text and "not a cashable saving" in text and "illustrative" in text
    assert "2025/26" in summary_text(v)


def test_default_reporting_year_from_period_end():
    v = assess(REC, IV, KNIFE, parameters_dir=PDIR)
    assert financial_year("2026-03") == "2025/26" and v["price_year"] == "2025/26"


def test_not_computable_cases_give_reasons():
    v, why = assess_with_reason(REC, IV, FTE, parameters_dir=PDIR)
    assert v is None and "no cost category" in why
    v, why = assess_with_reason({"prevented": None}, IV, KNIFE, parameters_dir=PDIR)
    assert v is None and "prevented" in why
    assert assess(REC, IV, FTE, parameters_dir=PDIR) is None
    nocost = IV.model_copy(update={"cost_gbp": None})
    v = assess(REC, nocost, KNIFE, reporting_year="2025/26", parameters_dir=PDIR)
    assert v["bcr"] is None and v["cost_gbp"] is None and v["benefit_gbp"] > 0


def test_bad_deflator_file(tmp_path):
    (tmp_path / "deflators.yaml").write_text(yaml.safe_dump({"source": "s", "release": "r", "base_year": "2023/24",
                                                             "index": {"2015-16": 80}}))
    (tmp_path / "costs_of_crime.yaml").write_text((PDIR / "costs_of_crime.yaml").read_text())
    with pytest.raises(SpecError, match="2015-16"):
        load_tables(tmp_path)
    with pytest.raises(KeyError, match="no GDP deflator"):
        Deflators(source="s", release="r", base_year="2023/24", index={"2023/24": 100}).factor("2015/16", "2023/24")


def test_edited_cost_table_is_read_again(tmp_path):
    """No stale costs in a running kernel: the cache is keyed on the files' modification stamps."""
    import os
    import shutil

    import yaml

    for f in ("costs_of_crime.yaml", "deflators.yaml"):
        shutil.copy(PDIR / f, tmp_path / f)
    costs, _ = load_tables(tmp_path)
    cat = sorted(costs.categories)[0]
    before = costs.categories[cat].unit_cost_gbp
    path = tmp_path / "costs_of_crime.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["categories"][cat]["unit_cost_gbp"] = before * 2
    path.write_text(yaml.safe_dump(doc))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    again, _ = load_tables(tmp_path)
    assert again.categories[cat].unit_cost_gbp == pytest.approx(2 * before)


def _with_effect(scale, est, lo, hi):
    return {**REC, "effects": [{"name": "average_post_effect", "scale": scale, "estimate": est,
                                "ci_low": lo, "ci_high": hi}]}


@pytest.mark.parametrize("scale,est,lo,hi", [
    ("rate_ratio", 0.9, 0.7, 1.1),          # interval includes 1
    ("rate_ratio", 0.9, 0.7, None),         # open upper bound (profile likelihood): unbounded
    ("difference", -64.4, -130.0, 2.0),     # interval includes 0
    ("percent_change", 5.0, -3.0, 12.0),
])
def test_value_not_assessed_when_effect_unclear(scale, est, lo, hi):
    from sveval.pipeline.value import EFFECT_UNCLEAR
    from sveval.report.prose import value_for_money_text

    v, why = assess_with_reason(_with_effect(scale, est, lo, hi), IV, KNIFE, parameters_dir=PDIR)
    assert v is None and why.startswith(EFFECT_UNCLEAR)
    assert value_for_money_text(None, reason=why) == "Not assessed: effect unclear"
    assert value_for_money_text(None, reason=why, long=True).startswith("Not assessed: effect unclear (")
    assert summary_text(None, why).startswith("Value for money is not assessed: effect unclear")


def test_value_assessed_when_interval_excludes_no_change():
    v, why = assess_with_reason(_with_effect("rate_ratio", 0.8, 0.7, 0.95), IV, KNIFE, parameters_dir=PDIR)
    assert why is None and v["bcr"] > 0
    v, why = assess_with_reason(_with_effect("rate_ratio", 1.3, 1.1, 1.5), IV, KNIFE, parameters_dir=PDIR)
    assert why is None  # a clear harm is assessed too (its benefit is negative)
