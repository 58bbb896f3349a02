"""A throwaway PostgreSQL cluster for the tests: `fresh_database()` returns the URL of a new, empty database.

The cluster is built from the Debian `postgresql` package's binaries (initdb, pg_ctl under
/usr/lib/postgresql/<major>/bin), started lazily on the first call in a fresh temporary directory,
and stopped and deleted when the test session ends (pytest hook), when the interpreter exits
(atexit), or, should pytest itself be SIGKILLed, by a small watchdog process that notices its
stdin pipe closing. It listens on a Unix socket inside that directory and on 127.0.0.1 at a free
port, trusts every local connection (it is throwaway), and runs with fsync off.

PostgreSQL refuses to run as root, so as root the cluster runs as the unprivileged `postgres`
system user (created with useradd if missing). If the cluster cannot be started this raises
`PostgresUnavailable` with PostgreSQL's own log: the PostgreSQL tests fail, they are never skipped.

Why not pytest-postgresql: it is a fixture plugin, but `fresh_database()` is also called from plain
functions (tests/conftest.py's `database_url`) and the scale-out test hands the URL to separate
server processes; it also drives pg_ctl as the current user (root here, which PostgreSQL refuses)
and would add psycopg 3 and another dependency. A hundred lines of subprocess calls do the job.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg2

from tests.support.ports import free_port

__all__ = ["PostgresUnavailable", "fresh_database", "stop_cluster"]

SYSTEM_USER = "postgres"  # the unprivileged account that owns and runs the cluster when we are root
ROLE = "postgres"  # the cluster's superuser role; every test database belongs to it

# Run in the watchdog process: block until the parent (pytest) goes away, then remove the cluster.
_WATCHDOG = """
import shutil, subprocess, sys
from tests.support.ports import free_port
sys.stdin.buffer.read()
subprocess.run(sys.argv[1:-1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(sys.argv[-1], ignore_errors=True)
"""


class PostgresUnavailable(RuntimeError):
    """The throwaway cluster could not be created or started."""


def _binaries() -> Path:
    """The newest installed major version's bin directory (Debian keeps one per major version)."""
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{p}/pg_ctl", os.X_OK)]
    if not candidates:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's `postgresql` "
            "package (`make setup` does)"
        )
    return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class _Cluster:
    def __init__(self) -> None:
        self.bin = _binaries()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            _ensure_system_user()
        # /tmp, not $TMPDIR: the postgres user must be able to reach the directory.
        self.dir = Path(tempfile.mkdtemp(prefix="distribute-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.watchdog: subprocess.Popen[bytes] | None = None
        if self.as_root:
            account = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", SYSTEM_USER, "--", *argv] if self.as_root else list(argv)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(self._command(*argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                "cannot start the throwaway PostgreSQL cluster for the tests: "
                f"`{' '.join(argv)}` failed with exit code {done.returncode}:\n{done.stdout}{done.stderr}\n"
                f"server log ({self.log}):\n{log}"
            )

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *self._stop_command(), str(self.dir)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for pytest must not kill the watchdog first
        )
        for attempt in range(3):  # the free port may be taken between picking and binding it
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                # Every test opens a storage with a few connections, and the scale-out test runs
                # three servers; some storages are never closed by their tests.
                " -c max_connections=400 -c shared_buffers=32MB"
                # Transactions are short by design (docs/architecture.md, Durability): one left open
                # or waiting on a lock for this long is a bug, and fails its test instead of hanging.
                " -c idle_in_transaction_session_timeout=30s -c lock_timeout=30s"
            )
            try:
                self._run(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
                )
                return
            except PostgresUnavailable:
                if attempt == 2 or "already in use" not in self.log.read_text(errors="replace"):
                    raise

    def _stop_command(self) -> list[str]:
        return self._command(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        subprocess.run(self._stop_command(), capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.stdin.close()  # type: ignore[union-attr]  # lets it finish (nothing left to do)
            self.watchdog.wait(timeout=30)

    def create_database(self, name: str) -> str:
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return f"postgres://{ROLE}@127.0.0.1:{self.port}/{name}"


def _ensure_system_user() -> None:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
        )


_lock = threading.Lock()
_cluster: _Cluster | None = None
_failure: PostgresUnavailable | None = None
_names = itertools.count(1)


def fresh_database() -> str:
    """Create a new empty database on the session's cluster (started on first use); return its URL."""
    global _cluster, _failure
    with _lock:
        if _failure is not None:
            raise _failure  # one failed start is enough: do not retry initdb for every test
        if _cluster is None:
            cluster: _Cluster | None = None
            try:
                cluster = _Cluster()
                cluster.start()
            except Exception as exc:
                if cluster is not None:
                    cluster.stop()
                if isinstance(exc, PostgresUnavailable):
                    _failure = exc
                    raise
                _failure = PostgresUnavailable(f"cannot start the throwaway PostgreSQL cluster for the tests: {exc!r}")
                raise _failure from exc
            _cluster = cluster
            atexit.register(stop_cluster)
        return _cluster.create_database(f"distribute_test_{os.getpid()}_{next(_names)}")


def stop_cluster() -> None:
    """Stop and delete the cluster, if one was started (idempotent)."""
    global _cluster
    with _lock:
        cluster, _cluster = _cluster, None
    if cluster is not None:
        cluster.stop()


def pytest_sessionfinish() -> None:
    """Pytest hook, active where this module is a plugin (`pytest_plugins = ["tests.support.pg"]` in tests/conftest.py).

    Test modules that use the cluster directly also stop it from a session-scoped fixture.
    """
    stop_cluster()
