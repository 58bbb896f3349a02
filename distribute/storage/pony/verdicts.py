"""Storage of verification: replicas' votes, verdicts, worker records, spot-check datasets.

Synchronous functions run inside the caller's `db_session` on a storage thread (like
`distribute.storage.pony.sql`). None of this is on the hot path of replication 1: results are still
stored by `sql.store_outcomes` (group commit); verdicts are written afterwards, in batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ...models import DatasetState, LeasedDataset, ResultStatus, Verdicts, Vote, WorkerRecord
from .sql import SqlDialect, stream_seq

__all__ = ["apply_verdicts", "insert_spot_checks", "replica_votes", "spot_checks", "worker_records"]


def _in(ids: Sequence[object]) -> str:
    return "(" + ",".join("?" * len(ids)) + ")"


def replica_votes(sql: SqlDialect, dataset_ids: Sequence[int]) -> dict[int, list[Vote]]:
    """The pending results of open replicated datasets, by dataset."""
    votes: dict[int, list[Vote]] = {}
    ids = sorted(set(dataset_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = sql.query(
            "SELECT r.dataset, r.id, r.payload, r.identity, r.worker FROM result r JOIN dataset d ON d.id = r.dataset"
            f" WHERE r.dataset IN {_in(chunk)} AND r.status = ? AND d.state IN (?, ?) ORDER BY r.id",
            (*chunk, ResultStatus.PENDING, DatasetState.PENDING, DatasetState.LEASED),
        )
        for dataset_id, result_id, payload, identity, worker in rows:
            address = worker.partition("@")[2]
            votes.setdefault(dataset_id, []).append(
                Vote(result_id, None if payload is None else bytes(payload), identity or f"ip:{address}", address)
            )
    return votes


def apply_verdicts(sql: SqlDialect, verdicts: Verdicts) -> list[int]:
    """Write verdicts in the caller's transaction; returns datasets re-opened for re-checking.

    A liar is flagged and its record reset, and every result it had accepted without replicas
    (trusted) becomes a pending replica again: its dataset goes back to the pool for a quorum.
    """
    now = time.time()
    settled = sorted({*verdicts.done, *verdicts.conflicts})
    if sql.postgres and settled:
        # Lock the dataset rows in id order first, as store_outcomes does: no deadlock between them.
        sql.query("SELECT id FROM dataset WHERE id = ANY(?) ORDER BY id FOR UPDATE", (settled,))
    by_status: dict[str, list[int]] = {}
    for result_id, status in verdicts.statuses:
        by_status.setdefault(status, []).append(result_id)
    seq = stream_seq(sql) if {ResultStatus.CANONICAL, ResultStatus.TRUSTED} & by_status.keys() else 0
    for status, ids in by_status.items():
        if status in (ResultStatus.CANONICAL, ResultStatus.TRUSTED):
            # An answer settled now enters the result stream now, at this transaction's place.
            sql.for_ids("UPDATE result SET status = ?, stream_seq = ? WHERE id = ?", (status, seq), sorted(ids))
        else:
            sql.for_ids("UPDATE result SET status = ? WHERE id = ?", (status,), sorted(ids))
    for state, settled_ids in ((DatasetState.DONE, verdicts.done), (DatasetState.CONFLICT, verdicts.conflicts)):
        sql.for_ids(
            "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
            (state,),
            sorted(settled_ids),
        )
    credit: dict[str, int] = {}
    for key in verdicts.agreed:
        credit[key] = credit.get(key, 0) + 1
    liars = set(verdicts.liars)
    for key in sorted(set(credit) | liars):
        _ensure_record(sql, key, now)
    sql.many(
        "UPDATE worker_record SET agreed = agreed + ?, updated = ? WHERE key = ?",
        [(n, now, key) for key, n in sorted(credit.items()) if key not in liars],
    )
    sql.many(
        "UPDATE worker_record SET agreed = 0, disagreed = disagreed + 1, flagged = ?, updated = ? WHERE key = ?",
        [(True, now, key) for key in sorted(liars)],
    )
    reopened: list[int] = []
    for key in sorted(liars):
        rows = sql.query("SELECT dataset FROM result WHERE identity = ? AND status = ?", (key, ResultStatus.TRUSTED))
        ids = sorted(row[0] for row in rows)
        if not ids:
            continue
        sql.execute(
            "UPDATE result SET status = ? WHERE identity = ? AND status = ?",
            (ResultStatus.PENDING, key, ResultStatus.TRUSTED),
        )
        sql.for_ids(
            "UPDATE dataset SET state = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
            (DatasetState.PENDING,),
            ids,
        )
        reopened += ids
    return reopened


def _ensure_record(sql: SqlDialect, key: str, now: float) -> None:
    if not sql.query("SELECT 1 FROM worker_record WHERE key = ?", (key,)):
        sql.execute(
            "INSERT INTO worker_record (key, agreed, disagreed, flagged, updated) VALUES (?, 0, 0, ?, ?)",
            (key, False, now),
        )


def worker_records(sql: SqlDialect, keys: Sequence[str]) -> list[WorkerRecord]:
    if not keys:
        return []
    rows = sql.query(f"SELECT key, agreed, disagreed, flagged FROM worker_record WHERE key IN {_in(keys)}", tuple(keys))
    return [WorkerRecord(key=r[0], agreed=r[1], disagreed=r[2], flagged=bool(r[3])) for r in rows]


def insert_spot_checks(sql: SqlDialect, campaign_id: int, checks: Sequence[tuple[bytes, bytes]]) -> None:
    """Known-answer datasets: state spot (never leased, never counted), with the expected result."""
    sql.insert(
        "dataset",
        ("campaign", "seq", "payload", "state", "errors", "expected"),
        [
            (campaign_id, -1 - i, payload, DatasetState.SPOT, 0, expected)
            for i, (payload, expected) in enumerate(checks)
        ],
    )


def spot_checks(sql: SqlDialect, campaign_id: int) -> list[LeasedDataset]:
    rows = sql.query(
        "SELECT id, payload, expected FROM dataset WHERE campaign = ? AND state = ? ORDER BY id",
        (campaign_id, DatasetState.SPOT),
    )
    return [LeasedDataset(id=r[0], campaign_id=campaign_id, payload=bytes(r[1]), expected=bytes(r[2])) for r in rows]
