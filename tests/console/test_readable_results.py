"""Results an owner can read, in headless Chromium and in downloads: pretty JSON that wraps between tokens,
per-campaign dataset numbers 1..N beside the global ids, and a throughput chart that tells the truth
after a reload (a pause is drawn as zero, and the chart spans the live window up to now)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import httpx
import pytest

from distribute.console.jsontext import pretty
from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer
from tests.support.protocol_client import work

from .conftest import ARTIFACTS, Api, age_results, counting_generator

pytestmark = pytest.mark.browser

LONG = {"values": [5000 + 1000 * k for k in range(120)], "label": "multiples of one thousand", "ok": True}


class Owner:
    """A signed-up owner's browser (use only on the browser thread)."""

    def __init__(self, browser: BrowserThread, server: LiveServer, email: str, width: int = 1280) -> None:
        self.server = server
        self.context = browser.browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.goto(server.url + "/signup")
        for field in ("#email", "#password", "#password2"):
            self.page.fill(field, email if field == "#email" else "correct horse battery")
        self.page.click("#signup-form button[type=submit]")
        self.page.wait_for_url("**/campaigns")

    def go(self, path: str) -> Any:
        return self.page.goto(self.server.url + path)


async def owner_with_api(browser: BrowserThread, server: LiveServer, width: int = 1280) -> tuple[Owner, Api]:
    owner = await browser.run(Owner, browser, server, "owner@example.org", width)
    user = await server.platform.storage.user_by_email("owner@example.org")
    assert user is not None
    token = await server.platform.storage.create_token(user.id, "tests")
    return owner, Api(httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30))


