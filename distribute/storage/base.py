# changed: ConsoleQueries.results_page and .result return each result's real `status` (the Pony
# backend reads all results through one row mapping now); before, it was left at its default "accepted".
"""The storage interface: what every backend (Pony on SQLite/PostgreSQL, memory://, a plugin's) provides.

`Storage` is a `typing.Protocol` composed of smaller ones, one per concept. A backend needs no base
class: it matches the protocols structurally. Every method is a coroutine that returns plain frozen
dataclasses from `distribute.models` (never ORM objects), and every method is one transaction: it
happens entirely or not at all, and what it changed is visible to every later call, also from other
storage objects open on the same database (other server processes). "Now" is the storage's clock:
`time.time()` for leases, UTC for datetimes.

Several server processes may share one database, so the methods that say "atomic" must stay correct
when two processes call them at the same time (row locks, `SKIP LOCKED`, one writer at a time, ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ..models import (
    Campaign,
    CampaignCounts,
    FailedTask,
    FinishedTask,
    KernelErrorGroup,
    KernelErrorSummary,
    LeasedDataset,
    StoredResult,
    User,
    Verdicts,
    Vote,
    WorkerRecord,
)
from .admin import AdminStore
from .console import AccountStore, ConsoleQueries
from .credit import CreditStore
from .sites import SiteStore
from .stream import ResultStreamStore
from .versions import KernelVersionStore

__all__ = [
    "PRESENCE_FORGET_SECONDS",
    "AccountStore",
    "AccountUsage",
    "AdminStore",
    "CampaignStore",
    "ConsoleQueries",
    "DatasetStore",
    "GeneratorLeaseStore",
    "PresenceStore",
    "ResultStore",
    "Storage",
    "StorageFactory",
    "UserStore",
    "VerificationStore",
]


class UserStore(Protocol):
    """Users and their API tokens."""

    async def schema_version(self) -> int:
        """The schema version of the database (a backend without a schema returns its own constant)."""
        ...

    async def create_user(
        self, email: str, password_hash: str | None = None, *, verified: bool = True, admin: bool = False
    ) -> User:
        """Add a user (an admin with `admin`); raises `SettingsError` if one with this e-mail exists already.

        `verified=False`: a sign-up whose e-mail address is still to be verified (`AccountStore.verify_email`).
        """
        ...

    async def get_user(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        ...

    async def user_by_email(self, email: str) -> User | None:
        """The user with this e-mail (exact match), or None."""
        ...

    async def create_token(self, user_id: int, name: str = "") -> str:
        """A new API token "dst_…" for the user; returned once, only `hash_token(token)` is kept."""
        ...

    async def user_for_token(self, token: str) -> User | None:
        """The owner of an API token; None if the token is unknown or revoked."""
        ...


class AccountUsage(NamedTuple):
    """What one account has stored and runs, for its quotas."""

    campaigns: int  # deleted ones too: they can be restored
    datasets: int  # generated datasets of all those campaigns (spot checks not counted)
    result_bytes: int  # bytes of stored result values of all those campaigns
    generating: int  # campaigns generating now (deleted ones not counted)


class CampaignStore(Protocol):
    """Campaigns: their rows, status and counts."""

    async def create_campaign(
        self, owner_id: int, *, spot_checks: Sequence[tuple[bytes, bytes]] = (), **fields: Any
    ) -> Campaign:
        """Add a campaign (status generating, `content_hash(kernel, static_dataset)`) with its spot checks.

        `fields` are Campaign's settable fields (name, kernel, generator: "" when is_open, task_timeout, description,
        static_dataset, priority, weight, replication, comparator, is_open). `spot_checks` are (payload, expected
        result) pairs stored as spot datasets (never leased, never counted; `spot_checks()` returns them). Campaign and spot checks are written in ONE transaction: nobody ever sees the
        campaign without its spot checks.
        """
        ...

    async def get_campaign(self, campaign_id: int) -> Campaign | None:
        """The campaign, deleted or not, or None if it does not exist."""
        ...

    async def list_campaigns(self, owner_id: int | None = None, *, active_only: bool = False) -> list[Campaign]:
        """Campaigns of one owner (or everybody's), newest (highest id) first; deleted ones left out.

        `active_only`: only campaigns generating or running, and not rejected by review (served to nobody).
        """
        ...

    async def set_deleted(self, campaign_id: int, deleted: bool) -> None:
        """Mark a campaign deleted (hidden) or restore it; raises `NotFound` for an unknown campaign."""
        ...

    async def set_status(self, campaign_id: int, status: str, error: str | None = None) -> None:
        """Set status and generation_error (None clears it); raises `NotFound` for an unknown campaign."""
        ...

    async def reset_campaign(self, campaign_id: int) -> None:
        """Forget every result and kernel error: every non-spot dataset pending, 0 errors, no lease.

        Compute time goes back to 0 and a complete campaign becomes running (others keep their
        status). Raises `NotFound` for an unknown campaign.
        """
        ...

    async def counts(self, campaign_id: int) -> CampaignCounts:
        """Dataset and result counts of a campaign; spot datasets are never counted.

        results: stored results with a value, except agreed, invalid and superseded ones (`versions`); errors: kernel errors
        (each repetition counted); verified: canonical + trusted results; trusted: trusted results;
        pending_verification: open (pending/leased) datasets that have pending replicas; conflict:
        datasets in state conflict; flagged_workers: distinct identities of invalid results.
        """
        ...

    async def account_usage(self, owner_id: int, *, result_bytes: bool = True) -> AccountUsage:
        """The owner's campaigns (deleted ones too), their generated datasets and result bytes, and
        how many of them are generating; an unknown owner has none of anything.

        Aggregates over the owner's campaigns, and with `result_bytes` over their results (the one
        costly part: `result_bytes=False` skips it and reports 0 bytes).
        """
        ...

    async def complete_if_done(self, campaign_id: int) -> bool:
        """True if complete; a running campaign with no pending or leased dataset becomes complete.

        A generating (or failed) campaign stays as it is and gives False. Atomic; `NotFound` for an
        unknown campaign.
        """
        ...

    async def change_status(
        self, campaign_id: int, allowed: Sequence[str], status: str, reason: str | None = None
    ) -> Campaign | None:
        """Atomically set status and generation_error (`reason`) if the status is one of `allowed`, and return
        the campaign; else None, nothing changed. Cancelled: no longer open. `NotFound` if unknown."""
        ...

    async def close_campaign(self, campaign_id: int) -> bool:
        """An open campaign is open no more (generating becomes running); False if it was not open. Atomic."""


class DatasetStore(Protocol):
    """Datasets and their leases: the dispatcher's hot path."""

    async def add_datasets(
        self, campaign_id: int, payloads: Sequence[bytes], *, exhausted: bool = False, generator: str | None = None
    ) -> int:
        """Append pending datasets in order; returns the campaign's new `generated` total.

        Each dataset is numbered in its campaign: the k-th ever appended is number k (1..N), whatever
        other campaigns append meanwhile; spot checks are not numbered (0).

        `exhausted`: generation is finished, a generating campaign becomes running. `generator`: the
        process that must hold the campaign's generator lease, checked in the same transaction; if it
        does not (expired, taken over), nothing is stored and `LeaseLost` is raised. `NotFound` for
        an unknown campaign.
        """
        ...

    async def pending_count(self, campaign_id: int, *, at_most: int) -> int:
        """min(pending datasets of the campaign, at_most), at a cost bounded by at_most."""
        ...

    async def add_open_datasets(self, campaign_id: int, payloads: Sequence[bytes]) -> int | None:
        """`add_datasets` for an open campaign (a paused one too), checked open in the same transaction:
        the new `generated` total, or None (nothing stored) if it is not open. `NotFound` if unknown."""
        ...

    async def lease(
        self, campaign_id: int, n: int, owner: str, seconds: float, *, replicated: bool = False
    ) -> list[LeasedDataset]:
        """Atomically lease up to n pending datasets, oldest (lowest id) first, to `owner` for `seconds`.

        Atomic across processes: two concurrent callers never get the same dataset. `replicated`: each dataset
        carries the votes (worker key, address) of its stored pending results. Only a generating or running
        campaign's: a process not yet aware of a pause gets nothing more."""
        ...

    async def renew_leases(self, owner: str, seconds: float) -> None:
        """Extend every lease `owner` holds to now + seconds (rows being written may be skipped)."""
        ...

    async def release(self, owner: str, dataset_ids: Sequence[int]) -> None:
        """Return those datasets that `owner` still leases to pending; others are left alone."""
        ...

    async def expire_leases(self) -> int:
        """Return every leased dataset whose lease ended (holder stopped renewing) to pending; how many."""
        ...

    async def save_checkpoints(self, owner: str, states: Mapping[int, bytes]) -> int:
        """Store each dataset's latest checkpointed state (msgpack bytes, kept as given); returns how many.

        Only datasets `owner` still leases take a state: one done, failed, pending or leased by another
        process is left alone, so a late write never outlives its dataset. A later `lease` of the dataset
        (by any process) returns the state in `LeasedDataset.checkpoint`; it is cleared when the dataset
        is done. A kernel error or a released lease keeps it, so the next attempt resumes from it.
        """
        ...

    async def store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        """Group-commit answers and kernel errors in one transaction; returns the dataset ids accepted.

        Only datasets still open (pending or leased) take outcomes. The first answer that is not a
        pending replica is accepted and makes its dataset done (also within one batch): a late
        duplicate is never stored. Pending replicas of a dataset still open are stored and leave it
        open. A failure on an open dataset records a kernel error (counted per dataset and message)
        and adds one error: at `max_task_errors` the dataset fails; otherwise it goes back to pending,
        except a replica's, which keeps its state. Every task's compute time adds to its campaign's.
        Results keep their task's `kernel_version` (`versions`: recomputing updates).
        Concurrent group commits (also of other processes) never store two answers for one dataset.
        """
        ...


