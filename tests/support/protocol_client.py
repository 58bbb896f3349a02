"""A protocol-level worker for tests and benchmarks: real WebSocket, kernels written in Python.

It speaks protocol v1 through `distribute.protocol` exactly as the headless worker and the
browser do, but computes with a Python callable, so tests of the server need no JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from distribute import protocol as p

MAX_MESSAGE = 16 * 1024 * 1024  # as large as Hypercorn accepts, not trio-websocket's 1 MiB default


@dataclass
class Outcome:
    campaigns: list[p.CampaignInfo] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    bye: str | None = None
    close_code: int | None = None
    close_reason: str = ""


def seed_kernel(dataset: dict[str, int]) -> list[int] | None:
    found = [i for i in range(dataset["min"], dataset["max"]) if i % 123 == 0]
    return found or None


async def connect(url: str) -> Any:
    return open_websocket_url(url, max_message_size=MAX_MESSAGE)


def close_of(closed: ConnectionClosed) -> tuple[int | None, str]:
    """The close code and reason the server sent (None and "" when it sent none)."""
    if closed.reason is None:
        return None, ""
    return closed.reason.code, closed.reason.reason or ""


async def send(ws: WebSocketConnection, message: p.ClientMessage) -> None:
    await ws.send_message(p.encode(message))


async def receive(ws: WebSocketConnection) -> p.ServerMessage | list[p.Task]:
    frame = await ws.get_message()
    assert isinstance(frame, bytes), frame  # the protocol has binary frames only
    return p.decode_server(frame)


class WorkOptions(TypedDict, total=False):
    """How a test worker behaves (every key optional)."""

    campaign: int | None  # the campaign to ask for (None: any)
    slots: int  # tasks to hold at once (4)
    max_tasks: int | None  # leave after computing this many (None: when the server says bye)
    vanish_after: int | None  # drop the socket mid-task after computing this many
    client: dict[str, Any] | None  # the `client` of hello ({"kind": "test"})
    delay: float  # seconds each batch of tasks takes: a slower worker, without blocking the event loop (0)
    seen: list[int] | None  # every task id computed is also appended here, readable while the worker runs
    site: str | None  # the site ticket of a registered site's broker page, sent in hello (None: no site)


async def work(url: str, compute: Callable[[Any], Any] = seed_kernel, **options: Unpack[WorkOptions]) -> Outcome:
    """Connect and compute until the server says bye (or `max_tasks`); see `work_on`."""
    async with open_websocket_url(url, max_message_size=MAX_MESSAGE) as ws:
        return await work_on(ws, compute, **options)


async def work_on(
    ws: WebSocketConnection, compute: Callable[[Any], Any] = seed_kernel, **options: Unpack[WorkOptions]
) -> Outcome:
    """Say hello on an open WebSocket, then compute until the server says bye (or `max_tasks`)."""
    max_tasks, vanish_after = options.get("max_tasks"), options.get("vanish_after")
    delay, seen = options.get("delay", 0.0), options.get("seen")
    hello = p.Hello(
        campaign=options.get("campaign"),
        slots=options.get("slots", 4),
        client=options.get("client") or {"kind": "test"},
        site=options.get("site"),
    )
    outcome = Outcome()
    await send(ws, hello)
    try:
        while max_tasks is None or len(outcome.done) < max_tasks:
            message = await receive(ws)
            if isinstance(message, p.CampaignInfo):
                outcome.campaigns.append(message)
            elif isinstance(message, list):
                if delay:
                    await trio.sleep(delay)
                results: list[p.Result] = []
                for task in message:
                    if vanish_after is not None and len(outcome.done) >= vanish_after:
                        await ws.aclose()  # leaves with tasks in hand
                        return outcome
                    try:
                        value = compute(msgpack.unpackb(task.dataset))
                    except Exception as exc:
                        await send(ws, p.TaskError(task.id, str(exc), "python", 0.1))
                    else:
                        results.append(p.Result(task.id, value, 0.1))
                    outcome.done.append(task.id)
                    if seen is not None:
                        seen.append(task.id)
                if results:  # one frame for the whole batch, as a fast client would
                    await send(ws, p.Results(tuple(results)))
            elif isinstance(message, p.Bye):
                outcome.bye = message.reason
                break
    except ConnectionClosed as exc:
        outcome.close_code, outcome.close_reason = close_of(exc)
    return outcome


async def receive_tasks(ws: WebSocketConnection) -> list[p.Task]:
    """The next batch of tasks, skipping campaign and idle frames."""
    while not isinstance(message := await receive(ws), list):
        assert isinstance(message, (p.CampaignInfo, p.Idle)), message
    return message


async def closed_with(
    url: str, *frames: bytes | str, campaign: int | None = None, hello: bool = True
) -> tuple[int | None, str]:
    """Send raw frames (after a valid hello, unless hello=False); return the close code and reason."""
    async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
        if hello:
            await send(ws, p.Hello(campaign=campaign, slots=1))
        for frame in frames:
            await ws.send_message(frame)
        return await closed(ws)


async def closed(ws: WebSocketConnection) -> tuple[int | None, str]:
    """Read (and drop) until the server closes; its close code and reason."""
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return close_of(exc)
