"""The memory backend's tables: plain Python rows and the indexes that keep every call cheap.

One `Tables` holds a whole database. Every storage call runs synchronously under its lock (`session`),
so a call is one transaction: nothing else runs between its first read and its last write. The lock is
a `threading.Lock` rather than nothing because tests and plugins may call storage from a thread too.
The index helpers here (`set_state`, `set_result_status`, `add_result`, `drop_campaign_rows`) are the
only code that changes a dataset's state or a result's status, so the per-campaign counters the
dashboard reads (`CampaignCounts`) always agree with the rows without scanning them.
"""

from __future__ import annotations

import heapq
import threading
from bisect import insort
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import count

import trio

from ...models import Campaign, DatasetState, ResultStatus, Review, Site, StoredResult

__all__ = [
    "CampaignRow",
    "DatasetRow",
    "KernelErrorRow",
    "ResultRow",
    "SecretRow",
    "Tables",
    "TokenRow",
    "UserRow",
    "WorkerRow",
    "stored_result",
    "superseded",
]

_OPEN = (DatasetState.PENDING, DatasetState.LEASED)


@dataclass(slots=True, eq=False)
class UserRow:
    """An account; `password_hash` None: no console password."""

    id: int
    email: str
    password_hash: str | None
    created: datetime
    verified: bool = True  # False: its e-mail address is still to be verified
    verify_token_hash: str = ""  # the live address-verification token's hash, if any
    display_name: str = ""
    admin: bool = False


@dataclass(slots=True, eq=False)
class TokenRow:
    """An API token; only its hash is kept."""

    id: int
    user_id: int
    token_hash: str
    name: str
    created: datetime
    revoked: bool = False


@dataclass(slots=True, eq=False)
class SecretRow:
    """A console session or a password reset of a user, kept under its token's hash."""

    user_id: int
    expires: datetime
    csrf_token: str = ""  # sessions
    user_agent: str = ""  # sessions
    used: bool = False  # resets


@dataclass(slots=True, eq=False)
class ResultRow:
    """A worker's answer for one dataset (or a replica waiting for its quorum)."""

    id: int
    dataset_id: int
    campaign_id: int
    payload: bytes | None
    compute_ms: float
    worker: str
    host: str
    created: float  # epoch seconds, as the SQL backends store it
    status: str
    identity: str | None
    kernel_version: int = 1
    stream_seq: int = 0  # its place in the result stream (see `Tables.enter_stream`)
    site: int | None = None  # the registered site the broker verified


@dataclass(slots=True, eq=False)
class DatasetRow:
    """One dataset: its payload, state and lease, and its results."""

    id: int
    campaign_id: int
    seq: int
    payload: bytes
    state: str
    errors: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    expected: bytes | None = None
    checkpoint: bytes | None = None  # the latest state a reissued task resumes from; cleared when done
    results: list[ResultRow] = field(default_factory=list)  # in id order


@dataclass(slots=True, eq=False)
class KernelErrorRow:
    """A kernel error, counted per dataset and message."""

    dataset_id: int
    message: str
    stack: str
    count: int
    first_seen: float
    last_seen: float


@dataclass(slots=True, eq=False)
class WorkerRow:
    """A worker's verification record."""

    agreed: int = 0
    disagreed: int = 0
    flagged: bool = False
    updated: float = 0.0


@dataclass(slots=True, eq=False)
class CampaignRow:
    """A campaign: what never changes (`fixed`), what does, and the indexes of its datasets and results."""

    fixed: Campaign  # its status, error, deleted, generated and compute fields are the ones below
    status: str
    generation_error: str | None = None
    is_open: bool = False
    deleted: bool = False
    review: str = Review.APPROVED
    review_reason: str = ""
    generated: int = 0
    compute_ms: float = 0.0
    kernel_floor: int = 1  # results of an older kernel version leave their dataset pending (a recomputing update)
    datasets: list[DatasetRow] = field(default_factory=list)  # in id order, spot checks included
    spots: list[DatasetRow] = field(default_factory=list)
    # Ids of pending datasets, smallest first. Lazy: an id whose dataset has left `pending` (or that is
    # in twice) is skipped when popped, so a state change never searches the heap.
    pending: list[int] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    result_datasets: list[int] = field(default_factory=list)  # sorted ids of datasets with results
    result_count: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # results by status
    answered: Counter[str] = field(default_factory=Counter)  # results with a payload, by status
    pending_votes: Counter[int] = field(default_factory=Counter)  # pending results by dataset id
    liars: Counter[str] = field(default_factory=Counter)  # invalid results by worker identity
    kernel_errors: dict[tuple[int, str], KernelErrorRow] = field(default_factory=dict)
    error_total: int = 0
    hosts: dict[str, list[float]] = field(default_factory=dict)  # host -> [results, compute ms]
    created_times: list[float] = field(default_factory=list)  # of its results, sorted
    stream: list[tuple[int, int]] = field(default_factory=list)  # (seq, result id) as answers entered the stream

    @property
    def id(self) -> int:
        return self.fixed.id

    def campaign(self) -> Campaign:
        return replace(
            self.fixed,
            status=self.status,
            generation_error=self.generation_error,
            is_open=self.is_open,
            deleted=self.deleted,
            review=self.review,
            review_reason=self.review_reason,
            generated=self.generated,
            compute_seconds=self.compute_ms / 1000.0,
        )


