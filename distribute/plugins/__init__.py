"""The public surface for plugin authors: hook markers, the plugin contracts and the types they use.

Plugin authors import only from here. The hook specs are in `hookspecs`; discovery by entry points,
the registries of schedulers and storage backends, and `open_storage` are in `manager`.
"""

from __future__ import annotations

from ..scheduler.base import Candidate, Scheduler
from ..storage.base import Storage
from .hookspecs import PROJECT, SchedulerRegistrar, StorageRegistrar, hookimpl, hookspec
from .manager import (
    get_plugin_manager,
    loaded_plugins,
    make_scheduler,
    open_storage,
    scheduler_names,
    storage_factory,
    storage_schemes,
)

__all__ = [
    "PROJECT",
    "Candidate",
    "Scheduler",
    "SchedulerRegistrar",
    "Storage",
    "StorageRegistrar",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "loaded_plugins",
    "make_scheduler",
    "open_storage",
    "scheduler_names",
    "storage_factory",
    "storage_schemes",
]
