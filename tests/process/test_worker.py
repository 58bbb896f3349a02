"""The headless worker against a live server: seed campaign, kernel errors, limits, connection errors."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from distribute import protocol as p
from distribute.errors import ProtocolError, ValidationError
from distribute.worker import WorkerConnectionError, WorkerSummary, _decode, run_worker, ws_url
from tests.conftest import SEED_ANSWER, SEED_KERNEL, SEED_STATIC
from tests.support.ports import free_port

# Throws on datasets whose range starts at a multiple of 2,500 (0, 2500, 5000, 7500): 4 of 100.
PICKY_KERNEL = """({
  divisor: 0,
  loadStaticDataset(text) { this.divisor = JSON.parse(text).divisor; },
  main(d) {
    if (d.min % 2500 === 0) throw new RangeError('refusing range ' + d.min);
    const found = [];
    for (let i = d.min; i < d.max; i++) if (i % this.divisor === 0) found.push(i);
    return found.length ? found : null;
  }
})"""


def numbers(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(n for row in rows for n in row["result"])


async def work(live_server: Any, timeout: float = 60, **options: Any) -> WorkerSummary:
    with trio.fail_after(timeout):
        return await run_worker(live_server.url, **options)


async def test_seed_campaign_gives_exactly_the_82_multiples_of_123(live_server: Any) -> None:
    campaign = await live_server.create_campaign()
    summary = await work(live_server, campaign=campaign, slots=4)
    assert summary.tasks_done == 100 and summary.errors == 0
    assert summary.campaigns == (campaign,)
    assert "bye" in summary.reason and "complete" in summary.reason
    info = await live_server.wait_complete(campaign, timeout=30)
    assert info["status"] == "complete"
    rows = await live_server.results(campaign)
    assert numbers(rows) == SEED_ANSWER and len(SEED_ANSWER) == 82
    for row in rows:
        assert row["result"] == [n for n in range(row["dataset"]["min"], row["dataset"]["max"]) if n % 123 == 0]


async def test_kernel_errors_are_reported_and_the_rest_completes(live_server: Any) -> None:
    campaign = await live_server.create_campaign(kernel=PICKY_KERNEL, static=SEED_STATIC)
    summary = await work(live_server, campaign=campaign, slots=2)
    assert summary.errors >= 4  # each refused dataset fails (possibly retried up to max_task_errors)
    assert summary.tasks_done == 96 + summary.errors
    info = await live_server.wait_complete(campaign, timeout=30)
    assert info["datasets"]["failed"] == 4 and info["datasets"]["done"] == 96
    messages = {e["message"] for e in info["kernel_errors"]}
    assert messages == {f"RangeError: refusing range {n}" for n in (0, 2500, 5000, 7500)}
    assert all("kernel.js:" in e["stack"] for e in info["kernel_errors"])
    expected = [n for n in SEED_ANSWER if (n // 100) * 100 % 2500 != 0]
    assert numbers(await live_server.results(campaign)) == expected


async def test_max_tasks_stops_early_and_another_worker_finishes(live_server: Any) -> None:
    campaign = await live_server.create_campaign()
    first = await work(live_server, campaign=campaign, max_tasks=10, slots=3)
    assert first.tasks_done == 10 and first.reason == "reached 10 tasks"
    second = await work(live_server, campaign=campaign, slots=3)
    assert "complete" in second.reason
    await live_server.wait_complete(campaign, timeout=30)
    assert numbers(await live_server.results(campaign)) == SEED_ANSWER


async def test_any_campaign_worker_switches_kernels(live_server: Any) -> None:
    small_generator = "({main() { return [{min: 0, max: 50}, {min: 50, max: 100}]; }})"
    sevens = await live_server.create_campaign(generator=small_generator, static='{"divisor": 7}')
    seeds = await live_server.create_campaign(kernel=SEED_KERNEL, static=SEED_STATIC)
    # Wait until both are generated: an "any" worker that finds no work is told bye.
    for campaign, total in ((sevens, 2), (seeds, 100)):
        await live_server.wait_for(
            campaign, lambda c, n=total: c["datasets"]["total"] == n and c["status"] == "running"
        )
    summary = await work(live_server, max_tasks=102, slots=2)
    assert summary.tasks_done == 102 and summary.errors == 0
    assert sorted(summary.campaigns) == sorted([sevens, seeds])
    await live_server.wait_complete(sevens, timeout=30)
    await live_server.wait_complete(seeds, timeout=30)
    assert numbers(await live_server.results(sevens)) == list(range(0, 100, 7))
    assert numbers(await live_server.results(seeds)) == SEED_ANSWER


async def test_a_task_over_its_time_limit_is_an_error_and_the_worker_goes_on(live_server: Any) -> None:
    kernel = "({main(d) { if (d === 2) { while (true) {} } return d * 10; }})"
    generator = "({main() { return [1, 2, 3]; }})"
    campaign = await live_server.create_campaign(kernel=kernel, generator=generator, static="", task_timeout=0.5)
    summary = await work(live_server, campaign=campaign)
    assert "complete" in summary.reason and summary.errors >= 1
    info = await live_server.wait_complete(campaign, timeout=30)
    assert info["datasets"]["failed"] == 1 and info["datasets"]["done"] == 2
    assert {e["message"] for e in info["kernel_errors"]} == {"task exceeded the time limit of 0.5 s"}
    assert sorted(r["result"] for r in await live_server.results(campaign)) == [10, 30]


async def test_a_kernel_that_fails_to_load_answers_every_task_with_the_error(live_server: Any) -> None:
    broken = "({main(d) { return 1; }, loadStaticDataset(t) { throw new Error('static is bad: ' + t); }})"
    campaign = await live_server.create_campaign(
        kernel=broken, generator="({main() { return [1, 2]; }})", static="oops", skip_check="true"
    )
    summary = await work(live_server, campaign=campaign)
    assert summary.errors == summary.tasks_done >= 2
    info = await live_server.wait_complete(campaign, timeout=30)
    assert info["datasets"]["failed"] == 2
    assert {e["message"] for e in info["kernel_errors"]} == {
        "the kernel's loadStaticDataset threw: Error: static is bad: oops"
    }


# --------------------------------------------------------------------------- a scripted server


Script = Callable[[WebSocketConnection, list[Any]], Awaitable[None]]


async def scripted_server(nursery: trio.Nursery, script: Script) -> tuple[str, list[Any]]:
    """A one-connection WebSocket server that plays `script`; returns its URL and what it received."""
    received: list[Any] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        received.append(p.decode_client(await ws.get_message()))
        await script(ws, received)

    server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
    return f"http://127.0.0.1:{server.port}", received


def campaign_frame(campaign: int, digest: str, kernel: str | None) -> bytes:
    return p.encode(p.CampaignInfo(campaign, f"c{campaign}", digest, kernel, "" if kernel else None, 5.0, 1 << 20))


async def answer(ws: WebSocketConnection, received: list[Any]) -> Any:
    received.append(p.decode_client(await ws.get_message()))
    return received[-1]


async def test_a_task_sent_twice_while_held_is_answered_once(nursery: trio.Nursery) -> None:
    async def script(ws: WebSocketConnection, received: list[Any]) -> None:
        spin = "({main(d) { const end = Date.now() + d.ms; while (Date.now() < end) {} return d.ms; }})"
        await ws.send_message(campaign_frame(1, "k1", spin))
        await ws.send_message(p.encode_tasks([p.Task(7, msgpack.packb({"ms": 300}))]))
        await ws.send_message(p.encode_tasks([p.Task(7, msgpack.packb({"ms": 300}))]))  # re-leased: same id
        await answer(ws, received)
        await ws.send_message(p.encode_tasks([p.Task(8, msgpack.packb({"ms": 0}))]))
        await answer(ws, received)
        await ws.send_message(p.encode(p.Bye("complete")))
        await ws.aclose()

    url, received = await scripted_server(nursery, script)
    with trio.fail_after(30):
        summary = await run_worker(url, campaign=1, host="https://blog.example")
    assert summary == WorkerSummary(2, 0, (1,), "server said bye: complete")
    hello, first, second = received
    assert hello.client["kind"] == "headless" and hello.client["host"] == "https://blog.example"
    assert (first.task, first.value, second.task, second.value) == (7, 300, 8, 0)


async def test_kernel_kept_when_the_hash_is_unchanged_and_reloaded_otherwise(nursery: trio.Nursery) -> None:
    counter = "({n: 0, main(d) { return ++this.n; }})"  # counts calls: shows whether the kernel was reloaded

    async def script(ws: WebSocketConnection, received: list[Any]) -> None:
        for campaign, digest, kernel in [(1, "a", counter), (2, "a", None), (3, "b", counter)]:
            await ws.send_message(campaign_frame(campaign, digest, kernel))
            await ws.send_message(p.encode_tasks([p.Task(campaign, msgpack.packb(0))]))
            await answer(ws, received)
        await ws.send_message(p.encode(p.Bye("")))

    url, received = await scripted_server(nursery, script)
    with trio.fail_after(30):
        summary = await run_worker(url)
    assert summary.campaigns == (1, 2, 3) and summary.reason == "server said bye"
    assert [r.value for r in received[1:]] == [1, 2, 1]


async def test_an_abnormal_close_is_a_connection_error(nursery: trio.Nursery) -> None:
    async def script(ws: WebSocketConnection, received: list[Any]) -> None:
        await ws.send_message(campaign_frame(1, "k", "({main(d) { return d; }})"))
        await ws.send_message(p.encode_tasks([p.Task(1, msgpack.packb(1))]))
        await answer(ws, received)
        await ws.aclose(p.CLOSE_POLICY_VIOLATION, "task 1 is not held by this connection")

    url, _ = await scripted_server(nursery, script)
    with trio.fail_after(30), pytest.raises(WorkerConnectionError, match="1008 task 1 is not held"):
        await run_worker(url)


async def test_max_tasks_closes_normally_with_tasks_in_hand(nursery: trio.Nursery) -> None:
    async def script(ws: WebSocketConnection, received: list[Any]) -> None:
        await ws.send_message(campaign_frame(1, "k", "({main(d) { return d * 2; }})"))
        await ws.send_message(p.encode_tasks([p.Task(i, msgpack.packb(i)) for i in range(1, 6)]))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await answer(ws, received)

    url, received = await scripted_server(nursery, script)
    with trio.fail_after(30):
        summary = await run_worker(url, max_tasks=3)
    assert summary == WorkerSummary(3, 0, (1,), "reached 3 tasks")
    assert [(r.task, r.value) for r in received[1:]] == [(1, 2), (2, 4), (3, 6)]


# --------------------------------------------------------------------------- connection and URL errors


async def test_unreachable_server_is_a_clear_error() -> None:
    port = free_port()
    with (
        trio.fail_after(30),
        pytest.raises(WorkerConnectionError, match=rf"cannot connect to ws://127.0.0.1:{port}/ws"),
    ):
        await run_worker(f"http://127.0.0.1:{port}")


async def test_bad_server_url_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="http"):
        await run_worker("ftp://example.org")


@pytest.mark.parametrize(
    "frame",
    [
        "a text frame",
        b"\xc1garbage",
        msgpack.packb({"t": "tasks", "tasks": [[1]]}),
        msgpack.packb({"t": "tasks", "tasks": [None]}),
        msgpack.packb({"t": "tasks", "tasks": [["x", {}]]}),
        msgpack.packb({"t": "campaign", "id": 1, "hash": "h", "kernel": 5, "static": None, "max_result_bytes": 1}),
        msgpack.packb({"t": "surprise"}),
    ],
)
def test_malformed_server_frames_are_protocol_errors(frame: bytes | str) -> None:
    with pytest.raises(ProtocolError):
        _decode(frame)


def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://compute.example.org/base/") == "wss://compute.example.org/base/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    assert ws_url("wss://h") == "wss://h/ws"
