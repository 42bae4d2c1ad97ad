"""The observed-vs-counterfactual figure draws its points and lines with matplotlib directly; it must
come out the same pixels as when seaborn's ``scatterplot`` and ``lineplot`` drew them (the
reference below is the figure's earlier code), for the cases an evaluation meets: a counterfactual
after the start, suppressed (missing) observed values, no model fit, no post period, a comparison
group in the frame, negative values, and repeated months (averaged, as seaborn averages them,
without its bootstrap band)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402

from sveval.report.plots import core  # noqa: E402
from sveval.report.plots.core import PALETTE, _dates, styled  # noqa: E402

PERIODS = [f"{2019 + i // 12}-{i % 12 + 1:02d}" for i in range(60)]


@styled
def _seaborn_reference(data: pd.DataFrame, title: str, ylabel: str = "Count per month", errorbar=("ci", 95)):
    df = data.copy()
    if "group" in df.columns:
        df = df[df["group"].isin(["treated"])] if (df["group"] == "treated").any() else df
    x = _dates(df["period"])
    fig, ax = plt.subplots(figsize=(10, 4.8))
    sns.scatterplot(x=x, y=df["observed"], ax=ax, s=18, color=PALETTE["observed"], label="Observed", zorder=3)
    if "fitted" in df.columns:
        sns.lineplot(x=x, y=df["fitted"], ax=ax, color=PALETTE["fitted"], label="Model fit", lw=1.6,
                     errorbar=errorbar)
    post = df["post"].astype(bool) if "post" in df.columns else pd.Series(False, index=df.index)
    if post.any() and "counterfactual" in df.columns:
        xp = x[post]
        ax.fill_between(xp, df.loc[post, "cf_low"], df.loc[post, "cf_high"], color=PALETTE["band"],
                        alpha=0.45, label="Counterfactual 95% interval", lw=0)
        sns.lineplot(x=xp, y=df.loc[post, "counterfactual"], ax=ax, color=PALETTE["counterfactual"],
                     linestyle="--", label="Counterfactual (no intervention)", lw=1.8, errorbar=errorbar)
        ax.axvline(xp.iloc[0], color="grey", lw=1, linestyle=":")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if df["observed"].notna().any() and df["observed"].min() >= 0:
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=9, frameon=True)
    fig.tight_layout()
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _series() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    observed = rng.poisson(40, len(PERIODS)).astype(float)
    post = np.arange(len(PERIODS)) >= 36
    cf = 40.0 + rng.normal(0, 1.5, len(PERIODS))
    return pd.DataFrame({"period": PERIODS, "observed": observed, "fitted": cf - post * 3, "post": post,
                         "counterfactual": cf, "cf_low": cf - 6, "cf_high": cf + 6})


def _cases() -> dict[str, pd.DataFrame]:
    s = _series()
    suppressed = s.copy()
    suppressed.loc[[0, 3, 4, 40, 59], "observed"] = np.nan
    treated, comparison = s.assign(group="treated"), s.assign(group="comparison", observed=s.observed * 2)
    repeated = pd.concat([s, s.iloc[[10, 45]].assign(fitted=lambda d: d.fitted + 4,
                                                     counterfactual=lambda d: d.counterfactual - 2)])
    return {
        "counterfactual": s,
        "suppressed": suppressed,
        "no_fit": s.drop(columns=["fitted"]),
        "no_post": s.assign(post=False),
        "comparison_group": pd.concat([comparison, treated], ignore_index=True),
        "negative": s.assign(observed=s.observed - 45, fitted=s.fitted - 45),
        "missing_fit": s.assign(fitted=np.where(np.arange(len(s)) % 7 == 0, np.nan, s.fitted)),
        "nothing_observed": s.assign(observed=np.nan),
        "repeated_months": repeated,
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_the_figure_is_seaborns_pixels(case):
    data = _cases()[case]
    ours = _png(core.observed_vs_counterfactual(None, title="Knife crime: Durham", data=data)[0])
    # seaborn draws a bootstrap band around months it averages: left out where months repeat
    errorbar = None if case == "repeated_months" else ("ci", 95)
    reference = _png(_seaborn_reference(data, "Knife crime: Durham", errorbar=errorbar)[0])
    assert ours == reference
