"""Registers the built-in storages, as any plugin would: Pony for sqlite:// and postgres://, and memory://."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..plugins import hookimpl
from .memory import MemoryStorage
from .pony.store import PonyStorage


@hookimpl
def register_storage(register: Callable[[str, Callable[..., Any]], None]) -> None:
    for scheme in ("sqlite", "postgres", "postgresql"):
        register(scheme, PonyStorage.open)
    register("memory", MemoryStorage.open)  # volatile, for tests and demonstrations