async def finished_campaign(server: LiveServer, api: Api, datasets: int, compute: Any) -> int:
    campaign_id = await api.create(generator=counting_generator(datasets))
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await work(server.ws_url, compute, campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    return campaign_id


# Every JSON token of every cell, as a Range: a token drawn on more than one line has more than one line top.
TOKENS_ON_ONE_LINE = r"""() => [...document.querySelectorAll('#results-table pre.json-cell')].map((pre) => {
  const node = pre.firstChild, text = node.textContent, broken = [], tops = new Set();
  for (const m of text.matchAll(/"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false|null/g)) {
    const range = document.createRange();
    range.setStart(node, m.index);
    range.setEnd(node, m.index + m[0].length);
    const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    lines.forEach((top) => tops.add(top));
    if (lines.size !== 1) broken.push(m[0]);
  }
  const box = pre.getBoundingClientRect();
  return {broken, lines: tops.size, right: box.right, overflow: pre.scrollWidth - pre.clientWidth, text};
})"""


async def test_a_long_json_result_wraps_within_the_viewport_without_a_broken_token(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner, api = await owner_with_api(browser, console_server, width=700)
    campaign_id = await finished_campaign(console_server, api, 2, lambda d: {"i": d["i"], **LONG})

    def look() -> tuple[list[dict[str, Any]], int, int, str]:
        owner.go(f"/campaigns/{campaign_id}/results")
        cells = owner.page.evaluate(TOKENS_ON_ONE_LINE)
        ARTIFACTS.mkdir(exist_ok=True)
        owner.page.screenshot(path=str(ARTIFACTS / "console-results-long-json.png"), full_page=True)
        more = owner.page.locator(".json-more").first
        return (
            cells,
            owner.page.evaluate("innerWidth"),
            owner.page.evaluate("document.documentElement.scrollWidth"),
            (more.text_content() or ""),
        )

    cells, viewport, page_width, more = await browser.run(look)
    results = [c for c in cells if c["text"].lstrip().startswith('{\n  "i"')]
    assert len(results) == 2
    for cell in results:
        assert cell["broken"] == [] and cell["lines"] > 5  # wrapped over many lines, each token whole
        assert cell["overflow"] <= 0 and cell["right"] <= viewport
        full = pretty({"i": 0, **LONG}).replace('"i": 0', '"i": ' + cell["text"].split('"i": ')[1].split(",")[0])
        assert full.startswith(cell["text"]) and len(cell["text"]) < len(full)
    assert page_width <= viewport
    match = re.fullmatch(r"… \((\d+) more characters\)", more.strip())
    assert match and int(match.group(1)) == len(pretty({"i": 0, **LONG})) - len(results[0]["text"])


async def test_the_whole_result_is_on_its_own_page_and_parses(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner, api = await owner_with_api(browser, console_server)
    campaign_id = await finished_campaign(console_server, api, 1, lambda d: LONG)

    def follow() -> str:
        owner.go(f"/campaigns/{campaign_id}/results")
        owner.page.click(".json-more")
        owner.page.wait_for_url(re.compile(r"/results/\d+$"))
        return owner.page.text_content("#result-value") or ""

    assert json.loads(await browser.run(follow)) == LONG


async def test_the_results_pages_number_datasets_1_to_n_beside_their_ids(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner, api = await owner_with_api(browser, console_server)
    await finished_campaign(console_server, api, 4, lambda d: d["i"])  # so that ids and numbers differ
    campaign_id = await finished_campaign(console_server, api, 3, lambda d: d["i"] * 10)

    def read() -> tuple[list[str], list[str], str]:
        owner.go(f"/campaigns/{campaign_id}/results")
        numbers = owner.page.locator("#results-table .dataset-number").all_text_contents()
        ids = owner.page.locator("#results-table .dataset-id").all_text_contents()
        owner.page.click("#results-table tbody tr:first-child a")
        return numbers, ids, owner.page.text_content("h1") or ""

    numbers, ids, heading = await browser.run(read)
    assert numbers == ["#1", "#2", "#3"]
    assert ids == [f"id {n}" for n in range(5, 8)]
    assert re.fullmatch(r"Result for dataset #1 \(id 5\)", " ".join(heading.split()))


async def test_downloads_carry_dataset_numbers_and_flattened_results(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    _, api = await owner_with_api(browser, console_server)
    await finished_campaign(console_server, api, 2, lambda d: d["i"])
    campaign_id = await finished_campaign(console_server, api, 3, lambda d: {"i": d["i"], "square": d["i"] ** 2})
    url = f"/api/campaigns/{campaign_id}/results"
    as_json = (await api.client.get(url)).json()
    as_csv = list(csv.DictReader(io.StringIO((await api.client.get(url, params={"format": "csv"})).text)))
    assert [(r["dataset_number"], r["dataset_id"]) for r in as_json] == [(1, 3), (2, 4), (3, 5)]
    assert [(r["dataset_number"], r["result.i"], r["result.square"]) for r in as_csv] == [
        ("1", "0", "0"),
        ("2", "1", "1"),
        ("3", "2", "4"),
    ]
    assert "result" not in as_csv[0]


async def test_after_a_reload_the_chart_spans_the_live_window_and_draws_a_pause_as_zero(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner, api = await owner_with_api(browser, console_server)
    campaign_id = await finished_campaign(console_server, api, 30, lambda d: d["i"])
    await age_results(console_server, campaign_id, 300.0)  # stored five minutes ago, nothing since

    def chart() -> dict[str, Any]:
        owner.go(f"/campaigns/{campaign_id}")
        owner.page.reload()
        owner.page.wait_for_function("() => Number(document.getElementById('live').dataset.updates) >= 3")
        ARTIFACTS.mkdir(exist_ok=True)
        owner.page.locator("#chart").screenshot(path=str(ARTIFACTS / "console-chart-after-a-pause.png"))
        return owner.page.evaluate(
            """() => { const svg = document.getElementById('chart');
              return {series: JSON.parse(svg.dataset.series), window: Number(svg.dataset.window),
                      line: svg.querySelector('.line').getAttribute('d'),
                      span: document.getElementById('chart-span').textContent}; }"""
        )

    seen = await browser.run(chart)
    series: list[list[float]] = seen["series"]  # [seconds before now, results per second]
    assert seen["window"] == 600 and seen["span"] == "last 10.0 min"
    busy = [age for age, rate in series if rate > 0]
    assert busy and all(290 <= age <= 320 for age in busy)  # the results, where they were stored
    pause = [rate for age, rate in series if 20 < age < 285]
    assert len(pause) >= 20 and set(pause) == {0}  # one zero per empty bucket: no line across the gap
    assert min(age for age, _ in series) <= 5  # the chart reaches now
    xs = [float(x) for x in re.findall(r"[ML]([\d.]+),", seen["line"])]
    peak_x = xs[[rate for _, rate in series].index(max(rate for _, rate in series))]
    assert 250 <= peak_x <= 310 and max(xs) >= 590  # five minutes ago is halfway across a ten-minute chart
