"""The result stream (`Storage.result_stream`): every answer once, in order of storage, on every backend.

The PostgreSQL tests open the database twice, as two server processes do: one writer's transaction
that started first (smaller id) and commits last must not be skipped by a reader that already read
the other's rows.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import psycopg2
import pytest
import trio
from pony.orm import db_session

from distribute.models import ResultStatus, Verdicts
from distribute.plugins import open_storage
from distribute.storage import Storage
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from distribute.storage.stream import START, StreamedResult
from tests.storage.conftest import finished, make_campaign
from tests.support.pg import fresh_database


async def _dataset_ids(storage: Storage, campaign: int, n: int) -> list[int]:
    leased = await storage.lease(campaign, n, "p", 60)
    return [d.id for d in leased]


async def _read_all(
    storage: Storage, campaign: int, limit: int, after: tuple[int, int] = START
) -> list[StreamedResult]:
    found: list[StreamedResult] = []
    while True:
        page = await storage.result_stream(campaign, after=after, limit=limit)
        found += page.results
        if len(page.results) < limit:
            return found
        after = page.results[-1].position


async def test_pages_hand_out_every_answer_once_in_order_of_storage(storage: Storage) -> None:
    campaign = await make_campaign(storage, 9)
    ids = await _dataset_ids(storage, campaign, 9)
    # Three group commits, each storing its datasets out of id order.
    batches = [ids[6:9], ids[0:3], ids[3:6]]
    for batch in batches:
        await storage.store_outcomes([finished(d, campaign, value=d) for d in reversed(batch)], [], 3)
    streamed = await _read_all(storage, campaign, limit=2)
    assert sorted(s.result.dataset_id for s in streamed) == ids
    by_batch = [{s.result.dataset_id for s in streamed[i : i + 3]} for i in (0, 3, 6)]
    assert by_batch == [set(b) for b in batches]
    assert [s.position for s in streamed] == sorted(s.position for s in streamed)
    assert len({s.position for s in streamed}) == 9


async def test_a_page_after_the_last_position_holds_only_later_answers(storage: Storage) -> None:
    campaign = await make_campaign(storage, 4)
    ids = await _dataset_ids(storage, campaign, 4)
    await storage.store_outcomes([finished(ids[0], campaign), finished(ids[1], campaign)], [], 3)
    first = await storage.result_stream(campaign, limit=10)
    await storage.store_outcomes([finished(ids[3], campaign), finished(ids[2], campaign)], [], 3)
    rest = await storage.result_stream(campaign, after=first.results[-1].position, limit=10)
    assert {s.result.dataset_id for s in rest.results} == {ids[2], ids[3]}
    assert not rest.held_back


async def test_replicas_enter_the_stream_once_when_a_quorum_settles_them(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2, replication=2)
    ids = await _dataset_ids(storage, campaign, 2)
    replicas = [finished(ids[0], campaign, worker=w, status=ResultStatus.PENDING) for w in ("a", "b")]
    await storage.store_outcomes(replicas, [], 3)
    assert (await storage.result_stream(campaign)).results == []
    await storage.store_outcomes([finished(ids[1], campaign)], [], 3)  # an answer stored after the replicas
    before = await storage.result_stream(campaign)
    assert [s.result.dataset_id for s in before.results] == [ids[1]]
    votes = (await storage.replica_votes([ids[0]]))[ids[0]]
    canonical, agreed = sorted(v.result_id for v in votes)
    await storage.apply_verdicts(
        Verdicts(statuses=((canonical, ResultStatus.CANONICAL), (agreed, ResultStatus.AGREED)), done=(ids[0],))
    )
    after = await storage.result_stream(campaign, after=before.results[-1].position)
    assert [(s.result.id, s.result.status) for s in after.results] == [(canonical, ResultStatus.CANONICAL)]


async def test_a_reset_campaign_streams_only_its_new_answers(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    ids = await _dataset_ids(storage, campaign, 2)
    await storage.store_outcomes([finished(i, campaign, value="old") for i in ids], [], 3)
    seen = await storage.result_stream(campaign)
    await storage.reset_campaign(campaign)
    ids = await _dataset_ids(storage, campaign, 2)
    await storage.store_outcomes([finished(ids[0], campaign, value="new")], [], 3)
    page = await storage.result_stream(campaign, after=seen.results[-1].position)
    assert [msgpack.unpackb(s.result.value or b"") for s in page.results] == ["new"]


async def test_the_stream_survives_reopening_the_database(storage_url: str) -> None:
    storage = await open_storage(storage_url)
    try:
        campaign = await make_campaign(storage, 3)
        ids = await _dataset_ids(storage, campaign, 3)
        await storage.store_outcomes([finished(ids[0], campaign)], [], 3)
        first = await storage.result_stream(campaign)
    finally:
        await storage.aclose()
    storage = await open_storage(storage_url)
    try:
        await storage.store_outcomes([finished(ids[1], campaign), finished(ids[2], campaign)], [], 3)
        rest = await storage.result_stream(campaign, after=first.results[-1].position)
        assert {s.result.dataset_id for s in rest.results} == {ids[1], ids[2]}
    finally:
        await storage.aclose()


async def test_postgres_holds_back_answers_of_a_later_transaction_until_an_earlier_one_ends() -> None:
    url = fresh_database()
    storage = await open_storage(url)
    slow = psycopg2.connect(url)
    try:
        campaign = await make_campaign(storage, 2)
        first, second = await _dataset_ids(storage, campaign, 2)
        # A group commit that started first (it has the smaller transaction id) and is still running...
        cursor = slow.cursor()
        cursor.execute("SELECT pg_current_xact_id()::text::bigint")
        slow_xid = cursor.fetchone()[0]
        # ...while a later one commits.
        await storage.store_outcomes([finished(second, campaign)], [], 3)
        page = await storage.result_stream(campaign)
        assert page.results == [] and page.held_back
        cursor.execute(
            "INSERT INTO result (dataset, campaign, payload, compute_ms, worker, host, created, status, stream_seq)"
            " VALUES (%s, %s, %s, 1.0, 'slow', '', 0, 'accepted', %s)",
            (first, campaign, msgpack.packb(1), slow_xid),
        )
        slow.commit()
        page = await storage.result_stream(campaign)
        assert [s.result.dataset_id for s in page.results] == [first, second] and not page.held_back
    finally:
        slow.close()
        await storage.aclose()


async def test_postgres_readers_miss_nothing_while_two_processes_commit_concurrently() -> None:
    url = fresh_database()
    writers = [await open_storage(url), await open_storage(url)]
    reader = await open_storage(url)
    try:
        campaign = await make_campaign(writers[0], 600)
        ids = await _dataset_ids(writers[0], campaign, 600)
        seen: list[StreamedResult] = []
        done = trio.Event()

        async def write(storage: Storage, mine: list[int]) -> None:
            for start in range(0, len(mine), 5):
                await storage.store_outcomes([finished(d, campaign) for d in mine[start : start + 5]], [], 3)

        async def read() -> None:
            after = START
            while True:
                finished_writing = done.is_set()
                page = await reader.result_stream(campaign, after=after, limit=7)
                seen.extend(page.results)
                if page.results:
                    after = page.results[-1].position
                elif finished_writing and not page.held_back:
                    return
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async with trio.open_nursery() as writing:
                writing.start_soon(write, writers[0], ids[0::2])
                writing.start_soon(write, writers[1], ids[1::2])
            done.set()
        assert sorted(s.result.dataset_id for s in seen) == ids
        assert len({s.result.id for s in seen}) == len(seen) == 600
    finally:
        for storage in (*writers, reader):
            await storage.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
def pony_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v3.db'}" if request.param == "sqlite" else fresh_database()


def _to_version_3(storage: PonyStorage) -> None:
    with db_session:
        storage.sql.execute("DROP INDEX result_stream")
        storage.sql.execute("ALTER TABLE result DROP COLUMN stream_seq")
        storage.sql.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


async def test_results_stored_before_the_stream_existed_come_first(pony_url: str) -> None:
    storage = await PonyStorage.open(pony_url)
    campaign = await make_campaign(storage, 3)
    ids = await _dataset_ids(storage, campaign, 3)
    await storage.store_outcomes([finished(ids[1], campaign), finished(ids[0], campaign)], [], 3)
    await trio.to_thread.run_sync(_to_version_3, storage)
    await storage.aclose()

    migrated = await PonyStorage.open(pony_url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION == 4
        await migrated.store_outcomes([finished(ids[2], campaign)], [], 3)
        streamed = await _read_all(migrated, campaign, limit=1)
        assert [s.result.dataset_id for s in streamed] == [ids[1], ids[0], ids[2]]  # old ones in id order
        assert [s.position[0] for s in streamed][:2] == [0, 0] and streamed[2].position[0] > 0
    finally:
        await migrated.aclose()