class ResultStore(Protocol):
    """Reading results and kernel errors."""

    async def results(
        self,
        campaign_id: int,
        *,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
        verified: bool = False,
        every_version: bool = False,
    ) -> list[StoredResult]:
        """Results in (dataset id, result id) order after `after`, with their dataset; at most `limit`.

        Superseded results of older kernel versions are left out unless `every_version` (`versions`).
        Every result (here and in `ConsoleQueries`) carries its dataset's `dataset_number`: its place in
        the campaign's generation order, 1..N, given when `add_datasets` stored it and never changed.

        Keyset paging: page k costs what page 1 costs. Statuses accepted, canonical, trusted,
        pending and conflict; agreed and invalid ones are left out. `verified`: only canonical and
        trusted results.
        """
        ...

    async def kernel_errors(self, campaign_id: int, limit: int = 100) -> list[KernelErrorSummary]:
        """The campaign's kernel errors, most recently seen first, at most `limit`."""
        ...

    async def kernel_error_groups(self, campaign_id: int, limit: int = 20, examples: int = 3) -> list[KernelErrorGroup]:
        """The campaign's kernel errors grouped by message: at most `limit` groups, latest `last_seen` first
        (then by message).

        A group's count adds up every repetition, `datasets` counts the distinct datasets, first and
        last seen are the earliest and latest over its rows, `examples` are its lowest `examples`
        dataset ids, and `stack` is the stack of its most recently seen row that has one ("" if none).
        An unknown campaign has no groups.
        """
        ...


