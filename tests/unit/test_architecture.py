"""The layout of distribute/ as a specification: the map in docs/architecture.md is what the code does.

Every module is parsed with `ast` (nothing is imported), and every import counts: at the top, inside
functions and under `if TYPE_CHECKING:`, since a type-only import still ties two modules together.
Relative imports are resolved against the importing module. Importing `pkg.mod` also runs
`pkg/__init__.py`, so for cycles it counts as importing `pkg` too, except when the importer is
inside `pkg` (Python has started `pkg/__init__.py` before any module inside it runs).

The map is the table under "## The map" in docs/architecture.md: one row per entry (a package or a
module, named relative to `distribute`; a package's row covers everything inside it that has no
row of its own), and the entries each may import. A module may always import inside its own entry.
Each check lists every violation, by file, in its failure message.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "distribute"
MAP = ROOT / "docs" / "architecture.md"
MAX_LINES = 500
# Attributes of a storage backend that only the backend may touch (its thread runner, raw SQL,
# entities and Pony database); everyone else goes through the `Storage` protocol.
PRIVATE_BACKEND_PARTS = frozenset({"_run", "sql", "e", "db"})


@dataclass(frozen=True)
class Module:
    name: str  # dotted: distribute.work.dispatcher; a package is named by its __init__
    path: Path
    is_package: bool

    @property
    def short(self) -> str:
        """The name the map uses: relative to distribute, the root package being `__init__`."""
        return self.name.partition(".")[2] or "__init__"

    @property
    def file(self) -> str:
        return str(self.path.relative_to(ROOT))


@dataclass(frozen=True)
class Import:
    module: Module
    target: str  # dotted name of a distribute module, or of whatever else was imported
    line: int

    @property
    def where(self) -> str:
        return f"{self.module.file}:{self.line}"


@cache
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, is_package)
    return found


def tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(encoding="utf-8"), filename=module.file)


def imports(module: Module) -> list[Import]:
    """Every import of the module, each name resolved to the module it loads (once per line)."""
    return list(dict.fromkeys(_imports(module)))


def _imports(module: Module) -> Iterator[Import]:
    known = modules()
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import mod` loads pkg.mod; `from pkg import name` reads pkg/__init__.
                yield Import(module, submodule if submodule in known else base, node.lineno)


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def internal_imports(module: Module) -> Iterator[Import]:
    for imp in imports(module):
        if imp.target in modules():
            yield imp


def edges() -> dict[str, dict[str, Import]]:
    """module -> the distribute modules importing it runs, each with the import that does it."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules()}
    for name, module in modules().items():
        already_running = {name, *ancestors(name)}
        for imp in internal_imports(module):
            for target in (imp.target, *ancestors(imp.target)):
                if target not in already_running:
                    graph[name].setdefault(target, imp)
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), as one cycle each."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [one_cycle(graph, set(component)) for component in components]


