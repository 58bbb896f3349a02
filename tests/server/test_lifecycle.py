"""The campaign lifecycle through a real server: the owner pauses (hand-outs stop within one refill,
in every server process), resumes (hand-outs start again) and cancels (for good, results kept)."""

from __future__ import annotations

from typing import Any

import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import LiveServer, StartServer
from tests.process.test_cli import client_options, distribute
from tests.support.protocol_client import receive, send, work

from .test_open_campaigns import add_json, create_open, ranges

REFILL = 8


async def post(server: LiveServer, campaign_id: int, action: str) -> Any:
    return await server.client.post(f"/api/campaigns/{campaign_id}/{action}")


async def pause_midway(worker_server: LiveServer, api_server: LiveServer) -> tuple[int, list[int], int, str | None]:
    """A worker on `worker_server` computes slowly; its campaign is paused through `api_server`'s API
    once it has done 10 tasks. Returns (campaign, tasks it received, how many before the pause, its bye)."""
    campaign_id = await api_server.create_campaign(name="paused midway")
    seen: list[int] = []
    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def worker() -> None:
            outcome.append(await work(worker_server.ws_url, campaign=campaign_id, slots=2, delay=0.02, seen=seen))

        nursery.start_soon(worker)
        with trio.fail_after(30):
            while len(seen) < 10:
                await trio.sleep(0.01)
        response = await post(api_server, campaign_id, "pause")
        before = len(seen)
        assert response.status_code == 200
    return campaign_id, seen, before, outcome[0].bye


