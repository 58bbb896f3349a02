"""ASGI glue between Hypercorn and the Quart app: reading a closed WebSocket to its end.

Hypercorn (0.18) hands every frame it reads to the app through a queue of `max_app_queue_size`
(10) entries, and keeps doing so after the app has closed the socket and returned. When a worker
is still sending as the server closes its socket (a protocol violation halfway through a burst of
results, a fuzzer), the frames fill that queue; Hypercorn's reader then waits for room forever, so
it never reads the worker's close reply or its EOF, and never closes the TCP connection. Even the
worker going away leaks the server's socket and task.

`DrainClosedWebSockets` reads and drops what still arrives after a WebSocket handler has returned,
until Hypercorn reports the disconnect or `grace` seconds have passed. Hypercorn then closes the
TCP connection itself (it does so when the app returns), and frames after that are discarded
without queueing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

__all__ = ["DrainClosedWebSockets"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class DrainClosedWebSockets:
    """Wrap an ASGI app so a finished WebSocket handler never leaves Hypercorn's queue full."""

    def __init__(self, app: ASGIApp, grace: float = 5.0) -> None:
        self.app = app
        self.grace = grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        disconnected = False

        async def watched_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            disconnected = disconnected or message["type"] == "websocket.disconnect"
            return message

        try:
            await self.app(scope, watched_receive, send)
        finally:
            # Also after an exception: Hypercorn then closes the socket the same way. A cancelled
            # handler (the server stopping) skips this at the first checkpoint, as it should:
            # Hypercorn's reader is being cancelled too.
            with trio.move_on_after(self.grace):
                while not disconnected:
                    disconnected = (await receive())["type"] == "websocket.disconnect"
