"""What each schema version added to existing tables, for the tests that rebuild an older database.

A migration test takes a fresh database back to an older version by dropping what later versions added,
so everything later must be listed here, or the migration under test would find it already there.
"""

from __future__ import annotations

__all__ = ["BACK_TO_VERSION_3"]

# Version 4: open campaigns, checkpoints, kernel versions, the result stream, volunteers' credit, sites,
# the admin role and campaign review.
_SCHEMA_4_TABLES = ("volunteer_claim", "volunteer_listing", "site")
_SCHEMA_4_INDEXES = ("result_stream", "result_by_identity", "result_by_site")
_SCHEMA_4_COLUMNS = (
    ("campaign", "is_open"),
    ("dataset", "checkpoint"),
    ("campaign", "kernel_version"),
    ("campaign", "kernel_floor"),
    ("result", "kernel_version"),
    ("result", "stream_seq"),
    ("result", "site"),
    ("account", "admin"),
    ("campaign", "review"),
    ("campaign", "review_reason"),
)

# The statements that take a version-4 database back to version 3 (the schema version row aside).
BACK_TO_VERSION_3: tuple[str, ...] = (
    *(f"DROP INDEX {index}" for index in _SCHEMA_4_INDEXES),
    *(f"DROP TABLE {table}" for table in _SCHEMA_4_TABLES),
    *(f"ALTER TABLE {table} DROP COLUMN {column}" for table, column in _SCHEMA_4_COLUMNS),
)
