"""A protocol-level test worker that connects from a chosen loopback address (127.0.0.X).

Replicas of one dataset must go to different addresses, so tests of verification need workers
that the server sees at different IPs on one machine: the client binds its socket's source address.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from distribute import protocol as p
from tests.protocol_client import Outcome, receive, send


@asynccontextmanager
async def connect_from(url: str, address: str) -> Any:
    """A WebSocket to `url` whose TCP source address is `address` (e.g. 127.0.0.2)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    stream = await trio.open_tcp_stream(parts.hostname, parts.port, local_address=address)
    async with trio.open_nursery() as nursery:
        ws: WebSocketConnection = await wrap_client_stream(
            nursery, stream, parts.hostname, parts.path or "/", max_message_size=16 * 1024 * 1024
        )
        try:
            yield ws
        finally:
            await ws.aclose()


async def work_from(
    url: str,
    address: str,
    compute: Callable[[Any], Any],
    *,
    campaign: int | None = None,
    identity: str | None = None,
    slots: int = 4,
    max_tasks: int | None = None,
    seen: list[int] | None = None,
    delay: float = 0.0,
) -> Outcome:
    """Compute until bye (or `max_tasks`); every task id received is appended to `seen`.

    `delay`: seconds each batch of tasks takes (a slower worker, without blocking the event loop).
    """
    outcome = Outcome()
    client: dict[str, Any] = {"kind": "test"}
    if identity is not None:
        client["id"] = identity
    async with connect_from(url, address) as ws:
        await send(ws, p.Hello(campaign=campaign, slots=slots, client=client))
        try:
            while max_tasks is None or len(outcome.done) < max_tasks:
                message = await receive(ws)
                if isinstance(message, p.CampaignInfo):
                    outcome.campaigns.append(message)
                elif isinstance(message, list):
                    if delay:
                        await trio.sleep(delay)
                    results = []
                    for task in message:
                        if seen is not None:
                            seen.append(task.id)
                        results.append(p.Result(task.id, compute(msgpack.unpackb(task.dataset)), 0.1))
                        outcome.done.append(task.id)
                    await send(ws, p.Results(tuple(results)))
                elif isinstance(message, p.Bye):
                    outcome.bye = message.reason
                    break
        except ConnectionClosed as exc:
            outcome.close_code = exc.reason.code
            outcome.close_reason = exc.reason.reason or ""
    return outcome
