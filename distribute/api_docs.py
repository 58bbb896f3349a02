"""The API's documentation page, /api/docs: Swagger UI over /api/openapi.json, with every script and
style served by this server from the swagger-ui-py package (no CDN), in colours that pass WCAG AA."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from quart import Response, abort
from quart_schema import hide
from quart_trio import QuartTrio

__all__ = ["add_api_docs"]


def swagger_ui_files() -> Path:
    """The Swagger UI files the swagger-ui-py package ships (found without importing the package)."""
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "the swagger-ui-py package is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "static"


SWAGGER_UI = swagger_ui_files()
API_DOCS_ASSETS = {  # name: MIME type; the Swagger UI files come from the swagger-ui-py package
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "start.js": "text/javascript",
    "api-docs.css": "text/css",
}
API_DOCS_START = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: false,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
"""
# Swagger UI's own colours fail WCAG AA contrast (white on light blue and green method labels); its
# deep links put a link inside each operation's toggle button, and its top bar has an unlabelled
# input: hence no deep links, the base layout (no top bar) and these colours.
API_DOCS_CSS = """.swagger-ui .opblock .opblock-summary-method { color: #fff; }
.swagger-ui .opblock.opblock-get .opblock-summary-method { background: #1d5fa7; }
.swagger-ui .opblock.opblock-post .opblock-summary-method { background: #1b7a4f; }
.swagger-ui .opblock.opblock-put .opblock-summary-method { background: #a35a00; }
.swagger-ui .opblock.opblock-delete .opblock-summary-method { background: #b3261e; }
.swagger-ui .opblock.opblock-patch .opblock-summary-method { background: #2e6e60; }
.swagger-ui .opblock.opblock-head .opblock-summary-method,
.swagger-ui .opblock.opblock-options .opblock-summary-method { background: #6a3fb5; }
.swagger-ui .btn.authorize { color: #1b7a4f; border-color: #1b7a4f; }
.swagger-ui .btn.authorize svg { fill: #1b7a4f; }
.swagger-ui .info .title small.version-stamp { background-color: #3d6b00; }
.swagger-ui .info a, .swagger-ui .url, .swagger-ui .info .link { color: #1d5fa7; }
"""
API_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>distribute API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="stylesheet" href="/api/docs/api-docs.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/start.js"></script>
</body>
</html>
"""


@cache
def api_docs_asset(name: str) -> bytes:
    own = {"start.js": API_DOCS_START, "api-docs.css": API_DOCS_CSS}
    return own[name].encode() if name in own else (SWAGGER_UI / name).read_bytes()


def add_api_docs(app: QuartTrio) -> None:
    """/api/docs: Swagger UI over /api/openapi.json, every script and style served by this server."""

    @app.get("/api/docs")
    @hide
    async def api_docs() -> Response:
        return Response(API_DOCS_PAGE, mimetype="text/html")

    @app.get("/api/docs/<name>")
    @hide
    async def api_docs_file(name: str) -> Response:
        if name not in API_DOCS_ASSETS:
            abort(404)
        response = Response(api_docs_asset(name), mimetype=API_DOCS_ASSETS[name])
        response.headers["Cache-Control"] = "no-cache"
        return response
