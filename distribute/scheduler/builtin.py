"""Registers the built-in scheduling policies through the `register_schedulers` hook, as any plugin would.

Loaded by the entry point ``builtin_schedulers = "distribute.scheduler.builtin"`` in the
``distribute`` group of pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .base import Scheduler
from .compute_time import ComputeTime
from .priority import Priority
from .round_robin import RoundRobin

__all__ = ["register_schedulers"]

hookimpl = pluggy.HookimplMarker("distribute")


@hookimpl
def register_schedulers(register: Callable[[str, Callable[[], Scheduler]], None]) -> None:
    register(RoundRobin.name, RoundRobin)
    register(Priority.name, Priority)
    register(ComputeTime.name, ComputeTime)
