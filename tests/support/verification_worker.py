"""A protocol-level test worker that connects from a chosen loopback address (127.0.0.X).

Replicas of one dataset must go to different addresses, so tests of verification need workers
that the server sees at different IPs on one machine: the client binds its socket's source address.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from tests.support.protocol_client import Outcome, work_on


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
    """`protocol_client.work_on` from `address`, as client `identity` (see there for `seen` and `delay`)."""
    client: dict[str, Any] = {"kind": "test"}
    if identity is not None:
        client["id"] = identity
    async with connect_from(url, address) as ws:
        return await work_on(
            ws, compute, campaign=campaign, slots=slots, max_tasks=max_tasks, client=client, delay=delay, seen=seen
        )
