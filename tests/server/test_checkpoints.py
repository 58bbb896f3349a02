"""Progress and checkpoints (protocol v1.1) through a real server and real WebSockets.

Campaigns here have a task timeout of 600 s: a task that reaches another worker within a test did so
because its worker went away, not because its deadline passed.
"""

from __future__ import annotations

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from distribute import protocol as p
from distribute.work.checkpoints import untagged
from tests.conftest import SEED_ANSWER, SEED_KERNEL, LiveServer
from tests.support.protocol_client import close_of, receive, receive_tasks, send, work

STATE = msgpack.packb({"step": 6, "found": [123, 246]})


async def hello(ws: WebSocketConnection, campaign_id: int, slots: int = 1) -> tuple[p.CampaignInfo, list[p.Task]]:
    await send(ws, p.Hello(campaign=campaign_id, slots=slots, client={"kind": "test"}))
    info = await receive(ws)
    assert isinstance(info, p.CampaignInfo), info
    return info, await receive_tasks(ws)


async def closed_with(ws: WebSocketConnection) -> tuple[int | None, str]:
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return close_of(closed)


async def test_the_campaign_frame_announces_progress_and_checkpoints_with_the_servers_limits(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        info, _ = await hello(ws, campaign_id)
    assert {p.FEATURE_PROGRESS, p.FEATURE_CHECKPOINT} <= set(info.features)
    assert info.checkpoint_max_bytes == live_server.settings.checkpoint_max_bytes
    assert info.checkpoint_interval == live_server.settings.checkpoint_interval


async def test_a_task_whose_worker_vanished_goes_to_the_next_with_its_latest_checkpoint(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    checkpoints = live_server.platform.dispatcher.checkpoints
    with trio.fail_after(30):
        async with open_websocket_url(live_server.ws_url) as first:
            _, (task,) = await hello(first, campaign_id)
            assert task.resume is None
            await send(first, p.Checkpoint(task.id, msgpack.packb({"step": 1})))
            await send(first, p.Checkpoint(task.id, STATE))
            while checkpoints.latest.get(task.id) != STATE:
                await trio.sleep(0.01)
        async with open_websocket_url(live_server.ws_url) as second:
            _, (again,) = await hello(second, campaign_id)
        assert (again.id, again.resume) == (task.id, STATE)
        await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    rows = await live_server.results(campaign_id)
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER


async def test_a_checkpoint_of_an_older_kernel_version_is_not_handed_to_the_new_kernel(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    checkpoints = live_server.platform.dispatcher.checkpoints
    with trio.fail_after(30):
        async with open_websocket_url(live_server.ws_url) as first:
            _, (task,) = await hello(first, campaign_id)
            await send(first, p.Checkpoint(task.id, STATE))
            while checkpoints.latest.get(task.id) != STATE:
                await trio.sleep(0.01)
            files = {"kernel": ("kernel.js", SEED_KERNEL.encode())}  # version 2, the same code
            response = await live_server.client.post(
                f"/api/campaigns/{campaign_id}/kernel", files=files, data={"skip_check": "true"}
            )
            assert response.status_code == 200, response.text
        async with open_websocket_url(live_server.ws_url) as second:
            info, (again,) = await hello(second, campaign_id)
    assert info.hash != "" and again.id == task.id  # the same task, for the kernel of version 2...
    assert again.resume is None  # ...from the start: version 1's state is not version 2's


async def test_progress_of_held_tasks_shows_in_this_processes_tasks_in_progress(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        _, tasks = await hello(ws, campaign_id, slots=2)
        await send(ws, p.Progress(tasks[0].id, 0.6))
        with trio.fail_after(10):
            while (shown := live_server.platform.tasks_in_progress(campaign_id))["each"] != [0.6, 0.0]:
                await trio.sleep(0.01)
    assert shown == {"tasks": 2, "mean": 0.3, "each": [0.6, 0.0]}


async def test_an_oversized_checkpoint_closes_with_1009_and_its_task_is_not_lost(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    limit = live_server.settings.checkpoint_max_bytes
    async with open_websocket_url(live_server.ws_url) as ws:
        _, (task,) = await hello(ws, campaign_id)
        await send(ws, p.Checkpoint(task.id, msgpack.packb("x" * limit)))
        code, reason = await closed_with(ws)
    assert code == p.CLOSE_TOO_BIG and f"over the limit of {limit} bytes" in reason
    with trio.fail_after(30):
        await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    rows = await live_server.results(campaign_id)
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER


async def test_a_checkpoint_for_a_task_the_connection_does_not_hold_is_ignored(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    async with open_websocket_url(live_server.ws_url) as ws:
        await hello(ws, campaign_id)
        await send(ws, p.Checkpoint(10**12, STATE))
        await send(ws, p.Progress(10**12, 0.5))
        await send(ws, p.Ping(5))
        with trio.fail_after(10):
            while (message := await receive(ws)) != p.Pong(5):
                assert not isinstance(message, p.Bye), message
    assert 10**12 not in live_server.platform.dispatcher.checkpoints.latest


RESUMING_KERNEL = """({
  main: function (d, ctx) {
    ctx.progress(0.5);
    ctx.checkpoint({ step: 1 });
    return { i: d.i, resumedFrom: ctx.resume ? ctx.resume.step : 0 };
  }
})"""
COUNTING_GENERATOR = "({ main: function () { var a = []; for (var i = 0; i < 3; i++) a.push({ i: i }); return a; } })"


async def test_the_headless_worker_gives_a_reissued_tasks_checkpoint_to_its_kernel_as_ctx_resume(
    live_server: LiveServer,
) -> None:
    from distribute.worker import run_worker

    campaign_id = await live_server.create_campaign(
        kernel=RESUMING_KERNEL, generator=COUNTING_GENERATOR, static="", task_timeout=600
    )
    with trio.fail_after(60):
        async with open_websocket_url(live_server.ws_url) as first:
            _, (task,) = await hello(first, campaign_id)
            await send(first, p.Checkpoint(task.id, msgpack.packb({"step": 6})))
            while task.id not in live_server.platform.dispatcher.checkpoints.latest:
                await trio.sleep(0.01)
        await run_worker(live_server.url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    rows = {row["dataset_id"]: row["result"] for row in await live_server.results(campaign_id)}
    assert rows[task.id]["resumedFrom"] == 6
    assert sorted(r["resumedFrom"] for r in rows.values()) == [0, 0, 6]  # the others started afresh


async def test_the_latest_checkpoint_is_written_to_storage_for_whichever_process_leases_the_dataset_next(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    dispatcher = live_server.platform.dispatcher
    async with open_websocket_url(live_server.ws_url) as ws:
        _, (task,) = await hello(ws, campaign_id)
        await send(ws, p.Checkpoint(task.id, STATE))
        with trio.fail_after(10):
            while task.id not in dispatcher.checkpoints.latest or dispatcher.checkpoints.unsaved:
                await trio.sleep(0.01)  # received, then written by the group commit loop
        # As if this process had died: its lease ends, and another process leases the dataset.
        await dispatcher.storage.release(dispatcher.owner, [task.id])
        leased = await dispatcher.storage.lease(campaign_id, 1000, "another-process", 30)
    stored = {d.id: d.checkpoint for d in leased}[task.id]
    assert stored is not None and untagged(stored) == (1, STATE)  # with the kernel version that wrote it
