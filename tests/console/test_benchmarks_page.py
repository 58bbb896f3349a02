"""The console's benchmarks page shows the project's real BENCHMARKS.md with its throughput plot.

test_pages.py checks the rendering rules on a made-up file; these check the file `make bench`
writes: its plot is an <img> whose URL serves a PNG, and a browser under the console's CSP
actually displays it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from distribute.console import pages
from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer

from .conftest import People

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_committed_benchmarks_file_has_a_png_plot() -> None:
    # The tests below need it; it is committed, so its absence is a failure, not a reason to skip.
    assert pages.BENCHMARKS_FILE.is_file() and ".png)" in pages.BENCHMARKS_FILE.read_text(encoding="utf-8")


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


async def test_the_benchmarks_page_has_an_img_whose_url_serves_a_png(people: People) -> None:
    visitor = await people.anonymous()
    page = await visitor.get("/benchmarks")
    assert page.status_code == 200
    sources = [src for src in image_sources(page.text) if src.endswith(".png")]
    assert "/benchmarks/files/docs/benchmarks-throughput.png" in sources
    for src in sources:
        image = await visitor.get(src)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_SIGNATURE)
    # The page's CSP allows same-origin images, which is where the plot is served from.
    assert "img-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.browser
async def test_chromium_displays_the_throughput_plot(browser: BrowserThread, console_server: LiveServer) -> None:
    def look() -> tuple[list[dict[str, Any]], list[str]]:
        context = browser.browser.new_context()
        try:
            page = context.new_page()
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
            page.goto(console_server.url + "/benchmarks", wait_until="load")
            shown = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({src: e.getAttribute('src'), complete: e.complete,"
                " width: e.naturalWidth, shownWidth: e.getBoundingClientRect().width}))",
            )
            return shown, refused
        finally:
            context.close()

    shown, errors = await browser.run(look)
    plots = [img for img in shown if img["src"].endswith("benchmarks-throughput.png")]
    assert plots, shown
    assert all(img["complete"] and img["width"] > 100 and img["shownWidth"] > 100 for img in plots), plots
    assert errors == []
