"""The storage hot paths in hand-written SQL: adding datasets, leasing, group-committing outcomes.

These run inside a Pony `db_session` (the caller's) on Pony's own connection, but bypass the
ORM's per-object bookkeeping: one statement per batch instead of one object per row. All
functions are synchronous and must be called from a storage thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pony.orm import Database
from psycopg2.extras import execute_batch, execute_values

from ...models import (
    CampaignCounts,
    CampaignStatus,
    DatasetState,
    FailedTask,
    FinishedTask,
    LeasedDataset,
    ResultStatus,
)
from ..base import AccountUsage

__all__ = [
    "SqlDialect",
    "account_usage",
    "counts",
    "expire_leases",
    "insert_datasets",
    "lease",
    "release",
    "renew_leases",
    "store_outcomes",
    "stream_seq",
]


class SqlDialect:
    """The database one storage call works on: its entities (`e`), and raw SQL with the few differences
    between SQLite and PostgreSQL that the hot paths care about.

    Statements are written once with `?` placeholders. On SQLite batches go through
    `executemany` (one prepared statement, no network). psycopg2's `executemany` is one network
    round trip and one parse per row, so on PostgreSQL batches become set-based statements instead:
    multi-row INSERTs and `id = ANY(array)`.
    """

    def __init__(self, db: Database, entities: dict[str, Any]) -> None:
        self.db = db
        self.e = entities  # the Pony entities by name, for the calls that go through the ORM
        self.postgres = db.provider.dialect == "PostgreSQL"

    def _cursor(self) -> Any:
        # get_connection() puts the db_session in a transaction on its connection, so every
        # statement of one storage call commits (or rolls back) together with the ORM's changes.
        return self.db.get_connection().cursor()

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row of arguments."""
        if not rows:
            return
        if self.postgres:
            # Pages of statements joined by ";": one round trip per page, not per row.
            execute_batch(self._cursor(), sql.replace("?", "%s"), rows, page_size=500)
        else:
            self._cursor().executemany(sql, rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """INSERT many rows (one multi-row statement per page on PostgreSQL)."""
        if not rows:
            return
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        if self.postgres:
            execute_values(self._cursor(), head + "%s", rows, page_size=1000)
        else:
            self._cursor().executemany(head + "(" + ", ".join("?" * len(columns)) + ")", rows)

    def for_ids(self, sql: str, args: Sequence[Any], ids: Sequence[int]) -> None:
        """Run `sql`, which ends in `id = ?`, for every id (once, with `id = ANY(...)`, on PostgreSQL)."""
        if not ids:
            return
        assert sql.endswith("id = ?"), sql
        if self.postgres:
            self.execute(sql[: -len("?")] + "ANY(?)", (*args, list(ids)))
        else:
            self._cursor().executemany(sql, [(*args, dataset_id) for dataset_id in ids])

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cursor = self._cursor()
        cursor.execute(sql, tuple(args))
        return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cursor = self._cursor()
        cursor.execute(sql, tuple(args))
        count: int = cursor.rowcount
        return count


def counts(sql: SqlDialect, campaign_id: int) -> CampaignCounts:
    by_state = dict(sql.query("SELECT state, COUNT(*) FROM dataset WHERE campaign = ? GROUP BY state", (campaign_id,)))
    by_state.pop(DatasetState.SPOT, None)
    # One scan of the campaign's results, as before verification existed; the other queries run
    # only when there are replicas (pending) or liars (invalid).
    by_status = {
        row[0]: (row[1], row[2])
        for row in sql.query(
            "SELECT status, COUNT(*), COUNT(payload) FROM result WHERE campaign = ? GROUP BY status", (campaign_id,)
        )
    }
    results = [
        (sum(n for status, (_, n) in by_status.items() if status not in (ResultStatus.AGREED, ResultStatus.INVALID)),)
    ]
    verified_by = {
        status: by_status.get(status, (0, 0))[0] for status in (ResultStatus.CANONICAL, ResultStatus.TRUSTED)
    }
    unsettled = [(0,)]
    if ResultStatus.PENDING in by_status:
        unsettled = sql.query(
            "SELECT COUNT(DISTINCT r.dataset) FROM result r JOIN dataset d ON d.id = r.dataset"
            " WHERE r.campaign = ? AND r.status = ? AND d.state IN (?, ?)",
            (campaign_id, ResultStatus.PENDING, DatasetState.PENDING, DatasetState.LEASED),
        )
    flagged = [(0,)]
    if ResultStatus.INVALID in by_status:
        flagged = sql.query(
            "SELECT COUNT(DISTINCT identity) FROM result WHERE campaign = ? AND status = ?",
            (campaign_id, ResultStatus.INVALID),
        )
    errors = sql.query("SELECT COALESCE(SUM(count), 0) FROM kernel_error WHERE campaign = ?", (campaign_id,))
    compute = sql.query("SELECT compute_ms, kernel_version FROM campaign WHERE id = ?", (campaign_id,))
    if compute and compute[0][1] > 1:  # a newer kernel version's answer supersedes the older ones of its dataset
        hidden = (ResultStatus.AGREED, ResultStatus.INVALID)
        superseded = sql.query(
            "SELECT COUNT(*) FROM result r WHERE r.campaign = ? AND r.payload IS NOT NULL AND r.status NOT IN (?, ?)"
            " AND EXISTS (SELECT 1 FROM result n WHERE n.dataset = r.dataset AND n.kernel_version > r.kernel_version"
            " AND n.status NOT IN (?, ?))",
            (campaign_id, *hidden, *hidden),
        )
        results = [(results[0][0] - superseded[0][0],)]
    return CampaignCounts(
        total=sum(by_state.values()),
        pending=by_state.get(DatasetState.PENDING, 0),
        leased=by_state.get(DatasetState.LEASED, 0),
        done=by_state.get(DatasetState.DONE, 0),
        failed=by_state.get(DatasetState.FAILED, 0),
        results=results[0][0],
        errors=int(errors[0][0]),
        compute_seconds=(compute[0][0] if compute else 0.0) / 1000.0,
        verified=sum(verified_by.values()),
        trusted=verified_by.get(ResultStatus.TRUSTED, 0),
        pending_verification=unsettled[0][0],
        conflict=by_state.get(DatasetState.CONFLICT, 0),
        flagged_workers=flagged[0][0],
    )


def account_usage(sql: SqlDialect, owner_id: int, with_result_bytes: bool) -> AccountUsage:
    # Aggregates over the owner's campaigns; the result one uses the result table's campaign index.
    campaigns, datasets, generating = sql.query(
        "SELECT COUNT(*), COALESCE(SUM(generated), 0),"
        " COALESCE(SUM(CASE WHEN status = ? AND deleted = ? AND is_open = ? THEN 1 ELSE 0 END), 0)"
        " FROM campaign WHERE owner = ?",
        (CampaignStatus.GENERATING, False, False, owner_id),  # an open campaign runs no generator
    )[0]
    result_bytes = 0
    if with_result_bytes:
        result_bytes = sql.query(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM result"
            " WHERE campaign IN (SELECT id FROM campaign WHERE owner = ?)",
            (owner_id,),
        )[0][0]
    return AccountUsage(int(campaigns), int(datasets), int(result_bytes), int(generating))


def insert_datasets(sql: SqlDialect, campaign_id: int, first_seq: int, payloads: Sequence[bytes]) -> None:
    rows = [(campaign_id, first_seq + i, payload, DatasetState.PENDING, 0) for i, payload in enumerate(payloads)]
    sql.insert("dataset", ("campaign", "seq", "payload", "state", "errors"), rows)


def lease(
    sql: SqlDialect, campaign_id: int, n: int, owner: str, seconds: float, replicated: bool = False
) -> list[LeasedDataset]:
    """Atomically move up to n pending datasets of a campaign to `leased` by `owner` for `seconds`.

    On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several server processes claim disjoint rows
    concurrently; SQLite has one writer at a time, so the plain statement is already atomic.
    For a `replicated` campaign each dataset comes with the workers of its stored pending results.
    """
    lock = " FOR UPDATE SKIP LOCKED" if sql.postgres else ""
    # Only from a campaign that hands out work: a process that has not yet heard of a pause or a
    # cancel (it refreshes its campaigns every few seconds) gets nothing more at its next refill.
    rows = sql.query(
        "UPDATE dataset SET state = ?, lease_owner = ?, lease_until = ? WHERE id IN ("
        " SELECT id FROM dataset WHERE campaign = ? AND state = ?"
        " AND EXISTS (SELECT 1 FROM campaign WHERE id = ? AND status IN (?, ?))"
        f" ORDER BY id LIMIT ?{lock}"
        ") RETURNING id, payload, checkpoint",
        (
            DatasetState.LEASED,
            owner,
            time.time() + seconds,
            campaign_id,
            DatasetState.PENDING,
            campaign_id,
            CampaignStatus.GENERATING,
            CampaignStatus.RUNNING,
            n,
        ),
    )
    rows.sort()  # RETURNING order is unspecified; hand datasets out oldest first
    if not replicated or not rows:
        return [
            LeasedDataset(row[0], campaign_id, bytes(row[1]), checkpoint=None if row[2] is None else bytes(row[2]))
            for row in rows
        ]
    votes: dict[int, list[tuple[str, str]]] = {}
    for dataset_id, identity, worker in _pending_votes(sql, [row[0] for row in rows]):
        address = worker.partition("@")[2]
        votes.setdefault(dataset_id, []).append((identity or f"ip:{address}", address))
    return [
        LeasedDataset(
            row[0],
            campaign_id,
            bytes(row[1]),
            votes=tuple(votes.get(row[0], ())),
            checkpoint=None if row[2] is None else bytes(row[2]),
        )
        for row in rows
    ]


def _pending_votes(sql: SqlDialect, dataset_ids: Sequence[int]) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(dataset_ids), 500):
        chunk = dataset_ids[start : start + 500]
        found += sql.query(
            f"SELECT dataset, identity, worker FROM result WHERE dataset IN ({','.join('?' * len(chunk))})"
            " AND status = ?",
            (*chunk, ResultStatus.PENDING),
        )
    return found


