"""The memory backend's results: the group commit of workers' answers and kernel errors, and reading them back.

The group commit is step for step what the SQL backends do (storage/pony/sql.py `store_outcomes`),
so that replication, error limits and compute time come out the same.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime

from ...errors import NotFound
from ...models import (
    DatasetState,
    FailedTask,
    FinishedTask,
    KernelErrorGroup,
    KernelErrorSummary,
    ResultStatus,
    StoredResult,
)
from ..stream import START, StreamedResult, StreamPage
from .tables import CampaignRow, KernelErrorRow, ResultRow, Tables, stored_result, superseded

__all__ = ["STREAMED", "MemoryResults"]

_OPEN = (DatasetState.PENDING, DatasetState.LEASED)
_UNVERIFIED = (ResultStatus.ACCEPTED, ResultStatus.PENDING, ResultStatus.CONFLICT)
_SETTLED = (ResultStatus.CANONICAL, ResultStatus.TRUSTED)
STREAMED = (ResultStatus.ACCEPTED, *_SETTLED)  # the statuses of answers (see `result_stream`)


class MemoryResults:
    """MemoryStorage's results (a base class: `tables` comes from MemoryStorage)."""

    tables: Tables

    async def store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        """Group-commit a batch of results and kernel errors; returns the ids of accepted results' datasets.

        A result is accepted only for a dataset that is not already done, so a late duplicate is
        never counted twice; a replica (status pending) leaves its dataset open for the quorum.
        """
        async with self.tables.session() as t:
            return _store_outcomes(t, finished, failed, max_task_errors)

    async def results(
        self,
        campaign_id: int,
        *,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
        verified: bool = False,
        every_version: bool = False,
    ) -> list[StoredResult]:
        """Stored results in dataset order, with the dataset each was computed from.

        Pages by key (`after` = the last row's (dataset_id, result_id)). One row per settled dataset
        (its canonical or trusted result), plus the pending replicas and conflicts of unsettled ones.
        `verified`: only results a quorum (or a trusted worker) settled.
        """
        wanted = _SETTLED if verified else (*_SETTLED, *_UNVERIFIED)
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            if row is None or limit <= 0:
                return []
            found: list[StoredResult] = []
            newest_only = not every_version and row.fixed.kernel_version > 1
            for dataset_id in row.result_datasets[bisect_left(row.result_datasets, after[0]) :]:
                dataset = t.datasets[dataset_id]
                for result in dataset.results:
                    if (dataset_id, result.id) > after and result.status in wanted:
                        if newest_only and superseded(result, dataset):
                            continue
                        found.append(stored_result(result, dataset))
                        if len(found) == limit:
                            return found
            return found

    async def result_stream(self, campaign_id: int, *, after: tuple[int, int] = START, limit: int = 1000) -> StreamPage:
        """The stream in the order answers entered it (see `storage.stream.ResultStreamStore`)."""
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            if row is None or limit <= 0:
                return StreamPage([], False)
            found: list[StreamedResult] = []
            for position in row.stream[bisect_right(row.stream, after) :]:
                result = t.results.get(position[1])
                # An entry is stale when its result left the answers or entered the stream again later.
                if result is None or result.stream_seq != position[0] or result.status not in STREAMED:
                    continue
                found.append(StreamedResult(position, stored_result(result, t.datasets[result.dataset_id])))
                if len(found) == limit:
                    break
            return StreamPage(found, False)

    async def kernel_errors(self, campaign_id: int, limit: int = 100) -> list[KernelErrorSummary]:
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            rows = [] if row is None else row.kernel_errors.values()
            return [
                KernelErrorSummary(e.dataset_id, e.message, e.stack, e.count, datetime.fromtimestamp(e.last_seen, UTC))
                for e in heapq.nlargest(max(limit, 0), rows, key=lambda e: e.last_seen)
            ]

    async def kernel_error_groups(self, campaign_id: int, limit: int = 20, examples: int = 3) -> list[KernelErrorGroup]:
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            by_message: dict[str, list[KernelErrorRow]] = {}
            for error in [] if row is None else row.kernel_errors.values():
                by_message.setdefault(error.message, []).append(error)
            groups = [_group(t, message, rows, examples) for message, rows in by_message.items()]
            groups.sort(key=lambda g: g.message)
            groups.sort(key=lambda g: g.last_seen, reverse=True)
            return groups[: max(limit, 0)]


