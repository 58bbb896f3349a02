"""docs/security.md stays true: every test it names exists, and every setting it names is a setting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from distribute.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)?)`((?:, `::\w+`)*)")


def _named_tests() -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    for match in TEST_REFERENCE.finditer(DOC):
        path, first, more = match.groups()
        names = [first[2:]] if first else []
        names += re.findall(r"`::(\w+)`", more)
        named += [(path, name) for name in names] or [(path, "")]
    return named


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_the_document_names_tests() -> None:
    assert len(_named_tests()) >= 30


@pytest.mark.parametrize(("path", "name"), _named_tests(), ids=lambda part: part or "file")
def test_every_test_it_names_exists(path: str, name: str) -> None:
    assert (REPO / path).is_file(), path
    if name:
        assert name in _test_functions(REPO / path), f"{path}::{name}"


def test_every_setting_it_names_is_a_setting() -> None:
    known = set(Settings.__dataclass_fields__)
    for cell in re.findall(r"^\|[^|]+\|[^|]+\|([^|]+)\|[^|]+\|$", DOC, flags=re.M):
        for name in re.findall(r"`([a-z_]+)\*?`", cell):
            if cell.strip().startswith("settings"):
                continue
            assert any(setting.startswith(name.rstrip("_")) for setting in known), name
