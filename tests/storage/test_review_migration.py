"""Schema version 4 (before roles and review) is migrated on open, on SQLite and on PostgreSQL:
its campaigns, served to everyone before, stay served (approved); its accounts are not admins."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from pony.orm import db_session

from distribute.models import Review
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.support.pg import fresh_database
from tests.support.schema import BACK_TO_VERSION_3


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v3.db'}" if request.param == "sqlite" else fresh_database()


def _to_version_3(storage: PonyStorage) -> None:
    with db_session:
        for statement in BACK_TO_VERSION_3:  # every index, table and column of version 4, not only review's
            storage.sql.execute(statement)
        storage.sql.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


async def test_a_version_3_database_keeps_its_campaigns_served_to_everyone(url: str) -> None:
    storage = await PonyStorage.open(url)
    user = await storage.create_user("old@example.org", admin=True)
    campaign = await storage.create_campaign(
        user.id, name="old", kernel="k", generator="g", static_dataset="", task_timeout=5.0, review=Review.PENDING
    )
    await trio.to_thread.run_sync(_to_version_3, storage)
    await storage.aclose()

    migrated = await PonyStorage.open(url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION
        old = await migrated.get_campaign(campaign.id)
        assert old is not None and (old.review, old.review_reason) == (Review.APPROVED, "")
        assert campaign.id in {c.id for c in await migrated.list_campaigns(active_only=True)}
        owner = await migrated.get_user(user.id)
        assert owner is not None and owner.admin is False
    finally:
        await migrated.aclose()
