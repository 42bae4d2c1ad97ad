"""Write the simulated series and design matrices that its_reference.R fits.

Run from the repository root (deterministic; the CSVs are committed so tests need neither this
script nor R)::

    python tests/reference/its/make_inputs.py
    Rscript tests/reference/its/its_reference.R tests/reference/its
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sveval.designs.its_design import build_design
from sveval.spec import ITSOptions, add_months

HERE = Path(__file__).resolve().parent


def simulate(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n, k = 72, 44
    t = np.arange(n)
    months = (t + 3) % 12 + 1
    season = 0.15 * np.sin(2 * np.pi * months / 12) + 0.1 * np.cos(2 * np.pi * months / 12)
    post = (t >= k).astype(float)
    u = np.zeros(n)
    e = rng.standard_normal(n)
    u[0] = e[0] / math.sqrt(1 - 0.5**2)
    for i in range(1, n):
        u[i] = 0.5 * u[i - 1] + e[i]
    pop = np.round(530_000 * (1 + 0.002 * t / 12))
    lam = pop / 1e5 * 5.5 * np.exp(0.003 * t + season - 0.2 * post + 0.12 * u)
    counts = rng.poisson(lam).astype(float)
    periods = [add_months("2016-04", i) for i in range(n)]
    cnt = pd.DataFrame({"period": periods, "count": counts, "population": pop})
    gy = 10 + 0.02 * t + 3 * season - 1.0 * post + u
    gau = pd.DataFrame({"period": periods, "count": np.round(gy, 6), "population": np.nan})
    return cnt, gau, periods[k]


def write_design(name: str, df: pd.DataFrame, start: str, opts: ITSOptions, count_model: bool) -> None:
    """sveval's design of one series as the CSV its_reference.R fits (y, offset, t, then the terms)."""
    d = build_design(df, start, opts, count_model=count_model)
    X = pd.DataFrame(d.X, columns=[c.replace(":", "_") for c in d.columns])
    X.insert(0, "y", d.frame["y"].to_numpy())
    X.insert(1, "offset", d.frame["offset"].to_numpy())
    X.insert(2, "t", d.frame["t"].to_numpy())
    X.to_csv(HERE / f"{name}_design.csv", index=False, float_format="%.12g")


def main() -> None:
    cnt, gau, start = simulate()
    opts = ITSOptions(covid="none", fourier_terms=2)
    for name, df, count_model in (("counts", cnt, True), ("gaussian", gau, False)):
        write_design(name, df, start, opts, count_model)
        df.to_csv(HERE / f"{name}_series.csv", index=False)
    (HERE / "intervention_start.txt").write_text(start + "\n")
    low, low_start = simulate_low()
    write_design("lowcounts", low, low_start, opts, count_model=True)


def simulate_low(seed: int = 11) -> tuple[pd.DataFrame, str]:
    """Low counts (about 1.2 events a month, halving at the intervention) for profile intervals."""
    rng = np.random.default_rng(seed)
    n, k = 60, 40
    t = np.arange(n)
    months = (t + 3) % 12 + 1
    season = 0.3 * np.sin(2 * np.pi * months / 12)
    lam = 1.2 * np.exp(season + math.log(0.5) * (t >= k))
    periods = [add_months("2017-04", i) for i in range(n)]
    df = pd.DataFrame({"period": periods, "count": rng.poisson(lam).astype(float), "population": np.nan})
    return df, periods[k]


if __name__ == "__main__":
    main()
