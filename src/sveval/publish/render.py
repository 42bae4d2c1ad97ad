"""Rendering the Quarto project: with Quarto when installed, else with sveval's fallback renderer.

Neither renderer executes code. Quarto reads the executed notebooks as they are
(``execute: enabled: false`` in ``_quarto.yml`` and in each notebook's front matter). The fallback
renderer turns notebooks into HTML with nbconvert (inputs excluded, outputs as stored) and the
generated Markdown pages with mistune (the Markdown library nbconvert itself uses), puts the same
navigation bar on every page, keeps every link relative (so the site works from ``file://`` and any
static server), and labels every page with :data:`sveval.publish.text.FALLBACK_BANNER`.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mistune
import nbformat
import yaml
from markupsafe import Markup, escape
from mistune.toc import add_toc_hook
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

from sveval.errors import PublishError
from sveval.publish.text import FALLBACK_BANNER, env, template_text

QUARTO_TIMEOUT_S = 1800


# ------------------------------------------------------------------------------------------------
# Quarto
# ------------------------------------------------------------------------------------------------
def render_quarto(project: Path, quarto_bin: str) -> list[str]:
    """Run ``quarto render <project>``; return its warnings, raise :class:`PublishError` on failure."""
    try:
        proc = subprocess.run(
            [quarto_bin, "render", str(project)],
            capture_output=True, text=True, timeout=QUARTO_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PublishError(f"quarto render failed to run ({quarto_bin}): {exc}") from exc
    log = (proc.stderr or "") + (proc.stdout or "")
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-30:])
        raise PublishError(f"quarto render exited with status {proc.returncode}; the site was left unchanged:\n{tail}")
    return [line.strip() for line in log.splitlines() if line.strip().startswith("WARN")]


# ------------------------------------------------------------------------------------------------
# Fallback: Markdown
# ------------------------------------------------------------------------------------------------
def heading_id(text: str) -> str:
    """Pandoc-style identifier: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\]\([^)]*\)", "]", text)  # a link's target is not part of its heading's id
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\s.-]", "", text)
    text = re.sub(r"\s+", "-", text.strip())
    return text.lstrip("0123456789.-") or "section"