class VerificationStore(Protocol):
    """Replicas' votes, verdicts, worker records and spot checks."""

    async def replica_votes(self, dataset_ids: Sequence[int]) -> dict[int, list[Vote]]:
        """Pending results of those datasets that are still open, by dataset, in result id order.

        A vote's worker is the result's identity, else "ip:" + the address after "@" in its worker.
        """
        ...

    async def apply_verdicts(self, verdicts: Verdicts) -> list[int]:
        """Write verdicts in one transaction; returns the datasets re-opened to re-check a liar.

        Result statuses are set; done/conflicts datasets get that state and lose their lease; each
        `agreed` key is credited once per occurrence (records created as needed); each liar is
        flagged, its agreed count reset, disagreed + 1, and its trusted results become pending
        replicas again with their datasets back to pending (those datasets are returned).
        """
        ...

    async def worker_records(self, keys: Sequence[str]) -> list[WorkerRecord]:
        """The records of those keys that have one (unknown keys are left out), in no set order."""
        ...

    async def spot_checks(self, campaign_id: int) -> list[LeasedDataset]:
        """The campaign's spot-check datasets, in id order, each with its expected answer."""
        ...


class GeneratorLeaseStore(Protocol):
    """Which server process runs a campaign's generator (see `DatasetStore.add_datasets`)."""

    async def claim(self, campaign_id: int, owner: str, seconds: float) -> bool:
        """Take the lease, or renew it if `owner` holds it, until now + seconds; False while another holds it.

        Atomic across processes: of concurrent claimants of a free lease exactly one wins.
        """
        ...

    async def release(self, campaign_id: int, owner: str) -> None:
        """Give the lease up at once, if `owner` holds it."""
        ...


