"""Honest states through a real server: finished with failures, auto-pause and resume, grouped
kernel errors; the API, the CLI and the console show the same state of the same campaign."""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import LiveServer, StartServer
from tests.process.test_cli import client_options, distribute
from tests.support.protocol_client import receive, send, work

MESSAGE = "ReferenceError: main is not defined"


def broken(dataset: Any) -> Any:
    raise RuntimeError(MESSAGE)


def picky(dataset: dict[str, int]) -> list[int]:
    """Fails on every tenth dataset: a healthy campaign with a few bad datasets."""
    if dataset["min"] % 1000 == 0:
        raise ValueError("cannot handle this one")
    return [dataset["min"]]


async def finished_with_failures(server: LiveServer) -> dict[str, Any]:
    campaign_id = await server.create_campaign(name="picky")
    assert (await work(server.ws_url, picky, campaign=campaign_id)).bye == "complete"
    return await server.wait_complete(campaign_id)


async def auto_paused(server: LiveServer) -> tuple[int, list[int], str | None]:
    """A campaign a broken worker fails on: (id, tasks it received, its bye reason)."""
    campaign_id = await server.create_campaign(name="broken")
    seen: list[int] = []
    with trio.fail_after(30):
        outcome = await work(server.ws_url, broken, campaign=campaign_id, slots=2, seen=seen)
    await server.wait_for(campaign_id, lambda c: c["state"]["key"] == "paused")  # stored just after workers hear
    return campaign_id, seen, outcome.bye


async def test_a_campaign_whose_datasets_failed_finishes_with_failures_not_complete(live_server: LiveServer) -> None:
    campaign = await finished_with_failures(live_server)
    assert campaign["status"] == "complete"  # the stored lifecycle: nothing left to hand out
    assert campaign["state"] == {"key": "finished_with_failures", "label": "finished with 10 failed",
                                 "tone": "warning", "reason": None}  # fmt: skip


async def test_a_healthy_campaign_with_a_few_bad_datasets_is_not_paused(live_server: LiveServer) -> None:
    campaign = await finished_with_failures(live_server)
    assert campaign["datasets"]["done"] == 90 and campaign["state"]["key"] != "paused"


async def test_an_auto_paused_campaign_stops_handing_out_tasks_within_one_refill(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10, refill_batch=8, refill_growth=1, flush_batch=1)
    campaign_id, seen, bye = await auto_paused(server)
    assert bye == "paused"
    # The window, plus what was queued here when it closed (one refill) and a refill under way then;
    # without the pause the worker would have gone on through 100 datasets x max_task_errors tries.
    assert len(seen) <= 10 + 2 * 8
    campaign = await server.campaign(campaign_id)
    assert campaign["state"]["key"] == "paused" and campaign["datasets"]["done"] == 0
    assert campaign["state"]["reason"].startswith("10 of its first 10 tasks failed: ")
    assert MESSAGE in campaign["state"]["reason"]


async def test_a_worker_asking_for_a_paused_campaign_hears_paused_and_gets_nothing(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    campaign_id, _, _ = await auto_paused(server)
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=4))
        with trio.fail_after(10):
            while not isinstance(message := await receive(ws), p.Bye):
                assert not isinstance(message, list), "a paused campaign handed out a task"
    assert message == p.Bye("paused")


async def test_a_worker_for_any_campaign_moves_on_from_a_paused_one(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    await auto_paused(server)
    healthy = await server.create_campaign(name="healthy")
    outcome = await work(server.ws_url)
    assert [c.id for c in outcome.campaigns] == [healthy] and len(outcome.done) == 100


async def test_resume_through_the_api_serves_the_campaign_again(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    campaign_id, _, _ = await auto_paused(server)
    response = await server.client.post(f"/api/campaigns/{campaign_id}/resume")
    assert response.status_code == 200 and response.json()["state"]["key"] in ("generating", "running")
    outcome = await work(server.ws_url, picky, campaign=campaign_id)
    assert outcome.bye == "complete" and outcome.done


async def test_resume_of_a_campaign_that_is_not_paused_is_refused(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    response = await live_server.client.post(f"/api/campaigns/{campaign_id}/resume")
    assert response.status_code == 409 and "not paused" in response.json()["error"]


async def test_kernel_errors_are_grouped_by_message_in_the_api(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    campaign_id, _, _ = await auto_paused(server)
    campaign = await server.wait_for(campaign_id, lambda c: c["errors"] >= 10)
    (group,) = campaign["kernel_error_groups"]
    assert group["message"] == MESSAGE and group["count"] >= 10 and group["count"] >= group["datasets"] >= 1
    assert len(group["examples"]) == min(5, group["datasets"]) and group["first_seen"] <= group["last_seen"]
    assert campaign["kernel_errors"] and campaign["kernel_errors"][0]["message"] == MESSAGE  # kept for old clients


async def test_the_api_and_the_cli_show_the_same_state(live_server: LiveServer) -> None:
    campaign = await finished_with_failures(live_server)
    campaign_id = campaign["id"]
    listed = (await distribute("campaign", "list", *client_options(live_server))).stdout.decode()
    shown = (await distribute("campaign", "show", str(campaign_id), *client_options(live_server))).stdout.decode()
    as_json = json.loads((await distribute("campaign", "show", str(campaign_id), "--json",
                                           *client_options(live_server))).stdout)  # fmt: skip
    label = campaign["state"]["label"]
    assert label == "finished with 10 failed" and as_json["state"] == campaign["state"]
    assert f"{campaign_id:>6}  {label} " in listed
    assert f"campaign {campaign_id}: picky ({label})" in shown


async def test_the_cli_shows_why_a_campaign_paused_and_resumes_it(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    campaign_id, _, _ = await auto_paused(server)
    shown = (await distribute("campaign", "show", str(campaign_id), *client_options(server))).stdout.decode()
    assert f"campaign {campaign_id}: broken (paused)" in shown
    assert f"paused: 10 of its first 10 tasks failed: {MESSAGE}" in shown
    resumed = await distribute("campaign", "resume", str(campaign_id), *client_options(server))
    assert resumed.stdout.decode().strip() == f"resumed campaign {campaign_id}"
    assert (await server.campaign(campaign_id))["state"]["key"] in ("generating", "running")
