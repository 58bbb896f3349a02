"""The browser harness in headless Chromium and Firefox ESR: consent, computing, controls, throttle, sandbox.

Every test embeds the plain-HTML snippet in a host page on another origin (http://localhost:PORT,
while the server is http://127.0.0.1:PORT), exactly as a site owner would, and computes against a
real distribute server (`live_server`, through the `embedding` fixture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from distribute.embed import runner_csp
from tests.browser.conftest import (
    Canary,
    Embedding,
    Visit,
    browser_cpu_seconds,
    busy_kernel,
    in_every_engine,
    outcome,
)
from tests.conftest import SEED_ANSWER, LiveServer


async def server_results(server: LiveServer, campaign: int) -> int:
    return int((await server.campaign(campaign))["results"])


async def assert_no_more_results(server: LiveServer, campaign: int) -> None:
    """Once an answer already on the wire has landed, the server's count of results stands still."""
    await trio.sleep(0.3)
    stopped_at = await server_results(server, campaign)
    await trio.sleep(1.5)
    assert await server_results(server, campaign) == stopped_at


async def assert_work_stops(embedding: Embedding, page: Visit, campaign: int, state: str) -> None:
    """`page` reaches `state`; then no more results arrive and no connection serves `campaign`."""
    await embedding.browser.run(page.wait_state, state)
    await assert_no_more_results(embedding.server, campaign)
    assert (await embedding.server.campaign(campaign))["workers"] == 0


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


# --------------------------------------------------------------------------- consent and computing


