"""`sveval init` scaffolds a partnership project: validate passes on it, the data check lists
what is missing, bad names and codes are refused, nothing is overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sveval.catalog import Catalog
from sveval.cli import main
from sveval.data.filters import check_measure_filters
from sveval.errors import SvevalError
from sveval.pipeline.scaffold import init_project

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "src" / "sveval" / "templates" / "project"


def test_init_then_validate_and_data_check(tmp_path, capsys):
    root = tmp_path / "anytown"
    rc = main(["init", str(root), "--name", "Anytown Community Safety Partnership",
               "--areas", "E06000001, E06000002"])
    assert rc == 0
    assert "new sveval project" in capsys.readouterr().out
    for rel in ("parameters/areas.yaml", "parameters/measures.yaml", "parameters/interventions.yaml",
                "parameters/sources.yaml", "parameters/disclosure.yaml", "parameters/costs_of_crime.yaml",
                "parameters/deflators.yaml", "parameters/evaluations", "parameters/tracking",
                "evaluations", "reports", "data/.gitignore", "GUIDE.md", ".gitignore"):
        assert (root / rel).exists(), rel
    assert not list((root / "evaluations").glob("*.ipynb"))  # notebooks come from the package
    assert "*" in (root / "data" / ".gitignore").read_text().splitlines()
    guide = (root / "GUIDE.md").read_text()
    assert "Anytown Community Safety Partnership" in guide and "areas: [E06000001]" in guide
    assert "$" not in guide  # every placeholder filled

    cat = Catalog.load(root / "parameters")
    assert cat.partnership == "Anytown Community Safety Partnership"
    assert cat.partnership_areas == ["E06000001", "E06000002"]
    assert sorted(m.id for m in cat.headline_measures()) == ["homicide", "knife_admissions", "knife_crime"]
    assert set(check_measure_filters(cat)) == {"homicide", "knife_admissions", "knife_crime"}

    rc = main(["--root", str(root), "validate", "--all"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "no evaluation parameter files" in out.out

    rc = main(["--root", str(root), "data", "check"])
    out = capsys.readouterr().out
    assert rc == 1  # data still missing
    for sid in ("police_uk", "lsoa_lookup", "force_extract", "hospital", "homicide_index", "population"):
        assert f"MISSING source {sid}" in out
    assert "expected at data/police-uk" in out
    doc = json.loads((root / "reports" / "data-quality.json").read_text())
    assert len([s for s in doc["sources"] if s["missing"]]) == 6
    assert (root / "reports" / "data-quality.md").read_text().startswith("# Data quality: Anytown")


def test_sources_template_follows_the_catalogue_format(tmp_path):
    pytest.importorskip("sveval.data.sources")
    from sveval.data.sources import Sources

    root = tmp_path / "p"
    init_project(root, "X", "E06000001")
    src = Sources.load(root / "parameters" / "sources.yaml", root)
    measures = yaml.safe_load((root / "parameters" / "measures.yaml").read_text())["measures"]
    assert {m["source"] for m in measures} <= set(src.ids)
    assert all(s.path.startswith("data/") for s in src)


def test_default_files_load_like_the_projects_own(tmp_path):
    from sveval.pipeline.disclosure import load_rules
    from sveval.pipeline.value import load_tables

    init_project(tmp_path / "p", "X", "E06000001")
    params = tmp_path / "p" / "parameters"
    costs, defl = load_tables(params)
    ref_costs, ref_defl = load_tables(REPO / "parameters")
    assert set(costs.categories) == set(ref_costs.categories) and costs.price_year == ref_costs.price_year
    assert defl.base_year == ref_defl.base_year
    rules = load_rules(params)
    assert set(rules.rules) >= {"hospital", "police", "none"}
    tmpl = {m["id"]: m for m in yaml.safe_load((TEMPLATES / "measures.yaml").read_text())["measures"]}
    repo = {m["id"]: m for m in yaml.safe_load((REPO / "parameters" / "measures.yaml").read_text())["measures"]}
    for mid, m in tmpl.items():
        assert m == repo[mid], mid  # the headline definitions are the example's


def test_other_code_system(tmp_path):
    with pytest.raises(SvevalError, match="not a 9-character ONS code.*--code-system other"):
        init_project(tmp_path / "a", "X", "DUR1,DAR2")
    init_project(tmp_path / "b", "X", "DUR1,DAR2", code_system="other")
    cat = Catalog.load(tmp_path / "b" / "parameters")
    assert cat.partnership_areas == ["DAR2", "DUR1"]
    assert "code_system: other" in (tmp_path / "b" / "parameters" / "areas.yaml").read_text()


@pytest.mark.parametrize(("name", "areas", "pattern"), [
    ("", "E06000001", "--name needs"),
    ("  ", "E06000001", "--name needs"),
    ("X", "", "at least one area code"),
    ("X", "E06000001,E06000001", "given more than once"),
    ("X", "E06000001,bad code", "not an area code"),
])
def test_bad_arguments_refused(tmp_path, name, areas, pattern):
    with pytest.raises(SvevalError, match=pattern):
        init_project(tmp_path / "p", name, areas)
    assert not (tmp_path / "p").exists()


def test_never_overwrites(tmp_path, capsys):
    root = tmp_path / "p"
    init_project(root, "X", "E06000001")
    with pytest.raises(SvevalError, match="already holds an sveval project"):
        init_project(root, "Y", "E06000002")
    other = tmp_path / "q"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc = main(["init", str(other), "--name", "X", "--areas", "E06000001"])
    assert rc == 1 and "is not empty" in capsys.readouterr().err
    init_project(other, "X", "E06000001", force=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_scaffolded_project_finds_the_installed_notebooks(tmp_path):
    """A project made by `sveval init` has no evaluations/ notebooks of its own: the runner uses the
    design notebooks installed with sveval (package data), and a project's own copy wins."""
    from sveval.paths import ProjectPaths

    repo = Path(__file__).resolve().parents[1]
    paths = ProjectPaths(tmp_path)
    for name in ("its", "did", "synth", "tracking"):
        nb = paths.notebook(name)
        assert nb.is_file() and nb.read_bytes() == (repo / "evaluations" / f"{name}.ipynb").read_bytes()
    own = tmp_path / "evaluations" / "its.ipynb"
    own.parent.mkdir()
    own.write_text("{}")
    assert paths.notebook("its") == own
