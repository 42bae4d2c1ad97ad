"""Write the two panels of the small-sample-correction reference tests (run from this folder).

* ``card_krueger_fte.csv`` -- Card & Krueger (1994) balanced sample, derived from David Card's
  public.dat (shared/reference-data/card_krueger_public.csv): full-time equivalent employment
  FTE = EMPFT + NMGRS + 0.5 x EMPPT in wave 1 (Feb-Mar 1992) and wave 2 (Nov-Dec 1992), stores with
  FTE in both waves (Table 3 row 4, 384 stores), and ``fte_closed0`` with FTE = 0 in wave 2 for the
  four temporarily closed stores (STATUS2 2, 4, 5: Table 3 row 5, 388 stores).
* ``castle.csv`` -- Cheng & Hoekstra (2013) castle-doctrine state panel (50 states x 2000-2010) as
  shipped by the PyPI package ``causaldata`` (MIT licence), reduced to the columns the tests use.

Usage: ``python make_ssc_panels.py /path/to/card_krueger_public.csv`` in a venv with causaldata
(``python3 -m venv /tmp/ref-castle && /tmp/ref-castle/bin/pip install causaldata``).
"""

import sys

import numpy as np
import pandas as pd

src = sys.argv[1] if len(sys.argv) > 1 else "../../../../shared/reference-data/card_krueger_public.csv"
d = pd.read_csv(src)
d["fte1"] = d["EMPFT"] + d["NMGRS"] + 0.5 * d["EMPPT"]
d["fte2"] = d["EMPFT2"] + d["NMGRS2"] + 0.5 * d["EMPPT2"]
d["fte2_closed0"] = d["fte2"].where(~d["STATUS2"].isin([2, 4, 5]), 0.0)
rows = []
for i, r in d.iterrows():  # SHEET is not unique in public.dat: the row number is the store id
    for wave, v, v0 in ((1, r["fte1"], r["fte1"]), (2, r["fte2"], r["fte2_closed0"])):
        rows.append({"store": int(i), "nj": int(r["STATE"]), "wave": wave,
                     "fte": v, "fte_closed0": v0})
ck = pd.DataFrame(rows)
both = ck.groupby("store")["fte"].transform(lambda s: s.notna().all())
both0 = ck.groupby("store")["fte_closed0"].transform(lambda s: s.notna().all())
ck = ck[both | both0].copy()
ck["balanced"] = both[both | both0].astype(int)
ck.to_csv("card_krueger_fte.csv", index=False)
print(ck.groupby(["balanced", "nj"])["store"].nunique())

from causaldata import castle  # noqa: E402

c = castle.load_pandas().data
c = c[["sid", "year", "l_homicide", "homicide", "post", "popwt"]].copy()
# first year with the law in force (post > 0; post is the fraction of the year in force), 0 = never
first = c[c["post"] > 0].groupby("sid")["year"].min()
c["effyear"] = c["sid"].map(first).fillna(0).astype(int)
c.to_csv("castle.csv", index=False)  # scratch input for ssc_reference.py / the R script: not committed
print(c.shape, np.unique(c["effyear"]), np.unique(c["post"]).round(3))