async def test_pause_answers_the_campaign_paused_by_its_owner(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    campaign = (await post(live_server, campaign_id, "pause")).json()
    assert campaign["status"] == "paused" and campaign["state"]["reason"] == "paused by its owner"


async def test_pause_stops_hand_outs_at_once_and_its_worker_hears_paused(start_server: StartServer) -> None:
    server = await start_server(refill_batch=REFILL, refill_growth=1)
    campaign_id, seen, before, bye = await pause_midway(server, server)
    assert bye == "paused" and len(seen) - before <= 2  # at most what was on its way (its slots)
    assert (await server.campaign(campaign_id))["datasets"]["done"] < 100


async def test_pause_stops_hand_outs_within_one_refill_in_another_server_process(start_server: StartServer) -> None:
    first = await start_server(refill_batch=REFILL, refill_growth=1)
    second = await start_server(refill_batch=REFILL, refill_growth=1)  # the same database
    campaign_id, seen, before, bye = await pause_midway(second, first)
    # The second process hears of the pause at its next refresh; until then storage leases it nothing more,
    # so it hands out at most what it had queued (one refill) and what its worker's slots held.
    assert bye == "paused" and len(seen) - before <= REFILL + 2
    assert (await first.campaign(campaign_id))["datasets"]["done"] < 100


async def test_resume_after_an_owners_pause_hands_out_again_until_complete(start_server: StartServer) -> None:
    server = await start_server(refill_batch=REFILL, refill_growth=1)
    campaign_id, _, _, _ = await pause_midway(server, server)
    resumed = await post(server, campaign_id, "resume")
    assert resumed.status_code == 200 and resumed.json()["status"] in ("generating", "running")
    outcome = await work(server.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete" and outcome.done
    assert (await server.wait_complete(campaign_id))["datasets"]["done"] == 100


async def test_pausing_a_paused_campaign_is_a_conflict(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await post(live_server, campaign_id, "pause")
    assert (await post(live_server, campaign_id, "pause")).status_code == 409


async def test_resume_of_a_campaign_that_is_not_paused_is_a_conflict(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    response = await post(live_server, campaign_id, "resume")
    assert response.status_code == 409 and "not paused" in response.json()["error"]


async def test_a_paused_open_campaign_resumes_waiting_for_datasets_without_a_generator(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    assert (await post(live_server, campaign_id, "pause")).json()["status"] == "paused"
    assert (await add_json(live_server, campaign_id, ranges(0, 5))).status_code == 201  # still open: it takes them
    resumed = (await post(live_server, campaign_id, "resume")).json()
    assert resumed["status"] == "generating" and resumed["open"] is True and resumed["generation_error"] is None
    assert len((await work(live_server.ws_url, campaign=campaign_id, max_tasks=5)).done) == 5


async def test_a_paused_closed_open_campaign_resumes_running_and_completes(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    await add_json(live_server, campaign_id, ranges(0, 5))
    await post(live_server, campaign_id, "pause")
    await post(live_server, campaign_id, "close")
    assert (await post(live_server, campaign_id, "resume")).json()["status"] == "running"
    assert (await work(live_server.ws_url, campaign=campaign_id)).bye == "complete"
    assert (await live_server.wait_complete(campaign_id))["status"] == "complete"


async def cancelled_midway(server: LiveServer) -> tuple[int, list[dict[str, Any]], str | None]:
    """A campaign cancelled once it has results: (id, its results before the cancel, the worker's bye)."""
    campaign_id = await server.create_campaign(name="cancelled")
    outcome: list[Any] = []
    seen: list[int] = []
    async with trio.open_nursery() as nursery:

        async def worker() -> None:
            outcome.append(await work(server.ws_url, campaign=campaign_id, slots=2, delay=0.02, seen=seen))

        nursery.start_soon(worker)
        await server.wait_for(campaign_id, lambda c: c["datasets"]["done"] >= 10)
        response = await post(server, campaign_id, "cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
    await server.wait_for(campaign_id, lambda c: c["datasets"]["leased"] == 0)
    return campaign_id, await server.results(campaign_id, include_empty=True), outcome[0].bye


async def test_cancel_keeps_the_results_and_its_worker_hears_cancelled(live_server: LiveServer) -> None:
    campaign_id, results, bye = await cancelled_midway(live_server)
    campaign = await live_server.campaign(campaign_id)
    assert bye == "cancelled" and campaign["state"]["key"] == "cancelled"
    assert campaign["state"]["reason"] == "cancelled by its owner"
    assert len(results) == campaign["datasets"]["done"] >= 10 and campaign["datasets"]["done"] < 100


async def test_a_cancelled_campaign_cannot_be_resumed(live_server: LiveServer) -> None:
    campaign_id, _, _ = await cancelled_midway(live_server)
    response = await post(live_server, campaign_id, "resume")
    assert response.status_code == 409 and (await live_server.campaign(campaign_id))["status"] == "cancelled"


async def test_a_cancelled_campaign_is_never_served_again(live_server: LiveServer) -> None:
    campaign_id, _, _ = await cancelled_midway(live_server)
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=4))
        with trio.fail_after(10):
            while not isinstance(message := await receive(ws), p.Bye):
                assert not isinstance(message, list), "a cancelled campaign handed out a task"
    assert message == p.Bye("cancelled")


async def test_a_worker_for_any_campaign_moves_on_from_a_cancelled_one(live_server: LiveServer) -> None:
    await cancelled_midway(live_server)
    healthy = await live_server.create_campaign(name="healthy")
    outcome = await work(live_server.ws_url)
    assert [c.id for c in outcome.campaigns] == [healthy] and len(outcome.done) == 100


async def test_a_paused_campaign_can_be_cancelled(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await post(live_server, campaign_id, "pause")
    assert (await post(live_server, campaign_id, "cancel")).json()["status"] == "cancelled"


async def test_a_complete_campaign_cannot_be_cancelled(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    assert (await post(live_server, campaign_id, "cancel")).status_code == 409


async def test_a_cancelled_open_campaign_takes_no_datasets(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    cancelled = (await post(live_server, campaign_id, "cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["open"] is False
    assert (await add_json(live_server, campaign_id, ranges(0, 3))).status_code == 409


async def test_the_cli_pauses_resumes_and_cancels(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    options = client_options(live_server)
    paused = await distribute("campaign", "pause", str(campaign_id), *options)
    assert paused.stdout.decode().strip() == f"paused campaign {campaign_id}"
    assert (await live_server.campaign(campaign_id))["status"] == "paused"
    await distribute("campaign", "resume", str(campaign_id), *options)
    assert (await live_server.campaign(campaign_id))["status"] in ("generating", "running")
    cancelled = await distribute("campaign", "cancel", str(campaign_id), *options)
    assert cancelled.stdout.decode().strip() == f"cancelled campaign {campaign_id}"
    refused = await distribute("campaign", "resume", str(campaign_id), *options, check=False)
    assert refused.returncode == 2 and "409" in refused.stderr.decode()


async def test_a_cancelled_campaign_cannot_be_reset(live_server: LiveServer) -> None:
    campaign_id, results, _ = await cancelled_midway(live_server)
    assert (await post(live_server, campaign_id, "reset")).status_code == 409
    assert len(await live_server.results(campaign_id, include_empty=True)) == len(results)


async def test_the_card_of_a_cancelled_campaign_says_it_has_ended(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await post(live_server, campaign_id, "cancel")
    state = await live_server.client.get(f"/embed/{campaign_id}/state")
    card = await live_server.client.get(f"/embed/{campaign_id}")
    assert state.json() == {"state": "ended"} and 'data-state="ended"' in card.text


async def test_the_cli_shows_how_to_feed_an_open_campaign(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    shown = (await distribute("campaign", "show", str(campaign_id), *client_options(live_server))).stdout.decode()
    assert f"campaign {campaign_id}: open (waiting for datasets)" in shown
    assert f"distribute datasets add {campaign_id} FILE" in shown
