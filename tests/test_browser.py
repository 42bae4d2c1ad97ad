"""The published site in a real browser: headless Chromium loads reports/_site/index.html.

The site is built here with :func:`sveval.publish.site.publish` on the fake evaluations of
``test_site.py`` (fallback renderer, so Quarto is not needed). The DOM Chromium builds is checked
for every evaluation title, the navigation and the fallback banner, and a screenshot of the index
and of one evaluation page is saved to the test artefact folder (``<repo>/test-artifacts``, or
``$SVEVAL_ARTIFACTS``).

Without Chromium the test is skipped with a reason, except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_site import EVALUATIONS, build_fake_reports, executed_notebooks  # noqa: F401 (fixture)

from sveval.publish.site import publish

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    env = os.environ.get("SVEVAL_CHROMIUM")
    for cand in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        found = shutil.which(cand)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Chromium is required in CI for the browser test (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium); browser test skipped outside CI")
    return exe


def _artifacts() -> Path:
    out = Path(os.environ.get("SVEVAL_ARTIFACTS", REPO / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def dump_dom(exe: str, url: str, profile: Path) -> str:
    """The DOM Chromium builds for ``url`` (after scripts and styles), as HTML text."""
    proc = _run_chromium(exe, profile, "--dump-dom", url)
    assert proc.returncode == 0, f"chromium --dump-dom failed: {proc.stderr[-2000:]}"
    return proc.stdout


def screenshot(exe: str, url: str, out: Path, profile: Path, size: str = "1366,1400") -> Path:
    """Save a PNG of ``url`` to ``out``."""
    out.unlink(missing_ok=True)
    proc = _run_chromium(exe, profile, f"--screenshot={out}", f"--window-size={size}", url)
    assert proc.returncode == 0 and out.exists(), f"chromium --screenshot failed: {proc.stderr[-2000:]}"
    return out


def check_site_in_browser(site_dir: Path, titles: list[str], exe: str, profile: Path, artifacts: Path,
                          prefix: str = "") -> dict[str, Path]:
    """Load ``site_dir/index.html`` in Chromium, check every title is shown, save screenshots.

    Reusable on any published reports folder (the real example's end-to-end test calls it too).
    """
    index = site_dir / "index.html"
    assert index.exists(), f"{index} was not rendered"
    dom = html.unescape(dump_dom(exe, index.as_uri(), profile))
    assert "<nav" in dom, "the page has no navigation bar"
    missing = [t for t in titles if t not in dom]
    assert not missing, f"evaluation titles not shown on the index: {missing}"
    shots = {"index": screenshot(exe, index.as_uri(), artifacts / f"{prefix}index.png", profile)}
    pages = sorted((site_dir / "evaluations").glob("*.html"))
    if pages:
        shots["evaluation"] = screenshot(exe, pages[0].as_uri(), artifacts / f"{prefix}evaluation.png", profile)
    return shots


def test_index_in_headless_chromium(tmp_path, executed_notebooks, chromium):  # noqa: F811
    reports = build_fake_reports(tmp_path, executed_notebooks)
    report = publish(reports, quarto=None)
    titles = [spec["title"] for spec in EVALUATIONS.values()]
    shots = check_site_in_browser(report.site_dir, titles, chromium, tmp_path / "profile", _artifacts())
    dom = html.unescape(dump_dom(chromium, (report.site_dir / "index.html").as_uri(), tmp_path / "profile"))
    assert "Preview rendered by sveval's fallback renderer" in dom
    for label in ("Home", "Evaluations", "Tracking", "Methods", "Data &amp; disclosure", "Data & disclosure"):
        if label.startswith("Data &amp;"):
            continue
        assert f">{label}<" in dom, f"navigation item {label!r} missing"
    for png in shots.values():
        assert png.stat().st_size > 10_000, f"{png} looks empty"
