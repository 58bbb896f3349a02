"""The server side of the app: Hypercorn's configuration, and reading a closed WebSocket to its end.

`hypercorn_config(settings)` is Hypercorn's configuration from the settings (address, frame limit,
TCP keepalive on the listening sockets, WebSocket pings).

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

import socket

import hypercorn.config
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope

from .settings import Settings

__all__ = ["DrainClosedWebSockets", "hypercorn_config", "set_keepalive"]

KEEPALIVE_INTERVAL = 10  # seconds between TCP keepalive probes
KEEPALIVE_PROBES = 6  # unanswered probes before the kernel drops the connection


class _Config(hypercorn.config.Config):
    """Hypercorn's config; the listening sockets get TCP keepalive, which accepted sockets inherit."""

    tcp_keepalive: float = 0.0

    def create_sockets(self) -> hypercorn.config.Sockets:
        sockets = super().create_sockets()
        if self.tcp_keepalive > 0:
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                set_keepalive(sock, self.tcp_keepalive)
        return sockets


def set_keepalive(sock: socket.socket, idle: float) -> None:
    """Probe a peer silent for `idle` seconds; drop it after KEEPALIVE_PROBES unanswered probes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, round(idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


def hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    """Hypercorn's settings: the address, the frame limit, TCP keepalive and WebSocket pings.

    A dead peer behind a half-open TCP connection sends nothing, and an idle connection gives TCP
    nothing to send that could fail: keepalive probes (`tcp_keepalive`) find it without any frame
    the client sees. WebSocket pings (`ws_ping_interval`, off by default) are for proxies that close
    idle sockets; Hypercorn sends the first one right after the handshake. The gateway's heartbeat
    covers connections that hold tasks.
    """
    config = _Config()
    config.tcp_keepalive = settings.tcp_keepalive
    config.bind = [f"{settings.host}:{settings.port}"]
    config.websocket_max_message_size = settings.max_frame_bytes
    config.websocket_ping_interval = settings.ws_ping_interval or None
    config.graceful_timeout = 2.0
    config.accesslog = None
    return config


class DrainClosedWebSockets:
    """Wrap an ASGI app so a finished WebSocket handler never leaves Hypercorn's queue full."""

    def __init__(self, app: ASGIFramework, grace: float = 5.0) -> None:
        self.app = app
        self.grace = grace

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        disconnected = False

        async def watched_receive() -> ASGIReceiveEvent:
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
