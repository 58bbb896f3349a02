"""Generators through the server: failures become a stored, clear error; the server keeps serving."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import SEED_ANSWER, SEED_KERNEL, SEED_STATIC, LiveServer, StartServer
from tests.support.protocol_client import work

BROKEN_GENERATORS = {
    "exception": ("({ main: function () { throw new Error('no datasets today'); } })", "no datasets today"),
    "endless loop": ("({ main: function () { while (true) {} } })", "timed out"),
    "endless generator batch": ("({ main: function* () { yield 1; while (true) {} } })", "timed out"),
    "heap blow-up": (
        "({ main: function () { var a = []; while (true) a.push(new Array(1e6).fill(a.length)); } })",
        "memory",
    ),
    "array buffer blow-up": (
        "({ main: function () { var a = []; while (true) a.push(new Uint8Array(64 * 1024 * 1024).fill(1)); } })",
        "memory",
    ),
    "main missing": ("({ mein: function () { return []; } })", "main"),
    "not an array": ("({ main: function () { return 42; } })", "array"),
    "unserialisable dataset": ("({ main: function () { return [{f: function () {}}]; } })", "serialis"),
    "too large dataset": ("({ main: function () { return ['x'.repeat(2000000)]; } })", "bytes"),
    "too many datasets": ("({ main: function* () { for (var i = 0; ; i++) yield i; } })", "datasets"),
    "fatal out-of-memory": ("({ main: function () { return new Array(5e8).fill(0); } })", "memory"),
}


@pytest.mark.parametrize("name", BROKEN_GENERATORS)
async def test_a_broken_generator_fails_its_campaign_with_a_clear_error_and_the_server_serves_on(
    start_server: StartServer, name: str
) -> None:
    source, expected = BROKEN_GENERATORS[name]
    # 2 s keeps the endless cases short; filling memory up to a limit takes longer on a busy machine
    # (the fatal case fills a dictionary-mode array without the JIT: 7 s at a load average of 10),
    # and those cases must fail for their memory, not for the wall clock.
    server = await start_server(
        generator_timeout=90.0 if expected == "memory" else 2.0,
        generator_heap=64,
        max_datasets=50_000,
        generator_low_water=10**6,
    )
    # Past the trial before going live (which refuses most of these at once, see test_trial.py): what
    # happens when a generator breaks while it runs, as a generator that fails only later would.
    campaign_id = await server.create_campaign(generator=source, skip_check="true")
    healthy = await server.create_campaign()
    outcome = await work(server.ws_url, campaign=healthy)  # served while the broken one fails
    campaign = await server.wait_complete(campaign_id, timeout=120)
    assert campaign["status"] == "failed"
    assert expected.lower() in campaign["generation_error"].lower()
    assert outcome.bye == "complete"
    assert sorted(n for row in await server.results(healthy) for n in row["result"]) == SEED_ANSWER


async def test_a_generator_with_a_syntax_error_is_refused_at_upload_even_when_the_trial_is_skipped(
    live_server: LiveServer,
) -> None:
    refused = await live_server.post_campaign(
        SEED_KERNEL, "({ main: function () { return [1, 2; } })", SEED_STATIC, skip_check="true"
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "generator" and "SyntaxError" in refused.json()["error"]
    assert (await live_server.client.get("/api/campaigns")).json()["campaigns"] == []


async def test_the_server_keeps_serving_while_a_generator_runs_away(live_server: LiveServer) -> None:
    runaway = await live_server.create_campaign(generator=BROKEN_GENERATORS["heap blow-up"][0], skip_check="true")
    healthy = await live_server.create_campaign()
    outcome = await work(live_server.ws_url, campaign=healthy)
    assert outcome.bye == "complete"
    results = await live_server.results(healthy)
    assert sorted(n for row in results for n in row["result"]) == SEED_ANSWER
    assert (await live_server.wait_complete(runaway, timeout=60))["status"] == "failed"


async def test_an_empty_generator_completes_at_once(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator="({ main: function () { return []; } })")
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["datasets"]["total"] == 0


async def test_a_worker_waiting_on_a_generating_campaign_gets_tasks_when_they_arrive(live_server: LiveServer) -> None:
    slow = "({ main: function* () { var t = Date.now(); while (Date.now() - t < 300) {} for (var i = 0; i < 10; i++) yield {min: i * 100, max: i * 100 + 100}; } })"
    campaign_id = await live_server.create_campaign(generator=slow)
    with trio.fail_after(30):
        outcome = await work(live_server.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete" and len(outcome.done) == 10
