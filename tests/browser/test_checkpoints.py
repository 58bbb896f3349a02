"""Kernels with `main(dataset, ctx)` in headless Chromium: progress on the card and in the console, checkpoints
that outlive the tab, and the size cap. Campaigns here have a task timeout of 600 s, so a task that another tab
finishes was handed over because its first tab closed, not because its deadline passed."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio

from tests.browser.conftest import Embedding, Visit, busy_kernel, outcome
from tests.conftest import LiveServer, StartServer

STEPS = 20
# 20 steps of 200 ms; it checkpoints after each one, and its result says where it started from.
CHECKPOINTING_KERNEL = """({
  main: function (d, ctx) {
    var step = ctx.resume ? ctx.resume.step : 0;
    var sum = ctx.resume ? ctx.resume.sum : 0;
    var from = step;
    for (; step < STEPS; step++) {
      var end = Date.now() + 200;
      while (Date.now() < end) {}
      sum += (step + 1) * (d.i + 1);
      ctx.checkpoint({ step: step + 1, sum: sum });
      ctx.progress((step + 1) / STEPS);
    }
    return { sum: sum, resumedFrom: from };
  }
})""".replace("STEPS", str(STEPS))

OVERSIZED_KERNEL = """({
  main: function (d, ctx) {
    var refused = "";
    try { ctx.checkpoint({ big: "x".repeat(70000) }); } catch (e) { refused = String(e); }
    ctx.checkpoint({ small: d.i });
    return { i: d.i, refused: refused };
  }
})"""


@pytest.fixture
async def live_server(start_server: StartServer) -> LiveServer:
    return await start_server(checkpoint_interval=0.2)  # checkpoints leave the tab within a fraction of a second


async def checkpointed_step(server: LiveServer, at_least: int) -> int:
    """Wait until the server holds a checkpoint of at least `at_least` steps; return its step."""
    latest = server.platform.dispatcher.checkpoints.latest
    with trio.fail_after(30):
        while True:
            steps = [msgpack.unpackb(state)["step"] for state in latest.values()]
            if steps and max(steps) >= at_least:
                return int(max(steps))
            await trio.sleep(0.02)


def card_progress(page: Visit) -> dict[str, Any]:
    shown: dict[str, Any] = page.broker().evaluate(
        "() => ({progress: document.body.dataset.progress, status: document.getElementById('status').textContent})"
    )
    return shown


async def test_a_tab_closed_at_60_percent_leaves_its_checkpoint_and_another_tab_finishes_from_it(
    embedding: Embedding,
) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(CHECKPOINTING_KERNEL, 1, task_timeout=600)
    async with embedding.visit(campaign) as first:
        await browser.run(first.click, "contribute")
        reached = await checkpointed_step(server, int(STEPS * 0.6))
    assert reached < STEPS  # the first tab closed mid-task
    async with embedding.visit(campaign) as second:
        await browser.run(second.click, "contribute")
        await server.wait_complete(campaign, timeout=60)
    stored = await outcome(server, campaign)
    result = stored.results[0]
    assert result["sum"] == sum(range(1, STEPS + 1))  # exact, as if computed in one go
    assert reached <= result["resumedFrom"] < STEPS  # the second tab started from the first tab's checkpoint
    assert stored.errors == []


async def test_the_card_and_the_console_show_the_kernels_progress(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    campaign = await embedding.campaign(CHECKPOINTING_KERNEL, 1, task_timeout=600)
    async with embedding.visit(campaign) as page:
        await browser.run(page.click, "contribute")
        await checkpointed_step(server, STEPS // 2)
        await browser.run(
            lambda: page.broker().wait_for_function(
                "() => Number(document.body.dataset.progress) >= 0.5", timeout=20000
            )
        )
        shown = await browser.run(card_progress, page)
        in_progress = server.platform.tasks_in_progress(campaign)
        live = (await server.client.get(f"/api/campaigns/{campaign}")).json()
    assert " % of the current task" in shown["status"]
    assert in_progress["tasks"] == 1 and in_progress["mean"] >= 0.5
    assert live["workers"] == 1


async def test_an_oversized_checkpoint_is_refused_in_the_kernel_with_a_clear_error_and_loses_nothing(
    embedding: Embedding,
) -> None:
    server = embedding.server
    campaign = await embedding.campaign(OVERSIZED_KERNEL, 5, task_timeout=600)
    stored = await embedding.contribute(campaign)
    assert sorted(stored.results) == [0, 1, 2, 3, 4]
    limit = f"{server.settings.checkpoint_max_bytes:,}"
    for value in stored.results.values():
        assert (
            value["refused"]
            == f"RangeError: ctx.checkpoint refused the state: it is too large: it is over the limit of {limit} bytes"
        )
    assert stored.errors == []


async def test_a_kernel_with_only_main_dataset_still_computes(embedding: Embedding) -> None:
    stored = await embedding.contribute(await embedding.campaign(busy_kernel(1), 5))
    assert stored.results == {i: i * 2 for i in range(5)}
