"""The parallel publish (figures and notebooks partly in a worker process, sveval.publish.workers)
writes exactly the files of the sequential one, and its errors still reach the caller.

The sequential path (``parallel=False``) draws and renders everything in this process, in page
order, as sveval always did; ``benchmarks/publish_speed.py`` also checks the parallel output
against the code before the change on a full example project.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from test_site import REPO, _fake_tracking, build_fake_reports, executed_notebooks  # noqa: F401 (fixture)

from sveval.errors import PublishError
from sveval.publish import workers
from sveval.publish.site import publish


def _files(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (the lock and staging area aside)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".sveval" not in p.parts
    }


@pytest.fixture
def two_projects(tmp_path, executed_notebooks) -> tuple[Path, Path]:  # noqa: F811 (the fixture)
    reports = build_fake_reports(tmp_path / "a", executed_notebooks)
    _fake_tracking(reports)  # the measures page and its SVG figures
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    return reports, tmp_path / "b" / "reports"


def test_parallel_publish_writes_the_same_files(two_projects, monkeypatch):
    from sveval.catalog import Catalog

    catalog = Catalog.load(REPO / "parameters")  # with disclosure rules: the scan runs too
    seq_dir, par_dir = two_projects
    submitted: list[str] = []
    real_submit = workers.Helper.submit

    def spy(self, target, *args, **kwargs):
        if self.parallel:
            submitted.append(target if target.endswith("notebook_file_html") else f"{target}:{args[0]}")
        return real_submit(self, target, *args, **kwargs)

    monkeypatch.setattr(workers.Helper, "submit", spy)
    seq = publish(seq_dir, catalog=catalog, quarto=None, parallel=False)
    assert submitted == []
    par = publish(par_dir, catalog=catalog, quarto=None, parallel=True)
    # the worker really had the figures and the notebooks to share
    assert submitted.count("sveval.report.plots.overview:draw_svg:forest_plot") == 1
    assert submitted.count("sveval.report.plots.overview:draw_svg:spc_chart") == 2
    assert submitted.count("sveval.report.plots.overview:draw_svg:rolling_rates") == 2
    assert submitted.count("sveval.publish.render:notebook_file_html") == 4

    seq_files, par_files = _files(seq_dir), _files(par_dir)
    assert any(f.startswith("_site/figures/") and f.endswith(".svg") for f in par_files)
    assert "_site/measures.html" in par_files and "_quarto.yml" in par_files
    assert par_files == seq_files  # every source and every rendered file, byte for byte
    assert [(p.source, p.title, p.description, p.kind) for p in par.pages] == \
        [(p.source, p.title, p.description, p.kind) for p in seq.pages]
    assert par.tables == seq.tables
    assert [w.replace(str(par_dir), "R") for w in par.warnings] == [w.replace(str(seq_dir), "R") for w in seq.warnings]


def test_render_errors_reach_the_caller(two_projects, monkeypatch):
    """A notebook that cannot be rendered (here: a staged copy cut short) fails the publish with
    its name, whichever process rendered it, and the previous site stays."""
    from sveval.publish import site

    _, reports = two_projects
    publish(reports, quarto=None, parallel=True)
    before = _files(reports)
    real_write = site._write_notebook

    def cut_short(path, nb):
        real_write(path, nb)
        if path.name == "youth-did.ipynb":
            path.write_text("{not json", encoding="utf-8")

    monkeypatch.setattr(site, "_write_notebook", cut_short)
    with pytest.raises(PublishError, match=r"youth-did\.ipynb: cannot be read for rendering"):
        publish(reports, quarto=None, parallel=True)
    assert _files(reports) == before
    assert not list((reports / ".sveval").glob("publish-*"))


def test_helper_runs_jobs_in_another_process_or_inline():
    with workers.Helper(parallel=True) as helper:
        assert helper.parallel
        assert helper.submit("os:getpid").result() != os.getpid()
        failing = helper.submit("sveval.publish.render:notebook_file_html", "/nonexistent/x.ipynb")
        with pytest.raises(PublishError, match="/nonexistent/x.ipynb: cannot be read"):
            failing.result()
    with workers.Helper(parallel=False) as helper:
        assert not helper.parallel
        assert helper.submit("os:getpid").result() == os.getpid()
        with pytest.raises(PublishError):
            helper.submit("sveval.publish.render:notebook_file_html", "/nonexistent/x.ipynb").result()
        with pytest.raises(PublishError):
            helper.wait()
