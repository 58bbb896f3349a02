"""Registers the built-in scheduling policies through the `register_schedulers` hook, as any plugin would.

Loaded by the entry point ``builtin_schedulers = "distribute.scheduler.builtin"`` in the
``distribute`` group of pyproject.toml.
"""

from __future__ import annotations

from ..plugins import SchedulerRegistrar, hookimpl
from .compute_time import ComputeTime
from .priority import Priority
from .round_robin import RoundRobin

__all__ = ["register_schedulers"]


@hookimpl
def register_schedulers(register: SchedulerRegistrar) -> None:
    register(RoundRobin.name, RoundRobin)
    register(Priority.name, Priority)
    register(ComputeTime.name, ComputeTime)
