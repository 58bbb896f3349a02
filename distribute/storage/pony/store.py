"""`PonyStorage`: the `Storage` protocol on Pony ORM, SQLite (default, embedded) or PostgreSQL (several processes).

Each public coroutine is one call of a synchronous module-level function in a storage thread
inside its own `db_session` (`connect.Sessions`), returning frozen dataclasses from
`distribute.models`; no ORM entity ever crosses an `await`. Accounts and campaigns go through the
ORM (`accounts`, `campaigns`); the per-dataset hot paths are batched SQL (`sql`); votes and
verdicts are in `verdicts`, reads of results in `queries`. The semantics each call keeps are
documented once, on the protocols in `distribute.storage.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from functools import partial
from typing import Any, TypeVar

import psycopg2
import trio
from pony.orm import Database, db_session

from ...errors import SettingsError
from ...models import (
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
from ..base import AccountUsage
from ..stream import START, StreamPage
from . import accounts, campaigns, queries
from . import sql as hot
from . import verdicts as verification
from .accounts import PonyAccounts
from .admin import PonyAdmin
from .connect import Sessions, StorageThreads, bind, is_postgres
from .credit import PonyCredit
from .entities import EXTRA_INDEXES, MIGRATIONS, SCHEMA_VERSION, define_entities
from .generator_leases import PonyGeneratorLeases
from .presence import PonyPresence
from .queries import PonyConsoleQueries
from .sites import PonySites

__all__ = ["PonyStorage"]

T = TypeVar("T")

# Any constant: the key of the PostgreSQL advisory lock that serialises schema creation, so that
# several server processes starting at once on an empty database do not race to create tables.
_MIGRATION_LOCK = 0x64697374


def _schema_version(sql: hot.SqlDialect) -> int:
    return int(sql.e["Meta"][("schema_version")].value)


class PonyStorage(PonyAdmin):
    """The Pony backend. Open with `await PonyStorage.open(url)`; close with `aclose()`."""

    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.db = Database()
        self.e = define_entities(self.db)
        # SQLite has one writer at a time anyway; one thread avoids lock contention entirely.
        # On PostgreSQL each thread holds one connection, so `threads` is the connection count.
        self._threads = StorageThreads(threads if is_postgres(url) else 1)
        self._sessions = Sessions(self._threads)
        self.accounts = PonyAccounts(self._sessions)
        self.queries = PonyConsoleQueries(self._sessions)
        self.credit = PonyCredit(self._sessions)
        self.generator_leases = PonyGeneratorLeases(self._sessions)
        self.presence = PonyPresence(self._sessions)
        self.sites = PonySites(self._sessions)

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
        """Run `fn(*args)` in a storage thread, outside any db_session (it opens its own)."""
        return await self._threads.run(partial(fn, *args))

    @property
    def sql(self) -> hot.SqlDialect:
        """Raw SQL on this storage's database (inside a db_session, on a storage thread)."""
        return self._sessions.sql

    # ------------------------------------------------------------------ schema

    def _connect(self) -> None:
        params = bind(self.db, self.url)
        self._sessions.sql = hot.SqlDialect(self.db, self.e)
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
        return await self._sessions.run(_schema_version)

    # ------------------------------------------------------------------ users and tokens

    async def create_user(
        self, email: str, password_hash: str | None = None, *, verified: bool = True, admin: bool = False
    ) -> User:
        return await self._sessions.run(accounts.create_user, email, password_hash, verified, admin)

    async def get_user(self, user_id: int) -> User | None:
        return await self._sessions.run(accounts.get_user, user_id)

    async def user_by_email(self, email: str) -> User | None:
        return await self._sessions.run(accounts.user_by_email, email)

    async def create_token(self, user_id: int, name: str = "") -> str:
        return await self._sessions.run(accounts.create_token, user_id, name)

    async def user_for_token(self, token: str) -> User | None:
        return await self._sessions.run(accounts.user_for_token, token)

    # ------------------------------------------------------------------ campaigns

    async def create_campaign(
        self, owner_id: int, *, spot_checks: Sequence[tuple[bytes, bytes]] = (), **fields: Any
    ) -> Campaign:
        return await self._sessions.run(campaigns.create_campaign, owner_id, spot_checks, fields)

    async def get_campaign(self, campaign_id: int) -> Campaign | None:
        return await self._sessions.run(campaigns.get_campaign, campaign_id)

    async def list_campaigns(self, owner_id: int | None = None, *, active_only: bool = False) -> list[Campaign]:
        return await self._sessions.run(campaigns.list_campaigns, owner_id, active_only)

    async def set_deleted(self, campaign_id: int, deleted: bool) -> None:
        await self._sessions.run(campaigns.set_deleted, campaign_id, deleted)

    async def set_status(self, campaign_id: int, status: str, error: str | None = None) -> None:
        await self._sessions.run(campaigns.set_status, campaign_id, status, error)

    async def reset_campaign(self, campaign_id: int) -> None:
        await self._sessions.run_immediate(campaigns.reset_campaign, campaign_id)

    async def update_kernel(
        self, campaign_id: int, kernel: str, static_dataset: str, *, recompute: bool = False
    ) -> Campaign:
        return await self._sessions.run_immediate(
            campaigns.update_kernel, campaign_id, kernel, static_dataset, recompute
        )

    async def counts(self, campaign_id: int) -> CampaignCounts:
        return await self._sessions.run(hot.counts, campaign_id)

    async def account_usage(self, owner_id: int, *, result_bytes: bool = True) -> AccountUsage:
        return await self._sessions.run(hot.account_usage, owner_id, result_bytes)

    async def complete_if_done(self, campaign_id: int) -> bool:
        return await self._sessions.run_immediate(campaigns.complete_if_done, campaign_id)

    async def change_status(
        self, campaign_id: int, allowed: Sequence[str], status: str, reason: str | None = None
    ) -> Campaign | None:
        return await self._sessions.run_immediate(campaigns.change_status, campaign_id, allowed, status, reason)

    async def add_open_datasets(self, campaign_id: int, payloads: Sequence[bytes]) -> int | None:
        return await self._sessions.run_immediate(campaigns.add_open_datasets, campaign_id, payloads)

    async def close_campaign(self, campaign_id: int) -> bool:
        return await self._sessions.run_immediate(campaigns.close_campaign, campaign_id)

    # ------------------------------------------------------------------ datasets and leases

    async def add_datasets(
        self, campaign_id: int, payloads: Sequence[bytes], *, exhausted: bool = False, generator: str | None = None
    ) -> int:
        return await self._sessions.run_immediate(campaigns.add_datasets, campaign_id, payloads, exhausted, generator)

    async def pending_count(self, campaign_id: int, *, at_most: int) -> int:
        return await self._sessions.run(campaigns.pending_count, campaign_id, at_most)

    async def lease(
        self, campaign_id: int, n: int, owner: str, seconds: float, *, replicated: bool = False
    ) -> list[LeasedDataset]:
        return await self._sessions.run_immediate(hot.lease, campaign_id, n, owner, seconds, replicated)

    async def renew_leases(self, owner: str, seconds: float) -> None:
        await self._sessions.run_immediate(hot.renew_leases, owner, seconds)

    async def release(self, owner: str, dataset_ids: Sequence[int]) -> None:
        await self._sessions.run_immediate(hot.release, owner, dataset_ids)

    async def expire_leases(self) -> int:
        return await self._sessions.run_immediate(hot.expire_leases)

    async def save_checkpoints(self, owner: str, states: Mapping[int, bytes]) -> int:
        return await self._sessions.run_immediate(hot.save_checkpoints, owner, states) if states else 0

    async def store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        return await self._sessions.run_immediate(hot.store_outcomes, finished, failed, max_task_errors)

    # ------------------------------------------------------------------ results and errors

    async def results(
        self,
        campaign_id: int,
        *,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
        verified: bool = False,
        every_version: bool = False,
    ) -> list[StoredResult]:
        return await self._sessions.run(queries.results, campaign_id, after, limit, verified, every_version)

    async def kernel_errors(self, campaign_id: int, limit: int = 100) -> list[KernelErrorSummary]:
        return await self._sessions.run(queries.kernel_errors, campaign_id, limit)

    async def result_stream(self, campaign_id: int, *, after: tuple[int, int] = START, limit: int = 1000) -> StreamPage:
        return await self._sessions.run(queries.result_stream, campaign_id, after, limit)

    async def kernel_error_groups(self, campaign_id: int, limit: int = 20, examples: int = 3) -> list[KernelErrorGroup]:
        return await self._sessions.run(queries.kernel_error_groups, campaign_id, limit, examples)

    # ------------------------------------------------------------------ verification

    async def replica_votes(self, dataset_ids: Sequence[int]) -> dict[int, list[Vote]]:
        return await self._sessions.run(verification.replica_votes, dataset_ids)

    async def apply_verdicts(self, verdicts: Verdicts) -> list[int]:
        return await self._sessions.run_immediate(verification.apply_verdicts, verdicts)

    async def worker_records(self, keys: Sequence[str]) -> list[WorkerRecord]:
        return await self._sessions.run(verification.worker_records, keys)

    async def spot_checks(self, campaign_id: int) -> list[LeasedDataset]:
        return await self._sessions.run(verification.spot_checks, campaign_id)
