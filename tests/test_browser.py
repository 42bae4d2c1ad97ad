"""The published site in a real browser: headless Chromium loads reports/_site/index.html.

The site is built here with :func:`sveval.publish.site.publish` on the fake evaluations of
``test_site.py`` (fallback renderer, so Quarto is not needed). The DOM Chromium builds is checked
for every evaluation title, the navigation and the fallback banner, and a screenshot of the index
and of one evaluation page is saved to the test artefact folder (``<repo>/test-artifacts``, or
``$SVEVAL_ARTIFACTS``).

Accessibility: every page is checked with axe-core (the npm package, installed by ``.ci/run`` into
``~/.cache/sveval/axe`` or pointed at by ``$SVEVAL_AXE_CORE``, the path of ``axe.min.js``; the test
never downloads it) and must have no serious or critical violation. Screenshots are taken at desktop
and phone widths.

Without Chromium (or without axe-core, for the accessibility test) the test is skipped with a reason,
except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_site import EVALUATIONS, build_fake_reports, executed_notebooks  # noqa: F401 (fixture)

from sveval.publish.site import publish

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
AXE_CACHE = Path.home() / ".cache" / "sveval" / "axe"  # `npm install --prefix` target of .ci/run
DESKTOP, PHONE = "1366,1400", "390,844"

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


def _axe_core() -> Path | None:
    env = os.environ.get("SVEVAL_AXE_CORE")
    for cand in ([Path(env)] if env else []) + [AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"]:
        if cand.is_file():
            return cand
    return None


@pytest.fixture(scope="module")
def axe_core() -> Path:
    found = _axe_core()
    if found is None:
        why = ("axe-core is not installed: `npm install --prefix ~/.cache/sveval/axe axe-core@4` "
               "(as .ci/run does) or set SVEVAL_AXE_CORE to axe.min.js")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why if shutil.which("node") else "node is not installed; " + why)
    return found


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


def screenshot(exe: str, url: str, out: Path, profile: Path, size: str = DESKTOP) -> Path:
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
    shots = {"index": screenshot(exe, index.as_uri(), artifacts / f"{prefix}index.png", profile),
             "index-phone": screenshot(exe, index.as_uri(), artifacts / f"{prefix}index-phone.png", profile,
                                       size=PHONE)}
    pages = sorted((site_dir / "evaluations").glob("*.html"))
    if pages:
        shots["evaluation"] = screenshot(exe, pages[0].as_uri(), artifacts / f"{prefix}evaluation.png", profile)
        shots["evaluation-phone"] = screenshot(exe, pages[0].as_uri(), artifacts / f"{prefix}evaluation-phone.png",
                                               profile, size=PHONE)
    return shots


AXE_RUNNER = """
<script src="{axe}"></script>
<script>
window.addEventListener("load", function () {{
  axe.run(document, {{resultTypes: ["violations"]}}).then(function (r) {{
    var out = document.createElement("pre");
    out.id = "sveval-axe-results";
    out.textContent = JSON.stringify(r.violations.map(function (v) {{
      return {{id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map(function (n) {{ return n.target.join(" "); }})}};
    }}));
    document.body.appendChild(out);
  }});
}});
</script>
"""


def axe_violations(exe: str, page: Path, axe: Path, profile: Path, size: str = DESKTOP) -> list[dict]:
    """axe-core's violations on ``page``: a copy of it beside the original (same relative links)
    with axe injected; Chromium runs it and the results are read back from the DOM."""
    probe = page.with_name(page.stem + ".axe-probe.html")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", AXE_RUNNER.format(axe=axe.as_uri()) + "</body>", 1), encoding="utf-8")
    try:
        proc = _run_chromium(exe, profile, "--virtual-time-budget=30000", f"--window-size={size}",
                             "--dump-dom", probe.as_uri())
    finally:
        probe.unlink(missing_ok=True)
    assert proc.returncode == 0, f"chromium failed on {page}: {proc.stderr[-2000:]}"
    m = re.search(r'<pre id="sveval-axe-results">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert m, f"axe-core did not report on {page} (did the page load?)"
    return json.loads(html.unescape(m.group(1)))


def check_accessibility(site_dir: Path, exe: str, axe: Path, profile: Path) -> dict[str, list[dict]]:
    """axe-core on every page of the site at desktop width and on the index at phone width;
    returns the serious and critical violations by page (empty when the site passes)."""
    bad: dict[str, list[dict]] = {}
    runs = [(p, DESKTOP) for p in sorted(site_dir.rglob("*.html")) if "site_libs" not in p.parts]
    runs.append((site_dir / "index.html", PHONE))
    for page, size in runs:
        found = [v for v in axe_violations(exe, page, axe, profile, size) if v["impact"] in ("serious", "critical")]
        if found:
            bad[f"{page.relative_to(site_dir)} @ {size}"] = found
    return bad


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


def test_accessibility_axe_core(tmp_path, executed_notebooks, chromium, axe_core):  # noqa: F811
    from sveval.catalog import Catalog

    reports = build_fake_reports(tmp_path, executed_notebooks)
    report = publish(reports, catalog=Catalog.load(REPO / "parameters"), quarto=None)
    bad = check_accessibility(report.site_dir, chromium, axe_core, tmp_path / "profile")
    assert not bad, "serious or critical accessibility violations:\n" + json.dumps(bad, indent=1)
    # the checker finds real problems: an image without alt text is critical
    page = report.site_dir / "methods.html"
    page.write_text(page.read_text().replace("</article>", '<img src="figures/forest.svg"></article>', 1))
    found = axe_violations(chromium, page, axe_core, tmp_path / "profile")
    assert any(v["id"] == "image-alt" and v["impact"] == "critical" for v in found)
