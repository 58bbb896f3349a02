"""Tasks handed back with `release` (protocol v1.1), through a real server and real WebSockets.

Every campaign here has a task timeout of 600 s: a dataset that reaches another worker within the
test did so because it was handed back, not because its deadline passed.
"""

from __future__ import annotations

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_ANSWER, LiveServer
from tests.support.protocol_client import close_of, receive, receive_tasks, seed_kernel, send, work


async def hello(ws: WebSocketConnection, campaign_id: int, slots: int = 4) -> tuple[p.CampaignInfo, list[p.Task]]:
    await send(ws, p.Hello(campaign=campaign_id, slots=slots, client={"kind": "test"}))
    info = await receive(ws)
    assert isinstance(info, p.CampaignInfo), info
    return info, await receive_tasks(ws)


async def test_the_server_lists_release_among_its_features(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        info, _ = await hello(ws, campaign_id)
    assert p.FEATURE_RELEASE in info.features


async def test_released_tasks_go_to_the_next_worker_at_once_without_an_error(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    with trio.fail_after(30):
        async with open_websocket_url(live_server.ws_url) as first:
            _, tasks = await hello(first, campaign_id)
            released = sorted(t.id for t in tasks)
            await send(first, p.Release(tuple(released)))
            async with open_websocket_url(live_server.ws_url) as second:
                _, next_tasks = await hello(second, campaign_id, slots=len(released))
                assert sorted(t.id for t in next_tasks) == released
            await first.aclose()
        await work(live_server.ws_url, campaign=campaign_id)
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["errors"] == 0 and campaign["kernel_errors"] == []
    rows = await live_server.results(campaign_id)
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER


async def test_forged_ids_in_a_release_are_ignored_and_the_connection_goes_on(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        _, tasks = await hello(ws, campaign_id)
        await send(ws, p.Release((10**12, 10**12 + 1)))
        task = tasks[0]
        await send(ws, p.Result(task.id, seed_kernel(msgpack.unpackb(task.dataset)), 1.0))
        await send(ws, p.Ping(5))
        with trio.fail_after(10):
            while (message := await receive(ws)) != p.Pong(5):
                assert not isinstance(message, p.Bye), message
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] >= 1)


async def test_a_task_handed_back_is_no_longer_the_connections_to_answer(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        _, tasks = await hello(ws, campaign_id)
        await send(ws, p.Release((tasks[0].id,)))
        await send(ws, p.Result(tasks[0].id, None, 1.0))
        with trio.fail_after(10):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as closed:
                code, reason = close_of(closed)
    assert code == p.CLOSE_POLICY_VIOLATION and "not held" in reason


async def test_handing_tasks_back_costs_the_worker_no_slots_unlike_dropping_them(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    allowance = live_server.platform.gateway.allowance
    async with open_websocket_url(live_server.ws_url) as ws:
        _, tasks = await hello(ws, campaign_id)
        await send(ws, p.Release(tuple(t.id for t in tasks), final=True))
    with trio.fail_after(10):
        while live_server.platform.gateway.sessions:
            await trio.sleep(0.01)
    assert len(allowance) == 0  # nothing recorded against this address
    async with open_websocket_url(live_server.ws_url) as ws:
        await hello(ws, campaign_id)  # and leaves holding them
    with trio.fail_after(10):
        while len(allowance) == 0:
            await trio.sleep(0.01)


async def test_after_a_final_release_the_server_sends_no_more_tasks(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        _, tasks = await hello(ws, campaign_id)
        await send(ws, p.Release(tuple(t.id for t in tasks), final=True))
        with trio.fail_after(10):
            assert await receive(ws) == p.Idle("waiting for work")  # its slots are all free, yet no tasks
        await send(ws, p.Ping(1))
        with trio.fail_after(10):
            assert await receive(ws) == p.Pong(1)
