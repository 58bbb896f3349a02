"""The Pony backend itself: what only a SQL database shows, on SQLite and PostgreSQL.

Hashes at rest, schema versions, one transaction per call, and several server processes sharing
one database (disjoint leases, schema creation, row locks, SKIP LOCKED, connection count). The
tests about several processes always run on both SQLite and a throwaway PostgreSQL (tests/support/pg.py);
the others on the suite's database. The contract every backend keeps is in test_storage.py.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import trio
from pony.orm import db_session

from distribute.errors import SettingsError
from distribute.models import CampaignStatus, FailedTask, FinishedTask
from distribute.plugins import open_storage
from distribute.storage import hash_token
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.conftest import database_url
from tests.storage.conftest import finished, make_campaign
from tests.support.pg import fresh_database


async def open_pony(url: str, threads: int = 4) -> PonyStorage:
    storage = await open_storage(url, threads)
    assert isinstance(storage, PonyStorage), "these tests are about the Pony backend"
    return storage


def pony_url(tmp_path: Path) -> str:
    """The suite's database, or SQLite when the suite runs on memory://: these tests are about Pony."""
    url = database_url(tmp_path)
    return f"sqlite:///{tmp_path / 'pony.db'}" if url.startswith("memory") else url


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[PonyStorage]:
    store = await open_pony(pony_url(tmp_path))
    yield store
    await store.aclose()


async def test_tokens_are_stored_hashed_and_resolve_to_their_user(storage: PonyStorage) -> None:
    user = await storage.create_user("a@example.org")
    token = await storage.create_token(user.id)
    assert (await storage.user_for_token(token)) == user
    assert await storage.user_for_token(token + "x") is None
    hashes = await trio.to_thread.run_sync(_all_token_hashes, storage)
    assert token not in hashes and len(hashes) == 1  # the plain token is stored nowhere
    assert hashes == [hash_token(token)]


def _all_token_hashes(storage: PonyStorage) -> list[str]:
    with db_session:
        return [row[0] for row in storage.sql.query("SELECT token_hash FROM api_token")]


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    url = pony_url(tmp_path)
    store = await open_pony(url)
    await trio.to_thread.run_sync(_set_version, store, "999")
    await store.aclose()
    with pytest.raises(SettingsError, match="schema version 999"):
        await open_storage(url)


def _set_version(storage: PonyStorage, value: str) -> None:
    with db_session:
        storage.sql.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))


async def test_a_campaign_and_its_spot_checks_are_one_transaction(storage: PonyStorage) -> None:
    user = await storage.create_user("owner@example.org")
    # The second spot check violates NOT NULL after the campaign row and the first check were written.
    with pytest.raises(Exception, match=r"(?i)null"):
        await storage.create_campaign(
            user.id,
            spot_checks=[(b"\x01", b"\x02"), (None, b"\x02")],  # type: ignore[list-item]
            name="c",
            kernel="k",
            generator="g",
            task_timeout=5.0,
        )
    assert await storage.list_campaigns() == []
    assert await trio.to_thread.run_sync(_dataset_rows, storage) == 0


def _dataset_rows(storage: PonyStorage) -> int:
    with db_session:
        count: int = storage.sql.query("SELECT COUNT(*) FROM dataset")[0][0]
        return count


