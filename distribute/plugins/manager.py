"""Plugin discovery by entry points, and the registries of schedulers and storage backends built from it.

Installed distributions announce their plugins in the ``distribute`` entry-point group;
`get_plugin_manager` loads them all once per process, beside the built-in schedulers and storage
backends, which are plugins too (``distribute.scheduler.builtin``, ``distribute.storage.builtin``).
The hook specs are in `hookspecs`.

Everything the rest of distribute needs from plugins goes through here: `make_scheduler`,
`scheduler_names`, `storage_factory`, `open_storage` and `loaded_plugins` (for ``/-/plugins.json``).
Unknown names and misbehaving plugins raise `SettingsError` at startup, listing what is known.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pluggy

from ..errors import SettingsError
from ..scheduler.base import Scheduler
from ..storage.base import Storage
from . import hookspecs
from .hookspecs import PROJECT

__all__ = [
    "get_plugin_manager",
    "loaded_plugins",
    "make_scheduler",
    "open_storage",
    "scheduler_names",
    "storage_factory",
    "storage_schemes",
]

# Built-in plugins, registered under their entry-point names even when the package metadata is
# missing or stale (a source checkout that was never pip-installed). Named, not imported: they
# import this package to register themselves.
_BUILTINS = {
    "builtin_schedulers": "distribute.scheduler.builtin",
    "builtin_storage": "distribute.storage.builtin",
}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


# -- discovery ------------------------------------------------------------------------------------

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def _build_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    if load_entrypoints:
        try:
            manager.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:
            raise SettingsError(f"loading the {PROJECT!r} entry-point plugins failed: {exc!r}") from exc
    for name, module in _BUILTINS.items():
        if manager.get_plugin(name) is None and not manager.is_blocked(name):
            manager.register(importlib.import_module(module), name=name)
    return manager


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; entry points are loaded on the first call only."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = _build_plugin_manager()
        return _manager


def _collect(hook_name: str, what: str, check_key: Callable[[Any], bool]) -> dict[str, tuple[Callable[..., Any], str]]:
    """Call every implementation of a registration hook; map each key to (factory, plugin name)."""
    manager = get_plugin_manager()
    found: dict[str, tuple[Callable[..., Any], str]] = {}
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        plugin = impl.plugin_name

        def register(key: Any, factory: Any, plugin: str = plugin) -> None:
            if not check_key(key):
                raise SettingsError(f"plugin {plugin!r} registered an invalid {what} name {key!r}")
            if not callable(factory):
                raise SettingsError(f"plugin {plugin!r} registered {what} {key!r} with a factory that is not callable")
            if key in found:
                raise SettingsError(f"{what} {key!r} is registered twice, by {found[key][1]!r} and by {plugin!r}")
            found[key] = (factory, plugin)

        try:
            impl.function(**{name: register for name in impl.argnames})
        except SettingsError:
            raise
        except Exception as exc:
            raise SettingsError(f"plugin {plugin!r} failed in {hook_name}: {exc!r}") from exc
    return found


def _schedulers() -> dict[str, tuple[Callable[..., Any], str]]:
    return _collect("register_schedulers", "scheduler", lambda key: isinstance(key, str) and key.strip() == key != "")


def _storages() -> dict[str, tuple[Callable[..., Any], str]]:
    return _collect(
        "register_storage", "storage scheme", lambda key: isinstance(key, str) and bool(_SCHEME.fullmatch(key))
    )


# -- what the rest of distribute uses -------------------------------------------------------------


def scheduler_names() -> list[str]:
    """The names of every registered scheduling policy, sorted."""
    return sorted(_schedulers())


def make_scheduler(name: str) -> Scheduler:
    """A new instance of the policy registered as `name`; SettingsError (listing the known names) if none is."""
    registry = _schedulers()
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise SettingsError(f"unknown scheduler {name!r}; known schedulers: {known}")
    factory, plugin = registry[name]
    try:
        scheduler = factory()
    except Exception as exc:
        raise SettingsError(f"scheduler {name!r} (from plugin {plugin!r}) failed to start: {exc!r}") from exc
    if not isinstance(scheduler, Scheduler):
        raise SettingsError(
            f"scheduler {name!r} (from plugin {plugin!r}) returned {scheduler!r}, "
            "which lacks name, choose() or task_finished()"
        )
    return scheduler


def storage_schemes() -> list[str]:
    """The URL schemes some storage backend is registered for, sorted."""
    return sorted(_storages())


def storage_factory(url: str) -> Callable[..., Any]:
    """The storage factory registered for the scheme of `url`; SettingsError (listing the known schemes) if none is."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    registry = _storages()
    if scheme not in registry:
        known = ", ".join(f"{s}://" for s in sorted(registry)) or "none"
        shown = f"scheme {scheme + '://'!r}" if scheme else "no scheme"
        # the URL itself is left out: it may hold a password
        raise SettingsError(f"the database URL has {shown}; known storage schemes: {known}")
    return registry[scheme][0]


async def open_storage(url: str, threads: int = 4) -> Storage:
    """Open the storage backend registered for the scheme of `url`, using at most `threads` threads.

    SettingsError (listing the known schemes) if no backend serves the scheme.
    """
    storage: Storage = await storage_factory(url)(url, threads)
    return storage


def loaded_plugins() -> list[dict[str, Any]]:
    """Every registered plugin, sorted by name: name, module, distribution, version, the hooks it
    implements, and what it provides through them: the scheduler names and the storage URL schemes
    it registered (sorted; empty lists for a plugin that registers none)."""
    manager = get_plugin_manager()
    provided: dict[str, dict[str, list[str]]] = {}
    for kind, registry in (("schedulers", _schedulers()), ("storage_schemes", _storages())):
        for key, (_factory, plugin_name) in sorted(registry.items()):
            provided.setdefault(plugin_name, {}).setdefault(kind, []).append(key)
    dists = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    plugins: list[dict[str, Any]] = []
    for name, plugin in sorted(manager.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        version = dist.version if dist is not None else getattr(sys.modules.get(module), "__version__", None)
        plugins.append(
            {
                "name": name,
                "module": module,
                "distribution": dist.project_name if dist is not None else None,
                "version": version,
                "hooks": sorted(caller.name for caller in manager.get_hookcallers(plugin) or []),
                "schedulers": provided.get(name, {}).get("schedulers", []),
                "storage_schemes": provided.get(name, {}).get("storage_schemes", []),
            }
        )
    return plugins
