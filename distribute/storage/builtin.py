"""Registers the built-in Pony storage for sqlite:// and postgres:// URLs, as any plugin would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from .pony.store import PonyStorage

hookimpl = pluggy.HookimplMarker("distribute")


@hookimpl
def register_storage(register: Callable[[str, Callable[..., Any]], None]) -> None:
    for scheme in ("sqlite", "postgres", "postgresql"):
        register(scheme, PonyStorage.open)
