"""Titles are placed at the top of the axes (``plots.core.TITLE_Y``) instead of by matplotlib's
automatic placement, which measures every tick label at each draw: the figures must come out the
same pixels as with the automatic placement. (The example's every notebook and site page were also
compared byte for byte when this changed.)"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sveval.designs.spc import xmr  # noqa: E402
from sveval.report.plots import core  # noqa: E402
from sveval.report.plots.tracking import rolling_rates, spc_chart  # noqa: E402

PERIODS = [f"{2019 + i // 12}-{i % 12 + 1:02d}" for i in range(60)]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _series():
    rng = np.random.default_rng(3)
    observed = rng.poisson(40, len(PERIODS)).astype(float)
    post = np.arange(len(PERIODS)) >= 36
    cf = np.full(len(PERIODS), 40.0)
    return pd.DataFrame({"period": PERIODS, "observed": observed, "fitted": cf - post * 3, "post": post,
                         "counterfactual": cf, "cf_low": cf - 6, "cf_high": cf + 6})


def _monthly():
    rows = [{"measure": "m", "area_type": kind, "area_name": name, "period": p,
             "rolling_12m_rate": 10.0 + i / 7, "rate_per": 100_000}
            for kind, name in (("partnership", "Partnership"), ("area", "Area A")) for i, p in enumerate(PERIODS)]
    return pd.DataFrame(rows)


FIGURES = {
    "observed_vs_counterfactual": lambda: core.observed_vs_counterfactual(None, title="Knife crime: Durham",
                                                                          data=_series()),
    "spc_chart": lambda: spc_chart(xmr(np.random.default_rng(5).poisson(30, 60).astype(float), PERIODS,
                                       ["2021-06"]).assign(change_point=""), title="Knife crime: SPC"),
    "rolling_rates": lambda: rolling_rates(_monthly(), "m", title="Knife crime: rolling 12-month rate"),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_fixed_title_position_draws_the_same_pixels_as_automatic_placement(name, monkeypatch):
    fixed = _png(FIGURES[name]()[0])
    monkeypatch.setattr(core, "TITLE_Y", None)  # matplotlib's automatic placement
    auto = _png(FIGURES[name]()[0])
    assert fixed == auto
