"""Console storage: accounts (sessions, password resets, API tokens, deletion) and the console's reads.

The entities are declared by `define_account_entities` (called from entities.py). `AccountStore` and
`ConsoleQueries` sit beside `PonyStorage` and use its database, entities and worker thread
(`storage._run`): every public coroutine runs one synchronous function in its own `db_session` and
returns frozen dataclasses, as PonyStorage does. Secrets (session and reset tokens) are stored only
as SHA-256 hashes: they are 256-bit random strings, so a fast hash is enough and a database leak
yields nothing usable.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pony.orm import Database, Optional, Required, db_session, select

from ...models import StoredResult, User

if TYPE_CHECKING:
    from .store import PonyStorage

__all__ = [
    "AccountStore",
    "ApiTokenInfo",
    "ConsoleQueries",
    "HostShare",
    "WebSessionInfo",
    "define_account_entities",
    "secret_hash",
]


def define_account_entities(db: Database, user_entity: Any) -> dict[str, Any]:
    """Declare the console's entities on `db`, referring to the `User` entity."""

    class WebSession(db.Entity):
        _table_ = "web_session"
        user = Required(user_entity)
        token_hash = Required(str, unique=True)
        csrf_token = Required(str)
        created = Required(datetime)
        expires = Required(datetime, index=True)
        user_agent = Optional(str)

    class PasswordReset(db.Entity):
        _table_ = "password_reset"
        user = Required(user_entity)
        token_hash = Required(str, unique=True)
        created = Required(datetime)
        expires = Required(datetime)
        used = Required(bool, default=False)

    return {"WebSession": WebSession, "PasswordReset": PasswordReset}


def secret_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    """Naive UTC, as Pony stores datetimes (see ponystore._utcnow)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _user(row: Any) -> User:
    return User(id=row.id, email=row.email, created=row.created.replace(tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class WebSessionInfo:
    user: User
    csrf_token: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    id: int
    name: str
    created: datetime
    revoked: bool


@dataclass(frozen=True, slots=True)
class HostShare:
    """One host site's contribution to a campaign."""

    host: str
    results: int
    compute_seconds: float