class PresenceStore(Protocol):
    """Which server processes are alive and how many workers each has connected, so that every process
    can show the workers of all of them (one row per process, renewed by its heartbeat)."""

    async def beat(self, process: str, workers: Mapping[int, int]) -> None:
        """Record that server process `process` is alive now, with `workers` connected workers per
        campaign id (0: workers not on a campaign yet); replaces its previous row. Rows of other
        processes not renewed for `PRESENCE_FORGET_SECONDS` (crashed processes) are deleted."""
        ...

    async def workers(self, max_age: float, exclude: str = "") -> dict[int, int]:
        """Connected workers per campaign id, summed over the processes whose row was renewed in the
        last `max_age` seconds, leaving out the process named `exclude`; campaigns without workers
        are left out."""
        ...

    async def leave(self, process: str) -> None:
        """Delete the row of `process` (its clean shutdown): its workers stop counting at once."""
        ...


# A presence row this old belongs to a process that died without saying goodbye: the next beat deletes it.
PRESENCE_FORGET_SECONDS = 3600.0


class Storage(
    UserStore,
    CampaignStore,
    DatasetStore,
    ResultStore,
    ResultStreamStore,
    VerificationStore,
    KernelVersionStore,
    AdminStore,
    Protocol,
):
    """A whole storage backend; `open_storage(url)` returns one."""

    @property
    def accounts(self) -> AccountStore:
        """The console's accounts, on the same database."""
        ...

    @property
    def queries(self) -> ConsoleQueries:
        """The console's reads, on the same database."""
        ...

    @property
    def generator_leases(self) -> GeneratorLeaseStore:
        """Generator leases, on the same database."""
        ...

    @property
    def credit(self) -> CreditStore:
        """Volunteers' credit, claims and leaderboards (`storage.credit`), on the same database."""
        ...

    @property
    def presence(self) -> PresenceStore:
        """The server processes' presence rows, on the same database."""
        ...

    @property
    def sites(self) -> SiteStore:
        """Registered sites (`storage/sites.py`), on the same database."""
        ...

    async def aclose(self) -> None:
        """Finish running calls and close connections; the storage is unusable afterwards."""
        ...


# What a plugin registers for a URL scheme: `await factory(url, threads)` opens a storage.
StorageFactory = Callable[[str, int], Awaitable[Storage]]

# protocol: ready
