"""Reference ITS results on monthly series, from the code before the ITS design learned quarters and
years (commit b5a4cee): tests/test_nonmonthly_designs.py checks that monthly fits are unchanged
to the last bit.

Run from the repository root (with that commit's ``src`` first on ``PYTHONPATH`` to regenerate):
    python tests/reference/its_monthly/make_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sveval.designs.its import fit_its
from sveval.spec import ITSOptions, add_months

OUT = Path(__file__).with_name("its_monthly_reference.json")


def series():
    rng = np.random.default_rng(3)
    n = 96
    periods = [add_months("2016-04", i) for i in range(n)]
    k = np.arange(n)
    mu = 30 * (1 + 0.2 * np.sin(2 * np.pi * k / 12)) * np.where(k >= 60, 0.8, 1.0)
    df = pd.DataFrame({"period": periods, "count": rng.poisson(mu), "population": 100_000.0})
    comp = pd.DataFrame({"period": periods, "count": rng.poisson(mu * 1.1), "population": 120_000.0})
    return df, comp


CONFIGS = {
    "default": dict(opts=dict(power_sims=40)),
    "phase_lag_exclude_month": dict(opts=dict(power_sims=0, phase_in_months=4, lag_months=2,
                                              covid="exclude", seasonality="month")),
    "controlled_slope": dict(opts=dict(power_sims=0, slope_change=True), comparison=True),
    "continuous": dict(opts=dict(power_sims=0), kind="continuous"),
}


def summary(r) -> dict:
    s = r.series
    return {
        "method": r.method,
        "warnings": list(r.warnings),
        "effects": [[e.name, e.scale, repr(e.estimate), repr(e.ci_low), repr(e.ci_high), repr(e.p_value), e.unit]
                    for e in r.effects],
        "prevented": None if r.prevented is None else [repr(r.prevented.estimate), repr(r.prevented.ci_low),
                                                       repr(r.prevented.ci_high), r.prevented.months],
        "series": {c: repr(float(np.nansum(s[c].to_numpy(float)))) for c in
                   ("observed", "fitted", "counterfactual", "cf_low", "cf_high")},
        "diagnostics": [[c.name, repr(c.statistic), repr(c.p_value), c.passed, c.detail, c.description]
                        for c in r.diagnostics],
        "power": None if r.power is None else [repr(r.power.mde), r.power.power_at and
                                               {k: repr(v) for k, v in r.power.power_at.items()}],
        "details_keys": sorted(r.details),
        "terms": list(r.details["terms"]),
    }


def compute() -> dict:
    df, comp = series()
    out = {}
    for key, c in CONFIGS.items():
        r = fit_its(df, "2021-04", ITSOptions(**c["opts"]), comparison=comp if c.get("comparison") else None,
                    kind=c.get("kind", "count"), breaks=({"period": "2018-04", "name": "recording"},))
        out[key] = summary(r)
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
