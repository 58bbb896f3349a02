"""Storage on Pony ORM: SQLite (default, embedded) or PostgreSQL (several server processes).

`PonyStorage` is the async face the rest of the server uses. Each public coroutine runs one
synchronous function in a worker thread (`trio.to_thread.run_sync`) under a CapacityLimiter,
inside its own `db_session`, and returns frozen dataclasses from `distribute.models`; no ORM entity
ever crosses an `await`. Accounts and campaigns go through the ORM; the per-dataset hot paths
are batched SQL in `distribute.storage.pony.sql`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import psycopg2
import trio
from pony.orm import Database, db_session, desc, select

from ...errors import LeaseLost, NotFound, SettingsError
from ...models import (
    Campaign,
    CampaignCounts,
    CampaignStatus,
    DatasetState,
    FailedTask,
    FinishedTask,
    KernelErrorSummary,
    LeasedDataset,
    ResultStatus,
    StoredResult,
    User,
)
from . import sql as hot
from .connect import StorageThreads, bind, is_postgres
from .entities import EXTRA_INDEXES, MIGRATIONS, SCHEMA_VERSION, define_entities
from .generator_leases import holds as holds_generator_lease
from .verdicts import VerificationStorage

__all__ = ["PonyStorage", "content_hash", "hash_token"]

T = TypeVar("T")
_ACTIVE = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)


def hash_token(token: str) -> str:
    """API tokens are 256-bit random strings, so a plain SHA-256 is the right (fast) hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def content_hash(kernel: str, static_dataset: str) -> str:
    digest = hashlib.sha256()
    for part in (kernel, static_dataset):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:32]


# Any constant: the key of the PostgreSQL advisory lock that serialises schema creation, so that
# several server processes starting at once on an empty database do not race to create tables.
_MIGRATION_LOCK = 0x64697374