def _unlocked(sql: SqlDialect, condition: str) -> str:
    """`condition` on dataset rows; on PostgreSQL, rows another transaction holds are skipped, not waited for.

    Renewing and expiring leases lock rows in no particular order while store_outcomes locks them
    in id order: waiting could deadlock. Skipping is safe: a row being stored needs no renewal, and
    an expired one is found again by the next pass (leases are renewed every lease_seconds / 3).
    """
    if not sql.postgres:
        return condition
    return f"id IN (SELECT id FROM dataset WHERE {condition} FOR UPDATE SKIP LOCKED)"


def renew_leases(sql: SqlDialect, owner: str, seconds: float) -> None:
    sql.execute(
        "UPDATE dataset SET lease_until = ? WHERE " + _unlocked(sql, "lease_owner = ? AND state = ?"),
        (time.time() + seconds, owner, DatasetState.LEASED),
    )


def release(sql: SqlDialect, owner: str, dataset_ids: Sequence[int]) -> None:
    """Give datasets back to the pool (a server shutting down, a campaign reset)."""
    if sql.postgres and dataset_ids:
        # One statement, locking rows in id order as store_outcomes does, so the two cannot deadlock.
        sql.execute(
            "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id IN (SELECT id FROM dataset"
            " WHERE id = ANY(?) AND lease_owner = ? AND state = ? ORDER BY id FOR UPDATE)",
            (DatasetState.PENDING, sorted(dataset_ids), owner, DatasetState.LEASED),
        )
        return
    sql.many(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ? AND state = ?",
        [(DatasetState.PENDING, dataset_id, owner, DatasetState.LEASED) for dataset_id in dataset_ids],
    )


