"""Reads of results and kernel errors: the API's keyset pages, and the console's queries (`storage.queries`).

Every read of a result goes through one column list and one row mapping (`_stored`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...models import HostShare, KernelErrorGroup, KernelErrorSummary, ResultStatus, StoredResult
from ..stream import StreamedResult, StreamPage
from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonyConsoleQueries", "kernel_error_groups", "kernel_errors", "result_stream", "results"]

_RESULTS = (
    "SELECT r.id, r.dataset, d.payload, r.payload, r.compute_ms, r.worker, r.host, r.created, r.status, d.seq"
    " FROM result r JOIN dataset d ON d.id = r.dataset"
)
_SETTLED = (ResultStatus.CANONICAL, ResultStatus.TRUSTED)
_SHOWN = (ResultStatus.ACCEPTED, *_SETTLED, ResultStatus.PENDING, ResultStatus.CONFLICT)


def _stored(row: tuple[Any, ...]) -> StoredResult:
    return StoredResult(
        id=row[0],
        dataset_id=row[1],
        dataset=bytes(row[2]),
        value=None if row[3] is None else bytes(row[3]),
        compute_ms=row[4],
        worker=row[5],
        host=row[6] or "",
        created=datetime.fromtimestamp(row[7], UTC),
        status=row[8],
        # `seq` counts a campaign's datasets from 0 in generation order (spot checks below 0): so it has
        # since the first schema, and an older database needs no migration to number its datasets.
        dataset_number=max(0, row[9] + 1),
    )


def results(
    sql: SqlDialect, campaign_id: int, after: tuple[int, int], limit: int, verified: bool
) -> list[StoredResult]:
    wanted = _SETTLED if verified else _SHOWN
    rows = sql.query(
        _RESULTS
        # A row-value comparison, unlike the equivalent OR, is an index range condition on
        # (campaign, dataset, id) in both SQLite and PostgreSQL; the redundant `d.id >= ?` lets
        # PostgreSQL's merge join start there too. Page k then costs what page 1 costs.
        + " WHERE r.campaign = ? AND (r.dataset, r.id) > (?, ?) AND d.id >= ?"
        f" AND r.status IN ({', '.join('?' * len(wanted))})"
        " ORDER BY r.dataset, r.id LIMIT ?",
        (campaign_id, after[0], after[1], after[0], *wanted, limit),
    )
    return [_stored(row) for row in rows]


_STREAMED = (ResultStatus.ACCEPTED, *_SETTLED)


def result_stream(sql: SqlDialect, campaign_id: int, after: tuple[int, int], limit: int) -> StreamPage:
    """A page of the result stream (see `storage.stream.ResultStreamStore`): keyset paging on (campaign, seq, id)."""
    # On PostgreSQL only rows of transactions older than this statement's snapshot's xmin: none of
    # them can still commit, and every later transaction gets a larger id.
    visible = " AND r.stream_seq < pg_snapshot_xmin(pg_current_snapshot())::text::bigint" if sql.postgres else ""
    where = " WHERE r.campaign = ? AND (r.stream_seq, r.id) > (?, ?)"
    statuses = f" AND r.status IN ({', '.join('?' * len(_STREAMED))})"
    rows = sql.query(
        _RESULTS.replace("SELECT ", "SELECT r.stream_seq, ", 1)
        + where
        + visible
        + statuses
        + " ORDER BY r.stream_seq, r.id LIMIT ?",
        (campaign_id, *after, *_STREAMED, limit),
    )
    page = [StreamedResult((row[0], row[1]), _stored(row[1:])) for row in rows]
    held_back = False
    if visible and len(page) < limit:
        last = page[-1].position if page else after
        held_back = bool(
            sql.query(
                "SELECT 1 FROM result r" + where + statuses + " LIMIT 1",
                (campaign_id, *last, *_STREAMED),
            )
        )
    return StreamPage(page, held_back)


def kernel_errors(sql: SqlDialect, campaign_id: int, limit: int) -> list[KernelErrorSummary]:
    rows = sql.query(
        "SELECT dataset, message, stack, count, last_seen FROM kernel_error WHERE campaign = ?"
        " ORDER BY last_seen DESC LIMIT ?",
        (campaign_id, limit),
    )
    return [
        KernelErrorSummary(
            dataset_id=row[0],
            message=row[1],
            stack=row[2] or "",
            count=row[3],
            last_seen=datetime.fromtimestamp(row[4], UTC),
        )
        for row in rows
    ]


def kernel_error_groups(sql: SqlDialect, campaign_id: int, limit: int, examples: int) -> list[KernelErrorGroup]:
    groups = sql.query(
        "SELECT message, SUM(count), COUNT(DISTINCT dataset), MIN(first_seen), MAX(last_seen) FROM kernel_error"
        " WHERE campaign = ? GROUP BY message ORDER BY MAX(last_seen) DESC, message LIMIT ?",
        (campaign_id, max(limit, 0)),
    )
    found = []
    # Two bounded reads per group (at most `limit` groups) rather than every row of the campaign:
    # a broken kernel leaves one row per dataset, and a campaign may have millions.
    for message, count, datasets, first_seen, last_seen in groups:
        ids = sql.query(
            "SELECT k.dataset, d.seq FROM kernel_error k JOIN dataset d ON d.id = k.dataset"
            " WHERE k.campaign = ? AND k.message = ? ORDER BY k.dataset LIMIT ?",
            (campaign_id, message, max(examples, 0)),
        )
        stacks = sql.query(
            "SELECT stack FROM kernel_error WHERE campaign = ? AND message = ? AND COALESCE(stack, '') <> ''"
            " ORDER BY last_seen DESC LIMIT 1",
            (campaign_id, message),
        )
        found.append(
            KernelErrorGroup(
                message=message,
                count=int(count),
                datasets=int(datasets),
                first_seen=datetime.fromtimestamp(first_seen, UTC),
                last_seen=datetime.fromtimestamp(last_seen, UTC),
                examples=tuple(row[0] for row in ids),
                stack=stacks[0][0] if stacks else "",
                example_numbers=tuple(max(row[1] + 1, 0) for row in ids),
            )
        )
    return found


def _result_count(sql: SqlDialect, campaign_id: int) -> int:
    count: int = sql.query("SELECT COUNT(*) FROM result WHERE campaign = ?", (campaign_id,))[0][0]
    return count


def _results_page(sql: SqlDialect, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
    # OFFSET paging is fine for a human paging through a table.
    rows = sql.query(
        _RESULTS + " WHERE r.campaign = ? ORDER BY r.dataset, r.id LIMIT ? OFFSET ?", (campaign_id, limit, offset)
    )
    return [_stored(row) for row in rows]


def _result(sql: SqlDialect, campaign_id: int, result_id: int) -> StoredResult | None:
    rows = sql.query(_RESULTS + " WHERE r.campaign = ? AND r.id = ?", (campaign_id, result_id))
    return _stored(rows[0]) if rows else None


def _hosts(sql: SqlDialect, campaign_id: int) -> list[HostShare]:
    rows = sql.query(
        "SELECT COALESCE(host, ''), COUNT(*), COALESCE(SUM(compute_ms), 0) FROM result WHERE campaign = ?"
        " GROUP BY COALESCE(host, '') ORDER BY COUNT(*) DESC LIMIT 50",
        (campaign_id,),
    )
    return [HostShare(row[0], row[1], row[2] / 1000.0) for row in rows]


def _throughput(sql: SqlDialect, campaign_id: int, start: float, width: float, buckets: int) -> list[int]:
    counts = [0] * max(buckets, 0)
    if not counts or width <= 0:
        return counts
    # PostgreSQL's CAST rounds where SQLite's truncates; FLOOR is not in every SQLite build. Only
    # results at or after `start` are read, so both truncate toward the same bucket.
    bucket = "FLOOR((created - ?) / ?)" if sql.postgres else "CAST((created - ?) / ? AS INTEGER)"
    rows = sql.query(
        f"SELECT {bucket} AS b, COUNT(*) FROM result WHERE campaign = ? AND created >= ? AND created < ? GROUP BY b",
        (start, width, campaign_id, start, start + buckets * width),
    )
    for b, n in rows:
        if 0 <= int(b) < len(counts):  # float rounding at the window's end
            counts[int(b)] += n
    return counts


def _sample_datasets(sql: SqlDialect, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
    rows = sql.query("SELECT id, payload FROM dataset WHERE campaign = ? ORDER BY id LIMIT ?", (campaign_id, n))
    return [(row[0], bytes(row[1])) for row in rows]


class PonyConsoleQueries:
    """The reads only the console needs (`storage.queries`): one result, pages, hosts, throughput, samples."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def result_count(self, campaign_id: int) -> int:
        return await self._sessions.run(_result_count, campaign_id)

    async def results_page(self, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
        return await self._sessions.run(_results_page, campaign_id, offset, limit)

    async def result(self, campaign_id: int, result_id: int) -> StoredResult | None:
        return await self._sessions.run(_result, campaign_id, result_id)

    async def hosts(self, campaign_id: int) -> list[HostShare]:
        return await self._sessions.run(_hosts, campaign_id)

    async def throughput(self, campaign_id: int, start: float, width: float, buckets: int) -> list[int]:
        return await self._sessions.run(_throughput, campaign_id, start, width, buckets)

    async def sample_datasets(self, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
        return await self._sessions.run(_sample_datasets, campaign_id, n)
