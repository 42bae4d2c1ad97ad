"""The store's long frame is kept beside the store (sveval.data.load.cached_long): a cache hit is the
frame the store builds, and a damaged, tampered or stale entry is never used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_project

from sveval.catalog import Catalog
from sveval.data import load
from sveval.data.load import cached_long, long_cache_key, project_sources, store_for
from sveval.paths import ProjectPaths
from sveval.spec import DataSpec


@pytest.fixture(scope="module")
def private_example(tmp_path_factory, example_data) -> Path:
    """A copy of the example (its store included) that these tests may damage."""
    dest = tmp_path_factory.mktemp("long-cache") / "example"
    shutil.copytree(example_data, dest, symlinks=True)
    return dest


@pytest.fixture
def setup(tmp_path, private_example):
    root = make_project(tmp_path / "project", private_example)
    paths = ProjectPaths(root)
    catalog = Catalog.load(paths.parameters)
    sources = project_sources(paths)
    store = store_for(paths, sources)
    store.ingest(sources, catalog.measures.values())
    shutil.rmtree(store.root / "long-cache", ignore_errors=True)
    return paths, catalog, sources, store


def direct(store, sources, catalog) -> pd.DataFrame:
    return store.long(sources, catalog.measures.values(), {c: a.name for c, a in catalog.areas.items()})


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs and a.attrs["granularity"]


def entry(store, sources, catalog) -> tuple[Path, Path]:
    key = long_cache_key(store, sources, catalog)
    return store.root / "long-cache" / f"{key}.csv", store.root / "long-cache" / f"{key}.json"


def test_cache_hit_is_the_frame_the_store_builds(setup, monkeypatch):
    paths, catalog, sources, store = setup
    first = cached_long(store, sources, catalog)
    csv, meta = entry(store, sources, catalog)
    assert csv.is_file() and meta.is_file()
    calls = []
    monkeypatch.setattr(type(store), "long", lambda *a, **k: calls.append(1) or direct(store, sources, catalog))
    second = cached_long(store, sources, catalog)
    assert calls == []  # read from the cache
    same(second, first)
    monkeypatch.undo()
    same(second, direct(store, sources, catalog))
    # through the one loader evaluations use
    same(load.load_long(DataSpec(), None, paths, catalog).long, first)


@pytest.mark.parametrize("damage", ["count", "truncate", "meta_key", "meta_json", "rows", "csv_gone"])
def test_damaged_or_tampered_entry_is_rebuilt(setup, damage):
    paths, catalog, sources, store = setup
    good = cached_long(store, sources, catalog)
    csv, meta = entry(store, sources, catalog)
    text = csv.read_text()
    if damage == "count":  # a count changed: the SHA-256 in the meta no longer matches
        lines = text.splitlines()
        cells = lines[5].split(",")
        cells[3] = str(float(cells[3]) + 1)
        lines[5] = ",".join(cells)
        csv.write_text("\n".join(lines) + "\n")
    elif damage == "truncate":
        csv.write_text(text[: len(text) // 2])
    elif damage == "meta_key":
        m = json.loads(meta.read_text())
        meta.write_text(json.dumps(dict(m, key="0" * 64)))
    elif damage == "meta_json":
        meta.write_text("{not json")
    elif damage == "rows":  # a consistent pair (sha matches) whose row count is wrong
        import hashlib

        short = "\n".join(text.splitlines()[:10]) + "\n"
        csv.write_text(short)
        m = json.loads(meta.read_text())
        meta.write_text(json.dumps(dict(m, sha256=hashlib.sha256(short.encode()).hexdigest())))
    elif damage == "csv_gone":
        csv.unlink()
    again = cached_long(store, sources, catalog)
    same(again, good)
    same(again, direct(store, sources, catalog))
    assert csv.read_text() == text  # rewritten whole


def test_key_follows_data_measures_and_code(setup, monkeypatch):
    paths, catalog, sources, store = setup
    key = long_cache_key(store, sources, catalog)
    assert key == long_cache_key(store, sources, catalog)
    # a measure's definition changes the key
    mid, m = next(iter(catalog.measures.items()))
    changed = Catalog.load(paths.parameters)
    changed.measures[mid] = m.model_copy(update={"name": m.name + " (renamed)"})
    assert long_cache_key(store, sources, changed) != key
    # the store's manifest (what was ingested) changes the key
    man = store.root / "manifest.json"
    original = man.read_bytes()
    man.write_bytes(original.replace(b"{", b"{ ", 1))
    assert long_cache_key(store, sources, catalog) != key
    man.write_bytes(original)
    # the data layer's code changes the key
    monkeypatch.setattr(load, "_CODE_FILES", (*load._CODE_FILES, "example.py"))
    assert long_cache_key(store, sources, catalog) != key


def test_unwritable_cache_still_gives_the_frame(setup):
    paths, catalog, sources, store = setup
    (store.root / "long-cache").write_text("a file where the cache folder should be")
    try:
        same(cached_long(store, sources, catalog), direct(store, sources, catalog))
    finally:
        (store.root / "long-cache").unlink()


def test_old_entries_are_pruned(setup, monkeypatch):
    paths, catalog, sources, store = setup
    monkeypatch.setattr(load, "_CACHE_KEEP", 2)
    for i in range(4):
        monkeypatch.setattr(load, "_CODE_FILES", (*load._CODE_FILES[:6], f"extra-{i}"))
        cached_long(store, sources, catalog)
    assert len(list((store.root / "long-cache").glob("*.json"))) == 2
    assert len(list((store.root / "long-cache").glob("*.csv"))) == 2


def test_shared_loads_read_the_data_once_per_batch(setup, monkeypatch, tmp_path):
    paths, catalog, sources, store = setup
    calls = []
    real = load._load_long
    monkeypatch.setattr(load, "_load_long", lambda *a: calls.append(a[0].source) or real(*a))
    example = DataSpec()
    with load.shared_loads():
        a = load.load_long(example, None, paths, catalog)
        b = load.load_long(example, None, paths, catalog)
        with load.shared_loads():  # nested: the same memo
            c = load.load_long(example, None, paths, catalog)
        # another data block (a long CSV of the user's own) is loaded on its own
        csv = tmp_path / "own.csv"
        a.long.head(40).to_csv(csv, index=False)
        own = load.load_long(DataSpec(source="csv", path=str(csv)), None, paths, catalog)
        again = load.load_long(DataSpec(source="csv", path=str(csv)), None, paths, catalog)
        # another catalogue (other registries) is another key
        d = load.load_long(example, None, paths, Catalog.load(paths.parameters))
    assert a is b is c and own is again and own is not a and d is not a
    assert calls == ["example", "csv", "example"]
    # outside a block every call loads afresh (a long-lived kernel sees changed files)
    e = load.load_long(example, None, paths, catalog)
    f = load.load_long(example, None, paths, catalog)
    assert e is not f and calls[-2:] == ["example", "example"]
    same(e.long, a.long)
