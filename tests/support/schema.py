"""The columns each schema version added to existing tables, for the tests that rebuild an older database.

A migration test takes a fresh database back to an older version by dropping what later versions added,
so every later column must be listed here, or the migration under test would find it already there.
"""

from __future__ import annotations

__all__ = ["SCHEMA_4_COLUMNS", "drop_statements"]

# Version 4: open campaigns, checkpoints, kernel versions.
SCHEMA_4_COLUMNS: tuple[tuple[str, str], ...] = (
    ("campaign", "is_open"),
    ("dataset", "checkpoint"),
    ("campaign", "kernel_version"),
    ("campaign", "kernel_floor"),
    ("result", "kernel_version"),
)


def drop_statements(columns: tuple[tuple[str, str], ...]) -> list[str]:
    """The statements that take `columns` (table, column) away again."""
    return [f"ALTER TABLE {table} DROP COLUMN {column}" for table, column in columns]