class AccountStore:
    """Accounts, console sessions, password resets and API tokens."""

    def __init__(self, storage: PonyStorage) -> None:
        self.storage = storage
        self.e = storage.e

    # ------------------------------------------------------------------ server secret

    async def secret(self) -> bytes:
        """A random key kept in the database, so every server process signs with the same one."""
        return bytes.fromhex(await self.storage._run(self._secret))

    @db_session(immediate=True)
    def _secret(self) -> str:
        # Several processes starting at once on a new PostgreSQL database would each find no row
        # and insert one: ON CONFLICT lets exactly one insert win, and everybody reads the winner's.
        self.storage.sql.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            ("console_secret", secrets.token_hex(32)),
        )
        rows = self.storage.sql.query("SELECT value FROM meta WHERE key = ?", ("console_secret",))
        return rows[0][0]

    # ------------------------------------------------------------------ credentials

    async def credentials(self, email: str) -> tuple[User, str | None] | None:
        """The user with this e-mail and their password hash (None: no console password)."""
        return await self.storage._run(self._credentials, email)

    @db_session
    def _credentials(self, email: str) -> tuple[User, str | None] | None:
        row = self.e["User"].get(email=email)
        return (_user(row), row.password_hash) if row else None

    async def password_hash(self, user_id: int) -> str | None:
        return await self.storage._run(self._password_hash, user_id)

    @db_session
    def _password_hash(self, user_id: int) -> str | None:
        row = self.e["User"].get(id=user_id)
        return row.password_hash if row else None

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash and end every session of the user."""
        await self.storage._run(self._set_password, user_id, password_hash)

    @db_session(immediate=True)
    def _set_password(self, user_id: int, password_hash: str) -> None:
        self._replace_password(self.e["User"][user_id], password_hash)

    def _replace_password(self, user: Any, password_hash: str) -> None:
        """Inside a db_session: a new password ends every session (a thief's too)."""
        user.password_hash = password_hash
        select(s for s in self.e["WebSession"] if s.user == user).delete(bulk=True)

    # ------------------------------------------------------------------ sessions

    async def create_session(self, user_id: int, lifetime: timedelta, user_agent: str = "") -> tuple[str, str]:
        """A new console session: returns (cookie token, CSRF token); only the token's hash is kept."""
        return await self.storage._run(self._create_session, user_id, lifetime, user_agent)

    @db_session(immediate=True)
    def _create_session(self, user_id: int, lifetime: timedelta, user_agent: str) -> tuple[str, str]:
        now = _now()
        # Housekeeping on sign-in (rare) rather than a timer: expired sessions are useless anyway.
        select(s for s in self.e["WebSession"] if s.expires < now).delete(bulk=True)
        token = "dss_" + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self.e["WebSession"](
            user=self.e["User"][user_id],
            token_hash=secret_hash(token),
            csrf_token=csrf,
            created=now,
            expires=now + lifetime,
            user_agent=user_agent[:300],
        )
        return token, csrf

    async def session(self, token: str) -> WebSessionInfo | None:
        """The live session for a cookie token, or None (unknown, ended or expired)."""
        return await self.storage._run(self._session, token)

    @db_session
    def _session(self, token: str) -> WebSessionInfo | None:
        row = self.e["WebSession"].get(token_hash=secret_hash(token))
        if row is None or row.expires < _now():
            return None
        return WebSessionInfo(_user(row.user), row.csrf_token, row.expires.replace(tzinfo=UTC))

    async def end_session(self, token: str) -> None:
        await self.storage._run(self._end_session, token)

    @db_session(immediate=True)
    def _end_session(self, token: str) -> None:
        row = self.e["WebSession"].get(token_hash=secret_hash(token))
        if row is not None:
            row.delete()

    # ------------------------------------------------------------------ password resets

    async def create_reset(self, user_id: int, lifetime: timedelta) -> str:
        """A single-use reset token (earlier unused ones of the user stop working)."""
        return await self.storage._run(self._create_reset, user_id, lifetime)

    @db_session(immediate=True)
    def _create_reset(self, user_id: int, lifetime: timedelta) -> str:
        user = self.e["User"][user_id]
        select(r for r in self.e["PasswordReset"] if r.user == user).delete(bulk=True)
        token = secrets.token_urlsafe(32)
        now = _now()
        self.e["PasswordReset"](user=user, token_hash=secret_hash(token), created=now, expires=now + lifetime)
        return token

    async def reset_valid(self, token: str) -> bool:
        return await self.storage._run(self._reset_valid, token)

    @db_session
    def _reset_valid(self, token: str) -> bool:
        row = self.e["PasswordReset"].get(token_hash=secret_hash(token))
        return row is not None and not row.used and row.expires >= _now()

    async def redeem_reset(self, token: str, password_hash: str) -> User | None:
        """Use a reset token: set the password, end every session; None if the token is not valid.

        One transaction, so two concurrent uses of the same token cannot both succeed.
        """
        return await self.storage._run(self._redeem_reset, token, password_hash)

    @db_session(immediate=True)
    def _redeem_reset(self, token: str, password_hash: str) -> User | None:
        row = self.e["PasswordReset"].get_for_update(token_hash=secret_hash(token))
        if row is None or row.used or row.expires < _now():
            return None
        row.used = True
        self._replace_password(row.user, password_hash)
        return _user(row.user)

    # ------------------------------------------------------------------ API tokens

    async def tokens(self, user_id: int) -> list[ApiTokenInfo]:
        return await self.storage._run(self._tokens, user_id)

    @db_session
    def _tokens(self, user_id: int) -> list[ApiTokenInfo]:
        rows = select(t for t in self.e["ApiToken"] if t.user.id == user_id).order_by(lambda t: t.id)
        return [ApiTokenInfo(t.id, t.name or "", t.created.replace(tzinfo=UTC), t.revoked) for t in rows[:]]

    async def revoke_token(self, user_id: int, token_id: int) -> bool:
        """Revoke one of the user's tokens; False if the user has no such token."""
        return await self.storage._run(self._revoke_token, user_id, token_id)

    @db_session(immediate=True)
    def _revoke_token(self, user_id: int, token_id: int) -> bool:
        row = self.e["ApiToken"].get(id=token_id)
        if row is None or row.user.id != user_id:
            return False
        row.revoked = True
        return True

    # ------------------------------------------------------------------ deletion

    async def deleted_campaign_ids(self, user_id: int) -> list[int]:
        return await self.storage._run(self._deleted_campaign_ids, user_id)

    @db_session
    def _deleted_campaign_ids(self, user_id: int) -> list[int]:
        query = select(c.id for c in self.e["Campaign"] if c.owner.id == user_id and c.deleted)
        return sorted(query[:], reverse=True)

    async def delete_account(self, user_id: int) -> None:
        """Remove the user and everything they own: campaigns, datasets, results, tokens, sessions."""
        await self.storage._run(self._delete_account, user_id)

    @db_session(immediate=True)
    def _delete_account(self, user_id: int) -> None:
        sql = self.storage.sql
        owned = "(SELECT id FROM campaign WHERE owner = ?)"
        # The bulk rows by SQL (the ORM would load each one); then the ORM cascades the rest.
        for table in ("result", "kernel_error", "dataset"):
            sql.execute(f"DELETE FROM {table} WHERE campaign IN {owned}", (user_id,))
        user = self.e["User"].get(id=user_id)
        if user is not None:
            user.delete()


class ConsoleQueries:
    """The reads only the console needs: one result, pages of results, hosts, throughput, samples."""

    def __init__(self, storage: PonyStorage) -> None:
        self.storage = storage

    async def result_count(self, campaign_id: int) -> int:
        return await self.storage._run(self._result_count, campaign_id)

    @db_session
    def _result_count(self, campaign_id: int) -> int:
        return self.storage.sql.query("SELECT COUNT(*) FROM result WHERE campaign = ?", (campaign_id,))[0][0]

    _RESULT_COLUMNS = "r.id, r.dataset, d.payload, r.payload, r.compute_ms, r.worker, r.host, r.created"

    async def results_page(self, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
        """Results in dataset order; OFFSET paging is fine for a human paging through a table."""
        return await self.storage._run(self._results_page, campaign_id, offset, limit)

    @db_session
    def _results_page(self, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
        rows = self.storage.sql.query(
            f"SELECT {self._RESULT_COLUMNS} FROM result r JOIN dataset d ON d.id = r.dataset"
            " WHERE r.campaign = ? ORDER BY r.dataset, r.id LIMIT ? OFFSET ?",
            (campaign_id, limit, offset),
        )
        return [_stored(row) for row in rows]

    async def result(self, campaign_id: int, result_id: int) -> StoredResult | None:
        """One result, only if it belongs to this campaign."""
        return await self.storage._run(self._result, campaign_id, result_id)

    @db_session
    def _result(self, campaign_id: int, result_id: int) -> StoredResult | None:
        rows = self.storage.sql.query(
            f"SELECT {self._RESULT_COLUMNS} FROM result r JOIN dataset d ON d.id = r.dataset"
            " WHERE r.campaign = ? AND r.id = ?",
            (campaign_id, result_id),
        )
        return _stored(rows[0]) if rows else None

    async def hosts(self, campaign_id: int) -> list[HostShare]:
        return await self.storage._run(self._hosts, campaign_id)

    @db_session
    def _hosts(self, campaign_id: int) -> list[HostShare]:
        rows = self.storage.sql.query(
            "SELECT COALESCE(host, ''), COUNT(*), COALESCE(SUM(compute_ms), 0) FROM result WHERE campaign = ?"
            " GROUP BY COALESCE(host, '') ORDER BY COUNT(*) DESC LIMIT 50",
            (campaign_id,),
        )
        return [HostShare(row[0], row[1], row[2] / 1000.0) for row in rows]

    async def throughput(self, campaign_id: int, buckets: int = 60) -> tuple[float, list[tuple[float, int]]]:
        """Results over the campaign's life: (bucket width in s, [(bucket start epoch, results)])."""
        return await self.storage._run(self._throughput, campaign_id, buckets)

    @db_session
    def _throughput(self, campaign_id: int, buckets: int) -> tuple[float, list[tuple[float, int]]]:
        sql = self.storage.sql
        first, last = sql.query("SELECT MIN(created), MAX(created) FROM result WHERE campaign = ?", (campaign_id,))[0]
        if first is None:
            return 1.0, []
        width = max(1.0, float(int((last - first) / buckets) + 1))
        # PostgreSQL's CAST rounds where SQLite's truncates; FLOOR is not in every SQLite build.
        bucket = "FLOOR((created - ?) / ?)" if sql.postgres else "CAST((created - ?) / ? AS INTEGER)"
        rows = sql.query(
            f"SELECT {bucket} AS b, COUNT(*) FROM result WHERE campaign = ? GROUP BY b ORDER BY b",
            (first, width, campaign_id),
        )
        return width, [(first + int(row[0]) * width, row[1]) for row in rows]

    async def sample_datasets(self, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
        """The campaign's first n datasets as stored (msgpack): what the execute page runs."""
        return await self.storage._run(self._sample_datasets, campaign_id, n)

    @db_session
    def _sample_datasets(self, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
        rows = self.storage.sql.query(
            "SELECT id, payload FROM dataset WHERE campaign = ? ORDER BY id LIMIT ?", (campaign_id, n)
        )
        return [(row[0], bytes(row[1])) for row in rows]


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
    )
