"""Workers for the client tests: protocol clients (tests/support/protocol_client.py) computing the
kernel in Python, reconnecting after a bye or a server restart, until the test is done with them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from tests.support.protocol_client import work

# The JavaScript the campaigns carry (the trial runs it); the protocol clients compute `double`.
DOUBLE_KERNEL = "({ main: function (d) { return d.x * 2; } })"


def double(dataset: dict[str, int]) -> int:
    return dataset["x"] * 2


@asynccontextmanager
async def workers(
    ws_url: str, campaign: int | None = None, compute: Callable[[Any], Any] = double, count: int = 2, slots: int = 64
) -> AsyncIterator[None]:
    """`count` protocol clients working on `campaign` while the block runs."""

    async def one() -> None:
        while True:
            with suppress(OSError, ConnectionClosed, HandshakeError, trio.BrokenResourceError):  # down or restarting
                await work(ws_url, compute, campaign=campaign, slots=slots)
            await trio.sleep(0.05)  # a bye (no work yet, paused): ask again soon, never in a tight loop

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        yield
        nursery.cancel_scope.cancel()
