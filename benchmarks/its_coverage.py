"""Monte Carlo benchmark of the ITS estimators: coverage of the 95% CI, bias and power.

For each data-generating process (DGP) cell and each estimator it simulates ``--reps`` series,
fits the ITS model (linear trend, 2 Fourier pairs, level and slope change at 60% of the series)
and records whether the 95% interval of the level change covers the truth, the estimate's bias
and how often the interval excludes no change (power at the true effect).

DGPs (monthly, 48 / 72 / 132 points):

* ``gauss_rho{0,0.3,0.6}``: y = 10 + 0.02 t + seasonal + effect + AR(1) errors (sd 1); level
  change -1.0 (difference scale);
* ``pois30_ar``: Poisson counts around 30 a month, seasonal, with an AR(1) latent log rate
  (rho 0.5, sd 0.1); rate ratio 0.8;
* ``low05``: Poisson counts around 0.5 a month, seasonal; rate ratio 0.5;
* ``negbin``: negative binomial counts around 10 a month (theta = 5, i.e. alpha = 0.2), seasonal;
  rate ratio 0.8.

Run (one process; the numbers in ``benchmarks/results/its_coverage.md`` come from this)::

    nice -n 10 python benchmarks/its_coverage.py --reps 1000 --seed 20240601 \
        --out benchmarks/results/its_coverage.md

``--smoke`` runs a few replications of every cell (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sveval.designs.its import resolve_inference
from sveval.designs.its_design import build_design
from sveval.designs.its_models import fit_model
from sveval.errors import EstimationError
from sveval.spec import ITSOptions, add_months

START = "2015-04"
LENGTHS = (48, 72, 132)
COVERAGE_BAND = (0.93, 0.97)
ARIMA_REPS = 100


@dataclass(frozen=True)
class Cell:
    """One DGP cell."""

    dgp: str
    n: int
    kind: str  # count or continuous
    truth: float  # level change on the model scale (log rate ratio or difference)


def cells() -> list[Cell]:
    out = []
    for rho in (0.0, 0.3, 0.6):
        for n in LENGTHS:
            out.append(Cell(f"gauss_rho{rho:g}", n, "continuous", -1.0))
    for n in LENGTHS:
        out.append(Cell("pois30_ar", n, "count", math.log(0.8)))
    for n in LENGTHS:
        out.append(Cell("low05", n, "count", math.log(0.5)))
    for n in LENGTHS:
        out.append(Cell("negbin", n, "count", math.log(0.8)))
    return out


ESTIMATORS = {
    "continuous": ["gls_ar", "ols", "newey_west", "arima"],
    "count": ["auto", "quasipoisson_ar1", "quasipoisson_profile", "quasipoisson", "poisson", "negbin"],
}
# ``auto`` is what ``model: auto`` does for a count measure: resolved per series by
# sveval.designs.its.resolve_inference (AR(1) quasi-Poisson with Wald intervals at a pre-period mean of
# 5 or more events a month, quasi-Poisson with profile-likelihood intervals below it)
DEFAULTS = {"continuous": "gls_ar", "count": "auto"}


def _ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    e = rng.standard_normal(n) * sd
    u = np.empty(n)
    u[0] = e[0] / math.sqrt(1 - rho**2)
    for i in range(1, n):
        u[i] = rho * u[i - 1] + e[i]
    return u


def simulate(cell: Cell, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    """One simulated series (period, count, population) and its intervention month."""
    n = cell.n
    t = np.arange(n)
    months = (np.arange(n) + 3) % 12 + 1  # series starts in April
    season = 0.15 * np.sin(2 * np.pi * months / 12) + 0.1 * np.cos(2 * np.pi * months / 12)
    k = int(round(0.6 * n))
    post = (t >= k).astype(float)
    slope_post = np.where(t >= k, t - k, 0.0)
    if cell.dgp.startswith("gauss"):
        rho = float(cell.dgp.split("rho")[1])
        y = 10 + 0.02 * t + 5 * season + cell.truth * post + 0.0 * slope_post + _ar1(rng, n, rho, 1.0)
    elif cell.dgp == "pois30_ar":
        lam = np.exp(math.log(30) + 0.002 * t + season + cell.truth * post + _ar1(rng, n, 0.5, 0.1))
        y = rng.poisson(lam).astype(float)
    elif cell.dgp == "low05":
        lam = np.exp(math.log(0.5) + 0.0 * t + 2 * season + cell.truth * post)
        y = rng.poisson(lam).astype(float)
    elif cell.dgp == "negbin":
        lam = np.exp(math.log(10) + 0.002 * t + season + cell.truth * post)
        theta = 5.0
        y = rng.poisson(rng.gamma(theta, lam / theta)).astype(float)
    else:  # pragma: no cover
        raise ValueError(cell.dgp)
    periods = [add_months(START, i) for i in range(n)]
    return pd.DataFrame({"period": periods, "count": y, "population": np.nan}), periods[k]


def _spec(est: str, design=None, y=None) -> tuple[str, int, str]:
    """Model, AR order and interval type of a benchmark estimator name."""
    if est == "auto":
        ar, interval, _ = resolve_inference(ITSOptions(), "quasipoisson", design, y)
        return "quasipoisson", ar, interval
    if est.endswith("_ar1"):
        return est[:-4], 1, "wald"
    if est.endswith("_profile"):
        return est[: -len("_profile")], 0, "profile"
    return est, (1 if est in ("gls_ar", "arima") else 0), "wald"


def _design(df: pd.DataFrame, start: str, kind: str):
    opts = ITSOptions(covid="none", seasonality="fourier", fourier_terms=2)
    return build_design(df, start, opts, count_model=(kind == "count"))


def _fit(est: str, design, y: np.ndarray):
    """Level-change estimate, se, CI and p of one estimator (the design is fixed within a cell)."""
    model, ar, interval = _spec(est, design, y)
    f = design.frame
    return fit_model(model, y, design.X, f["offset"].to_numpy(float), design.columns,
                     f["t"].to_numpy(float), design.series_id, design.included, ar_order=ar,
                     interval=interval).coef("level_1")


def run_cell(cell: Cell, reps: int, seed: int, estimators: list[str] | None = None,
             comparator_reps: int | None = None) -> list[dict]:
    """Replicate one cell; every estimator sees the same simulated series.

    The default estimator of the kind gets ``reps`` replications, the others the first
    ``comparator_reps`` of them (``ARIMA_REPS`` at most for the slow exact-ML ARIMA fit).
    """
    ests = estimators or ESTIMATORS[cell.kind]
    comparator_reps = reps if comparator_reps is None else comparator_reps
    rng = np.random.default_rng([seed, cell.n, sum(map(ord, cell.dgp))])
    rec = {e: {"cover": [], "est": [], "reject": [], "fail": 0, "sec": 0.0, "runs": 0} for e in ests}
    design = None
    for i in range(reps):
        df, start = simulate(cell, rng)
        if design is None:
            design = _design(df, start, cell.kind)
        y = df["count"].to_numpy(float)
        for e in ests:
            limit = reps if e == DEFAULTS[cell.kind] else comparator_reps
            if e == "arima":
                limit = min(limit, ARIMA_REPS)
            if i >= limit:
                continue
            rec[e]["runs"] += 1
            t0 = time.perf_counter()
            try:
                b, se, lo, hi, p = _fit(e, design, y)
            except (EstimationError, np.linalg.LinAlgError, ValueError):
                rec[e]["fail"] += 1
                continue
            finally:
                rec[e]["sec"] += time.perf_counter() - t0
            # an infinite bound is a valid interval (profile likelihood with no events after the
            # intervention); only a missing one is a failure
            if np.isnan(lo) or np.isnan(hi):
                rec[e]["fail"] += 1
                continue
            rec[e]["cover"].append(lo <= cell.truth <= hi)
            rec[e]["est"].append(b)
            rec[e]["reject"].append(not (lo <= 0.0 <= hi))
    rows = []
    for e in ests:
        r = rec[e]
        m = len(r["cover"])
        cov = float(np.mean(r["cover"])) if m else float("nan")
        rows.append({
            "dgp": cell.dgp, "n": cell.n, "estimator": e, "default": e == DEFAULTS[cell.kind],
            "reps": m, "failed": r["fail"], "coverage": cov,
            "mc_se": math.sqrt(cov * (1 - cov) / m) if m else float("nan"),
            "bias": float(np.mean(r["est"]) - cell.truth) if m else float("nan"),
            "median_bias": float(np.median(r["est"]) - cell.truth) if m else float("nan"),
            "power": float(np.mean(r["reject"])) if m else float("nan"),
            "ms_per_fit": 1000 * r["sec"] / max(r["runs"], 1),
        })
    return rows


def to_markdown(df: pd.DataFrame, command: str, reps: int, seed: int, seconds: float | None) -> str:
    took = f"wall time {seconds / 60:.1f} min (one process)" if seconds is not None else \
        "merged from runs split by DGP (the per-cell seeds make a split run identical to a single one)"
    lines = [
        "# ITS estimators: Monte Carlo coverage, bias and power",
        "",
        f"Command: `{command}`  ",
        f"Replications per cell: {reps} for the default estimator; seed {seed}; {took}.",
        "",
        "Level change at 60% of the series; model: linear trend, 2 Fourier pairs, level and slope change.",
        "Truth: Gaussian cells -1.0 (difference); pois30_ar and negbin rate ratio 0.8; low05 rate ratio 0.5.",
        "Coverage = share of 95% intervals containing the truth (MC standard error about 0.007 at 1000",
        "replications); mean and median bias on the model scale (log rate ratio or difference; at low",
        "counts a series with no events after the intervention has an estimate near minus infinity,",
        "which dominates the mean); power = share of",
        "intervals excluding no change at the true effect. `*` marks the default estimator of the kind.",
        "",
        "| DGP | n | estimator | coverage | bias | median bias | power | reps | failed | ms/fit |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        mark = "*" if r.default else ""
        lines.append(
            f"| {r.dgp} | {r.n} | {r.estimator}{mark} | {r.coverage:.3f} | {r.bias:+.4f} | {r.median_bias:+.4f} "
            f"| {r.power:.3f} | {r.reps} | {r.failed} | {r.ms_per_fit:.1f} |"
        )
    lines += ["", "## Defaults against the 93%-97% target", "", *_verdict(df)]
    return "\n".join(lines) + "\n"


def _verdict(df: pd.DataFrame) -> list[str]:
    """Lines saying whether every default estimator's coverage lies in ``COVERAGE_BAND``."""
    lo, hi = COVERAGE_BAND
    d = df[df["default"]]
    bad = d[(d["coverage"] < lo) | (d["coverage"] > hi)]
    if bad.empty:
        return [f"Every cell: the default estimator's coverage lies within {lo:.0%}-{hi:.0%} "
                f"(range {d['coverage'].min():.3f} to {d['coverage'].max():.3f})."]
    return [f"- {r.dgp}, n = {r.n}: default {r.estimator} covers {r.coverage:.3f}, outside the target."
            for r in bad.itertuples()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--only", default=None, help="comma-separated DGP names")
    ap.add_argument("--lengths", default=None, help="comma-separated series lengths")
    ap.add_argument("--estimators", default=None, help="comma-separated estimators")
    ap.add_argument("--comparator-reps", type=int, default=None,
                    help="replications for non-default estimators (default: --reps)")
    ap.add_argument("--smoke", action="store_true", help="3 replications a cell (for tests)")
    ap.add_argument("--jsonl", default=None, help="append each finished cell's rows here (partial runs)")
    ap.add_argument("--json", default=None, help="write all rows as a JSON list (for the site's methods page)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="no simulation: combine the rows of earlier --json runs into one table (--out/--json)")
    ap.add_argument("--summary", action="store_true",
                    help="with --merge: a coverage-only overview, one row a cell and one column an estimator")
    args = ap.parse_args(argv)
    if args.merge:
        return _merge(args, argv)
    reps = 3 if args.smoke else args.reps
    sel = cells()
    if args.only:
        keep = set(args.only.split(","))
        sel = [c for c in sel if c.dgp in keep]
    if args.lengths:
        ns = {int(x) for x in args.lengths.split(",")}
        sel = [c for c in sel if c.n in ns]
    ests = args.estimators.split(",") if args.estimators else None
    t0 = time.perf_counter()
    rows = []
    for c in sel:
        use = [e for e in ests if e in ESTIMATORS[c.kind]] if ests else None
        rows += run_cell(c, reps, args.seed, use, 3 if args.smoke else args.comparator_reps)
        r = rows[-len(use or ESTIMATORS[c.kind]):]
        print(" ".join(f"{c.dgp} n={c.n} {x['estimator']}={x['coverage']:.3f}" for x in r), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as fh:
                for x in r:
                    fh.write(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in x.items()}) + "\n")
    df = pd.DataFrame(rows)
    cmd = "python benchmarks/its_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = to_markdown(df, cmd.strip(), reps, args.seed, time.perf_counter() - t0)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(df.to_json(orient="records", indent=1), encoding="utf-8")
    return 0


def summary_markdown(df: pd.DataFrame, command: str) -> str:
    """Coverage of every estimator, one row a cell, the default first and marked ``*``."""
    lo, hi = COVERAGE_BAND
    lines = ["# ITS estimators: coverage of the 95% interval (overview)", "",
             f"Command: `{command}`", "",
             "Coverage = share of nominal 95% intervals containing the true level change. Default "
             "estimators: 1000 replications a cell (Monte Carlo SE about 0.007); comparators 1000 too except ARIMA, 100 (see the "
             "`reps` column of the full tables `its_coverage_gaussian.md` and `its_coverage_counts.md`). "
             f"Defaults outside {lo:.0%}-{hi:.0%} are in bold.", ""]
    for kind, dgps in (("continuous", ("gauss",)), ("count", ("pois30_ar", "low05", "negbin"))):
        sub = df[df["dgp"].str.startswith(dgps)]
        if sub.empty:
            continue
        ests = [DEFAULTS[kind]] + [e for e in ESTIMATORS[kind] if e != DEFAULTS[kind]]
        ests = [e for e in ests if e in set(sub["estimator"])]
        head = ["DGP", "n"] + [f"{e}*" if e == DEFAULTS[kind] else e for e in ests]
        lines += [f"## {'Continuous measures' if kind == 'continuous' else 'Counts'}", "",
                  "| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(ests)]
        for (dgp, n), g in sub.groupby(["dgp", "n"], sort=False):
            cells_ = []
            for e in ests:
                r = g[g["estimator"] == e]
                if r.empty:
                    cells_.append("")
                    continue
                c = float(r["coverage"].iloc[0])
                txt = f"{c:.3f}"
                if e == DEFAULTS[kind] and not lo <= c <= hi:
                    txt = f"**{txt}**"
                cells_.append(txt)
            lines.append(f"| {dgp} | {n} | " + " | ".join(cells_) + " |")
        lines.append("")
    lines += ["## Defaults against the target", "", *_verdict(df)]
    return "\n".join(lines) + "\n"


def _merge(args, argv) -> int:
    rows = []
    for f in args.merge:
        rows += json.loads(Path(f).read_text(encoding="utf-8"))
    order = {(c.dgp, c.n): i for i, c in enumerate(cells())}
    df = pd.DataFrame(rows)
    df["_o"] = [order.get((d, n), 1e9) for d, n in zip(df["dgp"], df["n"], strict=True)]
    df = df.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    cmd = "python benchmarks/its_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.summary:
        md = summary_markdown(df, cmd.strip())
    else:
        md = to_markdown(df, cmd.strip(), int(df.loc[df["default"], "reps"].max()), args.seed, None)
    print(md)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(df.to_json(orient="records", indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
