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

`refuse_compression()` keeps Hypercorn from negotiating permessage-deflate (see `_NoCompressionHandshake`).
`origin_allowed` decides which browser pages may open the worker socket.

`ProxyHeaders` puts the real client into the scope once per request and WebSocket, before the app
sees it: behind a trusted reverse proxy (`forwarded_allow_ips`) the scope's `client` becomes the
address the proxy names and its `scheme` the one the proxy was reached with (policy in proxies.py).
Everything that reads the client's address or scheme (`remote_addr`, `scheme`: the gateway's limits and
verification's addresses, the console's sign-in limits and cookies, the Origin check) reads it from there.

`RequestIds` gives every HTTP request an id (logs.REQUEST_ID, echoed in `X-Request-Id`) for its log
lines; with `log_format` json, `AccessLog` writes Hypercorn's access log as JSON lines of chosen
fields (never its headers, which carry cookies and Authorization, nor a query string).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import hypercorn.config
import hypercorn.logging
import hypercorn.protocol.ws_stream
import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    ResponseSummary,
    Scope,
    WWWScope,
)

from .logs import REQUEST_ID, redact, request_id
from .proxies import Client, TrustedProxies, client_of
from .settings import Settings

__all__ = [
    "AccessLog",
    "DrainClosedWebSockets",
    "ProxyHeaders",
    "RequestIds",
    "hypercorn_config",
    "loopback_peer",
    "origin_allowed",
    "refuse_compression",
    "set_keepalive",
]

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
    # Hypercorn's own messages go through the root logger (logs.configure_logging), not a handler
    # of its own with another format.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = logging.getLogger("hypercorn.access") if settings.log_format == "json" else None
    config.logger_class = AccessLog
    return config


class AccessLog(hypercorn.logging.Logger):
    """Hypercorn's logger whose access lines are records with fields, not a format of every header.

    Hypercorn's atoms include every request header (Cookie, Authorization) and every environment
    variable; only these fields are logged, the query string never, and the path is redacted (reset
    and verification links carry their token in it). A client that hung up before the response is
    logged with status null (Hypercorn may log such a line even as the response completes).
    """

    async def access(self, request: WWWScope, response: ResponseSummary | None, request_time: float) -> None:
        if self.access_logger is None:
            return
        headers = dict(response.get("headers", ())) if response is not None else {}
        client = request.get("client")
        method = request["method"] if request["type"] == "http" else "GET"
        status = response["status"] if response is not None else None
        fields = {
            "remote": client[0] if client else "",
            "method": method,
            "path": redact(request["path"]),
            "status": status,
            "duration_ms": round(request_time * 1000, 3),
            "bytes": int(headers.get(b"content-length", b"0") or 0),
            # from the response header when the request's own context is not the one logging
            "request_id": REQUEST_ID.get() or headers.get(b"x-request-id", b"").decode("latin-1"),
        }
        self.access_logger.info("%s %s %s", method, fields["path"], status if status is not None else "-", extra=fields)


class _NoCompressionHandshake(hypercorn.protocol.ws_stream.Handshake):
    """Hypercorn's WebSocket handshake, deaf to the client's `Sec-WebSocket-Extensions` offer.

    Hypercorn (0.18) always answers a permessage-deflate offer with an accept, and has no setting to
    stop it; wsproto then inflates every message whole, without a limit, before Hypercorn's
    `websocket_max_message_size` or any frame check of the gateway sees it. 64 KiB that inflate to
    64 MiB cost the server ~300 ms of CPU with its event loop blocked. The offer is parsed here,
    before the app sees the request, so middleware is too late. Without an accepted extension, a
    frame with RSV1 set is a protocol error (close 1002) and nothing is inflated. Frames of the worker
    protocol are msgpack and small, so compression gains little anyway.
    """

    def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
        super().__init__(headers, http_version)
        self.extensions = None


def refuse_compression() -> None:
    """Install `_NoCompressionHandshake` for every WebSocket this process serves (idempotent).

    `WSStream.handle` (HTTP/1.1, HTTP/2 and HTTP/3 alike, under the trio and asyncio workers) builds
    its `Handshake` through the module's global name, which is what this replaces. If a Hypercorn
    release stops doing so, this raises instead of leaving compression on unnoticed.
    """
    module = hypercorn.protocol.ws_stream
    if "Handshake" not in module.WSStream.handle.__code__.co_names:
        raise RuntimeError("this Hypercorn builds its WebSocket handshake differently; cannot refuse compression")
    module.Handshake = _NoCompressionHandshake  # type: ignore[misc]


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower case, without a default port; "" if it has none."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return ""
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


def origin_allowed(origin: str | None, own: str, allowed: str) -> bool:
    """May a WebSocket upgrade with this `Origin` header go ahead?

    No header (a headless client) is welcome; a browser's page must be on `own` (the server's own
    URL) or on one of the comma-separated origins in `allowed`. Otherwise any web page could make
    its visitors' browsers connect as workers and send forged results from their addresses.
    """
    if origin is None:
        return True
    theirs = _origin(origin)
    return theirs != "" and theirs in {_origin(own), *(_origin(o) for o in allowed.split(",") if o.strip())}


def loopback_peer(scope: HTTPScope) -> bool:
    """Is the peer on this machine (a proxy beside the server), so its X-Request-Id may be kept?"""
    client = scope.get("client")
    if not client:
        return True  # a Unix socket
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class RequestIds:
    """Wrap an ASGI app so each HTTP request has an id in its log lines and its `X-Request-Id` header.

    The id comes from a trusted peer's `X-Request-Id` (the proxy in front; `trusted` decides, by
    default a peer on this machine) when short and plain, or is made here. WebSockets carry the
    gateway's connection id instead.
    """

    def __init__(self, app: ASGIFramework, trusted: Callable[[HTTPScope], bool] = loopback_peer) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"), None)
        rid = request_id(incoming, self.trusted(scope))
        header = (b"x-request-id", rid.encode("ascii"))

        async def send_with_id(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        token = REQUEST_ID.set(rid)  # the tasks the app starts for this request inherit it
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


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


class ProxyHeaders:
    """Wrap an ASGI app so its scope names the real client when the peer is a trusted proxy."""

    def __init__(self, app: ASGIFramework, trusted: TrustedProxies, mode: str) -> None:
        self.app = app
        self.trusted = trusted
        self.mode = mode

    @classmethod
    def from_settings(cls, app: ASGIFramework, settings: Settings) -> ProxyHeaders:
        """The middleware for `forwarded_allow_ips` and `forwarded_header` (validated at startup)."""
        return cls(app, TrustedProxies.parse(settings.forwarded_allow_ips), settings.forwarded_header)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if not self.trusted or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # nobody's headers count: the socket's peer is the client
            return
        raw: dict[str, Any] = dict(scope)  # HTTP and WebSocket scopes alike, read as plain ASGI
        peer = raw.get("client")
        if peer:
            client = client_of(str(peer[0]), list(raw.get("headers", [])), self.trusted, self.mode)
            scope = _with_client(raw, client)  # type: ignore[assignment]
        await self.app(scope, receive, send)


def _with_client(scope: dict[str, Any], client: Client) -> dict[str, Any]:
    """A copy of `scope` with the client's address (its port unknown: 0) and the scheme it used."""
    changed = dict(scope)
    changed["client"] = (client.host, 0) if client.host != scope["client"][0] else scope["client"]
    if client.scheme:
        secure = client.scheme == "https"
        if scope["type"] == "websocket":
            changed["scheme"] = "wss" if secure else "ws"
        else:
            changed["scheme"] = client.scheme
    return changed
