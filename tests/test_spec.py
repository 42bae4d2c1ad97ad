"""Bad parameter files are refused before anything runs, with file, field, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sveval.cli import main
from sveval.errors import SpecError
from sveval.pipeline.api import prepare
from sveval.spec import EvaluationSpec, ITSOptions, load_evaluation, parse_period

GOOD = {
    "id": "probe",
    "title": "Probe evaluation",
    "intervention": "youth_navigators",
    "measure": "fte_youth",
    "areas": ["E06000047"],
    "design": "its",
    "period": {"start": "2015-04", "end": "2026-03"},
}


def write_spec(project: Path, data: dict, name: str | None = None) -> Path:
    path = project / "parameters" / "evaluations" / f"{name or data['id']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(path: Path, root: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        prepare(path, root=root)
    return info.value


def test_good_file_is_accepted(project):
    ctx = prepare(write_spec(project, GOOD), root=project)
    assert ctx.measure.id == "fte_youth"
    assert ctx.intervention_start == ctx.intervention.start
    assert ctx.pre_months >= 24 and ctx.post_months >= 3
    s = ctx.series()
    assert list(s.columns[:3]) == ["period", "count", "population"]
    assert len(s) == ctx.pre_months + ctx.post_months


def test_typo_in_key_names_field_and_suggests(project):
    data = dict(GOOD, its={"modle": "poisson"})
    err = refused(write_spec(project, data), project)
    text = str(err)
    assert "probe.yaml" in text
    assert "its.modle" in text and "Did you mean 'model'" in text
    assert "Allowed keys here" in text


def test_typo_in_top_level_key(project):
    data = dict(GOOD)
    data["mesure"] = data.pop("measure")
    text = str(refused(write_spec(project, data), project))
    assert "'mesure'" in text and "Did you mean 'measure'" in text
    assert "field 'measure'" in text and "required" in text


def test_unknown_measure_lists_allowed(project):
    text = str(refused(write_spec(project, dict(GOOD, measure="knife_crimes")), project))
    assert "field 'measure'" in text and "'knife_crimes'" in text
    assert "unknown measure" in text and "knife_crime" in text and "Did you mean 'knife_crime'" in text


def test_unknown_intervention_and_area(project):
    data = dict(GOOD, intervention="nope", areas=["E06000099"])
    err = refused(write_spec(project, data), project)
    fields = [p[0] for p in err.problems]
    assert "intervention" in fields and "areas.0" in fields


def test_bad_enum_value_lists_choices(project):
    text = str(refused(write_spec(project, dict(GOOD, its={"model": "prophet"})), project))
    assert "its.model" in text and "'prophet'" in text and "quasipoisson" in text


def test_date_outside_the_data(project):
    data = dict(GOOD, period={"start": "2010-01", "end": "2026-03"})
    text = str(refused(write_spec(project, data), project))
    assert "period.start" in text and "2010-01" in text and "before the data" in text
    data = dict(GOOD, intervention_start="2027-01")
    text = str(refused(write_spec(project, data), project))
    assert "intervention_start" in text and "2027-01" in text


def test_malformed_date(project):
    text = str(refused(write_spec(project, dict(GOOD, intervention_start="April 2023")), project))
    assert "intervention_start" in text and "YYYY-MM" in text


def test_pre_period_too_short(project):
    data = dict(GOOD, period={"start": "2022-01", "end": "2026-03"}, min_pre_months=24)
    text = str(refused(write_spec(project, data), project))
    assert "pre-period too short" in text and "min_pre_months" in text


def test_missing_file(project):
    with pytest.raises(SpecError) as info:
        prepare(project / "parameters" / "evaluations" / "nope.yaml", root=project)
    assert "nope.yaml" in str(info.value) and "file not found" in str(info.value)


def test_missing_user_data_file(project):
    data = dict(GOOD, data={"source": "csv", "path": "missing.csv"})
    text = str(refused(write_spec(project, data), project))
    assert "data.path" in text and "missing.csv" in text and "file not found" in text


def test_invalid_yaml_gives_line(project):
    path = project / "parameters" / "evaluations" / "broken.yaml"
    path.write_text("id: broken\ntitle: [unclosed\n")
    text = str(refused(path, project))
    assert "invalid YAML" in text and "line" in text


@pytest.mark.parametrize("text, expected", [
    ("[" * 5000 + "]" * 5000, "invalid YAML at line 1"),  # libyaml stops at its nesting limit
    ("a: &x [1]\nb: *x\na: 2\n", "duplicate key 'a' at line 3 (first given at line 1)"),
    ("a: 1\n\tb: 2\n", "invalid YAML at line"),
])
def test_hostile_yaml_refused_with_file_and_line(tmp_path, text, expected):
    from sveval.spec import read_yaml

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        read_yaml(path)
    assert "hostile.yaml" in str(info.value) and expected in str(info.value)


def test_id_must_match_file_name(project):
    path = write_spec(project, dict(GOOD, id="other"), name="probe")
    text = str(refused(path, project))
    assert "field 'id'" in text and "file name" in text


def test_did_needs_comparison():
    with pytest.raises(Exception) as info:
        EvaluationSpec.model_validate(dict(GOOD, design="did"))
    assert "comparison" in str(info.value)


def test_period_parsing():
    assert parse_period("2023-04") == "2023-04"
    for bad in ("2023-4", "2023-13", "23-04", 2023):
        with pytest.raises(ValueError):
            parse_period(bad)
    assert ITSOptions().model == "auto"


def test_load_evaluation_on_repository_files(repo_root):
    files = sorted((repo_root / "parameters" / "evaluations").glob("*.yaml"))
    assert len(files) >= 3
    designs = {load_evaluation(f).design for f in files}
    assert "its" in designs


def test_cli_refuses_invalid_file_before_running(project, capsys):
    bad = write_spec(project, dict(GOOD, its={"modle": "poisson"}))
    good = write_spec(project, dict(GOOD, id="fine"))
    rc = main(["--root", str(project), "run", str(good), str(bad)])
    captured = capsys.readouterr()
    assert rc == 2
    assert "its.modle" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert "nothing was run" in captured.out
    assert not (project / "reports" / "evaluations" / "fine.json").exists()


def test_cli_validate_all_ok(project, capsys):
    rc = main(["--root", str(project), "validate", "--all"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("ok ") >= 3


def test_count_only_options_refused_for_a_continuous_measure(project):
    from sveval.catalog import Catalog

    catalog = Catalog.load(project / "parameters")
    catalog.measures["fte_youth"] = catalog.measures["fte_youth"].model_copy(update={"kind": "continuous"})
    for its, field in (({"model": "negbin"}, "its.model"), ({"interval": "profile"}, "its.interval")):
        path = write_spec(project, dict(GOOD, its=its))
        with pytest.raises(SpecError) as info:
            prepare(path, root=project, catalog=catalog)
        text = str(info.value)
        assert "probe.yaml" in text and field in text and "continuous" in text
    prepare(write_spec(project, dict(GOOD, its={"model": "gls_ar"})), root=project, catalog=catalog)


def test_bad_comparison_lsoas_refused_at_validation(project, repo_root):
    """An LSOA-level DiD builds its panel at validation: a bad comparison LSOA is refused by
    ``sveval validate`` (it used to pass and fail only when the model was fitted)."""
    data = yaml.safe_load((repo_root / "parameters/evaluations/did-nte-safe-streets.yaml").read_text())
    data["id"] = "probe-lsoa"
    data["comparison"]["lsoas"] = [*data["comparison"]["lsoas"][:3], "E01999999"]
    path = write_spec(project, data)
    err = refused(path, project)
    assert "comparison.lsoas.3" in str(err) and "E01999999" in str(err)
    assert main(["--root", str(project), "validate", str(path)]) == 2
