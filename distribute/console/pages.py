"""Static pages: home, how it works, and the benchmark results (BENCHMARKS.md, rendered).

BENCHMARKS.md is written by `make bench` at the project's root, next to the plots it shows. It is
rendered with markdown-it-py with raw HTML disabled (so the file cannot inject markup into a page
that runs under the console's CSP), and its relative image paths are served from
`/benchmarks/files/…`, images only, from the same folder.

The page is laid out for a reader, not in file order: the introduction, the summary and the plots
first, then each level-2 section collapsed in a <details>. The file's HTML comments (the markers
that tell `make bench` which module owns which section) are dropped before rendering, so they are
never shown as text.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from quart import Response, abort

from ..webstate import current_platform
from .web import ConsoleBlueprint, page

__all__ = ["BENCHMARKS_FILE", "BenchmarksPage", "blueprint", "render_benchmarks", "render_markdown"]

blueprint = ConsoleBlueprint("pages", __name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS_FILE = PROJECT_ROOT / "BENCHMARKS.md"
IMAGE_TYPES = {".png", ".svg", ".jpg", ".jpeg", ".webp", ".gif"}


@blueprint.get("/")
async def home() -> Response:
    return await page("console/home.html", workers=current_platform().workers_connected())


@blueprint.get("/how-it-works")
async def how_it_works() -> Response:
    return await page("console/how.html")


@blueprint.get("/benchmarks")
async def benchmarks() -> Response:
    if not BENCHMARKS_FILE.is_file():
        return await page("console/benchmarks.html", content=None)
    text = BENCHMARKS_FILE.read_text(encoding="utf-8")
    return await page("console/benchmarks.html", content=render_benchmarks(text, "/benchmarks/files/"))


@blueprint.get("/benchmarks/files/<path:name>")
async def benchmark_file(name: str) -> Response:
    path = (PROJECT_ROOT / name).resolve()
    if path.suffix.lower() not in IMAGE_TYPES or not path.is_relative_to(PROJECT_ROOT) or not path.is_file():
        abort(404)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = Response(path.read_bytes(), mimetype=mimetype)
    if path.suffix.lower() == ".svg":
        # An SVG is a document that can carry script: only ever rendered as an image.
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    return response


class _Renderer(RendererHTML):
    """HTML whose relative image sources point under the render call's `env["image_base"]`, and whose
    tables scroll inside a keyboard-focusable region (a wide table never widens a phone's page)."""

    def table_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        region = '<div class="table-wrap" tabindex="0" role="region" aria-label="Table (scrolls sideways)">'
        return region + self.renderToken(tokens, idx, options, env)

    def table_close(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return self.renderToken(tokens, idx, options, env) + "</div>\n"

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        if src and "://" not in src and not src.startswith(("/", "data:")):
            token.attrSet("src", env["image_base"] + src.removeprefix("./"))
        return super().image(tokens, idx, options, env)


def render_markdown(text: str, image_base: str) -> str:
    """Markdown to HTML without raw HTML; relative image sources point under `image_base`."""
    options = {"html": False, "linkify": False, "typographer": True}
    md = MarkdownIt("commonmark", options, renderer_cls=_Renderer).enable("table")
    html: str = md.render(text, {"image_base": image_base})
    return html


_COMMENT = re.compile(r"<!--.*?-->[ \t]*\n?", re.DOTALL)
_IMAGE_LINE = re.compile(r"^[ \t]*!\[[^\]\n]*\]\([^)\n]*\)[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


@dataclass(frozen=True)
class Section:
    """One level-2 section of BENCHMARKS.md: its title (plain text), an anchor id, and its body as HTML."""

    title: str
    anchor: str
    html: str


@dataclass
class BenchmarksPage:
    """BENCHMARKS.md cut for reading: what comes first, then the sections."""

    intro: str = ""  # HTML: the title and the text before the first level-2 heading
    summary: str = ""  # HTML: the body of the section titled "Summary", if any
    figures: str = ""  # HTML: every plot of the file, hoisted out of its section
    sections: list[Section] = field(default_factory=list)


def render_benchmarks(text: str, image_base: str) -> BenchmarksPage:
    """BENCHMARKS.md as a `BenchmarksPage`: comments dropped, plots first, sections apart."""
    text = _COMMENT.sub("", text)
    chunks: list[tuple[str, list[str]]] = [("", [])]  # (level-2 title, lines)
    figures: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            chunks.append((line[3:].strip(), []))
        elif not fenced and _IMAGE_LINE.match(line):
            figures.append(line.strip())
        else:
            chunks[-1][1].append(line)
    result = BenchmarksPage(intro=render_markdown("\n".join(chunks[0][1]), image_base))
    result.figures = render_markdown("\n\n".join(figures), image_base) if figures else ""
    for title, lines in chunks[1:]:
        body = render_markdown("\n".join(lines), image_base)
        if title.lower() == "summary" and not result.summary:
            result.summary = body
        else:
            plain = render_markdown(title, image_base).strip().removeprefix("<p>").removesuffix("</p>")
            result.sections.append(Section(plain, _anchor(title, len(result.sections)), body))
    return result


def _anchor(title: str, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"section-{slug or index}"