def one_cycle(graph: dict[str, dict[str, Import]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in component and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


# The map.


@dataclass(frozen=True)
class Entry:
    name: str
    layer: str
    may_import: frozenset[str]
    line: int


@cache
def the_map() -> dict[str, Entry]:
    """The rows of the table under "## The map": `name` | layer | owns | may import."""
    lines = MAP.read_text(encoding="utf-8").splitlines()
    start = lines.index("## The map")
    entries: dict[str, Entry] = {}
    in_table = False
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in {"layer", ""} or set(cells[0]) <= {"-", ":"}:
            continue
        layer, names, _owns, allowed = cells
        for name in re.findall(r"`([^`]+)`", names):
            assert name not in entries, f"docs/architecture.md:{number}: `{name}` has two rows"
            entries[name] = Entry(name, layer, frozenset(re.findall(r"`([^`]+)`", allowed)), number)
    assert entries, "docs/architecture.md has no table under '## The map'"
    return entries


def entry_of(short: str) -> Entry | None:
    """The most specific map entry covering a module (`work.verification` before `work`)."""
    entries = the_map()
    if short in ("__init__", "__main__"):
        return entries.get(short)
    parts = short.split(".")
    for end in range(len(parts), 0, -1):
        if (entry := entries.get(".".join(parts[:end]))) is not None:
            return entry
    return None


def report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


# The checks.


def test_no_import_cycle() -> None:
    graph = edges()
    problems = []
    for cycle in cycles(graph):
        steps = [f"{a} -> {b} ({graph[a][b].where})" for a, b in itertools.pairwise(cycle)]
        problems.append("cycle: " + "; ".join(steps))
    assert not problems, report("import cycles in distribute/", problems)


def test_no_module_over_500_lines() -> None:
    problems = []
    for module in modules().values():
        count = len(module.path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            problems.append(f"{module.file}: {count} lines")
    assert not problems, report(f"modules over {MAX_LINES} lines", problems)


def test_pony_stays_inside_its_backend() -> None:
    """Pony is imported only by storage/pony/; the backend itself only by storage/builtin.py, which registers it."""
    problems = []
    for module in modules().values():
        inside_backend = module.name.startswith("distribute.storage.pony")
        registers_it = module.name == "distribute.storage.builtin"
        for imp in imports(module):
            is_pony = imp.target.split(".")[0] == "pony"
            is_backend = imp.target.startswith("distribute.storage.pony")
            if (is_pony and not inside_backend) or (is_backend and not (inside_backend or registers_it)):
                problems.append(f"{imp.where}: imports {imp.target}")
    assert not problems, report("Pony outside distribute/storage/pony/", problems)


def test_nothing_outside_storage_reaches_into_a_backend() -> None:
    problems = []
    for module in modules().values():
        if module.name.startswith("distribute.storage"):
            continue
        for node in ast.walk(tree(module)):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_BACKEND_PARTS:
                problems.append(f"{module.file}:{node.lineno}: {ast.unparse(node)}")
    assert not problems, report("private parts of a storage backend used outside distribute/storage/", problems)


def test_every_module_is_in_the_map() -> None:
    problems = [f"{m.file}: {m.short}" for m in modules().values() if entry_of(m.short) is None]
    assert not problems, report("modules docs/architecture.md does not map", problems)


def test_every_map_entry_names_existing_code() -> None:
    shorts = {m.short for m in modules().values()}
    problems = []
    for entry in the_map().values():
        if not any(s == entry.name or s.startswith(entry.name + ".") for s in shorts):
            problems.append(f"docs/architecture.md:{entry.line}: `{entry.name}` is no module or package")
        for allowed in sorted(entry.may_import - the_map().keys()):
            problems.append(f"docs/architecture.md:{entry.line}: `{entry.name}` may import unknown `{allowed}`")
    assert not problems, report("stale entries in docs/architecture.md", problems)


def test_the_map_only_points_down() -> None:
    """A row may import only rows of its own layer or of the layers above it in the table."""
    entries = the_map()
    order = list(dict.fromkeys(entry.layer for entry in entries.values()))
    problems = [
        f"docs/architecture.md:{entry.line}: `{entry.name}` ({entry.layer}) may import `{name}` ({entries[name].layer})"
        for entry in entries.values()
        for name in sorted(entry.may_import & entries.keys())
        if order.index(entries[name].layer) > order.index(entry.layer)
    ]
    assert not problems, report("rules in docs/architecture.md that point up a layer", problems)


def test_every_import_follows_the_map() -> None:
    problems = []
    for module in modules().values():
        own = entry_of(module.short)
        if own is None:
            continue  # reported by test_every_module_is_in_the_map
        for imp in internal_imports(module):
            target = modules()[imp.target]
            entry = entry_of(target.short)
            if entry is None or entry is own or entry.name in own.may_import:
                continue
            problems.append(f"{imp.where}: `{own.name}` imports {target.short} (`{entry.name}`), not in its row")
    assert not problems, report("imports the map of docs/architecture.md does not allow", problems)