def _group(t: Tables, message: str, rows: list[KernelErrorRow], examples: int) -> KernelErrorGroup:
    with_stack = [r for r in rows if r.stack]
    ids = tuple(sorted({r.dataset_id for r in rows})[: max(examples, 0)])
    return KernelErrorGroup(
        message=message,
        count=sum(r.count for r in rows),
        datasets=len({r.dataset_id for r in rows}),
        first_seen=datetime.fromtimestamp(min(r.first_seen for r in rows), UTC),
        last_seen=datetime.fromtimestamp(max(r.last_seen for r in rows), UTC),
        examples=ids,
        stack=max(with_stack, key=lambda r: r.last_seen).stack if with_stack else "",
        example_numbers=tuple(max(d.seq + 1, 0) if (d := t.datasets.get(i)) else 0 for i in ids),
    )


def _store_outcomes(
    t: Tables, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
) -> list[int]:
    """The SQL backends' group commit, step for step (see storage/pony/sql.py `store_outcomes`)."""
    now = time.time()
    ids = {task.dataset_id for task in finished} | {task.dataset_id for task in failed}
    open_ids = {i for i in ids if (row := t.datasets.get(i)) is not None and row.state in _OPEN}
    # The first answer that is not a replica wins its dataset (also within one batch); replicas of a
    # dataset nobody won are kept, and it stays open for its quorum.
    accepted: dict[int, FinishedTask] = {}
    stale: list[FinishedTask] = []  # of a kernel version older than a recomputing update: kept, not accepted
    for task in finished:
        if task.status != ResultStatus.PENDING and task.dataset_id in open_ids:
            campaign = t.campaigns.get(task.campaign_id)
            if campaign is not None and task.kernel_version < campaign.kernel_floor:
                stale.append(task)
            else:
                accepted.setdefault(task.dataset_id, task)
    reopened = {task.dataset_id for task in stale} - accepted.keys()
    open_ids -= accepted.keys()
    replicas = [task for task in finished if task.status == ResultStatus.PENDING and task.dataset_id in open_ids]
    errored = [task for task in failed if task.dataset_id in open_ids]
    # An older kernel version's failure after a recomputing update counts nothing: its dataset goes round again.
    outdated = {
        e.dataset_id
        for e in errored
        if not e.replica and (c := t.campaigns.get(e.campaign_id)) is not None and e.kernel_version < c.kernel_floor
    }
    errored = [task for task in errored if task.dataset_id not in outdated]
    # Check before the first write, so that a bad batch changes nothing (as a rolled-back transaction).
    for campaign_id in {task.campaign_id for task in (*accepted.values(), *replicas)} | {
        e.campaign_id for e in errored
    }:
        if campaign_id not in t.campaigns:
            raise NotFound(f"campaign {campaign_id} does not exist")

    for task in accepted.values():
        t.set_state(t.datasets[task.dataset_id], DatasetState.DONE)
    for dataset_id in sorted(reopened | outdated):
        t.set_state(t.datasets[dataset_id], DatasetState.PENDING)
    seq = t.next_id("stream_seq") if accepted else 0
    never_streamed = {id(task) for task in stale}  # an older version's late answer settles nothing
    for task in (*accepted.values(), *stale, *replicas):
        identity = task.identity or None
        result = ResultRow(t.next_id("result"), task.dataset_id, task.campaign_id, task.value, task.compute_ms,
                        task.worker, task.host, now, task.status, identity, task.kernel_version,
                        site=task.site)  # fmt: skip
        t.add_result(result)
        if result.status in STREAMED and id(task) not in never_streamed:
            t.enter_stream(result, seq)
    for error in errored:
        _record_kernel_error(t.campaigns[error.campaign_id], error, now)
    # A dataset that failed too often is given up; otherwise it goes back to the pool, except a
    # replica's: the other copies are still out, so it stays with this process.
    for error in sorted(errored, key=lambda e: e.replica):  # stable: as the SQL, non-replicas first
        dataset = t.datasets[error.dataset_id]
        dataset.errors += 1
        if dataset.errors >= max_task_errors:
            t.set_state(dataset, DatasetState.FAILED, clear_lease=not error.replica)
        elif not error.replica:
            t.set_state(dataset, DatasetState.PENDING)
    outcomes: list[FinishedTask | FailedTask] = [*finished, *failed]
    for outcome in outcomes:
        campaign = t.campaigns.get(outcome.campaign_id)
        if campaign is not None:
            campaign.compute_ms += outcome.compute_ms
    return list(accepted)


def _record_kernel_error(campaign: CampaignRow, task: FailedTask, now: float) -> None:
    campaign.error_total += 1
    row = campaign.kernel_errors.get((task.dataset_id, task.message))
    if row is None:
        campaign.kernel_errors[task.dataset_id, task.message] = KernelErrorRow(
            task.dataset_id, task.message, task.stack, 1, now, now
        )
        return
    row.count += 1
    row.last_seen = now
    row.stack = task.stack
