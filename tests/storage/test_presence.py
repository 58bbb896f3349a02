"""Presence rows: every server process's heartbeat with its connected workers, summed by any process.

The contract runs on every backend (the suite's database, SQLite or PostgreSQL, and memory://); two
storages opened on one database stand for two server processes. The last test is about the Pony
schema: a database made before presence rows existed gets their table when it is opened.
"""

from __future__ import annotations

from pathlib import Path

import trio
from pony.orm import db_session

from distribute.plugins import open_storage
from distribute.storage import Storage
from distribute.storage.pony.store import PonyStorage
from tests.storage.test_pony import open_pony, pony_url


async def test_workers_are_summed_over_the_processes_that_beat(storage_url: str) -> None:
    first, second = await open_storage(storage_url), await open_storage(storage_url)
    try:
        await first.presence.beat("process-a", {7: 2, 8: 1})
        await second.presence.beat("process-b", {7: 3, 0: 4})
        assert await first.presence.workers(30) == {7: 5, 8: 1, 0: 4}
        assert await second.presence.workers(30) == {7: 5, 8: 1, 0: 4}
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_beat_replaces_the_previous_row_of_its_process(storage: Storage) -> None:
    await storage.presence.beat("process-a", {7: 2})
    await storage.presence.beat("process-a", {9: 1})
    assert await storage.presence.workers(30) == {9: 1}


async def test_campaigns_without_workers_are_left_out(storage: Storage) -> None:
    await storage.presence.beat("process-a", {7: 0, 8: 1})
    assert await storage.presence.workers(30) == {8: 1}


async def test_the_excluded_process_is_not_counted(storage: Storage) -> None:
    await storage.presence.beat("process-a", {7: 2})
    await storage.presence.beat("process-b", {7: 3})
    assert await storage.presence.workers(30, exclude="process-a") == {7: 3}


async def test_rows_older_than_the_age_asked_for_are_ignored(storage: Storage) -> None:
    await storage.presence.beat("silent", {7: 2})
    await trio.sleep(0.3)
    await storage.presence.beat("alive", {7: 1})
    assert await storage.presence.workers(0.2) == {7: 1}
    assert await storage.presence.workers(30) == {7: 3}


async def test_a_process_that_leaves_stops_counting_at_once(storage: Storage) -> None:
    await storage.presence.beat("process-a", {7: 2})
    await storage.presence.beat("process-b", {7: 3})
    await storage.presence.leave("process-a")
    assert await storage.presence.workers(30) == {7: 3}


async def test_a_database_made_before_presence_rows_gets_their_table(tmp_path: Path) -> None:
    url = pony_url(tmp_path)
    old = await open_pony(url)
    await trio.to_thread.run_sync(_drop_presence, old)
    await old.aclose()
    reopened = await open_pony(url)
    try:
        await reopened.presence.beat("process-a", {3: 1})
        assert await reopened.presence.workers(30) == {3: 1}
    finally:
        await reopened.aclose()


def _drop_presence(storage: PonyStorage) -> None:
    with db_session:
        storage.sql.execute("DROP TABLE presence")
