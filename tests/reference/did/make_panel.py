"""Write the small simulated panel that the R reference script reads (deterministic)."""
import numpy as np
import pandas as pd

rng = np.random.default_rng(2024)
U, T = 14, 36
rows = []
for u in range(U):
    a = rng.normal(0, 1)
    for t in range(T):
        d = int(u < 4 and t >= 24)
        rows.append({"unit": f"U{u:02d}", "t": t, "D": d,
                     "y": 5 + a + 0.3 * np.sin(t / 3) - 0.8 * d + rng.normal(0, 1 + 0.1 * u)})
pd.DataFrame(rows).to_csv("twfe_panel.csv", index=False)
