"""Small-sample corrections of the DiD cluster-robust variances against fixest's default,
clubSandwich (CR1, CR1S, CR2 with Satterthwaite df) and published values.

Fixtures in tests/reference/did/ (scripts beside them): Card & Krueger (1994) balanced panel
(``card_krueger_fte.csv``, derived from David Card's public.dat), the Cheng-Hoekstra castle-doctrine
state panel (``castle.csv``, from the MIT-licensed PyPI package causaldata), clubSandwich values
(``ssc_clubsandwich.R`` -> ``.csv``) and fixest-default values (``ssc_reference.py`` -> ``.json``).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.designs import did_estimators as est
from sveval.designs import did_inference
from sveval.designs.did import evaluate_panel
from sveval.designs.did_panel import make_panel
from sveval.errors import EstimationError
from sveval.spec import DiDOptions, period_from_index, period_index

REF = Path(__file__).parent / "reference" / "did"
J = json.loads((REF / "ssc_reference.json").read_text())


def ck_panel(column: str):
    ck = pd.read_csv(REF / "card_krueger_fte.csv")
    d = ck[ck.groupby("store")[column].transform(lambda s: s.notna().all())]
    # the two survey waves become two consecutive "months"; New Jersey treated in the second
    d = d.assign(period=np.where(d["wave"] == 1, "1992-02", "1992-03"), count=d[column],
                 unit=d["store"].astype(str))
    coh = {u: "1992-03" for u in d.loc[d["nj"] == 1, "unit"].unique()}
    return make_panel(d, coh, population=None, outcome="count", unit_kind="store")


def castle_panel() -> pd.DataFrame:
    """The Cheng-Hoekstra castle-doctrine panel as shipped by the PyPI package causaldata (a test
    dependency: the data are not copied into this repository); columns as in make_ssc_panels.py."""
    castle_data = pytest.importorskip("causaldata.castle")
    c = castle_data.load_pandas().data
    c = c[["sid", "year", "l_homicide", "homicide", "post", "popwt"]].copy()
    # the package stores float32; the references were computed from its shortest decimal form
    # (as pandas writes float32 to CSV), so read the columns the same way
    for col in ("l_homicide", "homicide", "popwt"):
        c[col] = pd.to_numeric(c[col].astype(str))
    first = c[c["post"] > 0].groupby("sid")["year"].min()
    c["effyear"] = c["sid"].map(first).fillna(0).astype(int)
    return c


@pytest.fixture(scope="module")
def castle():
    c = castle_panel()
    b = period_index("2000-01")
    c["period"] = (c["year"] - 2000 + b).map(period_from_index)
    c["unit"] = c["sid"].astype(str)
    coh = {str(s): period_from_index(b + e - 2000) for s, e in c.groupby("sid")["effyear"].first().items()
           if e > 0}
    lin = make_panel(c.assign(count=c["l_homicide"] + 10), coh, population=None, outcome="count",
                     unit_kind="state")  # a constant shift changes neither coefficient nor SE
    pois = make_panel(c.assign(count=np.round(c["homicide"] * c["popwt"] / 1e5)), coh,
                      population="popwt", outcome="rate", unit_kind="state")
    return c, lin, pois


@pytest.mark.parametrize("column", ["fte", "fte_closed0"])
def test_card_krueger_2x2(column):
    ref, pub = J[f"card_krueger_{column}"], J["published"][f"card_krueger_{column}"]
    p = ck_panel(column)
    assert p.n_units == ref["clusters"]
    fx = est.two_by_two(p, inference="cluster")  # default: fixest's correction
    assert round(fx.coef, 2) == pytest.approx(pub["estimate"])
    assert fx.se == pytest.approx(ref["fixest_se"], rel=1e-6)
    assert "fixest" in fx.inference and "nested" in fx.inference
    cr2 = est.two_by_two(p, inference="cluster", vcov="CR2")
    # with two periods CR2 is the Welch SE of the difference of mean changes: the paper's SE
    assert cr2.se == pytest.approx(ref["CR2_se"], rel=1e-6)
    assert round(cr2.se, 2) == pytest.approx(pub["se"])
    assert cr2.extra["df"] == pytest.approx(ref["CR2_df"], rel=1e-6)
    assert "CR2" in cr2.inference and "Satterthwaite" in cr2.inference
    assert est.two_by_two(p, inference="cluster", vcov="CR1").se == pytest.approx(ref["CR1_se"], rel=1e-6)
    cr1s = est.two_by_two(p, inference="cluster", vcov="CR1S")
    assert cr1s.se == pytest.approx(ref["CR1S_se"], rel=1e-6)
    assert cr1s.se / fx.se > 1.4  # the old default: every store effect counted


def _jackknife(c: pd.DataFrame) -> float:
    """Leave-one-state-out jackknife sum of squares (clubSandwich's CR3 has no (G-1)/G factor)."""
    def beta(d):  # balanced panel: the two-way within transformation is exact
        w = d.pivot(index="sid", columns="year", values=["post", "l_homicide"])
        x, y = (w[v].to_numpy() for v in ("post", "l_homicide"))
        x, y = (a - a.mean(1, keepdims=True) - a.mean(0, keepdims=True) + a.mean() for a in (x, y))
        return float((x * y).sum() / (x * x).sum())
    b = beta(c)
    return float(np.sqrt(sum((beta(c[c["sid"] != s]) - b) ** 2 for s in c["sid"].unique())))


def test_castle_twfe(castle):
    c, lin, _ = castle
    ref = J["castle"]
    fx = est.twfe(lin, inference="cluster")
    assert fx.coef == pytest.approx(ref["estimate"], rel=1e-8)
    assert fx.se == pytest.approx(ref["fixest_se"], rel=1e-6)
    assert fx.se == pytest.approx(ref["fixest_se_by_hand"], rel=1e-6)
    assert est.twfe(lin, inference="cluster", vcov="CR1").se == pytest.approx(ref["CR1_se"], rel=1e-6)
    cr1s = est.twfe(lin, inference="cluster", vcov="CR1S")
    assert cr1s.se == pytest.approx(ref["CR1S_se"], rel=1e-6)
    assert cr1s.se / fx.se == pytest.approx(1.049, abs=1e-3)
    cr2 = est.twfe(lin, inference="cluster", vcov="CR2")
    assert cr2.se == pytest.approx(ref["CR2_se"], rel=1e-6)
    assert cr2.extra["df"] == pytest.approx(ref["CR2_df"], rel=1e-6)
    cr3 = est.twfe(lin, inference="cluster", vcov="CR3")
    assert cr3.se == pytest.approx(_jackknife(c), rel=1e-6)
    assert cr3.se > cr2.se > fx.se * 0.99


def test_castle_poisson(castle):
    _, _, pois = castle
    ref = J["castle_poisson"]
    fx = est.poisson_fe(pois)
    assert fx.coef == pytest.approx(ref["estimate"], rel=1e-6)
    assert fx.se == pytest.approx(ref["fixest_se"], rel=1e-5)
    assert est.poisson_fe(pois, vcov="CR1").se == pytest.approx(ref["CR1_se"], rel=1e-5)
    assert est.poisson_fe(pois, vcov="CR1S").se == pytest.approx(ref["CR1S_se"], rel=1e-5)
    cr2 = est.poisson_fe(pois, vcov="CR2")
    # weighted least squares at convergence: within 0.2% of clubSandwich's vcovCR.glm
    assert cr2.se == pytest.approx(ref["CR2_se"], rel=2e-3)
    assert "CR2" in cr2.inference and f"t with {pois.n_units - 1} df" in cr2.inference
    assert est.poisson_fe(pois, vcov="CR3").se > cr2.se


def test_event_study_carries_the_choice(castle):
    _, lin, _ = castle
    fx = est.event_study(lin, (-4, 3))
    cr2 = est.event_study(lin, (-4, 3), vcov="CR2")
    assert fx.coef == pytest.approx(cr2.coef, rel=1e-10)
    assert "fixest" in fx.inference and "CR2" in cr2.inference
    assert not np.allclose(fx.table["se"], cr2.table["se"])
    assert cr2.ci_low < cr2.coef < cr2.ci_high and 1 < cr2.extra["df"] < lin.n_units


def test_cr2_refuses_large_panels(castle, monkeypatch):
    _, lin, _ = castle
    monkeypatch.setattr(did_inference, "ADJUSTED_MAX_ROWS", 100)
    with pytest.raises(EstimationError, match="adjustment matrix per cluster"):
        est.twfe(lin, inference="cluster", vcov="CR2")
    with pytest.raises(EstimationError, match="unknown cluster-robust"):
        est.twfe(lin, inference="cluster", vcov="HC9")


def test_method_text_names_the_variance():
    p = ck_panel("fte")
    r = evaluate_panel(p, DiDOptions(estimator="2x2", vcov="CR2", randomisation_draws=0))
    assert "CR2 (Bell-McCaffrey)" in r.method and r.details["vcov"] == "CR2"
    assert round(r.headline.estimate, 2) == 2.75
    r = evaluate_panel(p, DiDOptions(estimator="2x2", randomisation_draws=0))
    assert "fixest small-sample correction" in r.method
