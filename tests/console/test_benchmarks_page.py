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


async def test_the_benchmarks_page_shows_no_markup_as_text_and_collapses_its_sections(people: People) -> None:
    visitor = await people.anonymous()
    html = (await visitor.get("/benchmarks")).text
    assert "&lt;!--" not in html and "<!--" not in html  # the section markers of BENCHMARKS.md
    summary, plot, details = html.find('id="summary"'), html.find("benchmarks-throughput.png"), html.find("<details")
    assert 0 < summary < plot < details, (summary, plot, details)
    assert html.count("<details") >= 8  # one per level-2 section: throughput, connections, generation, …
    assert "<summary>Throughput</summary>" in html


@pytest.mark.browser
async def test_chromium_shows_the_summary_and_plot_first_on_a_short_page(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    def look() -> dict[str, Any]:
        context = browser.browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.goto(console_server.url + "/benchmarks", wait_until="load")
            return dict(
                page.evaluate(
                    """() => ({
                      height: document.documentElement.scrollHeight,
                      text: document.getElementById('benchmarks').innerText,
                      summaryTop: document.querySelector('#summary table').getBoundingClientRect().top,
                      plotTop: document.querySelector('#figures img').getBoundingClientRect().top,
                      sectionsTop: document.querySelector('details').getBoundingClientRect().top,
                      open: document.querySelectorAll('details[open]').length,
                    })"""
                )
            )
        finally:
            context.close()

    shown = await browser.run(look)
    assert "<!--" not in shown["text"] and "begin summary" not in shown["text"]
    assert shown["summaryTop"] < shown["plotTop"] < shown["sectionsTop"]
    assert shown["open"] == 0
    # All of BENCHMARKS.md laid out in full ran to about 20,000 px; collapsed, it is a few screens.
    assert shown["height"] < 6000, shown["height"]
