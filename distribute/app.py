"""Wiring only: the Quart (quart-trio) application and the Hypercorn server around a Platform."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, jsonify, websocket
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio

from .api import api_blueprint
from .asgi import DrainClosedWebSockets
from .console import console_blueprint
from .errors import NotFound, Unauthorized, ValidationError
from .platform import Platform
from .plugins.manager import loaded_plugins
from .settings import Settings

__all__ = ["Running", "create_app", "hypercorn_config", "serve", "set_keepalive"]


def create_app(platform: Platform) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 5 * platform.settings.max_source_bytes + 64 * 1024  # 5 files: CampaignForm
    app.extensions["distribute"] = platform
    QuartSchema(
        app,
        openapi_path="/api/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path="/api/docs",
        info={"title": "distribute", "version": "1"},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    app.register_blueprint(api_blueprint)
    app.register_blueprint(console_blueprint)
    _register_optional_blueprints(app)

    @app.websocket("/ws")
    async def worker_socket() -> None:
        await platform.gateway.serve(websocket._get_current_object(), str(websocket.remote_addr or ""))

    @app.get("/-/plugins.json")
    async def plugins() -> Any:
        return jsonify(loaded_plugins())

    @app.get("/-/health")
    async def health() -> Any:
        gateway = platform.gateway
        return {"ok": True, "connections": len(gateway.sessions), "frames_received": gateway.frames_received}

    def error(status: int) -> Any:
        def handler(exc: Exception) -> Any:
            return {"error": str(exc)}, status

        return handler

    app.register_error_handler(Unauthorized, error(401))
    app.register_error_handler(NotFound, error(404))
    app.register_error_handler(ValidationError, error(400))

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> Any:
        details = exc.validation_error
        errors = (
            details.errors(include_url=False, include_context=False) if hasattr(details, "errors") else str(details)
        )
        return {"error": "request validation failed", "details": errors}, 400

    @app.errorhandler(413)
    async def too_large(exc: Exception) -> Any:
        return {"error": f"request body too large; the limit is {app.config['MAX_CONTENT_LENGTH']} bytes"}, 413

    @app.after_request
    async def close_after_too_large(response: Response) -> Response:
        """A 413 ends the connection (API and console alike): the server stopped reading the body,
        so the rest of it is still on the way and the connection cannot carry another request (a
        client that reused it would wait for an answer forever)."""
        if response.status_code == 413:
            response.headers["Connection"] = "close"
        return response

    return app


def _register_optional_blueprints(app: QuartTrio) -> None:
    """Blueprints owned by other parts of the product (browser harness, console), when present."""
    try:
        from .embed import embed_blueprint
    except ImportError:
        return
    app.register_blueprint(embed_blueprint)


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


@dataclass(frozen=True)
class Running:
    """What `serve` reports once it accepts connections."""

    urls: list[str]
    platform: Platform


async def serve(settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the platform and its HTTP/WebSocket server until cancelled; reports `Running`."""
    async with Platform.running(settings) as platform:
        config = hypercorn_config(settings)
        app = create_app(platform)
        async with trio.open_nursery() as nursery:
            served = DrainClosedWebSockets(app)
            binds = await nursery.start(
                partial(hypercorn.trio.serve, served, config, mode="asgi", shutdown_trigger=trio.sleep_forever)
            )
            task_status.started(Running(binds, platform))
