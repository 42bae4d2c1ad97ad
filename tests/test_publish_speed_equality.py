"""The parallel publish (figures and control-chart readings in a worker process, sveval.publish.workers)
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
            submitted.append(f"{target}:{args[0]}" if target.endswith("draw_svg") else target)
        return real_submit(self, target, *args, **kwargs)

    monkeypatch.setattr(workers.Helper, "submit", spy)
    seq = publish(seq_dir, catalog=catalog, quarto=None, parallel=False)
    assert submitted == []
    par = publish(par_dir, catalog=catalog, quarto=None, parallel=True)
    # the worker really had the figures and the readings to do
    assert submitted.count("sveval.report.plots.overview:draw_svg:forest_plot_of") == 1
    assert submitted.count("sveval.report.plots.overview:draw_svg:spc_chart") == 2
    assert submitted.count("sveval.report.plots.overview:draw_svg:rolling_rates") == 2
    assert submitted.count("sveval.designs.spc:latest_variation") == 2  # the measures page's readings

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
    its name while the worker may still be drawing, and the previous site stays."""
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


def test_scan_prefilter_never_skips_a_match():
    """scan_published skips its case-insensitive field search where the prefilter says no field
    can match: check that against the search itself, with the characters re.I folds onto ASCII
    letters (Kelvin sign, dotless i, long s, dotted capital I) and random text."""
    import random
    import re

    from sveval.pipeline.disclosure import _field_prefilter

    fields = ["crime_id", "nhs_number", "victim_dob", "date_of_birth", "home_postcode", "k9_ref"]
    rx = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(f) for f in fields) + r")(?![A-Za-z0-9])", re.I)
    may_hold = _field_prefilter(fields)
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz_CRIMEID9 \u212a\u0131\u017f\u0130\u00e9\u2013\u25bc"
    texts = ["", "no fields here", "CRIME_ID", "x nhs_NUMBER y", "\u212a9_ref", "cr\u0131me_id", "crime_\u0130d",
             "hom\u0435_postcode", "date_of_birth\u2013", "\u017f" + "ome"]
    for _ in range(3000):
        f = rng.choice(fields)
        mutated = "".join(rng.choice(["\u212a", "\u0131", "\u017f", "\u0130", c.upper(), c])
                          if c.isalpha() and rng.random() < 0.2 else c for c in f)
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        texts.append(noise + mutated + noise[::-1])
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))))
    matched = 0
    for t in texts:
        hit = rx.search(t) is not None
        matched += hit
        assert may_hold(t, t.lower()) or not hit, t
    assert matched > 100  # the check saw real matches, with and without folded characters
    assert not may_hold("plain ascii text", "plain ascii text")
    assert _field_prefilter(["n\u00famero_id"])("anything", "anything")  # a non-ASCII field: always searched


def test_worker_does_not_rerun_the_callers_script(tmp_path):
    """A script without an ``if __name__ == "__main__"`` guard runs once: the worker is a fresh
    interpreter that imports sveval, not the caller's script (as multiprocessing's spawn would)."""
    import subprocess
    import sys

    marker = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os\n"
        "from sveval.publish.workers import Helper\n"
        f"with open({str(marker)!r}, 'a') as f:\n"
        "    f.write('run\\n')\n"
        "with Helper(parallel=True) as h:\n"
        "    assert h.submit('os:getpid').result() != os.getpid()\n",
        encoding="utf-8",
    )
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, timeout=120)
    assert marker.read_text() == "run\n"


def test_cancelled_jobs_never_run(tmp_path):
    """A job cancelled before the worker got it (as Helper.close cancels what a failed publish
    leaves) is never sent."""
    with workers.Helper(parallel=True) as helper:
        slow = helper.submit("time:sleep", 0.5)
        taken = helper.submit("pathlib:Path.touch", tmp_path / "ran")
        assert taken.cancel()
        slow.result()
        helper.wait()
    assert taken.cancelled() and not (tmp_path / "ran").exists()


def test_file_by_file_scan_lists_what_the_folder_scan_lists(two_projects):
    """publish scans the rendered pages file by file (while the worker draws): the findings, in
    order, are those of scanning the whole site at once."""
    from sveval.pipeline.disclosure import load_rules, scan_published
    from sveval.publish.site import _scan_files, _site_files

    rules = load_rules(REPO / "parameters")
    reports, _ = two_projects
    publish(reports, quarto=None, parallel=False)
    site = reports / "_site"
    (site / "downloads" / "leak.json").write_text('{"rows": [{"nhs_number": "1", "date_of_birth": "x"}]}')
    (site / "a-leak.html").write_text("<p>patient_id 12</p><table><tr><th>nhs_number</th></tr><tr><td>3</td></tr></table>")
    (site / "figures").mkdir(exist_ok=True)
    (site / "figures" / "z.svg").write_text("<svg><text>home_postcode</text></svg>")
    whole = scan_published([site], rules=rules)
    assert len(whole) >= 4
    files = _site_files(site)
    by_file = _scan_files(files[::-1], rules)  # in any order: merged back in the folder's order
    assert [x for f in files for x in by_file[f]] == whole


def test_a_lost_worker_leaves_its_jobs_to_this_process():
    """If the worker process dies (killed, or it could not start), the jobs still run: here."""
    with workers.Helper(parallel=True) as helper:
        assert helper.submit("os:getpid").result() != os.getpid()
        helper._proc.kill()
        helper._proc.wait()
        assert helper.submit("os:getpid").result() == os.getpid()
        assert helper.worker_lost and "stopped" in helper.worker_lost
        assert helper.submit("math:sqrt", 9.0).result() == 3.0


def test_quarto_gets_the_same_project_with_its_figures_drawn(two_projects, tmp_path, monkeypatch):
    """With Quarto, publish waits for the worker's figures before `quarto render`: a stand-in
    Quarto records every file of the project it is given (and writes the pages); the parallel and
    the sequential publish hand it the same files, figures included."""
    import json
    import stat
    import sys

    fake = tmp_path / "quarto"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import hashlib, json, os, sys\n"
        "from pathlib import Path\n"
        "project = Path(sys.argv[2])\n"
        "files = {p.relative_to(project).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()\n"
        "         for p in sorted(project.rglob('*')) if p.is_file()}\n"
        "Path(os.environ['FAKE_QUARTO_LOG']).write_text(json.dumps(files))\n"
        "for src in files:\n"
        "    if src.endswith(('.qmd', '.ipynb')):\n"
        "        out = project / '_site' / Path(src).with_suffix('.html')\n"
        "        out.parent.mkdir(parents=True, exist_ok=True)\n"
        "        out.write_text('<html></html>')\n",
        encoding="utf-8",
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    seen = {}
    for name, reports, parallel in (("seq", two_projects[0], False), ("par", two_projects[1], True)):
        log = tmp_path / f"{name}.json"
        monkeypatch.setenv("FAKE_QUARTO_LOG", str(log))
        report = publish(reports, quarto=str(fake), parallel=parallel)
        assert report.renderer == "quarto"
        seen[name] = json.loads(log.read_text())
    assert sum(1 for f in seen["par"] if f.startswith("figures/") and f.endswith(".svg")) == 5
    assert seen["par"] == seen["seq"]
