"""Schema version 1 (before verification) is migrated on open, through 2, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio
from pony.orm import db_session

from distribute.models import FinishedTask
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.support.pg import fresh_database
from tests.support.schema import BACK_TO_VERSION_3

# What version 2 added, taken away again: the database is then what version 1 created.
TO_VERSION_1 = (
    *BACK_TO_VERSION_3,  # added by version 4 (first: its indexes cover columns of version 2)
    "DROP INDEX result_trusted",
    "ALTER TABLE result DROP COLUMN status",
    "ALTER TABLE result DROP COLUMN identity",
    "ALTER TABLE dataset DROP COLUMN expected",
    "ALTER TABLE campaign DROP COLUMN comparator",
    "DROP TABLE worker_record",
    "ALTER TABLE account DROP COLUMN display_name",  # added by version 3, which migrates it from 2
    "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v1.db'}" if request.param == "sqlite" else fresh_database()


def _run(storage: PonyStorage, *statements: str) -> None:
    with db_session:
        for statement in statements:
            storage.sql.execute(statement)


def _columns(storage: PonyStorage, table: str) -> set[str]:
    with db_session:
        if storage.sql.postgres:
            rows = storage.sql.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,)
            )
        else:
            rows = storage.sql.query(f"SELECT name FROM pragma_table_info('{table}')")
    return {row[0] for row in rows}


async def test_a_version_1_database_is_migrated_and_keeps_its_results(url: str) -> None:
    assert SCHEMA_VERSION == 4
    storage = await PonyStorage.open(url)
    user = await storage.create_user("old@example.org")
    campaign = await storage.create_campaign(
        user.id, name="old", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(3)], exhausted=True)
    leased = await storage.lease(campaign.id, 3, "old-process", 30)
    await storage.store_outcomes(
        [FinishedTask(d.id, campaign.id, msgpack.packb(7), 1.0, "1@x", "") for d in leased], [], 3
    )
    await trio.to_thread.run_sync(_run, storage, *TO_VERSION_1)
    assert "status" not in await trio.to_thread.run_sync(_columns, storage, "result")
    await storage.aclose()

    migrated = await PonyStorage.open(url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION
        assert {"status", "identity"} <= await trio.to_thread.run_sync(_columns, migrated, "result")
        assert "expected" in await trio.to_thread.run_sync(_columns, migrated, "dataset")
        assert {"comparator", "is_open"} <= await trio.to_thread.run_sync(_columns, migrated, "campaign")
        results = await migrated.results(campaign.id)
        assert [(r.status, msgpack.unpackb(r.value)) for r in results] == [("accepted", 7)] * 3
        assert [r.dataset_number for r in results] == [1, 2, 3]  # from `seq`, which version 1 has already
        counts = await migrated.counts(campaign.id)
        assert counts.done == 3 and counts.results == 3 and counts.verified == 0
        assert await migrated.worker_records(["anyone"]) == []  # the new table exists
        assert await migrated.credit.claimed(user.id) == [] and not await migrated.credit.listed(user.id)
    finally:
        await migrated.aclose()
    again = await PonyStorage.open(url)  # opening a migrated database is a no-op
    assert await again.schema_version() == SCHEMA_VERSION
    await again.aclose()
