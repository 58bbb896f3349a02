"""`MemoryStorage`: the whole storage interface on Python dicts, for tests and quick demonstrations.

Nothing survives the process. `memory://` opens a database of its own; `memory://NAME` opens the
process-wide database of that name, so several storages (as several servers in one test) can share one,
as server processes share a SQL database. Every call behaves as the Pony backend's does, state for
state and status for status: the dispatcher, the verifier and the console cannot tell them apart.
This module holds campaigns, datasets and leases; `tables` the rows and their indexes, `results` the
group commit and result reads, `verdicts` verification, `accounts` users, tokens, the console's
accounts and reads, `generator_leases` the generator leases, `presence` the server processes' heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ...errors import LeaseLost, NotFound, SettingsError
from ...models import Campaign, CampaignCounts, CampaignStatus, DatasetState, LeasedDataset, ResultStatus, Review
from ..base import AccountUsage
from ..hashing import content_hash
from .accounts import MemoryAccounts, MemoryConsoleQueries, MemoryUsers
from .admin import MemoryAdmin
from .credit import MemoryCredit
from .generator_leases import MemoryGeneratorLeases, holds
from .presence import MemoryPresence
from .results import MemoryResults
from .sites import MemorySites
from .tables import CampaignRow, DatasetRow, Tables, superseded
from .verdicts import MemoryVerification

__all__ = ["SCHEMA_VERSION", "MemoryStorage"]

# The version of the data model: the same as the SQL schema's, since both store the same things.
SCHEMA_VERSION = 4

_ACTIVE = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)
_SETTLED = (ResultStatus.CANONICAL, ResultStatus.TRUSTED)
_REQUIRED = ("name", "kernel", "task_timeout")  # as the SQL schema: no None, no empty text
_COLUMNS: dict[str, Any] = {  # campaign columns a caller may set, with their defaults
    "name": None,
    "kernel": None,
    "generator": None,
    "task_timeout": None,
    "description": "",
    "static_dataset": "",
    "priority": 0,
    "weight": 1.0,
    "replication": 1,
    "comparator": None,
    "is_open": False,
    "review": Review.APPROVED,
}

_shared: dict[str, Tables] = {}  # named databases (memory://NAME), for the life of the process


class MemoryStorage(MemoryUsers, MemoryResults, MemoryVerification, MemoryAdmin):
    """Storage in this process's memory. Open with `await MemoryStorage.open("memory://")`."""

    def __init__(self, url: str, tables: Tables) -> None:
        self.url = url
        self.tables = tables
        self.accounts = MemoryAccounts(tables)
        self.queries = MemoryConsoleQueries(tables)
        self.generator_leases = MemoryGeneratorLeases(tables)
        self.presence = MemoryPresence(tables)
        self.credit = MemoryCredit(tables)
        self.sites = MemorySites(tables)

    @classmethod
    async def open(cls, url: str, threads: int = 4) -> MemoryStorage:
        """`threads` is accepted for the common signature; calls run on the event loop."""
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.query or parts.fragment:
            raise SettingsError(f"unsupported memory database URL {url!r}: use memory:// or memory://NAME")
        name = parts.netloc + parts.path
        tables = _shared.setdefault(name, Tables()) if name else Tables()
        return cls(url, tables)

    async def aclose(self) -> None:
        """Nothing to release: a named database stays for the next storage opened on it."""

    async def schema_version(self) -> int:
        return SCHEMA_VERSION

    # ------------------------------------------------------------------ campaigns

    async def create_campaign(
        self, owner_id: int, *, spot_checks: Sequence[tuple[bytes, bytes]] = (), **fields: Any
    ) -> Campaign:
        """Store a campaign and its known-answer spot-check datasets together."""
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise TypeError(f"unknown campaign attribute(s): {', '.join(sorted(unknown))}")
        values = {name: fields.get(name, default) for name, default in _COLUMNS.items()}
        missing = [name for name in _REQUIRED if values[name] in (None, "")]
        if missing:
            raise ValueError(f"a campaign needs {', '.join(missing)}")
        async with self.tables.session() as t:
            if owner_id not in t.users:
                raise NotFound(f"user {owner_id} does not exist")
            fixed = Campaign(
                id=t.next_id("campaign"),
                owner_id=owner_id,
                name=str(values["name"]),
                description=str(values["description"] or ""),
                kernel=str(values["kernel"]),
                static_dataset=str(values["static_dataset"] or ""),
                generator=str(values["generator"] or ""),
                priority=int(values["priority"]),
                weight=float(values["weight"]),
                replication=int(values["replication"]),
                task_timeout=float(values["task_timeout"]),
                status=CampaignStatus.GENERATING,
                generation_error=None,
                deleted=False,
                created=datetime.now(UTC),
                content_hash=content_hash(str(values["kernel"]), str(values["static_dataset"] or "")),
                generated=0,
                compute_seconds=0.0,
                comparator=str(values["comparator"] or ""),
            )
            row = CampaignRow(
                fixed, CampaignStatus.GENERATING, is_open=bool(values["is_open"]), review=str(values["review"])
            )
            t.campaigns[row.id] = row
            for i, (payload, expected) in enumerate(spot_checks):
                t.add_dataset(row, -1 - i, bytes(payload), DatasetState.SPOT, bytes(expected))
            return row.campaign()

    async def get_campaign(self, campaign_id: int) -> Campaign | None:
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            return row.campaign() if row else None

    async def list_campaigns(self, owner_id: int | None = None, *, active_only: bool = False) -> list[Campaign]:
        async with self.tables.session() as t:
            return [
                row.campaign()
                for row in reversed(t.campaigns.values())
                if not row.deleted
                and (owner_id is None or row.fixed.owner_id == owner_id)
                and (not active_only or (row.status in _ACTIVE and row.review != Review.REJECTED))
            ]

    async def set_deleted(self, campaign_id: int, deleted: bool) -> None:
        async with self.tables.session() as t:
            _campaign_row(t, campaign_id).deleted = deleted

    async def set_status(self, campaign_id: int, status: str, error: str | None = None) -> None:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            row.status = status
            row.generation_error = error

    async def reset_campaign(self, campaign_id: int) -> None:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            t.drop_results(row)
            for dataset in row.datasets:
                if dataset.state != DatasetState.SPOT:
                    dataset.errors, dataset.checkpoint = 0, None
                    t.set_state(dataset, DatasetState.PENDING)
            row.pending = [dataset.id for dataset in row.datasets if dataset.state == DatasetState.PENDING]  # sorted
            row.compute_ms = 0.0
            if row.status == CampaignStatus.COMPLETE:
                row.status = CampaignStatus.RUNNING

    async def update_kernel(
        self, campaign_id: int, kernel: str, static_dataset: str, *, recompute: bool = False
    ) -> Campaign:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            version = row.fixed.kernel_version + 1
            row.fixed = replace(
                row.fixed,
                kernel=kernel,
                static_dataset=static_dataset,
                content_hash=content_hash(kernel, static_dataset),
                kernel_version=version,
            )
            if recompute:
                row.kernel_floor = version
                for dataset in row.datasets:
                    if dataset.state in (DatasetState.DONE, DatasetState.FAILED):
                        dataset.errors = 0
                        t.set_state(dataset, DatasetState.PENDING)
                if row.status == CampaignStatus.COMPLETE:
                    row.status = CampaignStatus.RUNNING
            return row.campaign()

    async def account_usage(self, owner_id: int, *, result_bytes: bool = True) -> AccountUsage:
        async with self.tables.session() as t:
            rows = [row for row in t.campaigns.values() if row.fixed.owner_id == owner_id]
            stored = 0
            if result_bytes:
                stored = sum(
                    len(result.payload)
                    for row in rows
                    for result in t.campaign_results(row)
                    if result.payload is not None
                )
            generating = sum(
                1 for row in rows if row.status == CampaignStatus.GENERATING and not row.deleted and not row.is_open
            )
            return AccountUsage(len(rows), sum(row.generated for row in rows), stored, generating)

    async def counts(self, campaign_id: int) -> CampaignCounts:
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            if row is None:
                return CampaignCounts(0, 0, 0, 0, 0, 0, 0, 0.0)
            states = row.states
            return CampaignCounts(
                total=sum(n for state, n in states.items() if state != DatasetState.SPOT),
                pending=states[DatasetState.PENDING],
                leased=states[DatasetState.LEASED],
                done=states[DatasetState.DONE],
                failed=states[DatasetState.FAILED],
                results=sum(
                    n for status, n in row.answered.items() if status not in (ResultStatus.AGREED, ResultStatus.INVALID)
                )
                - _superseded(t, row),
                errors=row.error_total,
                compute_seconds=row.compute_ms / 1000.0,
                verified=sum(row.statuses[status] for status in _SETTLED),
                trusted=row.statuses[ResultStatus.TRUSTED],
                pending_verification=t.unsettled(row),
                conflict=states[DatasetState.CONFLICT],
                flagged_workers=len(row.liars),
            )

    async def complete_if_done(self, campaign_id: int) -> bool:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            if row.status == CampaignStatus.COMPLETE:
                return True
            if (
                row.status != CampaignStatus.RUNNING
                or row.states[DatasetState.PENDING]
                or row.states[DatasetState.LEASED]
            ):
                return False
            row.status = CampaignStatus.COMPLETE
            return True

    async def change_status(
        self, campaign_id: int, allowed: Sequence[str], status: str, reason: str | None = None
    ) -> Campaign | None:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            if row.status not in allowed:
                return None
            row.status, row.generation_error = status, reason
            if status == CampaignStatus.CANCELLED:
                row.is_open = False
            return row.campaign()

    async def close_campaign(self, campaign_id: int) -> bool:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            if not row.is_open:
                return False
            row.is_open = False
            if row.status == CampaignStatus.GENERATING:
                row.status = CampaignStatus.RUNNING
            return True

    # ------------------------------------------------------------------ datasets and leases

    async def add_open_datasets(self, campaign_id: int, payloads: Sequence[bytes]) -> int | None:
        async with self.tables.session() as t:
            row = _campaign_row(t, campaign_id)
            if not row.is_open or row.deleted or row.status not in (*_ACTIVE, CampaignStatus.PAUSED):
                return None
            for i, payload in enumerate(payloads):
                t.add_dataset(row, row.generated + i, bytes(payload), DatasetState.PENDING, None)
            row.generated += len(payloads)
            return row.generated

    async def add_datasets(
        self, campaign_id: int, payloads: Sequence[bytes], *, exhausted: bool = False, generator: str | None = None
    ) -> int:
        """New pending datasets; with `generator`, only while that process holds the generator lease."""
        async with self.tables.session() as t:
            if generator is not None and not holds(t, campaign_id, generator):
                raise LeaseLost(f"campaign {campaign_id}: the generator lease of {generator} has expired")
            row = _campaign_row(t, campaign_id)
            for i, payload in enumerate(payloads):
                t.add_dataset(row, row.generated + i, bytes(payload), DatasetState.PENDING, None)
            row.generated += len(payloads)
            if exhausted and row.status == CampaignStatus.GENERATING:
                row.status = CampaignStatus.RUNNING
            return row.generated

    async def pending_count(self, campaign_id: int, *, at_most: int) -> int:
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            return 0 if row is None else min(row.states[DatasetState.PENDING], max(at_most, 0))

    async def lease(
        self, campaign_id: int, n: int, owner: str, seconds: float, *, replicated: bool = False
    ) -> list[LeasedDataset]:
        """Move up to n pending datasets of a campaign, oldest first, to `leased` by `owner`.

        For a `replicated` campaign each dataset comes with the workers of its stored pending results.
        """
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            if row is None or n <= 0 or row.status not in _ACTIVE:  # paused or cancelled: nothing more leaves
                return []
            until = time.time() + seconds
            leased: list[LeasedDataset] = []
            for dataset in t.pop_pending(row, n):
                t.set_state(dataset, DatasetState.LEASED)
                dataset.lease_owner, dataset.lease_until = owner, until
                votes = _votes(dataset, replicated)
                leased.append(
                    LeasedDataset(dataset.id, campaign_id, dataset.payload, votes, checkpoint=dataset.checkpoint)
                )
            return leased

    async def renew_leases(self, owner: str, seconds: float) -> None:
        async with self.tables.session() as t:
            until = time.time() + seconds
            for dataset in t.leased.values():
                if dataset.lease_owner == owner:
                    dataset.lease_until = until

    async def save_checkpoints(self, owner: str, states: Mapping[int, bytes]) -> int:
        async with self.tables.session() as t:
            stored = 0
            for dataset_id, state in states.items():
                dataset = t.leased.get(dataset_id)
                if dataset is not None and dataset.lease_owner == owner:
                    dataset.checkpoint, stored = state, stored + 1
            return stored

    async def release(self, owner: str, dataset_ids: Sequence[int]) -> None:
        """Give datasets back to the pool (a server shutting down, a campaign reset)."""
        async with self.tables.session() as t:
            for dataset_id in dataset_ids:
                dataset = t.leased.get(dataset_id)
                if dataset is not None and dataset.lease_owner == owner:
                    t.set_state(dataset, DatasetState.PENDING)

    async def expire_leases(self) -> int:
        """Return datasets whose holder stopped renewing (a crashed server process) to the pool."""
        async with self.tables.session() as t:
            now = time.time()
            expired = [row for row in t.leased.values() if row.lease_until is not None and row.lease_until < now]
            for dataset in expired:
                t.set_state(dataset, DatasetState.PENDING)
            return len(expired)


def _campaign_row(t: Tables, campaign_id: int) -> CampaignRow:
    row = t.campaigns.get(campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return row


def _superseded(t: Tables, row: CampaignRow) -> int:
    """Answered results a newer kernel version's result of their dataset superseded (none before an update)."""
    if row.fixed.kernel_version <= 1:
        return 0
    return sum(
        1
        for result in t.campaign_results(row)
        if result.payload is not None
        and result.status not in (ResultStatus.AGREED, ResultStatus.INVALID)
        and superseded(result, t.datasets[result.dataset_id])
    )


def _votes(dataset: DatasetRow, replicated: bool) -> tuple[tuple[str, str], ...]:
    if not replicated:
        return ()
    votes: list[tuple[str, str]] = []
    for result in dataset.results:
        if result.status == ResultStatus.PENDING:
            address = result.worker.partition("@")[2]
            votes.append((result.identity or f"ip:{address}", address))
    return tuple(votes)
