"""Wiring only: the Quart (quart-trio) application around a Platform, and the server that runs it.

The routes are the adapters' (the JSON API in api.py, the console in console/, the embed pages in
embed.py, the worker WebSocket in gateway.py); Hypercorn's configuration is in asgi.py.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import resource
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from quart import Response, abort, jsonify, request
from quart.globals import websocket_ctx
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio

from .api import api_blueprint, error_status, schema_error
from .api_docs import add_api_docs
from .asgi import (
    DrainClosedWebSockets,
    ProxyHeaders,
    RequestIds,
    hypercorn_config,
    origin_allowed,
    refuse_compression,
)
from .console import console_blueprint
from .embed import embed_blueprint
from .errors import NotFound, Unauthorized, ValidationError
from .platform import Platform
from .plugins import loaded_plugins
from .settings import Settings
from .volunteers import volunteers_blueprint
from .webstate import EXTENSION

__all__ = ["Running", "create_app", "serve"]

log = logging.getLogger(__name__)


def create_app(platform: Platform) -> QuartTrio:
    """The Quart app over a running `platform`: the adapters' blueprints, the worker socket, the
    health and plugin routes, and the error handlers."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 5 * platform.settings.max_source_bytes + 64 * 1024  # 5 files: CampaignForm
    app.extensions[EXTENSION] = platform
    QuartSchema(
        app,
        openapi_path="/api/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,  # served by add_api_docs from this server: no script from another origin
        info={"title": "distribute", "version": "1"},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    add_api_docs(app)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(console_blueprint)
    app.register_blueprint(embed_blueprint)
    app.register_blueprint(volunteers_blueprint)

    @app.websocket("/ws")
    async def worker_socket() -> None:
        socket = websocket_ctx.websocket  # the object itself: the gateway hands it to its own tasks
        origin = socket.headers.get("Origin")
        own = platform.settings.public_url or f"{socket.scheme}://{socket.host}"
        if not origin_allowed(origin, own, platform.settings.allowed_ws_origins):
            # Before the upgrade: a page elsewhere must not drive its visitors' browsers as workers.
            log.info("refused a WebSocket from %s: Origin %r is not allowed", socket.remote_addr, origin)
            abort(403)
        await platform.gateway.serve(socket, str(socket.remote_addr or ""))

    @app.get("/-/plugins.json")
    async def plugins() -> Any:
        return jsonify(loaded_plugins())

    @app.get("/-/metrics")
    async def metrics() -> Any:
        token = platform.settings.metrics_token
        if token and not hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
        ):
            return Response("a bearer token is required\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
        body, content_type = await platform.metrics.scrape(platform.storage, request.headers.get("Accept", ""))
        return Response(body, 200, {"Cache-Control": "no-store"}, content_type=content_type)

    @app.get("/-/health")
    async def health() -> Any:
        gateway = platform.gateway
        return {"ok": True, "connections": len(gateway.sessions), "frames_received": gateway.frames_received}

    app.register_error_handler(Unauthorized, error_status(401))
    app.register_error_handler(NotFound, error_status(404))
    app.register_error_handler(ValidationError, error_status(400))
    app.register_error_handler(RequestSchemaValidationError, schema_error)

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


@dataclass(frozen=True)
class Running:
    """What `serve` reports once it accepts connections."""

    urls: list[str]
    platform: Platform


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; returns the soft limit.

    Every worker connection is a file descriptor, and the soft limit is often 1,024 while the
    hard one is far higher; the gateway keeps its connection cap below the limit (max_connections).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # e.g. an unlimited hard limit some systems refuse
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


async def serve(settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the platform and its HTTP/WebSocket server until cancelled; reports `Running`."""
    raise_open_files_limit()  # before the gateway derives its connection cap from it
    async with Platform.running(settings) as platform:
        config = hypercorn_config(settings)
        refuse_compression()  # no permessage-deflate: a small message must not inflate to a huge one
        app = create_app(platform)
        async with trio.open_nursery() as nursery:
            # The real client goes into the scope before anything reads it (behind a trusted proxy).
            served = RequestIds(DrainClosedWebSockets(ProxyHeaders.from_settings(app, settings)))
            binds = await nursery.start(
                partial(hypercorn.trio.serve, served, config, mode="asgi", shutdown_trigger=trio.sleep_forever)
            )
            task_status.started(Running(binds, platform))
