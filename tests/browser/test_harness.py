"""The browser harness in headless Chromium: consent, computing, controls, throttle, sandbox.

Every test embeds the plain-HTML snippet in a host page on another origin (http://localhost:PORT,
while the server is http://127.0.0.1:PORT), exactly as a site owner would, and computes against a
real distribute server (`live_server`).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import trio

from distribute.embed import runner_csp
from tests.browser.conftest import (
    BrowserThread,
    HostSite,
    Visit,
    browser_cpu_seconds,
    generator_of,
    host_page,
    open_visit,
    outcome,
)
from tests.conftest import SEED_ANSWER, LiveServer

# Each dataset keeps a worker busy for about `ms` milliseconds and returns i * 2.
BUSY_KERNEL = """({
  main: function (d) {
    var end = Date.now() + MS;
    while (Date.now() < end) {}
    return d.i * 2;
  }
})"""


def busy_kernel(ms: int) -> str:
    return BUSY_KERNEL.replace("MS", str(ms))


async def visit(
    browser: BrowserThread, host_site: HostSite, server: LiveServer, campaign: int | str, **options: str
) -> Visit:
    url = host_site.add(f"page{len(host_site.pages)}", host_page(server.url, campaign, **options))
    return await browser.run(open_visit, browser, url)


async def server_results(server: LiveServer, campaign: int) -> int:
    return (await server.campaign(campaign))["results"]


@dataclass
class Prefetch:
    """The most a browser's connection asked the server to hold for it, and the most it held at once."""

    slots: int = 0
    held: int = 0


async def watch_prefetch(server: LiveServer, seen: Prefetch) -> None:
    """Samples the server's live connections until cancelled."""
    while True:
        for session in server.platform.gateway.sessions.values():
            seen.slots = max(seen.slots, session.hello.slots)
            seen.held = max(seen.held, len(session.held))
        await trio.sleep(0.001)