@in_every_engine
async def test_clicking_contribute_computes_the_campaign_exactly(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await server.create_campaign(name="Multiples of 123")
    seen = Prefetch()
    async with embedding.visit(campaign) as page:
        async with trio.open_nursery() as watching:
            watching.start_soon(watch_prefetch, server, seen)
            await browser.run(page.click, "contribute")
            await server.wait_complete(campaign, timeout=60)
            watching.cancel_scope.cancel()
        stored = await outcome(server, campaign)
        assert sorted(n for value in stored.results.values() if value for n in value) == SEED_ANSWER
        # Prefetch: even at the default CPU setting (one worker) the browser asks for a task beyond the
        # one it computes, and the server keeps it supplied, so no round trip separates two tasks.
        assert seen.slots >= 2
        assert seen.held >= 2
        await browser.run(page.wait_state, "done")
        finished = await browser.run(page.state)
        assert finished["done"] >= 100  # the campaign's 100 datasets, all computed in this browser
        assert finished["status"] == f"Finished: nothing left to compute · {finished['done']} tasks done. Thank you!"


@in_every_engine
async def test_every_result_records_the_embedding_sites_origin(embedding: Embedding) -> None:
    stored = await embedding.contribute(await embedding.campaign(busy_kernel(1), 10))
    assert stored.hosts == {f"http://localhost:{embedding.host_site.port}"}


@in_every_engine
async def test_nothing_loads_or_runs_before_the_click(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(busy_kernel(1), 10)
    async with embedding.visit(campaign) as page:
        await trio.sleep(1.5)
        loaded = {url.split("?")[0].rsplit("/", 1)[-1] for url in page.requests if "/embed/" in url}
        assert loaded == {str(campaign), "broker.js", "broker.css"}, page.requests
        assert server.platform.gateway.sessions == {}  # no WebSocket connected
        assert await browser.run(page.runner_frames) == 0  # no sandbox, no kernel
        assert (await server.campaign(campaign))["datasets"]["done"] == 0
        assert (await browser.run(page.state))["state"] == "idle"

        await browser.run(page.click, "contribute")
        with trio.fail_after(10):
            while not server.platform.gateway.sessions:
                await trio.sleep(0.05)
        assert await browser.run(page.runner_frames) == 1
        await server.wait_complete(campaign, timeout=60)


@in_every_engine
async def test_a_snippet_for_any_campaign_computes_whatever_needs_work(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 20)
    stored = await embedding.contribute(campaign, snippet="any")
    assert stored.results == {i: i * 2 for i in range(20)}


# --------------------------------------------------------------------------- the host page and the controls


@in_every_engine
async def test_the_host_page_keeps_animating_while_the_campaign_computes(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(busy_kernel(100), 30)
    async with embedding.visit(campaign, throttle="high") as page:
        await browser.run(page.reset_host_frames)
        before = await browser.run(page.host_frames)
        started = trio.current_time()
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=60)
        elapsed = trio.current_time() - started
        after = await browser.run(page.host_frames)
        assert elapsed > 2.5  # it really computed for a while (30 tasks of 100 ms on one worker)
        assert after["frames"] - before["frames"] > 20 * elapsed  # headless Chromium paints at 60 Hz
        assert after["maxGap"] < 500  # no visible freeze (60 Hz is ~17 ms a frame)


@in_every_engine
async def test_hiding_the_page_pauses_work_and_showing_it_resumes(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(busy_kernel(50), 40)
    async with embedding.visit(campaign) as page:
        await embedding.start(page, done=2)

        await browser.run(page.set_visibility, "hidden")
        await assert_work_stops(embedding, page, campaign, "hidden")  # the socket is closed while hidden

        await browser.run(page.set_visibility, "visible")
        await server.wait_complete(campaign, timeout=60)
        assert len((await outcome(server, campaign)).results) == 40


def pause_label(page: Visit) -> str:
    return str(page.broker().locator("#pause").inner_text())


@in_every_engine
async def test_pause_stops_work_and_resume_continues(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(busy_kernel(50), 40, name="Doubling")
    async with embedding.visit(campaign) as page:
        await embedding.start(page, done=2)
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
        await assert_no_more_results(server, campaign)
        assert await browser.run(page.state) == paused  # the count stands still while paused

        await browser.run(page.click, "pause")  # now labelled "Resume"
        await server.wait_complete(campaign, timeout=60)
        stored = await outcome(server, campaign)
        assert stored.results == {i: i * 2 for i in range(40)}


@in_every_engine
async def test_stop_ends_the_contribution_and_removes_the_sandbox(embedding: Embedding) -> None:
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(50), 40)
    async with embedding.visit(campaign) as page:
        await embedding.start(page, done=2)

        await browser.run(page.click, "stop")
        await assert_work_stops(embedding, page, campaign, "stopped")
        assert await browser.run(page.runner_frames) == 0


@in_every_engine
async def test_throttle_low_uses_much_less_cpu_than_high(embedding: Embedding) -> None:
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(40), 2000)

    async def cpu_over(seconds: float) -> float:
        start = browser_cpu_seconds()
        await trio.sleep(seconds)
        return (browser_cpu_seconds() - start) / seconds

    async with embedding.visit(campaign) as page:  # the snippet's default: low
        await embedding.start(page, done=3)
        low = await cpu_over(3)
        await browser.run(page.set_throttle, "high")
        await trio.sleep(1)
        high = await cpu_over(3)
        # low: one worker computing a quarter of the time; high: every core but one, all the time.
        assert high > 0.7
        assert low < 0.5 * high, (low, high)


# --------------------------------------------------------------------------- the sandbox and the kernel


@in_every_engine
async def test_the_runner_is_an_opaque_origin_under_the_strict_policy(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(20), 200)
    async with embedding.visit(campaign) as page:
        await embedding.start(page, done=1)

        def inspect() -> dict[str, object]:
            sandbox = page.broker().evaluate("() => document.querySelector('iframe.runner').getAttribute('sandbox')")
            inside = page.runner().evaluate(
                "() => { let parentDocument;"
                " try { parentDocument = String(parent.document); } catch (e) { parentDocument = e.name; }"
                " return {origin: self.origin, parentDocument}; }"
            )
            return {"sandbox": sandbox, **inside}

        seen = await embedding.browser.run(inspect)
        assert seen == {"sandbox": "allow-scripts", "origin": "null", "parentDocument": "SecurityError"}
        # The runner the broker loaded names its ancestors: the broker's origin and the host page's.
        runner_url = next(u for u in page.requests if "/embed/runner" in u)
        host = f"http://localhost:{embedding.host_site.port}"
        async with httpx.AsyncClient() as client:
            response = await client.get(runner_url.split("#")[0])
        policy = response.headers["content-security-policy"]
        assert policy.startswith("sandbox allow-scripts; default-src 'none'; script-src 'sha256-")
        assert "connect-src 'none'" in policy and "worker-src blob:" in policy
        script_hash = policy.split("script-src ", 1)[1].split(" ", 1)[0]
        assert policy == runner_csp(script_hash, [embedding.server.url, host])
        assert policy.endswith(f"; frame-ancestors {embedding.server.url} {host}")


@in_every_engine
async def test_no_page_but_the_broker_and_its_ancestors_may_frame_the_runner(embedding: Embedding) -> None:
    """A page that frames /embed/runner itself (not through the broker) gets a blocked frame: the
    runner's frame-ancestors names the broker's origin (and only the ancestors the broker names).
    Chromium says so on the console; Firefox shows its CSP error page in the frame instead."""
    browser, server, site = embedding.browser, embedding.server, embedding.host_site
    nonce = "0123456789abcdef0123456789abcdef"
    url = site.add("framer", f"<!doctype html><iframe src='{server.url}/embed/runner#{nonce}'></iframe>")

    def framed() -> list[str]:
        context = browser.browser.new_context()
        try:
            page = context.new_page()
            log: list[str] = []
            page.on("console", lambda message: log.append(message.text))
            page.goto(url)
            page.wait_for_timeout(1000)
            return [frame.url for frame in page.frames[1:]] + log
        finally:
            context.close()

    seen = await browser.run(framed)
    assert any("frame-ancestors" in line or line.startswith("about:neterror?e=cspBlocked") for line in seen), seen
    assert not any(u.startswith(f"{server.url}/embed/runner") for u in seen[:1]), seen


def strip_runner_policy(page: Visit) -> None:
    """From now on the runner document arrives without its Content-Security-Policy header, as
    through a proxy that drops headers or in a browser that ignores them."""

    def without_policy(route: Any) -> None:
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-security-policy"}
        route.fulfill(response=response, headers=headers)

    page.context.route("**/embed/runner*", without_policy)


@in_every_engine
async def test_the_runner_refuses_to_run_kernels_when_its_policy_is_not_in_force(
    embedding: Embedding, canary: Canary
) -> None:
    browser, server = embedding.browser, embedding.server
    kernel = (
        "({ main: function (d) { fetch('CANARY/loose', {mode: 'no-cors'}).catch(function () {}); return d.i * 2; } })"
    ).replace("CANARY", canary.url)
    campaign = await embedding.campaign(kernel, 10)
    async with embedding.visit(campaign) as page:
        await browser.run(strip_runner_policy, page)
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_state, "error")
        state = await browser.run(page.state)
        assert state["status"] == (
            "This browser did not apply the sandbox's security policy, so nothing will run here. Thank you anyway!"
        )
        await trio.sleep(1.5)
        assert canary.hits == []
        assert server.platform.gateway.sessions == {}  # it never connected for work
        assert (await server.campaign(campaign))["datasets"]["done"] == 0


@in_every_engine
async def test_an_exception_in_main_is_reported_with_message_and_kernel_stack(embedding: Embedding) -> None:
    kernel = """({
  main: function (d) {
    if (d.i === 3) throw new TypeError('three is bad');
    return d.i * 2;
  }
})"""
    stored = await embedding.contribute(await embedding.campaign(kernel, 6))
    assert {i: v for i, v in stored.results.items() if i != 3} == {0: 0, 1: 2, 2: 4, 4: 8, 5: 10}
    [error] = stored.errors
    assert error["message"] == "TypeError: three is bad"
    assert "kernel.js:3:" in error["stack"]
    assert "blob:" not in error["stack"]


@in_every_engine
async def test_an_exception_in_load_static_dataset_is_reported_for_each_task(embedding: Embedding) -> None:
    kernel = """({
  loadStaticDataset: function (text) {
    JSON.parse(text);
  },
  main: function (d) { return 1; }
})"""
    stored = await embedding.contribute(await embedding.campaign(kernel, 3, static="{not json", task_timeout=5))
    assert stored.results == {}
    assert stored.errors and all(
        e["message"].startswith("the kernel's loadStaticDataset threw: SyntaxError") for e in stored.errors
    )
    for error in stored.errors:
        assert "kernel.js:3:" in error["stack"], error  # where JSON.parse is called
        assert "blob:" not in error["stack"]


# A WebAssembly module exporting add(a, b), compiled inside the worker.
WASM_KERNEL = """({
  main: function (d) {
    var bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,7,1,96,2,127,127,1,127,3,2,1,0,7,7,1,3,97,100,100,
                                0,0,10,9,1,7,0,32,0,32,1,106,11]);
    var add = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.add;
    return add(d.i, 100);
  }
})"""


@in_every_engine
@pytest.mark.parametrize(
    ("kernel", "datasets", "expected"),
    [
        pytest.param(
            "({ main: async function (d) { await null; return { i: d.i, square: d.i * d.i }; } })",
            5,
            {i: {"i": i, "square": i * i} for i in range(5)},
            id="return-a-promise",
        ),
        pytest.param(WASM_KERNEL, 4, {i: i + 100 for i in range(4)}, id="use-webassembly"),
    ],
)
async def test_a_kernel_may(embedding: Embedding, kernel: str, datasets: int, expected: dict[int, Any]) -> None:
    assert (await embedding.contribute(await embedding.campaign(kernel, datasets))).results == expected


async def test_the_runner_names_only_well_formed_ancestor_origins(live_server: LiveServer) -> None:
    """The `ancestor` parameters go into a header: anything but a plain http(s) origin is dropped."""
    ancestors = [
        "http://localhost:8080",
        "https://evil.example; script-src *",
        "javascript:alert(1)",
        "https://blog.example/path",
        "https://[::1]:8443",
        "http://localhost:8080",
    ]
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        response = await client.get("/embed/runner", params=[("ancestor", a) for a in ancestors])
    policy = response.headers["content-security-policy"]
    assert policy.endswith(f"; frame-ancestors {live_server.url} http://localhost:8080 https://[::1]:8443")
    assert policy.count(";") == 7  # nothing smuggled in: the seven directives above, then frame-ancestors