class Tables:
    """Every row of one memory database, with the lock that makes each call a transaction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: dict[str, count[int]] = {}
        self.meta: dict[str, str] = {}
        self.users: dict[int, UserRow] = {}
        self.user_ids: dict[str, int] = {}  # by e-mail
        self.tokens: dict[int, TokenRow] = {}
        self.token_ids: dict[str, int] = {}  # by token hash
        self.sessions: dict[str, SecretRow] = {}  # by token hash
        self.resets: dict[str, SecretRow] = {}  # by token hash
        self.verifications: dict[str, SecretRow] = {}  # by token hash
        self.campaigns: dict[int, CampaignRow] = {}
        self.datasets: dict[int, DatasetRow] = {}
        self.results: dict[int, ResultRow] = {}
        self.leased: dict[int, DatasetRow] = {}
        self.trusted: dict[str, dict[int, ResultRow]] = {}  # identity -> its trusted results, by id
        self.workers: dict[str, WorkerRow] = {}
        self.generator_leases: dict[int, tuple[str, float]] = {}  # campaign -> (owner, until)
        self.presence: dict[str, tuple[dict[int, int], float]] = {}  # process -> (workers per campaign, heartbeat)
        self.claims: dict[str, int] = {}  # volunteer identity -> the account that claimed it (insertion order)
        self.listed: set[int] = set()  # accounts that chose to appear by name on leaderboards
        self.sites: dict[int, Site] = {}

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Tables]:
        """One call's transaction. The body must not await (it holds a thread lock).

        Like the SQL backends' storage threads, a call can be cancelled only before it starts: once
        it ran, the caller gets its outcome.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        with self._lock:
            yield self
        await trio.lowlevel.cancel_shielded_checkpoint()

    def next_id(self, table: str) -> int:
        return next(self.ids.setdefault(table, count(1)))

    # ------------------------------------------------------------------ datasets

    def add_dataset(self, campaign: CampaignRow, seq: int, payload: bytes, state: str, expected: bytes | None) -> None:
        row = DatasetRow(self.next_id("dataset"), campaign.id, seq, payload, state, expected=expected)
        self.datasets[row.id] = row
        campaign.datasets.append(row)
        campaign.states[state] += 1
        if state == DatasetState.PENDING:
            heapq.heappush(campaign.pending, row.id)
        elif state == DatasetState.SPOT:
            campaign.spots.append(row)

    def set_state(self, row: DatasetRow, state: str, *, clear_lease: bool = True) -> None:
        campaign = self.campaigns[row.campaign_id]
        if row.state == DatasetState.LEASED:
            del self.leased[row.id]
        campaign.states[row.state] -= 1
        campaign.states[state] += 1
        row.state = state
        if clear_lease:
            row.lease_owner = row.lease_until = None
        if state == DatasetState.DONE:
            row.checkpoint = None
        if state == DatasetState.PENDING:
            heapq.heappush(campaign.pending, row.id)
        elif state == DatasetState.LEASED:
            self.leased[row.id] = row

    def pop_pending(self, campaign: CampaignRow, n: int) -> list[DatasetRow]:
        """Up to n pending datasets, oldest first (they stay pending: the caller changes their state)."""
        found: list[DatasetRow] = []
        taken: set[int] = set()
        while campaign.pending and len(found) < n:
            dataset_id = heapq.heappop(campaign.pending)
            row = self.datasets.get(dataset_id)
            if row is not None and row.state == DatasetState.PENDING and dataset_id not in taken:
                taken.add(dataset_id)
                found.append(row)
        return found

    # ------------------------------------------------------------------ results

    def add_result(self, result: ResultRow) -> None:
        campaign = self.campaigns[result.campaign_id]
        dataset = self.datasets[result.dataset_id]
        self.results[result.id] = result
        if not dataset.results:
            insort(campaign.result_datasets, dataset.id)
        dataset.results.append(result)
        campaign.result_count += 1
        share = campaign.hosts.setdefault(result.host, [0, 0.0])
        share[0] += 1
        share[1] += result.compute_ms
        insort(campaign.created_times, result.created)
        self._count_status(campaign, result, +1)

    def enter_stream(self, result: ResultRow, seq: int) -> None:
        """`result` becomes an answer now: it takes the place `seq` (this call's) at the stream's end."""
        result.stream_seq = seq
        self.campaigns[result.campaign_id].stream.append((seq, result.id))

    def set_result_status(self, result: ResultRow, status: str) -> None:
        campaign = self.campaigns[result.campaign_id]
        self._count_status(campaign, result, -1)
        result.status = status
        self._count_status(campaign, result, +1)

    def _count_status(self, campaign: CampaignRow, result: ResultRow, sign: int) -> None:
        campaign.statuses[result.status] += sign
        if result.payload is not None:
            campaign.answered[result.status] += sign
        if result.status == ResultStatus.PENDING:
            campaign.pending_votes[result.dataset_id] += sign
            if campaign.pending_votes[result.dataset_id] <= 0:
                del campaign.pending_votes[result.dataset_id]
        elif result.status == ResultStatus.INVALID and result.identity is not None:
            campaign.liars[result.identity] += sign
            if campaign.liars[result.identity] <= 0:
                del campaign.liars[result.identity]
        elif result.status == ResultStatus.TRUSTED and result.identity is not None:
            trusted = self.trusted.setdefault(result.identity, {})
            if sign > 0:
                trusted[result.id] = result
            else:
                del trusted[result.id]
                if not trusted:
                    del self.trusted[result.identity]

    def unsettled(self, campaign: CampaignRow) -> int:
        """Open datasets with pending replicas (waiting for their quorum)."""
        return sum(1 for dataset_id in campaign.pending_votes if self.datasets[dataset_id].state in _OPEN)

    def campaign_results(self, campaign: CampaignRow) -> list[ResultRow]:
        return [result for dataset_id in campaign.result_datasets for result in self.datasets[dataset_id].results]

    def drop_results(self, campaign: CampaignRow) -> None:
        """Forget a campaign's results and kernel errors (a reset)."""
        for result in self.campaign_results(campaign):
            if result.status == ResultStatus.TRUSTED and result.identity is not None:
                self._count_status(campaign, result, -1)
            del self.results[result.id]
        for dataset_id in campaign.result_datasets:
            self.datasets[dataset_id].results.clear()
        campaign.result_datasets.clear()
        campaign.result_count = 0
        campaign.statuses.clear()
        campaign.answered.clear()
        campaign.pending_votes.clear()
        campaign.liars.clear()
        campaign.hosts.clear()
        campaign.created_times.clear()
        campaign.stream.clear()
        campaign.kernel_errors.clear()
        campaign.error_total = 0

    def drop_campaign(self, campaign: CampaignRow) -> None:
        """Remove a campaign with its datasets, results and kernel errors."""
        self.drop_results(campaign)
        for row in campaign.datasets:
            del self.datasets[row.id]
            self.leased.pop(row.id, None)
        del self.campaigns[campaign.id]


def stored_result(result: ResultRow, dataset: DatasetRow) -> StoredResult:
    """A result as callers see it, with the dataset it was computed from."""
    created = datetime.fromtimestamp(result.created, UTC)
    return StoredResult(result.id, result.dataset_id, dataset.payload, result.payload, result.compute_ms,
                        result.worker, result.host, created, result.status, max(0, dataset.seq + 1),
                        result.kernel_version)  # fmt: skip


_UNSHOWN = (ResultStatus.AGREED, ResultStatus.INVALID)


def superseded(result: ResultRow, dataset: DatasetRow) -> bool:
    """A shown result of a newer kernel version of the same dataset exists (the SQL backends' NOT EXISTS)."""
    return any(n.kernel_version > result.kernel_version and n.status not in _UNSHOWN for n in dataset.results)
