"""Write adh_predictors.csv: the ADH (2010) predictors of every state, from smoking_adh.csv.

Usage: python make_adh_predictors.py /path/to/shared/reference-data/smoking_adh.csv

Predictors (Abadie, Diamond & Hainmueller 2010, Table 1): lnincome, retprice and age15to24
averaged over 1980-1988, beer over 1984-1988 (missing years skipped, as Synth's dataprep does),
and cigsale in 1975, 1980 and 1988. The file is derived data (39 states x 7 means), so the
covariate test runs from a clone without the panel.
"""

import sys
from pathlib import Path

import pandas as pd

from sveval.designs.synth import predictor_table

PREDICTORS = [("lnincome", 1980, 1988), ("retprice", 1980, 1988), ("age15to24", 1980, 1988),
              ("beer", 1984, 1988), ("cigsale", 1975), ("cigsale", 1980), ("cigsale", 1988)]

if __name__ == "__main__":
    d = pd.read_csv(sys.argv[1])
    panels = {v: d.pivot(index="state", columns="year", values=v)
              for v in ["cigsale", "lnincome", "beer", "age15to24", "retprice"]}
    X = predictor_table(panels, PREDICTORS)
    X.rename_axis("state").to_csv(Path(__file__).with_name("adh_predictors.csv"), float_format="%.10g")