class PonyStorage(VerificationStorage):
    """The platform's storage. Open with `await PonyStorage.open(url)`; close with `aclose()`."""

    sql: hot.SqlDialect

    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.db = Database()
        self.e = define_entities(self.db)
        # SQLite has one writer at a time anyway; one thread avoids lock contention entirely.
        # On PostgreSQL each thread holds one connection, so `threads` is the connection count.
        self._threads = StorageThreads(threads if is_postgres(url) else 1)

    @classmethod
    async def open(cls, url: str, threads: int = 4) -> PonyStorage:
        storage = cls(url, threads)
        try:
            # Binding connects (Pony inspects the server), so it too runs in a storage thread.
            await storage._run(storage._connect)
        except BaseException:
            await storage.aclose()
            raise
        return storage

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._threads.close, self.db.disconnect)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._threads.run(partial(fn, *args))

    # ------------------------------------------------------------------ schema

    def _connect(self) -> None:
        params = bind(self.db, self.url)
        self.sql = hot.SqlDialect(self.db)
        if not self.sql.postgres:
            self._migrate()
            return
        # A session-level lock on a connection of its own: closing it releases the lock.
        with closing(psycopg2.connect(**params)) as lock:
            lock.cursor().execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            self._migrate()

    def _migrate(self) -> None:
        # Tables that do not exist yet are created; columns of existing tables are not checked here
        # (an older database lacks the new ones until the steps below have run).
        self.db.generate_mapping(create_tables=True, check_tables=False)
        with db_session(immediate=True):
            meta = self.e["Meta"].get(key="schema_version")
            version = SCHEMA_VERSION if meta is None else int(meta.value)
            if version > SCHEMA_VERSION or (version < SCHEMA_VERSION and version not in MIGRATIONS):
                raise SettingsError(
                    f"database schema version {version}, this distribute uses {SCHEMA_VERSION}; "
                    "no migration is known for that step"
                )
            binary = "BYTEA" if self.sql.postgres else "BLOB"
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    self.sql.execute(statement.format(bytes=binary))
                version += 1
            for statement in EXTRA_INDEXES:
                self.sql.execute(statement)
            if meta is None:
                self.e["Meta"](key="schema_version", value=str(SCHEMA_VERSION))
            else:
                meta.value = str(SCHEMA_VERSION)
        self.db.check_tables()

    async def schema_version(self) -> int:
        return await self._run(self._schema_version)

    @db_session
    def _schema_version(self) -> int:
        return int(self.e["Meta"][("schema_version")].value)

    # ------------------------------------------------------------------ users and tokens

    async def create_user(self, email: str, password_hash: str | None = None) -> User:
        return await self._run(self._create_user, email, password_hash)

    @db_session
    def _create_user(self, email: str, password_hash: str | None) -> User:
        if self.e["User"].get(email=email) is not None:
            raise SettingsError(f"a user with e-mail {email} exists already")
        user = self.e["User"](email=email, password_hash=password_hash, created=_utcnow())
        user.flush()
        return _user(user)

    async def get_user(self, user_id: int) -> User | None:
        return await self._run(self._get_user, user_id)

    @db_session
    def _get_user(self, user_id: int) -> User | None:
        user = self.e["User"].get(id=user_id)
        return _user(user) if user else None

    async def user_by_email(self, email: str) -> User | None:
        return await self._run(self._user_by_email, email)

    @db_session
    def _user_by_email(self, email: str) -> User | None:
        user = self.e["User"].get(email=email)
        return _user(user) if user else None

    async def create_token(self, user_id: int, name: str = "") -> str:
        """Create an API token; the plain token is returned once and only its hash is stored."""
        return await self._run(self._create_token, user_id, name)

    @db_session
    def _create_token(self, user_id: int, name: str) -> str:
        token = "dst_" + secrets.token_urlsafe(32)
        self.e["ApiToken"](user=self.e["User"][user_id], token_hash=hash_token(token), name=name, created=_utcnow())
        return token

    async def user_for_token(self, token: str) -> User | None:
        return await self._run(self._user_for_token, token)

    @db_session
    def _user_for_token(self, token: str) -> User | None:
        row = self.e["ApiToken"].get(token_hash=hash_token(token))
        return _user(row.user) if row is not None and not row.revoked else None

    # ------------------------------------------------------------------ campaigns

    async def create_campaign(self, owner_id: int, **fields: Any) -> Campaign:
        return await self._run(self._create_campaign, owner_id, fields)

    @db_session
    def _create_campaign(self, owner_id: int, fields: dict[str, Any]) -> Campaign:
        row = self.e["Campaign"](
            owner=self.e["User"][owner_id],
            status=CampaignStatus.GENERATING,
            created=_utcnow(),
            content_hash=content_hash(fields["kernel"], fields.get("static_dataset", "")),
            **fields,
        )
        row.flush()
        return _campaign(row)

    async def get_campaign(self, campaign_id: int) -> Campaign | None:
        return await self._run(self._get_campaign, campaign_id)

    @db_session
    def _get_campaign(self, campaign_id: int) -> Campaign | None:
        row = self.e["Campaign"].get(id=campaign_id)
        return _campaign(row) if row else None

    async def list_campaigns(self, owner_id: int | None = None, *, active_only: bool = False) -> list[Campaign]:
        """Campaigns of one owner (or everybody's), newest first; deleted ones are left out."""
        return await self._run(self._list_campaigns, owner_id, active_only)

    @db_session
    def _list_campaigns(self, owner_id: int | None, active_only: bool) -> list[Campaign]:
        query = select(c for c in self.e["Campaign"] if not c.deleted)
        if owner_id is not None:
            query = query.filter(lambda c: c.owner.id == owner_id)
        if active_only:
            query = query.filter(lambda c: c.status in _ACTIVE)
        return [_campaign(row) for row in query.order_by(lambda c: desc(c.id))]

    async def set_deleted(self, campaign_id: int, deleted: bool) -> None:
        await self._run(self._set_deleted, campaign_id, deleted)

    @db_session
    def _set_deleted(self, campaign_id: int, deleted: bool) -> None:
        self._campaign_row(campaign_id).deleted = deleted

    async def set_status(self, campaign_id: int, status: str, error: str | None = None) -> None:
        await self._run(self._set_status, campaign_id, status, error)

    @db_session
    def _set_status(self, campaign_id: int, status: str, error: str | None) -> None:
        row = self._campaign_row(campaign_id)
        row.status = status
        row.generation_error = error

    def _campaign_row(self, campaign_id: int, *, lock: bool = True) -> Any:
        # Locked (SELECT … FOR UPDATE on PostgreSQL) before the ORM changes it: another server process
        # changing the row meanwhile would make Pony's optimistic check fail the whole call.
        row = self.e["Campaign"].get_for_update(id=campaign_id) if lock else self.e["Campaign"].get(id=campaign_id)
        if row is None:
            raise NotFound(f"campaign {campaign_id} does not exist")
        return row

    async def reset_campaign(self, campaign_id: int) -> None:
        """Forget every result and kernel error; every dataset becomes pending again."""
        await self._run(self._reset_campaign, campaign_id)

    @db_session(immediate=True)
    def _reset_campaign(self, campaign_id: int) -> None:
        # Not locked: store_outcomes locks datasets, then the campaign; taking them the other way
        # round here could deadlock with another process. Raw SQL only, so no optimistic check.
        self._campaign_row(campaign_id, lock=False)
        self.sql.execute("DELETE FROM result WHERE campaign = ?", (campaign_id,))
        self.sql.execute("DELETE FROM kernel_error WHERE campaign = ?", (campaign_id,))
        self.sql.execute(
            "UPDATE dataset SET state = ?, errors = 0, lease_owner = NULL, lease_until = NULL"
            " WHERE campaign = ? AND state <> ?",
            (DatasetState.PENDING, campaign_id, DatasetState.SPOT),
        )
        self.sql.execute(
            "UPDATE campaign SET compute_ms = 0, status = CASE WHEN status = ? THEN ? ELSE status END WHERE id = ?",
            (CampaignStatus.COMPLETE, CampaignStatus.RUNNING, campaign_id),
        )

    async def counts(self, campaign_id: int) -> CampaignCounts:
        return await self._run(self._counts, campaign_id)

    @db_session
    def _counts(self, campaign_id: int) -> CampaignCounts:
        return hot.counts(self.sql, campaign_id)

    async def complete_if_done(self, campaign_id: int) -> bool:
        """Mark a fully generated campaign complete when no dataset is pending or leased."""
        return await self._run(self._complete_if_done, campaign_id)

    @db_session(immediate=True)
    def _complete_if_done(self, campaign_id: int) -> bool:
        row = self._campaign_row(campaign_id)
        if row.status == CampaignStatus.COMPLETE:
            return True
        if row.status != CampaignStatus.RUNNING:
            return False
        open_rows = self.sql.query(
            "SELECT id FROM dataset WHERE campaign = ? AND state IN (?, ?) LIMIT 1",
            (campaign_id, DatasetState.PENDING, DatasetState.LEASED),
        )
        if open_rows:
            return False
        row.status = CampaignStatus.COMPLETE
        return True

    # ------------------------------------------------------------------ datasets and leases

    async def add_datasets(
        self, campaign_id: int, payloads: Sequence[bytes], *, exhausted: bool = False, generator: str | None = None
    ) -> int:
        """Append generated datasets (and, if `exhausted`, mark generation finished); returns the new total.

        `generator` names the process that holds the campaign's generator lease; if it no longer
        does (another process took over), nothing is stored and `LeaseLost` is raised.
        """
        return await self._run(self._add_datasets, campaign_id, payloads, exhausted, generator)

    @db_session(immediate=True)
    def _add_datasets(self, campaign_id: int, payloads: Sequence[bytes], exhausted: bool, generator: str | None) -> int:
        if generator is not None and not holds_generator_lease(self.sql, campaign_id, generator):
            raise LeaseLost(f"campaign {campaign_id}: the generator lease of {generator} has expired")
        row = self._campaign_row(campaign_id)
        hot.insert_datasets(self.sql, campaign_id, row.generated, payloads)
        row.generated += len(payloads)
        if exhausted and row.status == CampaignStatus.GENERATING:
            row.status = CampaignStatus.RUNNING
        return row.generated

    async def pending_count(self, campaign_id: int, *, at_most: int) -> int:
        """Pending datasets of a campaign, counted up to `at_most` (the generator only asks "more than N?")."""
        return await self._run(self._pending_count, campaign_id, at_most)

    @db_session
    def _pending_count(self, campaign_id: int, at_most: int) -> int:
        # A bounded count costs the same at any campaign size; COUNT(*) of every pending row was
        # O(N) per generated batch, O(N^2) over a campaign.
        rows = self.sql.query(
            "SELECT COUNT(*) FROM (SELECT 1 FROM dataset WHERE campaign = ? AND state = ? LIMIT ?) AS bounded",
            (campaign_id, DatasetState.PENDING, at_most),
        )
        return rows[0][0]

    async def lease(
        self, campaign_id: int, n: int, owner: str, seconds: float, *, replicated: bool = False
    ) -> list[LeasedDataset]:
        return await self._run(self._lease, campaign_id, n, owner, seconds, replicated)

    @db_session(immediate=True)
    def _lease(self, campaign_id: int, n: int, owner: str, seconds: float, replicated: bool) -> list[LeasedDataset]:
        return hot.lease(self.sql, campaign_id, n, owner, time.time() + seconds, replicated)

    async def renew_leases(self, owner: str, seconds: float) -> None:
        await self._run(self._renew_leases, owner, seconds)

    @db_session(immediate=True)
    def _renew_leases(self, owner: str, seconds: float) -> None:
        hot.renew_leases(self.sql, owner, time.time() + seconds)

    async def release(self, owner: str, dataset_ids: Sequence[int]) -> None:
        await self._run(self._release, owner, dataset_ids)

    @db_session(immediate=True)
    def _release(self, owner: str, dataset_ids: Sequence[int]) -> None:
        hot.release(self.sql, owner, dataset_ids)

    async def expire_leases(self) -> int:
        return await self._run(self._expire_leases)

    @db_session(immediate=True)
    def _expire_leases(self) -> int:
        return hot.expire_leases(self.sql, time.time())

    async def store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        return await self._run(self._store_outcomes, finished, failed, max_task_errors)

    @db_session(immediate=True)
    def _store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        return hot.store_outcomes(self.sql, finished, failed, max_task_errors)

    # ------------------------------------------------------------------ results and errors

    async def results(
        self, campaign_id: int, *, after: tuple[int, int] = (0, 0), limit: int = 1000, verified: bool = False
    ) -> list[StoredResult]:
        """Stored results in dataset order, with the dataset each was computed from.

        Pages by key (`after` = the last row's (dataset_id, result_id)), never by OFFSET, so reading
        page k costs the same as reading page 1. One row per settled dataset (its canonical or
        trusted result), plus the pending replicas and conflicts of unsettled ones; results that
        merely agreed with the canonical one, or disagreed with it, are left out. `verified`: only
        results a quorum (or a trusted worker) settled.
        """
        return await self._run(self._results, campaign_id, after, limit, verified)

    @db_session
    def _results(self, campaign_id: int, after: tuple[int, int], limit: int, verified: bool) -> list[StoredResult]:
        wanted = (
            (ResultStatus.CANONICAL, ResultStatus.TRUSTED)
            if verified
            else (
                ResultStatus.ACCEPTED,
                ResultStatus.CANONICAL,
                ResultStatus.TRUSTED,
                ResultStatus.PENDING,
                ResultStatus.CONFLICT,
            )
        )
        rows = self.sql.query(
            "SELECT r.dataset, d.payload, r.payload, r.compute_ms, r.worker, r.host, r.created, r.id, r.status"
            " FROM result r JOIN dataset d ON d.id = r.dataset"
            # A row-value comparison, unlike the equivalent OR, is an index range condition on
            # (campaign, dataset, id) in both SQLite and PostgreSQL; the redundant `d.id >= ?` lets
            # PostgreSQL's merge join start there too. Page k then costs what page 1 costs.
            " WHERE r.campaign = ? AND (r.dataset, r.id) > (?, ?) AND d.id >= ?"
            f" AND r.status IN ({', '.join('?' * len(wanted))})"
            " ORDER BY r.dataset, r.id LIMIT ?",
            (campaign_id, after[0], after[1], after[0], *wanted, limit),
        )
        return [
            StoredResult(
                dataset_id=row[0],
                dataset=bytes(row[1]),
                value=None if row[2] is None else bytes(row[2]),
                compute_ms=row[3],
                worker=row[4],
                host=row[5] or "",
                created=datetime.fromtimestamp(row[6], UTC),
                id=row[7],
                status=row[8],
            )
            for row in rows
        ]

    async def kernel_errors(self, campaign_id: int, limit: int = 100) -> list[KernelErrorSummary]:
        return await self._run(self._kernel_errors, campaign_id, limit)

    @db_session
    def _kernel_errors(self, campaign_id: int, limit: int) -> list[KernelErrorSummary]:
        rows = self.sql.query(
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


def _utcnow() -> datetime:
    """Naive UTC: Pony stores datetimes without a zone, so we add UTC back when reading."""
    return datetime.now(UTC).replace(tzinfo=None)


def _user(row: Any) -> User:
    return User(id=row.id, email=row.email, created=row.created.replace(tzinfo=UTC))


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row.id,
        owner_id=row.owner.id,
        name=row.name,
        description=row.description or "",
        kernel=row.kernel,
        static_dataset=row.static_dataset or "",
        generator=row.generator,
        priority=row.priority,
        weight=row.weight,
        replication=row.replication,
        task_timeout=row.task_timeout,
        status=row.status,
        generation_error=row.generation_error,
        deleted=row.deleted,
        created=row.created.replace(tzinfo=UTC),
        content_hash=row.content_hash,
        generated=row.generated,
        compute_seconds=row.compute_ms / 1000.0,
        comparator=row.comparator or "",
    )
