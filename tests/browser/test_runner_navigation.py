"""A host page that navigates the runner frame away gets nothing, forges nothing, and stops nothing.

A page may navigate its descendants, and a sandboxed frame's origin is "null" whatever document it
holds, so the host page can replace the broker's runner with a page of its own. That page then
impersonates the runner: it says it is alive, answers every task id it can guess in every generation,
and records every message it receives. The broker must send it no kernel and no dataset, store none
of its answers, and replace the runner at once without charging the tasks it held as kernel errors.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import trio

from tests.browser.conftest import Embedding, Visit, busy_kernel, outcome

DATASETS = 100

# The impostor: records every message (and port) it gets, and keeps forging the runner's side of the
# protocol: heartbeats, and a "forged" result (msgpack) for task ids 0..3000 in generations 0..30.
IMPOSTOR = textwrap.dedent(
    """
    <!doctype html><html><head><meta charset="utf-8"><title>impostor</title>
    <script>
      window.__got = [];
      function summary(value) {
        try {
          return JSON.stringify(value, function (key, v) {
            if (v instanceof ArrayBuffer) return "ArrayBuffer(" + v.byteLength + ")";
            if (typeof MessagePort !== "undefined" && v instanceof MessagePort) return "MessagePort";
            return v;
          });
        } catch (e) { return "unreadable: " + e; }
      }
      function record(where) {
        return function (event) {
          window.__got.push(where + " " + summary(event.data) + " ports=" + event.ports.length);
          for (const port of event.ports) { port.onmessage = record("port"); }
          fetch("/beacon?messages=" + window.__got.length);
        };
      }
      window.addEventListener("message", record("window"));
      const forged = new Uint8Array([0xa6, 0x66, 0x6f, 0x72, 0x67, 0x65, 0x64]);  // msgpack "forged"
      function forge() {
        parent.postMessage({ type: "ready" }, "*");
        parent.postMessage({ type: "alive" }, "*");
        for (let gen = 0; gen <= 30; gen++) {
          const items = [];
          for (let id = 0; id <= 3000; id++) items.push([id, true, forged.slice().buffer, 1]);
          parent.postMessage({ type: "report", gen: gen, items: items, running: [] }, "*");
        }
      }
      forge();
      setInterval(forge, 300);
    </script></head><body>impostor</body></html>
    """
)


def impostor_messages(page: Visit) -> list[str] | None:
    """What the impostor recorded, or None while it is not (or no longer) in a frame."""
    for frame in page.page.frames:
        if frame.url.endswith("/impostor"):
            try:
                got: list[str] = frame.evaluate("() => window.__got || []")
            except Exception:  # the broker removed the frame meanwhile (Playwright's Error)
                return None
            return got
    return None


def navigate_runner(page: Visit, url: str) -> None:
    """The host page's own script navigates its grandchild, the runner frame."""
    page.page.evaluate("(url) => { frames[0].frames[0].location = url; }", url)


def runner_src(page: Visit) -> str:
    """The runner frame's URL as the broker set it (it names the runner's nonce)."""
    return str(page.broker().evaluate("() => document.querySelector('iframe.runner').src"))


def runner_frame_count(page: Visit) -> int:
    return page.runner_frames()


@pytest.mark.parametrize("target", ["its-own-page", "a-fresh-runner"])
async def test_a_host_page_that_navigates_the_runner_gets_nothing_and_the_campaign_completes(
    embedding: Embedding, target: str
) -> None:
    """The host page navigates the runner frame to a page of its own (which the broker's frame-src
    refuses, leaving an error page) or to a fresh runner of the server's (which loads, but does not
    know the broker's secret). Either way the broker notices the navigation, hands the runner's
    tasks back and starts a new runner at once; nothing is charged as a kernel error."""
    browser, server, site = embedding.browser, embedding.server, embedding.host_site
    # The fresh runner names the host page as its ancestor, so that its frame-ancestors let it load.
    fresh = f"{server.url}/embed/runner?ancestor=http://localhost:{site.port}"
    url = site.add("impostor", IMPOSTOR) if target == "its-own-page" else fresh
    campaign = await embedding.campaign(busy_kernel(50), DATASETS, task_timeout=5)
    # At "high" the runner is always computing: a runner given up for dead would have its tasks charged.
    async with embedding.visit(campaign, throttle="high") as page:
        await embedding.start(page, done=5)
        first = await browser.run(runner_src, page)
        await browser.run(navigate_runner, page, url)

        # Until the campaign completes, keep reading what the impostor recorded while it is in a frame.
        received: list[str] = []
        with trio.fail_after(90):
            while (await server.campaign(campaign))["status"] not in ("complete", "failed"):
                recorded: list[str] | None = await browser.run(impostor_messages, page)
                received = recorded or received
                await trio.sleep(0.2)
        stored = await outcome(server, campaign)

        # The broker replaced its runner (a new nonce). Chromium sometimes refuses the navigation to the
        # host's own page outright (the broker's frame-src) and leaves the runner as it was.
        replaced = await browser.run(runner_src, page) != first
        refused = [line for line in page.log if "Framing 'http://localhost:" in line]
        assert replaced or (target == "its-own-page" and not refused), ("not replaced", page.log)
        assert received == [], received
        assert not [b for b in site.beacons if b.get("messages")], site.beacons
        # No forged answer was stored, none of the runner's tasks was charged, and every result is exact.
        assert stored.results == {i: i * 2 for i in range(DATASETS)}, stored.results
        assert stored.errors == []
        assert stored.campaign["status"] == "complete"
        assert await browser.run(runner_frame_count, page) == 1
        state: dict[str, Any] = await browser.run(page.state)
        assert state["done"] >= DATASETS, json.dumps(state)
