"""Static pages: home, how it works, and the benchmark results (BENCHMARKS.md, rendered).

BENCHMARKS.md is written by `make bench` at the project's root, next to the plots it shows. It is
rendered with markdown-it-py with raw HTML disabled (so the file cannot inject markup into a page
that runs under the console's CSP), and its relative image paths are served from
`/benchmarks/files/…`, images only, from the same folder.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from quart import Response, abort

from ..webstate import current_platform
from .web import ConsoleBlueprint, page

__all__ = ["BENCHMARKS_FILE", "blueprint", "render_markdown"]

blueprint = ConsoleBlueprint("pages", __name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS_FILE = PROJECT_ROOT / "BENCHMARKS.md"
IMAGE_TYPES = {".png", ".svg", ".jpg", ".jpeg", ".webp", ".gif"}


@blueprint.get("/")
async def home() -> Response:
    gateway = current_platform().gateway
    return await page("console/home.html", workers=len(gateway.sessions))


@blueprint.get("/how-it-works")
async def how_it_works() -> Response:
    return await page("console/how.html")


@blueprint.get("/benchmarks")
async def benchmarks() -> Response:
    if not BENCHMARKS_FILE.is_file():
        return await page("console/benchmarks.html", content=None)
    text = BENCHMARKS_FILE.read_text(encoding="utf-8")
    return await page("console/benchmarks.html", content=render_markdown(text, "/benchmarks/files/"))


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
    """HTML whose relative image sources point under the render call's `env["image_base"]`."""

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
