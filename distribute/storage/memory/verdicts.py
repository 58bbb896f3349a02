"""The memory backend's verification calls: replicas' votes, verdicts, worker records, spot checks.

The same rules as the SQL backends' (storage/pony/verdicts.py): a verdict settles datasets and
credits or flags workers in one transaction, and a flagged worker's trusted results become pending
replicas again, their datasets back in the pool for a quorum.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from ...models import DatasetState, LeasedDataset, ResultStatus, Verdicts, Vote, WorkerRecord
from .tables import ResultRow, Tables, WorkerRow

__all__ = ["MemoryVerification"]

_OPEN = (DatasetState.PENDING, DatasetState.LEASED)


class MemoryVerification:
    """MemoryStorage's verification calls (a base class: `tables` comes from MemoryStorage)."""

    tables: Tables

    async def replica_votes(self, dataset_ids: Sequence[int]) -> dict[int, list[Vote]]:
        """The pending results of open replicated datasets, by dataset."""
        async with self.tables.session() as t:
            votes: dict[int, list[Vote]] = {}
            for dataset_id in sorted(set(dataset_ids)):
                dataset = t.datasets.get(dataset_id)
                if dataset is None or dataset.state not in _OPEN:
                    continue
                for result in dataset.results:
                    if result.status == ResultStatus.PENDING:
                        address = result.worker.partition("@")[2]
                        vote = Vote(result.id, result.payload, result.identity or f"ip:{address}", address)
                        votes.setdefault(dataset_id, []).append(vote)
            return votes

    async def apply_verdicts(self, verdicts: Verdicts) -> list[int]:
        """Write verdicts in one transaction; returns datasets re-opened to re-check a liar's trusted results."""
        async with self.tables.session() as t:
            return _apply_verdicts(t, verdicts)

    async def worker_records(self, keys: Sequence[str]) -> list[WorkerRecord]:
        async with self.tables.session() as t:
            return [
                WorkerRecord(key, row.agreed, row.disagreed, row.flagged)
                for key in sorted(set(keys))
                if (row := t.workers.get(key)) is not None
            ]

    async def spot_checks(self, campaign_id: int) -> list[LeasedDataset]:
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            spots = [] if campaign is None else campaign.spots
            return [
                LeasedDataset(row.id, campaign_id, row.payload, expected=row.expected or b"")
                for row in spots
                if row.state == DatasetState.SPOT
            ]


def _apply_verdicts(t: Tables, verdicts: Verdicts) -> list[int]:
    now = time.time()
    answers: dict[int, ResultRow] = {}
    for result_id, status in verdicts.statuses:
        result = t.results.get(result_id)
        if result is not None:
            t.set_result_status(result, status)
            if status in (ResultStatus.CANONICAL, ResultStatus.TRUSTED):
                answers[result_id] = result
    seq = t.next_id("stream_seq") if answers else 0  # one place per call, as one SQL transaction has
    for result_id in sorted(answers):  # the stream is kept sorted by (seq, id)
        t.enter_stream(answers[result_id], seq)
    for state, ids in ((DatasetState.DONE, verdicts.done), (DatasetState.CONFLICT, verdicts.conflicts)):
        for dataset_id in sorted(ids):
            dataset = t.datasets.get(dataset_id)
            if dataset is not None:
                t.set_state(dataset, state)
    credit = Counter(verdicts.agreed)
    liars = sorted(set(verdicts.liars))
    for key in sorted(set(credit) | set(liars)):
        t.workers.setdefault(key, WorkerRow(updated=now))
    for key, n in credit.items():
        if key not in liars:
            record = t.workers[key]
            record.agreed += n
            record.updated = now
    for key in liars:
        record = t.workers[key]
        record.agreed = 0
        record.disagreed += 1
        record.flagged = True
        record.updated = now
    reopened: list[int] = []
    for key in liars:
        trusted = list(t.trusted.get(key, {}).values())
        for result in trusted:
            t.set_result_status(result, ResultStatus.PENDING)
        again = sorted(result.dataset_id for result in trusted)
        for dataset_id in again:
            t.set_state(t.datasets[dataset_id], DatasetState.PENDING)
        reopened += again
    return reopened
