"""The public surface for plugin authors: hook markers, the plugin contracts and the types they use.

Plugin authors import only from here. Hook specs are in `hookspecs`; discovery by entry points and
the registries of schedulers and storage backends are in `manager`.
"""

from __future__ import annotations

from .manager import (
    PROJECT,
    SchedulerRegistrar,
    StorageRegistrar,
    get_plugin_manager,
    hookimpl,
    hookspec,
    loaded_plugins,
    make_scheduler,
    register_schedulers,
    register_storage,
    scheduler_names,
    storage_factory,
    storage_schemes,
)

__all__ = [
    "PROJECT",
    "SchedulerRegistrar",
    "StorageRegistrar",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "loaded_plugins",
    "make_scheduler",
    "register_schedulers",
    "register_storage",
    "scheduler_names",
    "storage_factory",
    "storage_schemes",
]