# ---------------------------------------------------------------------- several processes, one database


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database several processes (or storages) open at once: a SQLite file or a PostgreSQL database."""
    return f"sqlite:///{tmp_path / 'shared.db'}" if request.param == "sqlite" else fresh_database()


def _in_processes(target: Callable[..., Any], argument_lists: list[tuple[Any, ...]], timeout: float = 120) -> list[Any]:
    """Run `target(*args, start_barrier)` in one spawned process per argument list; return their values.

    The barrier lines the processes up after their (slow) start, so that they really do run at once.
    """
    context = multiprocessing.get_context("spawn")  # not fork: the test process has threads
    barrier = context.Barrier(len(argument_lists))
    results = context.Queue()
    processes = [context.Process(target=_child, args=(target, args, barrier, results)) for args in argument_lists]
    for process in processes:
        process.start()
    values: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < len(processes):
            try:
                ok, value = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                assert not dead, f"a child process died (exit codes {dead})"
                assert time.monotonic() < deadline, "child processes did not finish in time"
                continue
            assert ok, f"a child process failed:\n{value}"
            values.append(value)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return values


def _child(target: Callable[..., Any], args: tuple[Any, ...], barrier: Any, results: Any) -> None:
    import traceback

    try:
        results.put((True, target(*args, barrier)))
    except BaseException:
        results.put((False, traceback.format_exc()))


def _lease_until_empty(url: str, campaign_id: int, owner: str, barrier: Any) -> list[int]:
    async def main() -> list[int]:
        storage = await open_pony(url, 2)
        try:
            barrier.wait(60)
            ids: list[int] = []
            while batch := await storage.lease(campaign_id, 5, owner, 60):
                ids.extend(d.id for d in batch)
            return ids
        finally:
            await storage.aclose()

    return trio.run(main)


async def test_leases_from_several_processes_are_disjoint(shared_url: str) -> None:
    storage = await open_pony(shared_url)
    campaign = await make_campaign(storage, 2000)
    await storage.aclose()
    claims = await trio.to_thread.run_sync(
        _in_processes, _lease_until_empty, [(shared_url, campaign, f"process-{i}") for i in range(4)]
    )
    claimed = [dataset_id for ids in claims for dataset_id in ids]
    assert len(claimed) == len(set(claimed)) == 2000
    if shared_url.startswith("postgres"):
        # SKIP LOCKED: nobody waits for another's claim, so they really claim side by side.
        assert sum(1 for ids in claims if ids) >= 2, [len(ids) for ids in claims]


def _open_and_read_version(url: str, barrier: Any) -> int:
    async def main() -> int:
        barrier.wait(60)
        storage = await open_pony(url, 1)
        try:
            return await storage.schema_version()
        finally:
            await storage.aclose()

    return trio.run(main)


async def test_several_processes_can_create_the_schema_at_once(shared_url: str) -> None:
    versions = await trio.to_thread.run_sync(_in_processes, _open_and_read_version, [(shared_url,)] * 4)
    assert versions == [SCHEMA_VERSION] * 4


async def test_concurrent_campaign_updates_from_two_storages_do_not_conflict(shared_url: str) -> None:
    # Two server processes finishing the same campaign at once: without the row lock Pony's
    # optimistic check failed one of them on PostgreSQL (UnrepeatableReadError).
    first, second = await open_pony(shared_url), await open_pony(shared_url)
    try:
        for _ in range(10):
            campaign = await make_campaign(first, 1)
            (dataset,) = await first.lease(campaign, 1, "p", 30)
            await first.store_outcomes([finished(dataset.id, campaign)], [], 3)
            async with trio.open_nursery() as nursery:
                for store in (first, second, first, second):
                    nursery.start_soon(store.complete_if_done, campaign)
            assert (await second.get_campaign(campaign)).status == CampaignStatus.COMPLETE
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("failure", ["python error before the last statement", "database error"])
async def test_a_failing_group_commit_changes_nothing(shared_url: str, failure: str) -> None:
    storage = await open_pony(shared_url)
    try:
        campaign = await make_campaign(storage, 3)
        leased = await storage.lease(campaign, 3, "p", 30)
        good = [finished(leased[0].id, campaign), finished(leased[1].id, campaign)]
        error = FailedTask(leased[2].id, campaign, "boom", "at main", 5.0, "w")
        if failure == "database error":
            # NOT NULL violated by the result INSERT, after the datasets were marked done.
            batch = [*good, FinishedTask(leased[2].id, campaign, b"\x01", 1.0, None, "")]  # type: ignore[arg-type]
            with pytest.raises(Exception, match=r"(?i)null"):
                await storage.store_outcomes(batch, [], 3)
        else:
            # Every statement ran but the campaign's compute-time update, which raises.
            real_many = storage.sql.many

            def many(sql: str, rows: Any) -> None:
                if sql.startswith("UPDATE campaign"):
                    raise RuntimeError("disk on fire")
                real_many(sql, rows)

            storage.sql.many = many  # type: ignore[method-assign]
            with pytest.raises(RuntimeError, match="disk on fire"):
                await storage.store_outcomes(good, [error], 3)
            storage.sql.many = real_many  # type: ignore[method-assign]
        counts = await storage.counts(campaign)
        assert (counts.leased, counts.done, counts.results, counts.errors) == (3, 0, 0, 0)
        assert counts.compute_seconds == 0
        assert await storage.results(campaign) == [] and await storage.kernel_errors(campaign) == []
        # The connection is usable again (on PostgreSQL an aborted transaction must be rolled back).
        assert await storage.store_outcomes(good, [error], 3) == [leased[0].id, leased[1].id]
        counts = await storage.counts(campaign)
        assert (counts.pending, counts.done, counts.results, counts.errors) == (1, 2, 2, 1)
    finally:
        await storage.aclose()


async def test_lease_skips_rows_another_transaction_holds() -> None:
    url = fresh_database()
    storage = await open_pony(url)
    holder = psycopg2.connect(url)
    try:
        campaign = await make_campaign(storage, 6)
        cursor = holder.cursor()
        cursor.execute("SELECT id FROM dataset WHERE campaign = %s ORDER BY id LIMIT 2 FOR UPDATE", (campaign,))
        held = [row[0] for row in cursor.fetchall()]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # Should the lease wait for the lock after all, this releases it: the test fails, never hangs.
                nursery.start_soon(_rollback_after, holder, 5.0)
                started = trio.current_time()
                leased = await storage.lease(campaign, 6, "p", 30)
                assert trio.current_time() - started < 2.0, "lease waited for rows another transaction holds"
                nursery.cancel_scope.cancel()
        assert len(leased) == 4 and not {d.id for d in leased} & set(held)
        holder.rollback()
        assert [d.id for d in await storage.lease(campaign, 6, "q", 30)] == held
    finally:
        holder.close()
        await storage.aclose()


async def _rollback_after(connection: Any, seconds: float) -> None:
    await trio.sleep(seconds)
    connection.rollback()


def _connections(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    with psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres") as admin, admin.cursor() as cursor:
        # Client backends only: an autovacuum worker visiting the new tables is listed there too.
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'", (name,)
        )
        count = cursor.fetchone()[0]
    admin.close()
    return count


async def test_a_storage_holds_one_connection_per_thread_and_closes_them_all() -> None:
    url = fresh_database()
    storage = await open_pony(url, 3)
    user = await storage.create_user("c@example.org")

    async def busy() -> None:
        for _ in range(10):
            await storage.get_user(user.id)
            await trio.to_thread.run_sync(time.sleep, 0.001)  # other blocking work churns trio's threads

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(busy)
    assert await trio.to_thread.run_sync(_connections, url) == 3
    await storage.aclose()
    with trio.fail_after(10):
        while await trio.to_thread.run_sync(_connections, url):  # backends exit just after the close
            await trio.sleep(0.05)
