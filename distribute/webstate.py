"""How the web adapters (the API, the console, the embed pages) reach the running platform.

The Quart app keeps the `Platform` in its `extensions`; the adapters read it through `current_platform()`,
so the platform itself knows nothing of Quart.
"""

from __future__ import annotations

from typing import cast

from quart import current_app

from .platform import Platform

__all__ = ["EXTENSION", "current_platform"]

EXTENSION = "distribute"  # the running Platform's key in the Quart app's `extensions`


def current_platform() -> Platform:
    """The platform of the app serving the current request: the web adapters' one way to it."""
    return cast(Platform, current_app.extensions[EXTENSION])
