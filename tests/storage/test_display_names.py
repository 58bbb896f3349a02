"""Display names: the contract on every backend, and the column a version 2 Pony database gains on open."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from pony.orm import db_session

from distribute.errors import NotFound
from distribute.storage import Storage
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.support.pg import fresh_database


async def test_a_new_user_has_no_display_name(storage: Storage) -> None:
    user = await storage.create_user("ada@example.org")
    assert user.display_name == ""
    assert (await storage.get_user(user.id)).display_name == ""  # type: ignore[union-attr]


async def test_a_display_name_is_stored_and_read_back_everywhere_the_user_is_read(storage: Storage) -> None:
    user = await storage.create_user("ada@example.org", "hash")
    token = await storage.create_token(user.id, "t")
    updated = await storage.accounts.set_display_name(user.id, "Ada Lovelace")
    assert updated.display_name == "Ada Lovelace" and updated.email == "ada@example.org"
    assert (await storage.get_user(user.id)).display_name == "Ada Lovelace"  # type: ignore[union-attr]
    assert (await storage.user_by_email("ada@example.org")).display_name == "Ada Lovelace"  # type: ignore[union-attr]
    assert (await storage.user_for_token(token)).display_name == "Ada Lovelace"  # type: ignore[union-attr]
    credentials = await storage.accounts.credentials("ada@example.org")
    assert credentials is not None and credentials[0].display_name == "Ada Lovelace"


async def test_a_display_name_can_be_cleared(storage: Storage) -> None:
    user = await storage.create_user("ada@example.org")
    await storage.accounts.set_display_name(user.id, "Ada")
    assert (await storage.accounts.set_display_name(user.id, "")).display_name == ""
    assert (await storage.get_user(user.id)).display_name == ""  # type: ignore[union-attr]


async def test_a_display_name_for_an_unknown_user_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.accounts.set_display_name(12345, "Nobody")


# --------------------------------------------------------------------------- the Pony migration


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v2.db'}" if request.param == "sqlite" else fresh_database()


def _to_version_2(storage: PonyStorage) -> None:
    with db_session:
        storage.sql.execute("ALTER TABLE account DROP COLUMN display_name")
        storage.sql.execute("ALTER TABLE campaign DROP COLUMN is_open")  # a later version's columns
        storage.sql.execute("ALTER TABLE dataset DROP COLUMN checkpoint")
        storage.sql.execute("ALTER TABLE account DROP COLUMN admin")  # version 5's
        storage.sql.execute("ALTER TABLE campaign DROP COLUMN review")
        storage.sql.execute("ALTER TABLE campaign DROP COLUMN review_reason")
        storage.sql.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


async def test_a_version_2_database_gains_display_names_and_keeps_its_accounts(url: str) -> None:
    storage = await PonyStorage.open(url)
    user = await storage.create_user("old@example.org", "hash")
    await trio.to_thread.run_sync(_to_version_2, storage)
    await storage.aclose()

    migrated = await PonyStorage.open(url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION
        old = await migrated.get_user(user.id)
        assert old is not None and old.email == "old@example.org" and old.display_name == ""
        assert (await migrated.accounts.set_display_name(user.id, "Old Timer")).display_name == "Old Timer"
    finally:
        await migrated.aclose()
