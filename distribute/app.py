"""Wiring only: the Quart (quart-trio) application and the Hypercorn server around a Platform."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio
from quart import jsonify, websocket
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio

from .api import api_blueprint
from .console import console_blueprint
from .errors import NotFound, Unauthorized, ValidationError
from .platform import Platform
from .plugins import loaded_plugins
from .settings import Settings

__all__ = ["Running", "create_app", "serve"]


def create_app(platform: Platform) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 3 * platform.settings.max_source_bytes + 64 * 1024
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
        return {"ok": True, "connections": len(platform.gateway.sessions)}

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

    return app


def _register_optional_blueprints(app: QuartTrio) -> None:
    """Blueprints owned by other parts of the product (browser harness, console), when present."""
    try:
        from .embed import embed_blueprint
    except ImportError:
        return
    app.register_blueprint(embed_blueprint)


@dataclass(frozen=True)
class Running:
    """What `serve` reports once it accepts connections."""

    urls: list[str]
    platform: Platform


async def serve(settings: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the platform and its HTTP/WebSocket server until cancelled; reports `Running`."""
    async with Platform.running(settings) as platform:
        config = hypercorn.config.Config()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.websocket_max_message_size = settings.max_frame_bytes
        config.graceful_timeout = 2.0
        config.accesslog = None
        app = create_app(platform)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=trio.sleep_forever))
            task_status.started(Running(binds, platform))
