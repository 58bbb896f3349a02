"""The storage hot paths in hand-written SQL: adding datasets, leasing, group-committing outcomes.

These run inside a Pony `db_session` (the caller's) on Pony's own connection, but bypass the
ORM's per-object bookkeeping: one statement per batch instead of one object per row. All
functions are synchronous and must be called from a storage thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pony.orm import Database
from psycopg2.extras import execute_batch

from ..models import DatasetState, FailedTask, FinishedTask, LeasedDataset

__all__ = ["SqlDialect", "expire_leases", "insert_datasets", "lease", "release", "renew_leases", "store_outcomes"]


class SqlDialect:
    """The few differences between SQLite and PostgreSQL that the hot paths care about."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.provider.dialect == "PostgreSQL"

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """executemany with `?` placeholders, translated to the driver's paramstyle."""
        if not rows:
            return
        cursor = self.db.get_connection().cursor()
        if self.postgres:
            # psycopg2's executemany is one network round trip per row (5000 rows: seconds);
            # execute_batch sends pages of statements joined by ";" in one round trip each.
            execute_batch(cursor, sql.replace("?", "%s"), rows, page_size=500)
        else:
            cursor.executemany(sql, rows)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cursor = self.db.get_connection().cursor()
        cursor.execute(sql, tuple(args))
        return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cursor = self.db.get_connection().cursor()
        cursor.execute(sql, tuple(args))
        return cursor.rowcount


def insert_datasets(sql: SqlDialect, campaign_id: int, first_seq: int, payloads: Sequence[bytes]) -> None:
    rows = [(campaign_id, first_seq + i, payload, DatasetState.PENDING, 0) for i, payload in enumerate(payloads)]
    sql.many("INSERT INTO dataset (campaign, seq, payload, state, errors) VALUES (?, ?, ?, ?, ?)", rows)


def lease(sql: SqlDialect, campaign_id: int, n: int, owner: str, until: float) -> list[LeasedDataset]:
    """Atomically move up to n pending datasets of a campaign to `leased` by `owner`.

    On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several server processes claim disjoint rows
    concurrently; SQLite has one writer at a time, so the plain statement is already atomic.
    """
    lock = " FOR UPDATE SKIP LOCKED" if sql.postgres else ""
    rows = sql.query(
        "UPDATE dataset SET state = ?, lease_owner = ?, lease_until = ? WHERE id IN ("
        f" SELECT id FROM dataset WHERE campaign = ? AND state = ? ORDER BY id LIMIT ?{lock}"
        ") RETURNING id, payload",
        (DatasetState.LEASED, owner, until, campaign_id, DatasetState.PENDING, n),
    )
    rows.sort()  # RETURNING order is unspecified; hand datasets out oldest first
    return [LeasedDataset(id=row[0], campaign_id=campaign_id, payload=bytes(row[1])) for row in rows]


def renew_leases(sql: SqlDialect, owner: str, until: float) -> None:
    sql.execute("UPDATE dataset SET lease_until = ? WHERE lease_owner = ? AND state = ?", (until, owner, DatasetState.LEASED))


def release(sql: SqlDialect, owner: str, dataset_ids: Sequence[int]) -> None:
    """Give datasets back to the pool (a server shutting down, a campaign reset)."""
    sql.many(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND state = ?",
        [(DatasetState.PENDING, dataset_id, owner, DatasetState.LEASED) for dataset_id in dataset_ids],
    )


def expire_leases(sql: SqlDialect, now: float) -> int:
    """Return datasets whose holder stopped renewing (a crashed server process) to the pool."""
    return sql.execute(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE state = ? AND lease_until < ?",
        (DatasetState.PENDING, DatasetState.LEASED, now),
    )


def store_outcomes(
    sql: SqlDialect, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
) -> list[int]:
    """Group-commit a batch of results and kernel errors; returns the ids of accepted results.

    A result is accepted only for a dataset that is not already done, so a late duplicate (the
    same dataset answered by two workers after a lease expired) is never counted twice. The
    caller's db_session commits all of it in one transaction.
    """
    now = time.time()
    ids = sorted({task.dataset_id for task in finished} | {task.dataset_id for task in failed})
    if not ids:
        return []
    lock = " FOR UPDATE" if sql.postgres else ""
    open_ids: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = sql.query(
            f"SELECT id FROM dataset WHERE id IN ({marks}) AND state IN (?, ?) ORDER BY id{lock}",
            (*chunk, DatasetState.PENDING, DatasetState.LEASED),
        )
        open_ids.update(row[0] for row in rows)

    accepted: list[FinishedTask] = []
    for task in finished:
        if task.dataset_id in open_ids:
            open_ids.discard(task.dataset_id)  # first answer wins, also within one batch
            accepted.append(task)
    sql.many(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
        [(DatasetState.DONE, task.dataset_id) for task in accepted],
    )
    sql.many(
        "INSERT INTO result (dataset, campaign, payload, compute_ms, worker, host, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(t.dataset_id, t.campaign_id, t.value, t.compute_ms, t.worker, t.host, now) for t in accepted],
    )

    errored = [task for task in failed if task.dataset_id in open_ids]
    for task in errored:
        _record_kernel_error(sql, task, now)
    # A dataset that failed too often is given up (state failed); otherwise it goes back to the pool.
    sql.many(
        "UPDATE dataset SET errors = errors + 1, lease_owner = NULL, lease_until = NULL,"
        " state = CASE WHEN errors + 1 >= ? THEN ? ELSE ? END WHERE id = ?",
        [(max_task_errors, DatasetState.FAILED, DatasetState.PENDING, t.dataset_id) for t in errored],
    )

    compute: dict[int, float] = {}
    for task in (*finished, *failed):
        compute[task.campaign_id] = compute.get(task.campaign_id, 0.0) + task.compute_ms
    sql.many("UPDATE campaign SET compute_ms = compute_ms + ? WHERE id = ?", [(ms, cid) for cid, ms in compute.items()])
    return [task.dataset_id for task in accepted]


def _record_kernel_error(sql: SqlDialect, task: FailedTask, now: float) -> None:
    updated = sql.execute(
        "UPDATE kernel_error SET count = count + 1, last_seen = ?, stack = ? WHERE campaign = ? AND dataset = ? AND message = ?",
        (now, task.stack, task.campaign_id, task.dataset_id, task.message),
    )
    if not updated:
        sql.execute(
            "INSERT INTO kernel_error (campaign, dataset, message, stack, count, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, 1, ?, ?)",
            (task.campaign_id, task.dataset_id, task.message, task.stack, now, now),
        )
