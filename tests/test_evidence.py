"""Maryland Scientific Methods Scale levels from designs and checks."""

from __future__ import annotations

from sveval.pipeline.evidence import assess

ITS_OK = [{"name": "autocorrelation", "passed": True}, {"name": "overdispersion", "passed": True},
          {"name": "placebo_in_time", "passed": True}]


def test_single_series_its_is_level_2():
    ev = assess({"design": "its", "comparison": [], "diagnostics": ITS_OK})
    assert ev["level"] == 2 and "Single-series" in ev["reason"] and ev["label"].startswith("Level 2")


def test_its_with_failed_or_missing_placebo_is_level_1():
    failed = ITS_OK[:2] + [{"name": "placebo_in_time", "passed": False}]
    ev = assess({"design": "its", "diagnostics": failed})
    assert ev["level"] == 1 and "placebo" in ev["reason"]
    ev = assess({"design": "its", "diagnostics": []})
    assert ev["level"] == 1 and "no placebo-in-time check" in ev["reason"] and "autocorrelation" in ev["reason"]


def test_controlled_its_needs_pre_trends():
    rec = {"design": "its", "comparison": ["E06000001"], "diagnostics": ITS_OK + [{"name": "pre_trend", "passed": True}]}
    assert assess(rec)["level"] == 3
    rec["diagnostics"] = ITS_OK
    assert assess(rec)["level"] == 2


def test_did_levels():
    base = {"design": "did", "comparison": ["E06000001"]}
    assert assess({**base, "diagnostics": [{"name": "pre_trend", "passed": True}]})["level"] == 3
    assert assess({**base, "diagnostics": [{"name": "pre_trend", "passed": False}]})["level"] == 2
    missing = assess({**base, "diagnostics": []})
    assert missing["level"] == 2 and "without a recorded pre-trend" in missing["reason"]
    spatial = assess({**base, "diagnostics": [{"name": "pre_trend", "passed": True},
                                              {"name": "placebo_in_space", "passed": False}]})
    assert spatial["level"] == 2 and "placebo tests in untreated areas" in spatial["reason"]


def test_synth_levels():
    assert assess({"design": "synth", "diagnostics": [{"name": "pre_fit", "passed": True}]})["level"] == 3
    assert assess({"design": "synth", "diagnostics": [{"name": "pre_fit", "passed": False}]})["level"] == 2
    assert assess({"design": "synth"})["level"] == 2


def test_assignment_and_failures():
    rec = {"design": "did", "comparison": ["x"], "diagnostics": [{"name": "pre_trend", "passed": True}],
           "details": {"assignment": "randomised"}}
    assert assess(rec)["level"] == 5
    rec["details"] = {"assignment": "quasi_random"}
    assert assess(rec)["level"] == 4
    assert assess({"design": "its", "status": "failed"})["level"] == 1
    assert assess({})["level"] == 1