async def test_clicking_contribute_computes_the_campaign_exactly(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(name="Multiples of 123")
    page = await visit(browser, host_site, live_server, campaign)
    seen = Prefetch()
    try:
        async with trio.open_nursery() as watching:
            watching.start_soon(watch_prefetch, live_server, seen)
            await browser.run(page.click, "contribute")
            await live_server.wait_complete(campaign, timeout=60)
            watching.cancel_scope.cancel()
        stored = await outcome(live_server, campaign)
        assert sorted(n for value in stored.results.values() if value for n in value) == SEED_ANSWER
        # Prefetch: even at the default CPU setting (one worker) the browser asks for a task beyond the
        # one it computes, and the server keeps it supplied, so no round trip separates two tasks.
        assert seen.slots >= 2
        assert seen.held >= 2
        await browser.run(page.wait_state, "done")
        finished = await browser.run(page.state)
        assert finished["done"] >= 100  # the campaign's 100 datasets, all computed in this browser
        assert finished["status"] == f"Finished: nothing left to compute · {finished['done']} tasks done. Thank you!"
    finally:
        await browser.run(page.close)


async def test_every_result_records_the_embedding_sites_origin(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(1), generator=generator_of(10), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        stored = await outcome(live_server, campaign)
        assert stored.hosts == {f"http://localhost:{host_site.port}"}
    finally:
        await browser.run(page.close)


async def test_nothing_loads_or_runs_before_the_click(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(1), generator=generator_of(10), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await trio.sleep(1.5)
        loaded = {url.split("?")[0].rsplit("/", 1)[-1] for url in page.requests if "/embed/" in url}
        assert loaded == {str(campaign), "broker.js", "broker.css"}, page.requests
        assert live_server.platform.gateway.sessions == {}  # no WebSocket connected
        assert await browser.run(page.runner_frames) == 0  # no sandbox, no kernel
        assert (await live_server.campaign(campaign))["datasets"]["done"] == 0
        assert (await browser.run(page.state))["state"] == "idle"

        await browser.run(page.click, "contribute")
        with trio.fail_after(10):
            while not live_server.platform.gateway.sessions:
                await trio.sleep(0.05)
        assert await browser.run(page.runner_frames) == 1
        await live_server.wait_complete(campaign, timeout=60)
    finally:
        await browser.run(page.close)


async def test_the_host_page_keeps_animating_while_the_campaign_computes(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(100), generator=generator_of(30), static="")
    page = await visit(browser, host_site, live_server, campaign, throttle="high")
    try:
        await browser.run(page.reset_host_frames)
        before = await browser.run(page.host_frames)
        started = trio.current_time()
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        elapsed = trio.current_time() - started
        after = await browser.run(page.host_frames)
        assert elapsed > 2.5  # it really computed for a while (30 tasks of 100 ms on one worker)
        assert after["frames"] - before["frames"] > 20 * elapsed  # headless Chromium paints at 60 Hz
        assert after["maxGap"] < 500  # no visible freeze (60 Hz is ~17 ms a frame)
    finally:
        await browser.run(page.close)


async def test_hiding_the_page_pauses_work_and_showing_it_resumes(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(50), generator=generator_of(40), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_done, 2)

        await browser.run(page.set_visibility, "hidden")
        await browser.run(page.wait_state, "hidden")
        await trio.sleep(0.3)  # an answer already on the wire may still land
        paused_at = await server_results(live_server, campaign)
        await trio.sleep(1.5)
        assert await server_results(live_server, campaign) == paused_at
        assert (await live_server.campaign(campaign))["workers"] == 0  # the socket is closed while hidden

        await browser.run(page.set_visibility, "visible")
        await live_server.wait_complete(campaign, timeout=60)
        assert len((await outcome(live_server, campaign)).results) == 40
    finally:
        await browser.run(page.close)


def pause_label(page: Visit) -> str:
    return page.broker().locator("#pause").inner_text()


async def test_pause_stops_work_and_resume_continues(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(
        kernel=busy_kernel(50), generator=generator_of(40), static="", name="Doubling"
    )
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_done, 2)
        running = await browser.run(page.state)
        assert running["state"] == "running" and running["done"] >= 2
        assert running["status"] == f"Running on “Doubling” · {running['done']} tasks done"
        await browser.run(page.wait_done, running["done"] + 1)
        later = await browser.run(page.state)  # the line counts up as tasks finish
        assert later["done"] > running["done"]
        assert later["status"] == f"Running on “Doubling” · {later['done']} tasks done"

        await browser.run(page.click, "pause")
        await browser.run(page.wait_state, "paused")
        paused = await browser.run(page.state)
        assert paused["status"] == f"Paused · {paused['done']} tasks done"
        assert await browser.run(pause_label, page) == "Resume"
        await trio.sleep(0.3)
        paused_at = await server_results(live_server, campaign)
        await trio.sleep(1.5)
        assert await server_results(live_server, campaign) == paused_at
        assert await browser.run(page.state) == paused  # the count stands still while paused

        await browser.run(page.click, "pause")  # now labelled "Resume"
        await live_server.wait_complete(campaign, timeout=60)
        stored = await outcome(live_server, campaign)
        assert stored.results == {i: i * 2 for i in range(40)}
    finally:
        await browser.run(page.close)


async def test_stop_ends_the_contribution_and_removes_the_sandbox(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(50), generator=generator_of(40), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_done, 2)

        await browser.run(page.click, "stop")
        await browser.run(page.wait_state, "stopped")
        await trio.sleep(0.3)
        stopped_at = await server_results(live_server, campaign)
        await trio.sleep(1.5)
        assert await server_results(live_server, campaign) == stopped_at
        assert (await live_server.campaign(campaign))["workers"] == 0
        assert await browser.run(page.runner_frames) == 0
    finally:
        await browser.run(page.close)


async def test_throttle_low_uses_much_less_cpu_than_high(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(40), generator=generator_of(2000), static="")
    page = await visit(browser, host_site, live_server, campaign)  # the snippet's default: low

    async def cpu_over(seconds: float) -> float:
        start = browser_cpu_seconds()
        await trio.sleep(seconds)
        return (browser_cpu_seconds() - start) / seconds

    try:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_done, 3)
        low = await cpu_over(3)
        await browser.run(page.set_throttle, "high")
        await trio.sleep(1)
        high = await cpu_over(3)
        # low: one worker computing a quarter of the time; high: every core but one, all the time.
        assert high > 0.7
        assert low < 0.5 * high, (low, high)
    finally:
        await browser.run(page.close)


async def test_a_snippet_for_any_campaign_computes_whatever_needs_work(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(1), generator=generator_of(20), static="")
    page = await visit(browser, host_site, live_server, "any")
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        assert (await outcome(live_server, campaign)).results == {i: i * 2 for i in range(20)}
    finally:
        await browser.run(page.close)


async def test_the_runner_is_an_opaque_origin_under_the_strict_policy(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=busy_kernel(20), generator=generator_of(200), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_done, 1)

        def inspect() -> dict[str, object]:
            sandbox = page.broker().evaluate("() => document.querySelector('iframe.runner').getAttribute('sandbox')")
            inside = page.runner().evaluate(
                "() => { let parentDocument;"
                " try { parentDocument = String(parent.document); } catch (e) { parentDocument = e.name; }"
                " return {origin: self.origin, parentDocument}; }"
            )
            return {"sandbox": sandbox, **inside}

        seen = await browser.run(inspect)
        assert seen == {"sandbox": "allow-scripts", "origin": "null", "parentDocument": "SecurityError"}
        async with httpx.AsyncClient(base_url=live_server.url) as client:
            response = await client.get("/embed/runner")
        policy = response.headers["content-security-policy"]
        assert policy.startswith("sandbox allow-scripts; default-src 'none'; script-src 'sha256-")
        assert "connect-src 'none'" in policy and "worker-src blob:" in policy
        assert policy == runner_csp(policy.split("script-src ", 1)[1].split(" ", 1)[0])
    finally:
        await browser.run(page.close)


async def test_an_exception_in_main_is_reported_with_message_and_kernel_stack(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    kernel = """({
  main: function (d) {
    if (d.i === 3) throw new TypeError('three is bad');
    return d.i * 2;
  }
})"""
    campaign = await live_server.create_campaign(kernel=kernel, generator=generator_of(6), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        stored = await outcome(live_server, campaign)
        assert {i: v for i, v in stored.results.items() if i != 3} == {0: 0, 1: 2, 2: 4, 4: 8, 5: 10}
        [error] = stored.errors
        assert error["message"] == "TypeError: three is bad"
        assert "kernel.js:3:" in error["stack"]
        assert "blob:" not in error["stack"]
    finally:
        await browser.run(page.close)


async def test_an_exception_in_load_static_dataset_is_reported_for_each_task(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    kernel = """({
  loadStaticDataset: function (text) {
    JSON.parse(text);
  },
  main: function (d) { return 1; }
})"""
    campaign = await live_server.create_campaign(
        kernel=kernel, generator=generator_of(3), static="{not json", task_timeout=5
    )
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        stored = await outcome(live_server, campaign)
        assert stored.results == {}
        assert stored.errors and all(
            e["message"].startswith("the kernel's loadStaticDataset threw: SyntaxError") for e in stored.errors
        )
        for error in stored.errors:
            assert "kernel.js:3:" in error["stack"], error  # where JSON.parse is called
            assert "blob:" not in error["stack"]
    finally:
        await browser.run(page.close)


async def test_a_kernel_may_return_a_promise(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    kernel = "({ main: async function (d) { await null; return { i: d.i, square: d.i * d.i }; } })"
    campaign = await live_server.create_campaign(kernel=kernel, generator=generator_of(5), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        assert (await outcome(live_server, campaign)).results == {i: {"i": i, "square": i * i} for i in range(5)}
    finally:
        await browser.run(page.close)


# A WebAssembly module exporting add(a, b), compiled inside the worker.
WASM_KERNEL = """({
  main: function (d) {
    var bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,7,1,96,2,127,127,1,127,3,2,1,0,7,7,1,3,97,100,100,
                                0,0,10,9,1,7,0,32,0,32,1,106,11]);
    var add = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.add;
    return add(d.i, 100);
  }
})"""


async def test_a_kernel_may_use_webassembly(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite
) -> None:
    campaign = await live_server.create_campaign(kernel=WASM_KERNEL, generator=generator_of(4), static="")
    page = await visit(browser, host_site, live_server, campaign)
    try:
        await browser.run(page.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        assert (await outcome(live_server, campaign)).results == {i: i + 100 for i in range(4)}
    finally:
        await browser.run(page.close)
