"""fixest-default reference values for tests/test_did_ssc.py -> ssc_reference.json.

Run from this folder with the project venv after make_ssc_panels.py and ssc_clubsandwich.R.
fixest itself is not packaged for Debian here; its default small-sample correction is taken two
ways that must agree: pyfixest's ``ssc()`` default (``k_fixef="nonnested"`` = fixest's
``fixef.K = "nested"``), and by hand from clubSandwich's CR0 x G/(G-1) x (n-1)/(n-K), with K the
regressors plus the levels of the fixed effects not nested in the clusters (the unit effect,
nested, counts one: fixest's rule, lrberge/fixest#554). The clubSandwich values (CR1, CR1S, CR2
with Satterthwaite df) are copied from ssc_clubsandwich.csv.
"""

import json

import numpy as np
import pandas as pd
import pyfixest as pf

r = pd.read_csv("ssc_clubsandwich.csv")
out: dict = {"published": {
    "card_krueger_fte": {"estimate": 2.75, "se": 1.34, "source": "Card & Krueger (1994) Table 3 row 4"},
    "card_krueger_fte_closed0": {"estimate": 2.51, "se": 1.35,
                                 "source": "Card & Krueger (1994) Table 3 row 5"},
}}


def add(case: str, fit, coef: str, n: int, G: int, K: int) -> None:
    rr = r[r["case"] == case].set_index("type")
    by_hand = float(rr.loc["CR0", "se"] * np.sqrt(G / (G - 1) * (n - 1) / (n - K)))
    se = float(fit.tidy().loc[coef, "Std. Error"])
    assert abs(se / by_hand - 1) < 1e-6, (case, se, by_hand)
    out[case] = {"estimate": float(fit.coef()[coef]), "fixest_se": se, "fixest_se_by_hand": by_hand,
                 "K": K, "n": n, "clusters": G,
                 **{f"{t}_se": float(rr.loc[t, "se"]) for t in rr.index},
                 "CR2_df": float(rr.loc["CR2", "df"])}


ck = pd.read_csv("card_krueger_fte.csv")
for v in ("fte", "fte_closed0"):
    d = ck[ck.groupby("store")[v].transform(lambda s: s.notna().all())].copy()
    d["y"] = d[v]
    d["D"] = ((d["nj"] == 1) & (d["wave"] == 2)).astype(int)
    fit = pf.feols("y ~ D | store + wave", data=d, vcov={"CRV1": "store"}, ssc=pf.ssc())
    add(f"card_krueger_{v}", fit, "D", len(d), d["store"].nunique(), 1 + 2)

cs = pd.read_csv("castle.csv")
fit = pf.feols("l_homicide ~ post | sid + year", data=cs, vcov={"CRV1": "sid"}, ssc=pf.ssc())
add("castle", fit, "post", len(cs), cs["sid"].nunique(), 1 + cs["year"].nunique())
cs["count"] = np.round(cs["homicide"] * cs["popwt"] / 1e5)
cs["log_pop"] = np.log(cs["popwt"])
fit = pf.fepois("count ~ post | sid + year", data=cs, offset="log_pop", vcov={"CRV1": "sid"},
                ssc=pf.ssc())
add("castle_poisson", fit, "post", len(cs), cs["sid"].nunique(), 1 + cs["year"].nunique())
with open("ssc_reference.json", "w") as fh:
    json.dump(out, fh, indent=1)
print(json.dumps(out, indent=1))