def save_checkpoints(sql: SqlDialect, owner: str, states: Mapping[int, bytes]) -> int:
    """Each dataset's latest checkpointed state, for datasets `owner` still leases (in id order, as
    store_outcomes locks rows, so the two cannot deadlock on PostgreSQL)."""
    stored = 0
    for dataset_id in sorted(states):
        stored += sql.execute(
            "UPDATE dataset SET checkpoint = ? WHERE id = ? AND lease_owner = ? AND state = ?",
            (states[dataset_id], dataset_id, owner, DatasetState.LEASED),
        )
    return stored


def expire_leases(sql: SqlDialect) -> int:
    """Return datasets whose holder stopped renewing (a crashed server process) to the pool."""
    return sql.execute(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE "
        + _unlocked(sql, "state = ? AND lease_until < ?"),
        (DatasetState.PENDING, DatasetState.LEASED, time.time()),
    )


def store_outcomes(
    sql: SqlDialect, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
) -> list[int]:
    """Group-commit a batch of results and kernel errors; returns the dataset ids of accepted results.

    A result is accepted only for a dataset that is not already done, so a late duplicate (the
    same dataset answered by two workers after a lease expired) is never counted twice. The
    caller's db_session commits all of it in one transaction.
    """
    now = time.time()
    ids = sorted({task.dataset_id for task in finished} | {task.dataset_id for task in failed})
    if not ids:
        return []
    open_ids: set[int] = set()
    if sql.postgres:
        # Lock the open rows in id order (every writer that waits for dataset rows locks in id
        # order, so concurrent group commits of several processes cannot deadlock).
        rows = sql.query(
            "SELECT id FROM dataset WHERE id = ANY(?) AND state IN (?, ?) ORDER BY id FOR UPDATE",
            (ids, DatasetState.PENDING, DatasetState.LEASED),
        )
        open_ids.update(row[0] for row in rows)
    else:
        for start in range(0, len(ids), 500):  # SQLite may allow as few as 999 parameters
            chunk = ids[start : start + 500]
            # `+state` keeps that term off the (state, lease_until) index: with it SQLite's planner
            # scanned every open row of the table per chunk (40 ms per 500 ids at 200k datasets);
            # without it this is a primary-key lookup per id (1 ms). See BENCHMARKS.md.
            rows = sql.query(
                f"SELECT id FROM dataset WHERE id IN ({','.join('?' * len(chunk))}) AND +state IN (?, ?)",
                (*chunk, DatasetState.PENDING, DatasetState.LEASED),
            )
            open_ids.update(row[0] for row in rows)

    outcomes: tuple[FinishedTask | FailedTask, ...] = (*finished, *failed)
    floors = _kernel_floors(sql, {task.campaign_id for task in outcomes if task.dataset_id in open_ids})
    accepted: list[FinishedTask] = []
    replicas: list[FinishedTask] = []
    stale: list[FinishedTask] = []
    for task in finished:
        if task.dataset_id in open_ids:
            if task.status == ResultStatus.PENDING:
                replicas.append(task)  # one of several copies: the dataset stays open for its quorum
                continue
            if task.kernel_version < floors.get(task.campaign_id, 1):
                stale.append(task)  # kept with its version, but its dataset is computed again with the new kernel
                continue
            open_ids.discard(task.dataset_id)  # first answer wins, also within one batch
            accepted.append(task)
    replicas = [task for task in replicas if task.dataset_id in open_ids]
    sql.for_ids(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL, checkpoint = NULL WHERE id = ?",
        (DatasetState.DONE,),
        [task.dataset_id for task in accepted],
    )
    sql.for_ids(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
        (DatasetState.PENDING,),
        sorted({task.dataset_id for task in stale if task.dataset_id in open_ids}),
    )
    seq = stream_seq(sql) if accepted or replicas else 0
    # An older kernel version's late answer is kept but settles nothing: never in the result stream (-1).
    sql.insert(
        "result",
        (
            "dataset", "campaign", "payload", "compute_ms", "worker", "host", "created", "status", "identity",
            "kernel_version", "stream_seq", "site",
        ),
        [
            (t.dataset_id, t.campaign_id, t.value, t.compute_ms, t.worker, t.host, now, t.status, t.identity or None,
             t.kernel_version, row_seq, t.site)
            for group, row_seq in ((accepted, seq), (stale, -1), (replicas, seq))
            for t in group
        ],
    )  # fmt: skip

    errored = [task for task in failed if task.dataset_id in open_ids]
    # An older kernel version's failure after a recomputing update counts nothing: its dataset goes round again.
    outdated = {t.dataset_id for t in errored if not t.replica and t.kernel_version < floors.get(t.campaign_id, 1)}
    errored = [task for task in errored if task.dataset_id not in outdated]
    sql.for_ids(
        "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
        (DatasetState.PENDING,),
        sorted(outdated),
    )
    for error in errored:
        _record_kernel_error(sql, error, now)
    # A dataset that failed too often is given up (state failed); otherwise it goes back to the pool,
    # except a replica's: the other copies are still out, so it stays with this process.
    sql.many(
        "UPDATE dataset SET errors = errors + 1, lease_owner = NULL, lease_until = NULL,"
        " state = CASE WHEN errors + 1 >= ? THEN ? ELSE ? END WHERE id = ?",
        [(max_task_errors, DatasetState.FAILED, DatasetState.PENDING, t.dataset_id) for t in errored if not t.replica],
    )
    sql.many(
        "UPDATE dataset SET errors = errors + 1, state = CASE WHEN errors + 1 >= ? THEN ? ELSE state END WHERE id = ?",
        [(max_task_errors, DatasetState.FAILED, t.dataset_id) for t in errored if t.replica],
    )

    compute: dict[int, float] = {}
    for outcome in outcomes:
        compute[outcome.campaign_id] = compute.get(outcome.campaign_id, 0.0) + outcome.compute_ms
    sql.many("UPDATE campaign SET compute_ms = compute_ms + ? WHERE id = ?", [(ms, cid) for cid, ms in compute.items()])
    return [task.dataset_id for task in accepted]


def _kernel_floors(sql: SqlDialect, campaign_ids: set[int]) -> dict[int, int]:
    """The oldest kernel version each campaign still accepts results of (1 until a recomputing update)."""
    if not campaign_ids:
        return {}
    ids = sorted(campaign_ids)
    rows = sql.query(f"SELECT id, kernel_floor FROM campaign WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {row[0]: row[1] for row in rows}


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


def stream_seq(sql: SqlDialect) -> int:
    """This transaction's place in the result stream (call it in a writing transaction, once).

    PostgreSQL: the transaction's id, which readers compare with their snapshot's xmin. SQLite: a
    counter in the meta table, bumped by each writing transaction; writers are serialised
    (BEGIN IMMEDIATE), so it grows in commit order.
    """
    if sql.postgres:
        return int(sql.query("SELECT pg_current_xact_id()::text::bigint")[0][0])
    if not sql.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?", (_SEQ,)):
        sql.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (_SEQ,))
    return int(sql.query("SELECT value FROM meta WHERE key = ?", (_SEQ,))[0][0])


_SEQ = "result_stream_seq"
