"""Plugin discovery: hooks, entry points, selection by name, the installed example plugin, the docs."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy
import pytest

from distribute import __version__
from distribute.errors import SettingsError
from distribute.plugins import (
    Candidate,
    get_plugin_manager,
    hookimpl,
    loaded_plugins,
    make_scheduler,
    manager,
    open_storage,
    scheduler_names,
    storage_factory,
    storage_schemes,
)
from distribute.plugins import hookspecs as spec_module
from distribute.storage.pony.store import PonyStorage

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
EXAMPLE = "examples/distribute-lottery-scheduler"


@pytest.fixture
def extra_plugins() -> Iterator[Callable[..., None]]:
    """Register plugin objects on the process-wide manager for one test."""
    manager = get_plugin_manager()
    added: list[object] = []

    def add(*objects: object) -> None:
        for obj in objects:
            manager.register(obj, name=f"test-plugin-{id(obj)}")
            added.append(obj)

    yield add
    for obj in added:
        manager.unregister(obj)


class Constant:
    """A minimal third-party scheduler: always the lowest id."""

    name = "constant"

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        return min(candidates, key=lambda c: c.campaign_id, default=None)

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None:
        pass


class SchedulerPlugin:
    @hookimpl
    def register_schedulers(self, register: Callable[[str, Callable[[], Any]], None]) -> None:
        register("constant", Constant)


class StoragePlugin:
    @hookimpl
    def register_storage(self, register: Callable[[str, Callable[..., Any]], None]) -> None:
        register("scratch", self.open)

    async def open(self, url: str, threads: int = 4) -> str:
        return f"opened {url}"


# -- the hooks, each exercised through a plugin registered like a third-party one -----------------


def test_register_schedulers_adds_a_policy_selectable_by_name(extra_plugins: Callable[..., None]) -> None:
    assert "constant" not in scheduler_names()
    extra_plugins(SchedulerPlugin())
    assert "constant" in scheduler_names()
    scheduler = make_scheduler("constant")
    assert isinstance(scheduler, Constant)
    assert scheduler.choose([Candidate(5, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]) == Candidate(2, 0, 1.0, 0.0)


async def test_register_storage_adds_a_backend_selected_by_url_scheme(extra_plugins: Callable[..., None]) -> None:
    assert "scratch" not in storage_schemes()
    extra_plugins(StoragePlugin())
    assert "scratch" in storage_schemes()
    assert await storage_factory("scratch://anything")("scratch://anything", 2) == "opened scratch://anything"
    assert storage_factory("SCRATCH://x") is not None  # schemes are case-insensitive
    assert await open_storage("scratch://x", 3) == "opened scratch://x"


HOOK_TESTS = {
    "register_schedulers": test_register_schedulers_adds_a_policy_selectable_by_name,
    "register_storage": test_register_storage_adds_a_backend_selected_by_url_scheme,
}


def hookspecs() -> dict[str, Callable[..., Any]]:
    manager = get_plugin_manager()
    return {name: caller.spec.function for name, caller in vars(manager.hook).items() if getattr(caller, "spec", None)}


def test_every_hookspec_is_exercised_by_a_test() -> None:
    assert set(hookspecs()) == set(HOOK_TESTS)


@pytest.mark.parametrize("hook", sorted(HOOK_TESTS))
def test_every_hookspec_is_documented_with_its_exact_signature(hook: str) -> None:
    function = hookspecs()[hook]
    (line,) = [ln for ln in inspect.getsource(function).splitlines() if ln.startswith("def ")]
    signature = line.removeprefix("def ").removesuffix(":")
    docs = DOCS.read_text()
    assert f"### {hook}\n" in docs
    assert f"```python\n{signature}\n```" in docs, signature
    doc = inspect.getdoc(function)
    assert doc and "\n" not in doc  # one-line hook specs


def test_the_type_aliases_in_the_signatures_are_documented() -> None:
    docs = DOCS.read_text()
    source = inspect.getsource(spec_module)
    for alias in ("SchedulerRegistrar", "StorageRegistrar"):
        (definition,) = [ln for ln in source.splitlines() if ln.startswith(f"{alias} = ")]
        assert definition in docs


# Plugin authors import only from `distribute.plugins`: the docs teach nothing else and the example obeys.
DISTRIBUTE_IMPORT = re.compile(r"^\s*(?:from\s+(distribute(?:\.\w+)*)\s+import|import\s+(distribute(?:\.\w+)*))", re.M)


def distribute_imports(source: str) -> list[str]:
    return [m.group(1) or m.group(2) for m in DISTRIBUTE_IMPORT.finditer(source)]


def test_the_docs_code_samples_import_only_from_distribute_plugins() -> None:
    blocks = re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", DOCS.read_text(), flags=re.M | re.S)
    imported = [name for block in blocks for name in distribute_imports(block)]
    assert "distribute.plugins" in imported  # the samples do show the import
    assert [name for name in imported if name != "distribute.plugins"] == []


def test_the_example_plugin_imports_only_from_distribute_plugins() -> None:
    sources = sorted((Path(__file__).resolve().parents[2] / EXAMPLE / "src").rglob("*.py"))
    assert sources
    imported = [name for path in sources for name in distribute_imports(path.read_text())]
    assert imported == ["distribute.plugins"] * len(imported) and imported


def test_the_public_surface_exports_what_plugin_authors_need() -> None:
    import distribute.plugins as surface

    expected = {
        "hookimpl",
        "hookspec",
        "Scheduler",
        "Candidate",
        "Storage",
        "SchedulerRegistrar",
        "StorageRegistrar",
        "make_scheduler",
        "scheduler_names",
        "storage_factory",
        "storage_schemes",
        "open_storage",
        "loaded_plugins",
        "get_plugin_manager",
    }
    assert expected <= set(surface.__all__)
    assert all(hasattr(surface, name) for name in surface.__all__)


# -- selection by name ----------------------------------------------------------------------------


def test_built_in_schedulers_are_registered() -> None:
    assert {"round-robin", "priority", "compute-time"} <= set(scheduler_names())
    assert scheduler_names() == sorted(scheduler_names())


def test_unknown_scheduler_lists_the_known_names() -> None:
    with pytest.raises(SettingsError) as error:
        make_scheduler("lotery")
    message = str(error.value)
    assert "'lotery'" in message
    for name in scheduler_names():
        assert name in message


def test_storage_schemes_of_the_built_in_backend() -> None:
    assert {"sqlite", "postgres", "postgresql"} <= set(storage_schemes())
    for url in ("sqlite:///tmp/x.db", "postgres://u:p@h/db", "postgresql://u:p@h:5432/db"):
        assert storage_factory(url) == PonyStorage.open


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/x", "distribute.db", ""])
def test_unknown_storage_scheme_lists_the_known_ones_without_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as error:
        storage_factory(url)
    message = str(error.value)
    assert "sqlite://" in message and "postgres://" in message
    assert "hunter2" not in message


# -- misbehaving plugins fail clearly -------------------------------------------------------------


def test_a_name_registered_twice_names_both_plugins(extra_plugins: Callable[..., None]) -> None:
    class Clash:
        @hookimpl
        def register_schedulers(self, register: Callable[..., None]) -> None:
            register("round-robin", Constant)

    extra_plugins(Clash())
    with pytest.raises(SettingsError, match=r"'round-robin' is registered twice, by 'builtin_schedulers' and by"):
        scheduler_names()


@pytest.mark.parametrize(
    ("name", "factory", "error"),
    [
        ("", Constant, "invalid scheduler name"),
        (" padded", Constant, "invalid scheduler name"),
        (42, Constant, "invalid scheduler name"),
        ("junk", "not callable", "not callable"),
    ],
)
def test_invalid_registrations_are_refused(
    extra_plugins: Callable[..., None], name: object, factory: object, error: str
) -> None:
    class Bad:
        @hookimpl
        def register_schedulers(self, register: Callable[..., None]) -> None:
            register(name, factory)

    extra_plugins(Bad())
    with pytest.raises(SettingsError, match=error):
        scheduler_names()


def test_a_hook_that_raises_fails_with_the_plugin_name(extra_plugins: Callable[..., None]) -> None:
    class Broken:
        @hookimpl
        def register_storage(self, register: Callable[..., None]) -> None:
            raise RuntimeError("boom")

    extra_plugins(Broken())
    with pytest.raises(SettingsError, match=r"test-plugin-\d+.*register_storage.*boom"):
        storage_factory("sqlite:///x.db")


def test_a_factory_that_returns_no_scheduler_is_refused(extra_plugins: Callable[..., None]) -> None:
    class Junk:
        @hookimpl
        def register_schedulers(self, register: Callable[..., None]) -> None:
            register("junk", lambda: object())
            register("crash", lambda: 1 / 0)

    extra_plugins(Junk())
    with pytest.raises(SettingsError, match="lacks name, choose"):
        make_scheduler("junk")
    with pytest.raises(SettingsError, match=r"failed to start.*ZeroDivisionError"):
        make_scheduler("crash")


# -- discovery ------------------------------------------------------------------------------------


def test_the_plugin_manager_is_cached() -> None:
    assert get_plugin_manager() is get_plugin_manager()
    assert isinstance(get_plugin_manager(), pluggy.PluginManager)
    assert get_plugin_manager().project_name == "distribute"


def test_built_ins_are_registered_without_entry_point_metadata() -> None:
    built = manager._build_plugin_manager(load_entrypoints=False)
    assert built.get_plugin("builtin_schedulers") is not None
    assert built.get_plugin("builtin_storage") is not None


def test_built_ins_are_declared_as_entry_points() -> None:
    declared = {ep.name: ep.value for ep in entry_points(group="distribute")}
    assert declared["builtin_schedulers"] == "distribute.scheduler.builtin"
    assert declared["builtin_storage"] == "distribute.storage.builtin"


def test_loaded_plugins_lists_the_built_ins_and_the_example() -> None:
    listed = {plugin["name"]: plugin for plugin in loaded_plugins()}
    assert listed["builtin_schedulers"] == {
        "name": "builtin_schedulers",
        "module": "distribute.scheduler.builtin",
        "distribution": "distribute-compute",
        "version": __version__,
        "hooks": ["register_schedulers"],
        "schedulers": ["compute-time", "priority", "round-robin"],
        "storage_schemes": [],
    }
    assert listed["builtin_storage"]["hooks"] == ["register_storage"]
    assert listed["builtin_storage"]["module"] == "distribute.storage.builtin"
    assert listed["lottery"] == {
        "name": "lottery",
        "module": "distribute_lottery",
        "distribution": "distribute-lottery-scheduler",
        "version": "0.1.0",
        "hooks": ["register_schedulers"],
        "schedulers": ["lottery"],
        "storage_schemes": [],
    }
    assert [p["name"] for p in loaded_plugins()] == sorted(listed)


def test_loaded_plugins_name_the_storage_schemes_each_plugin_provides() -> None:
    listed = {plugin["name"]: plugin for plugin in loaded_plugins()}
    assert listed["builtin_storage"]["storage_schemes"] == ["memory", "postgres", "postgresql", "sqlite"]
    assert listed["builtin_storage"]["schedulers"] == []


def test_loaded_plugins_includes_plugins_registered_at_run_time(extra_plugins: Callable[..., None]) -> None:
    extra_plugins(StoragePlugin())
    (entry,) = [p for p in loaded_plugins() if p["name"].startswith("test-plugin-")]
    assert entry["hooks"] == ["register_storage"]
    assert entry["storage_schemes"] == ["scratch"]
    assert entry["distribution"] is None
    assert entry["module"] == __name__


# -- the example third-party plugin ---------------------------------------------------------------


def test_example_plugin_is_installed() -> None:
    declared = {ep.name: ep.value for ep in entry_points(group="distribute")}
    assert declared.get("lottery") == "distribute_lottery", f"run: .venv/bin/pip install -e {EXAMPLE}"
    assert "lottery" in scheduler_names()


def test_example_lottery_is_reproducible_with_a_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRIBUTE_LOTTERY_SEED", "42")
    candidates = [Candidate(cid, 0, weight, 0.0) for cid, weight in {1: 1.0, 2: 2.0, 3: 4.0}.items()]
    one, two = make_scheduler("lottery"), make_scheduler("lottery")
    draws = [one.choose(candidates).campaign_id for _ in range(7000)]  # type: ignore[union-attr]
    assert draws == [two.choose(candidates).campaign_id for _ in range(7000)]  # type: ignore[union-attr]
    for cid, expected in ((1, 1000), (2, 2000), (3, 4000)):  # tickets in proportion to weight
        assert abs(draws.count(cid) - expected) <= 0.05 * expected


def test_example_lottery_sends_a_worker_being_placed_where_a_worker_is_missing() -> None:
    lottery = make_scheduler("lottery")
    serving = {1: 1, 2: 2, 3: 3}  # weights 1:2:4 and seven workers: the weight-4 campaign is one short
    candidates = [
        Candidate(cid, 0, weight, 0.0, serving[cid], 10.0) for cid, weight in {1: 1.0, 2: 2.0, 3: 4.0}.items()
    ]
    assert {lottery.choose(candidates).campaign_id for _ in range(200)} == {3}  # type: ignore[union-attr]


def test_example_lottery_rejects_a_bad_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRIBUTE_LOTTERY_SEED", "forty-two")
    with pytest.raises(SettingsError, match="DISTRIBUTE_LOTTERY_SEED must be an integer"):
        make_scheduler("lottery")


def test_example_package_declares_its_entry_point() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / EXAMPLE / "pyproject.toml").read_text()
    assert re.search(r'\[project\.entry-points\.distribute\]\s+lottery = "distribute_lottery"', pyproject)