def _markdown() -> mistune.Markdown:
    md = mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])
    seen: dict[str, int] = {}

    def hid(token: dict[str, Any], index: int) -> str:
        base = heading_id(token.get("text") or "".join(c.get("raw", "") for c in token.get("children", [])))
        n = seen.get(base, 0)
        seen[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    add_toc_hook(md, min_level=1, max_level=4, heading_id=hid)
    return md


_FENCE_OPEN = re.compile(r"^:::+\s*\{?\s*\.?([A-Za-z][\w-]*)[^}]*\}?\s*$")
_FENCE_CLOSE = re.compile(r"^:::+\s*$")


_SPAN = re.compile(r"\[([^\[\]]+)\]\{((?:\s*\.[A-Za-z][\w-]*)+)\s*\}")
_FIGURE = re.compile(r'^!\[([^\]]*)\]\(([^)\s]+)\)\{fig-alt="([^"]*)"\}[ \t]*$', re.MULTILINE)


def pandoc_inline(text: str) -> str:
    """The Pandoc constructs sveval's pages use that CommonMark lacks, as HTML: bracketed spans
    (``[text]{.a .b}``) and figures with alt text (``![caption](src){fig-alt="..."}``)."""
    text = _FIGURE.sub(
        lambda m: (f'<figure class="figure"><img src="{m.group(2)}" alt="{m.group(3)}">'
                   f"<figcaption>{m.group(1)}</figcaption></figure>"),
        text,
    )
    return _SPAN.sub(lambda m: f'<span class="{" ".join(c.strip().lstrip(".") for c in m.group(2).split())}">'
                               f"{m.group(1)}</span>", text)


_TABLE = re.compile(r"(<table\b.*?</table>)", re.DOTALL)


def scroll_tables(html: str) -> str:
    """Wrap every table in a keyboard-focusable scrolling region (usable on a phone)."""
    count = 0

    def wrap(m: re.Match) -> str:
        nonlocal count
        count += 1
        return (f'<div class="table-scroll" tabindex="0" role="region" aria-label="Table {count} '
                f'(scrolls sideways)">{m.group(1)}</div>')

    return _TABLE.sub(wrap, html)


_HEADING_TAG = re.compile(r'<h([23])\b[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.DOTALL)


def toc_entries(html: str) -> list[dict[str, Any]]:
    """Level 2 and 3 headings of a page body (with ids) for its table of contents."""
    out = []
    for level, hid, inner in _HEADING_TAG.findall(html):
        text = " ".join(re.sub(r"<[^>]+>", "", inner).split())
        if text:
            out.append({"level": int(level), "id": hid, "text": Markup(escape(text))})
    return out


def markdown_to_html(text: str) -> str:
    """Markdown (with Pandoc ``::: {.class}`` divs, one level deep) to HTML."""
    text = pandoc_inline(text)
    md = _markdown()
    out: list[str] = []
    buf: list[str] = []
    div: str | None = None
    inner: list[str] = []
    fence_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence_code = not fence_code
        if not fence_code and div is None and _FENCE_OPEN.match(line) and not _FENCE_CLOSE.match(line):
            out.append(md("\n".join(buf)))
            buf, div, inner = [], _FENCE_OPEN.match(line).group(1), []
            continue
        if not fence_code and div is not None and _FENCE_CLOSE.match(line):
            kind = div.replace("callout-", "")
            out.append(f'<div class="callout {div} callout-{kind}">\n{md(chr(10).join(inner))}</div>')
            div = None
            continue
        (inner if div is not None else buf).append(line)
    if div is not None:  # unclosed div: render its content rather than lose it
        buf += inner
    out.append(md("\n".join(buf)))
    return "\n".join(out)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(front matter, body)`` of a Markdown page that starts with a ``---`` YAML block."""
    if not text.startswith("---"):
        return {}, text
    _, fm, body = text.split("---", 2)
    data = yaml.safe_load(fm) or {}
    return (data if isinstance(data, dict) else {}), body


_HREF = re.compile(r'(href|src)="([^"#:?]+?)\.(qmd|ipynb|md)(#[^"]*)?"')


def rewrite_links(html: str) -> str:
    """Point relative links at source files (``x.qmd``, ``x.ipynb``) to their pages (``x.html``)."""
    return _HREF.sub(lambda m: f'{m.group(1)}="{m.group(2)}.html{m.group(4) or ""}"', html)


# ------------------------------------------------------------------------------------------------
# Fallback: notebooks
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _notebook_exporter() -> HTMLExporter:
    """One exporter for every notebook of a site: its Jinja templates are compiled once (about
    0.2 s a notebook otherwise). Exporting does not change it.

    ``optimistic_validation``: nbconvert checks the notebook against the schema once, after its
    preprocessors, instead of after each of them (half the time of a render; the check does not
    change the notebook, so the HTML is the same)."""
    exporter = HTMLExporter(
        template_name="basic",
        optimistic_validation=True,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        exclude_raw=True,
    )
    tags = TagRemovePreprocessor(
        remove_cell_tags={"remove-cell", "remove_cell"},
        remove_all_outputs_tags={"remove-output", "remove_output"},
        enabled=True,
    )
    exporter.register_preprocessor(tags, enabled=True)
    return exporter


def notebook_to_html(nb: nbformat.NotebookNode) -> str:
    """Outputs and Markdown of an executed notebook as an HTML fragment; code hidden, nothing run."""
    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and c.source.lstrip().startswith("---"))]
    body, _ = _notebook_exporter().from_notebook_node(nb)
    body = re.sub(r'<a class="anchor-link" href="#[^"]*">\xb6</a>', "", body)
    return body


def notebook_file_html(path: str | Path) -> str:
    """:func:`notebook_to_html` of the notebook file ``path`` (a job a worker process can run)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path}: cannot be read for rendering ({exc})") from exc
    return notebook_to_html(nb)


def _page_body(project: Path, page: Any) -> str:
    """The HTML body of a generated Markdown page (its listing, if any, as a table)."""
    fm, text = split_front_matter((project / page.source).read_text(encoding="utf-8"))
    listing = fm.get("listing") if isinstance(fm.get("listing"), dict) else None
    placeholder = "SVEVAL-LISTING-PLACEHOLDER"
    if listing:
        text = _LISTING_DIV.sub(placeholder, text)
    body = markdown_to_html(text)
    if listing:
        body = body.replace(f"<p>{placeholder}</p>", placeholder).replace(
            placeholder, listing_html(project, listing))
    return body


def _page_body_of(project: Path, page: Any) -> str:
    return notebook_file_html(project / page.source) if page.kind == "notebook" else _page_body(project, page)


# ------------------------------------------------------------------------------------------------
# Fallback: the site
# ------------------------------------------------------------------------------------------------
def banner_html(text: str) -> Markup:
    """The banner text with its `code` spans as <code> (everything else escaped)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def _nav(items: Sequence[Mapping[str, Any]], prefix: str, current: str) -> list[dict[str, Any]]:
    def link(href: str) -> str:
        path, _, frag = href.partition("#")
        return prefix + str(Path(path).with_suffix(".html").as_posix()) + (f"#{frag}" if frag else "")

    nav = []
    for item in items:
        if "menu" in item:
            entries = [{"text": m["text"], "href": link(m["href"]), "active": m["href"] == current} for m in item["menu"]]
            nav.append({"text": item["text"], "menu": entries, "active": any(e["active"] for e in entries)})
        else:
            nav.append({"text": item["text"], "href": link(item["href"]), "active": item["href"] == current})
    return nav


def listing_html(project: Path, listing: Mapping[str, Any]) -> str:
    """A Quarto listing (``contents: <file>.yml``, ``type: table``) as a static table, with the
    same fields and display names, and the items' categories."""
    contents = listing.get("contents")
    path = project / str(contents)
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise PublishError(f"{path}: listing contents cannot be read ({exc})") from exc
    fields = list(listing.get("fields") or ["title", "description"])
    names = dict(listing.get("field-display-names") or {})
    head = "".join(f"<th>{escape(names.get(f, f))}</th>" for f in fields)
    rows = []
    for it in items:
        cells = []
        for f in fields:
            value = escape(str(it.get(f, "")))
            if f == "title" and it.get("path"):
                href = re.sub(r"\.(qmd|ipynb|md)$", ".html", str(it["path"]))
                value = Markup(f'<a href="{escape(href)}">{value}</a>')
            cells.append(f"<td>{value}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cats = sorted({str(c) for it in items for c in it.get("categories") or []})
    cat_html = ("<p class=\"listing-categories\"><strong>Categories:</strong> "
                + ", ".join(str(escape(c)) for c in cats) + "</p>") if cats else ""
    return (f'<table class="listing"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            + cat_html)


_LISTING_DIV = re.compile(r"^:::+\s*\{#([\w-]+)\}\s*\n:::+\s*$", re.MULTILINE)


def _copy_resources(project: Path, site: Path, dirs: Sequence[str]) -> None:
    for d in dirs:
        src = project / d
        if src.is_dir():
            shutil.copytree(src, site / d, dirs_exist_ok=True)


def copy_figures(project: Path, helper: Any = None) -> None:
    """Copy the project's ``figures`` into ``project/_site``, once ``helper`` (if any) has drawn them."""
    if helper is not None:
        helper.wait()
    _copy_resources(project, project / "_site", ["figures"])


def render_fallback(project: Path, pages: Sequence[Any], config: Mapping[str, Any],
                    why: str = "Quarto is not installed", helper: Any = None,
                    with_figures: bool = True) -> list[str]:
    """Render ``pages`` of the Quarto project in ``project`` to ``project/_site`` without Quarto.

    ``helper`` (a :class:`sveval.publish.workers.Helper`, optional): any figures it is still
    drawing for the project are waited for before the project's ``figures`` are copied (the pages
    are rendered meanwhile). The files written are the same with or without it.
    ``with_figures=False`` leaves that last step to the caller (:func:`copy_figures`), who may
    do other work on the site meanwhile.
    """
    template = env().get_template("fallback_page.html.j2")
    site = project / "_site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    shutil.copy2(project / "styles.css", site / "styles.css")
    fmt = (config.get("format") or {}).get("html") or {}
    css = fmt.get("css") or ["styles.css"]
    css = [css] if isinstance(css, str) else list(css)
    for extra in css:
        if extra != "styles.css" and (project / extra).exists():
            shutil.copy2(project / extra, site / extra)
    (site / "sveval-fallback.css").write_text(template_text("fallback.css"), encoding="utf-8")
    website = config["website"]
    warnings: list[str] = []
    for page in pages:
        body = _page_body_of(project, page)
        kind = "notebook" if page.kind == "notebook" else "page"
        depth = len(Path(page.source).parts) - 1
        prefix = "../" * depth
        html = template.render(
            site_title=website["title"],
            title=page.title,
            description=page.description,
            body=Markup(rewrite_links(scroll_tables(body))),
            toc=toc_entries(body),
            stylesheets=[prefix + c for c in css],
            kind=kind,
            root=prefix,
            home=prefix + "index.html",
            nav=_nav(website["navbar"]["left"], prefix, page.source),
            banner_html=banner_html(FALLBACK_BANNER),
            footer_left=website.get("page-footer", {}).get("left", ""),
            footer_right="Published with sveval (fallback renderer)",
        )
        out = site / page.output
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    _copy_resources(project, site, ["downloads"])
    if with_figures:
        copy_figures(project, helper)
    warnings.append(
        f"{why}: the site was rendered by sveval's fallback renderer; "
        "run `quarto render reports` for the Quarto site"
    )
    return warnings
