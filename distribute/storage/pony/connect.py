"""How `PonyStorage` reaches its database: binding a URL to Pony, the threads storage calls run in,
and `Sessions`, which runs one synchronous function per call in its own `db_session` there.

Pony keeps one database connection per OS thread (in a thread-local pool) and gives no way to
close the connections of other threads. `trio.to_thread` runs work on a process-wide cache of
threads shared with all other blocking work, so even under a `CapacityLimiter(N)` storage calls
land on many different threads, each of which then keeps a connection: with N = 4 a server held
11 PostgreSQL connections, and closing the storage closed one of them. `StorageThreads` owns its
N threads instead, so a process holds exactly N connections and `close` disconnects every one.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import outcome
import trio
from pony.orm import Database, db_session

from ...errors import SettingsError
from .sql import SqlDialect

__all__ = ["SQLITE_SYNCHRONOUS", "Sessions", "StorageThreads", "bind", "is_postgres", "sqlite_synchronous"]

SQLITE_SYNCHRONOUS = ("off", "normal", "full", "extra")  # PRAGMA synchronous levels

T = TypeVar("T")
P = ParamSpec("P")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in ("postgres", "postgresql")


def sqlite_synchronous(url: str) -> str:
    """The `synchronous` level of a sqlite:///PATH?synchronous=LEVEL URL (NORMAL by default).

    See docs/architecture.md, "Durability": NORMAL loses nothing committed when the process is
    killed, but an OS crash or power loss may lose the last commits; FULL loses nothing then either.
    """
    level = "normal"
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name != "synchronous":
            raise SettingsError(f"unknown parameter {name!r} in the database URL; known: synchronous")
        if value.lower() not in SQLITE_SYNCHRONOUS:
            raise SettingsError(
                f"synchronous={value!r} in the database URL: use one of {', '.join(SQLITE_SYNCHRONOUS)}"
            )
        level = value.lower()
    return level.upper()


def bind(db: Database, url: str) -> dict[str, Any]:
    """Bind `db` to the database at `url`; returns psycopg2 connection arguments (empty for SQLite)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them. Pony would
        # resolve a relative name against the calling module's folder, so make it absolute here.
        path = unquote(parts.path)[1:]
        filename = ":sharedmemory:" if path in ("", ":memory:") else os.path.abspath(path)
        synchronous = sqlite_synchronous(url)

        def _tune(db: Database, connection: Any) -> None:
            # WAL: readers never block the writer. synchronous=NORMAL (the default): a committed
            # transaction survives a process crash (SIGKILL); only an OS crash may lose the last
            # commits. ?synchronous=full in the URL makes every commit durable against that too.
            # The busy timeout comes first: switching to WAL needs a moment of exclusive access,
            # and several processes opening a new database at once must wait, not fail.
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {synchronous}")

        db.on_connect(provider="sqlite")(_tune)
        db.bind(provider="sqlite", filename=filename, create_db=True)
        return {}
    if is_postgres(url):
        params = {
            "user": unquote(parts.username or "") or None,
            "password": unquote(parts.password or "") or None,
            "host": parts.hostname or None,
            "port": parts.port or None,
            "database": parts.path.lstrip("/") or None,
        }
        db.bind(provider="postgres", **params)
        return params
    raise SettingsError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgres://…")


class StorageThreads:
    """`size` long-lived threads running storage calls first come, first served; one connection each."""

    def __init__(self, size: int, name: str = "storage") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(size)]
        self._on_exit: Callable[[], None] = lambda: None
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
        self._on_exit()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` in one of the threads. Like `trio.to_thread.run_sync`, it cannot be cancelled
        halfway: a storage call always finishes (commits or rolls back) before the caller resumes."""
        await trio.lowlevel.checkpoint_if_cancelled()
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def job() -> None:
            result = outcome.capture(fn)
            with suppress(trio.RunFinishedError):  # the caller's trio run is gone: nobody waits
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put(job)
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def close(self, on_exit: Callable[[], None]) -> None:
        """Let every thread finish its queued calls, run `on_exit` in it (disconnect), and end.

        Blocking: call it from a thread (`trio.to_thread.run_sync`).
        """
        self._on_exit = on_exit
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


class Sessions:
    """Runs `fn(sql, *args)` in a storage thread inside a `db_session` of its own: one call, one transaction.

    Every public coroutine of the Pony backend is one of these calls, so the functions it runs are
    plain synchronous module-level code and return frozen dataclasses (an entity must not outlive
    its session). `sql` is set once the database is bound.
    """

    sql: SqlDialect

    def __init__(self, threads: StorageThreads) -> None:
        self.threads = threads

    async def run(self, fn: Callable[Concatenate[SqlDialect, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """In a plain `db_session`: for reads, and writes that need no lock taken up front."""
        sql = self.sql

        def call() -> T:
            with db_session:
                return fn(sql, *args, **kwargs)

        return await self.threads.run(call)

    async def run_immediate(self, fn: Callable[Concatenate[SqlDialect, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """In `db_session(immediate=True)`: the write lock first (SQLite's BEGIN IMMEDIATE), for read-then-write."""
        sql = self.sql

        def call() -> T:
            with db_session(immediate=True):
                return fn(sql, *args, **kwargs)

        return await self.threads.run(call)
