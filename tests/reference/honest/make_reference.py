"""Values of the `honestdid` port on PyPI (v0.1.1) on the documented HonestDiD inputs.

Run in a separate venv (never the project's):
    python3 -m venv /tmp/ref-honest && /tmp/ref-honest/bin/pip install honestdid==0.1.1
    /tmp/ref-honest/bin/python tests/reference/honest/make_reference.py
Reads documented.json (written by extract_reference.R) beside this script and writes
honestdid_port.json: for each case, the port's bounds on the same grid as the documentation
(RM: createSensitivityResults_relativeMagnitudes, C-LF; SD: createSensitivityResults, FLCI) and
the original CI. The port's RM theta grid is +-20 standard errors around 0 (the package's current
GitHub code), so sveval is compared with it using grid_centre="zero".
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

import honestdid as hd
import numpy as np

HERE = Path(__file__).parent


def frame(df, param):
    return [{"lb": float(r["lb"]), "ub": float(r["ub"]), param: float(r[param])}
            for _, r in df.iterrows()]


def main() -> None:
    doc = json.loads((HERE / "documented.json").read_text())
    target = HERE / "honestdid_port.json"
    out = {"package": "honestdid", "version": version("honestdid"), "cases": {}, "errors": {}}
    if target.exists():  # resume: the port takes minutes per RM case
        out = json.loads(target.read_text())
        out.setdefault("errors", {})
    names = [n for n, c in doc.items() if "betahat" in c and c["method"] != "original"]
    # smallest problems first (the port solves one LP per grid point and per simulation)
    names.sort(key=lambda n: (doc[n]["num_pre_periods"], doc[n]["num_post_periods"]))
    for name in names:
        case = doc[name]
        if name in out["cases"] or name in out["errors"]:
            continue
        b = np.asarray(case["betahat"], dtype=float)
        s = np.asarray(case["sigma"], dtype=float)
        npre, npost = case["num_pre_periods"], case["num_post_periods"]
        lv = None if case.get("l_vec") is None else np.asarray(case["l_vec"], dtype=float)
        orig = hd.constructOriginalCS(b, s, npre, npost, l_vec=lv)
        res = {"original": {"lb": float(orig["lb"].iloc[0]), "ub": float(orig["ub"].iloc[0])}}
        t0 = time.time()
        try:
            if case["method"] == "rm":
                grid = [r["Mbar"] for r in case["bounds"]]
                df = hd.createSensitivityResults_relativeMagnitudes(
                    b, s, npre, npost, Mbarvec=grid, l_vec=lv, gridPoints=case["grid_points"])
                res["rm"] = frame(df, "Mbar")
            else:
                grid = [r["M"] for r in case["bounds"]]
                df = hd.createSensitivityResults(b, s, npre, npost, Mvec=grid, l_vec=lv)
                res["sd"] = frame(df, "M")
        except Exception as exc:  # the port fails on some inputs: record it
            out["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(name, "ERROR", out["errors"][name], flush=True)
        else:
            res["seconds"] = round(time.time() - t0, 1)
            out["cases"][name] = res
            print(name, res, flush=True)
        target.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
