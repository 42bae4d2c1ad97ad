"""A new partnership from its own downloaded files to a first evaluation, as the README's
"Your own data" walkthrough does it: init, police.uk archive and ONS-style lookup, sources.yaml,
a local measure with a filter, an intervention, an evaluation reading the store, then ingest,
data check, validate, run and publish (fallback renderer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sveval.data import policeuk

pytestmark = pytest.mark.slow

SOURCES = """\
base: project
sources:
  - id: police_uk
    kind: police_uk
    path: data/police-uk
    lookup: lsoa_lookup
  - id: lsoa_lookup
    kind: lookup
    path: data/lookups/lsoa-to-local-authority.csv
"""
MEASURES = """\
measures:
  - id: violence
    name: Violence and sexual offences
    description: police.uk street-level violence and sexual offences
    source: police_uk
    filter: "crime_type = 'Violence and sexual offences'"
"""
INTERVENTIONS = """\
interventions:
  - id: hotspots
    title: Hot-spot patrols
    description: Patrols in the town centres
    priority: 2
    areas: [E07000000, E07000001]
    start: 2022-07
"""
EVALUATION = """\
id: hotspots-violence-its
title: "Hot-spot patrols: violence in the two towns"
intervention: hotspots
measure: violence
areas: [E07000000, E07000001]
design: its
data: {source: store}
its: {population_offset: false, power_sims: 50}
"""


def sveval(root: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sveval")
    return subprocess.run([str(exe), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})


def test_from_downloaded_files_to_a_published_evaluation(tmp_path):
    root = tmp_path / "partnership"
    out = sveval(tmp_path, "init", str(root), "--name", "Test partnership", "--areas",
                 "E07000000,E07000001,E07000003")
    assert out.returncode == 0, out.stderr
    months = [f"{y}-{m:02d}" for y in range(2020, 2024) for m in range(1, 13)]
    policeuk.write_synthetic(root / "data" / "police-uk", months, ["durham", "cleveland"], 400, seed=4,
                             lsoas_per_area=10)
    (root / "data" / "lookups").mkdir(parents=True)
    pd.DataFrame(policeuk.synthetic_lookup(["durham", "cleveland"], 10)).to_csv(
        root / "data" / "lookups" / "lsoa-to-local-authority.csv", index=False)
    (root / "parameters" / "sources.yaml").write_text(SOURCES)
    (root / "parameters" / "measures.yaml").write_text(MEASURES)
    (root / "parameters" / "interventions.yaml").write_text(INTERVENTIONS)
    (root / "parameters" / "evaluations" / "hotspots-violence-its.yaml").write_text(EVALUATION)

    ingest = sveval(root, "data", "ingest")
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    assert "96 files" in ingest.stdout and "rows" in ingest.stdout
    check = sveval(root, "data", "check")
    assert "outside the partnership's areas" in check.stdout  # police.uk force files cover more
    assert (root / "reports" / "data-quality.md").is_file()
    assert sveval(root, "validate", "--all").returncode == 0
    run = sveval(root, "run", "--all")
    assert run.returncode == 0, run.stdout + run.stderr
    rec = json.loads((root / "reports" / "evaluations" / "hotspots-violence-its.json").read_text())
    assert rec["status"] == "completed" and rec["measure"] == "violence"
    assert rec["effects"][0]["unit"]
    # the store's aggregates agree with a direct count of the files
    export = sveval(root, "data", "export", "--measure", "violence", "--out", str(tmp_path / "v.csv"))
    assert export.returncode == 0, export.stderr
    exp = pd.read_csv(tmp_path / "v.csv", dtype={"period": str})
    raw = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((root / "data/police-uk").rglob("*.csv"))])
    lk = pd.read_csv(root / "data/lookups/lsoa-to-local-authority.csv", dtype=str)
    lsoa_col = next(c for c in lk.columns if c.upper().startswith("LSOA") and c.upper().endswith("CD"))
    lad_col = next(c for c in lk.columns if c.upper().startswith("LAD") and c.upper().endswith("CD"))
    raw = raw[raw["Crime type"] == "Violence and sexual offences"].merge(
        lk[[lsoa_col, lad_col]], left_on="LSOA code", right_on=lsoa_col)
    want = raw[raw[lad_col] == "E07000000"].groupby("Month").size()
    got = exp[exp["area_code"] == "E07000000"].set_index("period")["count"]
    assert (got.reindex(want.index).astype(int) == want).all()
    pub = sveval(root, "publish", "--no-quarto")
    assert pub.returncode == 0, pub.stdout + pub.stderr
    assert (root / "reports" / "_site" / "index.html").is_file()
