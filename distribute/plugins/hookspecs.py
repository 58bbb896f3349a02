"""The hook specifications of distribute: what a plugin may implement, one line each.

A plugin is any importable module (or object) with functions marked ``@hookimpl`` whose names are
the hook specs below. Every hook receives one argument, ``register``, which the plugin calls once
per thing it provides; the two aliases typing it are defined here. docs/plugins.md documents every
hook with its exact signature, and tests/unit/test_plugins.py exercises every one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from ..scheduler.base import Scheduler

__all__ = [
    "PROJECT",
    "SchedulerRegistrar",
    "StorageRegistrar",
    "hookimpl",
    "hookspec",
    "register_schedulers",
    "register_storage",
]

PROJECT = "distribute"  # the pluggy project name and the entry-point group

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

SchedulerRegistrar = Callable[[str, Callable[[], Scheduler]], None]
StorageRegistrar = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_schedulers(register: SchedulerRegistrar) -> None:
    """Register scheduling policies: call register(name, factory) once per policy; factory() returns a new Scheduler."""


@hookspec
def register_storage(register: StorageRegistrar) -> None:
    """Register storage backends: call register(scheme, factory) once per URL scheme; await factory(url, threads)."""
