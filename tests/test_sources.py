"""The data catalogue (parameters/sources.yaml): model, references, periods, paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from sveval.catalog import Catalog
from sveval.data.sources import (
    Sources,
    granularity_of,
    infer_format,
    normalise_period,
    period_range,
)
from sveval.errors import DataError, SpecError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "sources.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_repository_catalogue_describes_the_example(tmp_path):
    s = Sources.load(REPO / "parameters" / "sources.yaml", REPO, tmp_path)
    assert s.spec.base == "example" and s.base_dir == tmp_path
    kinds = {x.id: x.kind for x in s}
    assert kinds == {"police_uk": "police_uk", "force_extract": "records", "aggregate": "table",
                     "hospital": "table", "homicide_index": "table", "youth_justice": "table",
                     "population": "population", "lsoa_lookup": "lookup"}
    assert s.lookup_for(s["police_uk"]).id == "lsoa_lookup"
    # every measure names a source of counts
    cat = Catalog.load(REPO / "parameters")
    assert {m.source for m in cat.measures.values()} <= set(kinds) - {"population", "lsoa_lookup"}


@pytest.mark.parametrize("entry, field, words", [
    ({"id": "x", "kind": "table", "path": "a.csv", "perod": "year"}, "sources.0.perod", "unknown key"),
    ({"id": "x", "kind": "tables", "path": "a.csv"}, "sources.0.kind", "police_uk"),
    ({"id": "x", "kind": "records", "path": "a.csv", "period": "year"}, "sources.0", "only for kind 'table'"),
    ({"id": "x", "kind": "table", "path": "a.csv", "period": "fortnight"}, "sources.0.period", "quarter"),
    ({"id": "X Y", "kind": "table", "path": "a.csv"}, "sources.0.id", "lower-case"),
    ({"id": "x", "kind": "police_uk", "path": "a", "forces": ["Durham Constabulary"]}, "sources.0.forces",
     "slugs"),
    ({"id": "x", "kind": "records", "path": "a.csv", "types": {"date": "when"}}, "sources.0.types.date",
     "timestamp"),
])
def test_bad_entries_are_refused_precisely(tmp_path, entry, field, words):
    with pytest.raises(SpecError) as e:
        Sources.load(_write(tmp_path, {"sources": [entry]}), tmp_path)
    msg = str(e.value)
    assert field in msg and words in msg and "sources.yaml" in msg


def test_references_and_duplicates(tmp_path):
    doc = {"sources": [
        {"id": "a", "kind": "police_uk", "path": "p", "lookup": "nope"},
        {"id": "b", "kind": "records", "path": "r.csv", "complement": "a"},
        {"id": "b", "kind": "table", "path": "t.csv"},
    ]}
    with pytest.raises(SpecError) as e:
        Sources.load(_write(tmp_path, doc), tmp_path)
    msg = str(e.value)
    assert "sources.0.lookup" in msg and "unknown source id" in msg
    assert "sources.1.complement" in msg and "is a police_uk, not a table" in msg
    assert "sources.2.id" in msg and "duplicate id" in msg


def test_files_of_a_path(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.csv", "d/sub/b.csv", "d/.hidden"):
        (tmp_path / name).write_text("x\n1\n")
    doc = {"sources": [{"id": "f", "kind": "table", "path": "d"}, {"id": "g", "kind": "table", "path": "d/*.csv"},
                       {"id": "m", "kind": "table", "path": "missing.csv"},
                       {"id": "n", "kind": "table", "path": "d/*.xlsx"},
                       {"id": "dev", "kind": "table", "path": "/dev/null"}]}
    s = Sources.load(_write(tmp_path, doc), tmp_path)
    assert [p.name for p in s.files(s["f"])] == ["a.csv", "b.csv"]
    assert [p.name for p in s.files(s["g"])] == ["a.csv"]
    with pytest.raises(DataError, match="source 'm': path does not exist"):
        s.files(s["m"])
    with pytest.raises(DataError, match="no file matches the glob"):
        s.files(s["n"])
    with pytest.raises(DataError, match="not a regular file or folder"):
        s.files(s["dev"])


def test_formats_inferred():
    assert infer_format(Path("x/a.CSV")) == "csv"
    assert infer_format(Path("a.csv.gz")) == "csv.gz"
    assert infer_format(Path("a.xlsx")) == "xlsx"
    assert infer_format(Path("a.parquet")) == "parquet"
    with pytest.raises(DataError, match="declare 'format'"):
        infer_format(Path("a.dat"), "s")


@pytest.mark.parametrize("value, granularity, expected", [
    ("2021-04", "month", "2021-04"), ("2021-04-30", "month", "2021-04"), ("2021-13", "month", None),
    ("2021-Q2", "quarter", "2021-Q2"), ("2021 Q2", "quarter", "2021-Q2"), ("Q2 2021", "quarter", "2021-Q2"),
    ("2021q4", "quarter", "2021-Q4"), ("2021-Q5", "quarter", None), ("2021-04", "quarter", None),
    ("2021", "year", "2021"), ("2021-04", "year", None),
    ("2021/22", "financial_year", "2021/22"), ("2021-22", "financial_year", "2021/22"),
    ("2021/2022", "financial_year", "2021/22"), ("2021/23", "financial_year", None),
    ("1999/00", "financial_year", "1999/00"), ("2021", "financial_year", None),
])
def test_normalise_period(value, granularity, expected):
    assert normalise_period(value, granularity) == expected


def test_period_ranges():
    assert period_range("2020-11", "2021-02", "month") == ["2020-11", "2020-12", "2021-01", "2021-02"]
    assert period_range("2020-Q3", "2021-Q2", "quarter") == ["2020-Q3", "2020-Q4", "2021-Q1", "2021-Q2"]
    assert period_range("2019", "2021", "year") == ["2019", "2020", "2021"]
    assert period_range("1998/99", "2000/01", "financial_year") == ["1998/99", "1999/00", "2000/01"]
    assert [granularity_of(p) for p in ("2021-04", "2021-Q1", "2021", "2021/22", "x")] == [
        "month", "quarter", "year", "financial_year", None]


def test_catalog_refuses_a_measure_with_an_unknown_source(tmp_path):
    pdir = tmp_path / "parameters"
    shutil.copytree(REPO / "parameters", pdir)
    text = (pdir / "measures.yaml").read_text().replace("source: youth_justice", "source: youth_justise")
    (pdir / "measures.yaml").write_text(text)
    with pytest.raises(SpecError) as e:
        Catalog.load(pdir)
    msg = str(e.value)
    assert "measures.yaml" in msg and ".source" in msg and "youth_justise" in msg
    assert "Did you mean 'youth_justice'" in msg
    text = text.replace("source: youth_justise", "source: population")
    (pdir / "measures.yaml").write_text(text)
    with pytest.raises(SpecError, match="holds no counts"):
        Catalog.load(pdir)


def test_files_under_lists_what_rglob_lists(tmp_path):
    """The scandir listing of a source folder equals the rglob expression it replaced: dot files out,
    files in hidden folders in (or out with hidden_folders=False), links to files in, linked folders
    not entered, sorted as paths."""
    import os

    from sveval.data.sources import files_under

    root = tmp_path / "src"
    for rel in ("b.csv", "a/z.csv", "a/.hidden.csv", "a/b/c/deep.csv", ".store/part.parquet",
                "a-b/x.csv", "A/y.csv", ".dot/.also.csv", "empty/.keep"):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    (root / "emptydir").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.csv").write_text("o")
    os.symlink(outside / "o.csv", root / "link.csv")
    os.symlink(outside, root / "linked-folder")
    os.symlink(tmp_path / "missing.csv", root / "dangling.csv")

    old = sorted(x for x in root.rglob("*") if x.is_file() and not x.name.startswith("."))
    assert files_under(root) == old
    assert root / ".store" / "part.parquet" in old and root / "link.csv" in old
    old_visible = sorted(x for x in root.rglob("*") if x.is_file()
                         and not any(part.startswith(".") for part in x.relative_to(root).parts))
    assert files_under(root, hidden_folders=False) == old_visible
