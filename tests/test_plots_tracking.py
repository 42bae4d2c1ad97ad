"""Tracking charts: a protected measure, whose rolling rates are not published, gets a chart that
says so (no empty axes, no matplotlib warning in the published notebook)."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sveval.report.plots.tracking import rolling_rates  # noqa: E402


def _monthly(rate):
    periods = [f"2024-{m:02d}" for m in range(1, 13)]
    rows = []
    for kind, name in (("partnership", "Partnership"), ("area", "Area A")):
        for i, p in enumerate(periods):
            rows.append({"measure": "m", "area_type": kind, "area_name": name, "period": p,
                         "rolling_12m_rate": rate(i), "rate_per": 100_000})
    return pd.DataFrame(rows)


def test_unpublished_rolling_rates_say_so_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, ax = rolling_rates(_monthly(lambda i: None), "m", title="Knife admissions")
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "not published" in texts and not ax.lines and ax.get_title() == "Knife admissions"
    plt.close(fig)


def test_published_rolling_rates_are_drawn_per_area():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, ax = rolling_rates(_monthly(lambda i: 10.0 + i), "m")
    assert len(ax.lines) >= 2 and not ax.texts
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"Partnership", "Area A"}
    plt.close(fig)
