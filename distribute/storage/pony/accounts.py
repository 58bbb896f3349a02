"""Accounts on Pony: users and API tokens, and the console's sessions, password resets and deletion.

Module-level functions run in a storage thread inside the `db_session` that `Sessions` opens, and
return frozen dataclasses. `PonyAccounts` is the backend's `storage.accounts`. Secrets (API, session
and reset tokens) are stored only as `hash_token(token)`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pony.orm import select

from ...errors import NotFound, SettingsError
from ...models import ApiTokenInfo, User, WebSessionInfo
from ..hashing import hash_token
from .connect import Sessions
from .sql import SqlDialect

__all__ = [
    "PonyAccounts",
    "create_token",
    "create_user",
    "get_user",
    "to_user",
    "user_by_email",
    "user_for_token",
    "utcnow",
]


def utcnow() -> datetime:
    """Naive UTC: Pony stores datetimes without a zone, so we add UTC back when reading."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        created=row.created.replace(tzinfo=UTC),
        verified=row.email_verification is None,
        display_name=row.display_name,
        admin=row.admin,
    )


# ---------------------------------------------------------------------- users and API tokens


def create_user(
    sql: SqlDialect, email: str, password_hash: str | None, verified: bool = True, admin: bool = False
) -> User:
    if sql.e["User"].get(email=email) is not None:
        raise SettingsError(f"a user with e-mail {email} exists already")
    user = sql.e["User"](email=email, password_hash=password_hash, created=utcnow(), admin=admin)
    if not verified:
        sql.e["EmailVerification"](user=user, token_hash=None, expires=user.created)
    user.flush()
    return to_user(user)


def get_user(sql: SqlDialect, user_id: int) -> User | None:
    user = sql.e["User"].get(id=user_id)
    return to_user(user) if user else None


def user_by_email(sql: SqlDialect, email: str) -> User | None:
    user = sql.e["User"].get(email=email)
    return to_user(user) if user else None


def create_token(sql: SqlDialect, user_id: int, name: str) -> str:
    token = "dst_" + secrets.token_urlsafe(32)
    sql.e["ApiToken"](user=sql.e["User"][user_id], token_hash=hash_token(token), name=name, created=utcnow())
    return token


def user_for_token(sql: SqlDialect, token: str) -> User | None:
    row = sql.e["ApiToken"].get(token_hash=hash_token(token))
    return to_user(row.user) if row is not None and not row.revoked else None


# ---------------------------------------------------------------------- the console's accounts


def _secret(sql: SqlDialect) -> str:
    # Several processes starting at once on a new PostgreSQL database would each find no row
    # and insert one: ON CONFLICT lets exactly one insert win, and everybody reads the winner's.
    sql.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        ("console_secret", secrets.token_hex(32)),
    )
    rows = sql.query("SELECT value FROM meta WHERE key = ?", ("console_secret",))
    value: str = rows[0][0]
    return value


def _credentials(sql: SqlDialect, email: str) -> tuple[User, str | None] | None:
    row = sql.e["User"].get(email=email)
    return (to_user(row), row.password_hash) if row else None


def _password_hash(sql: SqlDialect, user_id: int) -> str | None:
    row = sql.e["User"].get(id=user_id)
    return row.password_hash if row else None


def _set_password(sql: SqlDialect, user_id: int, password_hash: str) -> None:
    _replace_password(sql, sql.e["User"][user_id], password_hash)


def _replace_password(sql: SqlDialect, user: Any, password_hash: str) -> None:
    """A new password ends every session (a thief's too)."""
    user.password_hash = password_hash
    select(s for s in sql.e["WebSession"] if s.user == user).delete(bulk=True)


def _set_display_name(sql: SqlDialect, user_id: int, display_name: str) -> User:
    row = sql.e["User"].get(id=user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    row.display_name = display_name
    return to_user(row)


def _create_session(sql: SqlDialect, user_id: int, lifetime: timedelta, user_agent: str) -> tuple[str, str]:
    now = utcnow()
    # Housekeeping on sign-in (rare) rather than a timer: expired sessions are useless anyway.
    select(s for s in sql.e["WebSession"] if s.expires < now).delete(bulk=True)
    token = "dss_" + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    sql.e["WebSession"](
        user=sql.e["User"][user_id],
        token_hash=hash_token(token),
        csrf_token=csrf,
        created=now,
        expires=now + lifetime,
        user_agent=user_agent[:300],
    )
    return token, csrf


def _session(sql: SqlDialect, token: str) -> WebSessionInfo | None:
    row = sql.e["WebSession"].get(token_hash=hash_token(token))
    if row is None or row.expires < utcnow():
        return None
    return WebSessionInfo(to_user(row.user), row.csrf_token, row.expires.replace(tzinfo=UTC))


def _end_session(sql: SqlDialect, token: str) -> None:
    row = sql.e["WebSession"].get(token_hash=hash_token(token))
    if row is not None:
        row.delete()


def _create_reset(sql: SqlDialect, user_id: int, lifetime: timedelta) -> str:
    user = sql.e["User"][user_id]
    select(r for r in sql.e["PasswordReset"] if r.user == user).delete(bulk=True)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    sql.e["PasswordReset"](user=user, token_hash=hash_token(token), created=now, expires=now + lifetime)
    return token


def _reset_valid(sql: SqlDialect, token: str) -> bool:
    row = sql.e["PasswordReset"].get(token_hash=hash_token(token))
    return row is not None and not row.used and row.expires >= utcnow()


def _redeem_reset(sql: SqlDialect, token: str, password_hash: str) -> User | None:
    # Locked, in one transaction: two concurrent uses of the same token cannot both succeed.
    row = sql.e["PasswordReset"].get_for_update(token_hash=hash_token(token))
    if row is None or row.used or row.expires < utcnow():
        return None
    row.used = True
    _replace_password(sql, row.user, password_hash)
    _revoke_tokens(sql, row.user.id)  # a reset means the account may be in someone else's hands
    return to_user(row.user)


def _create_verification(sql: SqlDialect, user_id: int, lifetime: timedelta) -> str | None:
    user = sql.e["User"].get(id=user_id)
    row = user.email_verification if user is not None else None
    if row is None:
        return None
    token = secrets.token_urlsafe(32)
    row.token_hash, row.expires = hash_token(token), utcnow() + lifetime
    return token


def _verify_email(sql: SqlDialect, token: str) -> User | None:
    row = sql.e["EmailVerification"].get_for_update(token_hash=hash_token(token))
    if row is None or row.expires < utcnow():
        return None
    user = row.user
    row.delete()
    return to_user(user)


def _tokens(sql: SqlDialect, user_id: int) -> list[ApiTokenInfo]:
    rows = select(t for t in sql.e["ApiToken"] if t.user.id == user_id).order_by(lambda t: t.id)
    return [ApiTokenInfo(t.id, t.name or "", t.created.replace(tzinfo=UTC), t.revoked) for t in rows[:]]


def _revoke_token(sql: SqlDialect, user_id: int, token_id: int) -> bool:
    row = sql.e["ApiToken"].get(id=token_id)
    if row is None or row.user.id != user_id:
        return False
    row.revoked = True
    return True


def _revoke_tokens(sql: SqlDialect, user_id: int) -> int:
    live = select(t for t in sql.e["ApiToken"] if t.user.id == user_id and not t.revoked)[:]
    for row in live:
        row.revoked = True
    return len(live)


def _deleted_campaign_ids(sql: SqlDialect, user_id: int) -> list[int]:
    query = select(c.id for c in sql.e["Campaign"] if c.owner.id == user_id and c.deleted)
    return sorted(query[:], reverse=True)


def _delete_account(sql: SqlDialect, user_id: int) -> None:
    owned = "(SELECT id FROM campaign WHERE owner = ?)"
    # The bulk rows by SQL (the ORM would load each one); then the ORM cascades the rest.
    for table in ("result", "kernel_error", "dataset"):
        sql.execute(f"DELETE FROM {table} WHERE campaign IN {owned}", (user_id,))
    for table in ("volunteer_claim", "volunteer_listing"):  # its browsers' credit stays theirs, unclaimed
        sql.execute(f"DELETE FROM {table} WHERE account = ?", (user_id,))
    sql.execute("DELETE FROM site WHERE owner = ?", (user_id,))
    user = sql.e["User"].get(id=user_id)
    if user is not None:
        user.delete()


class PonyAccounts:
    """The console's accounts (`storage.accounts`): server secret, passwords, sessions, resets, tokens."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def secret(self) -> bytes:
        return bytes.fromhex(await self._sessions.run_immediate(_secret))

    async def credentials(self, email: str) -> tuple[User, str | None] | None:
        return await self._sessions.run(_credentials, email)

    async def password_hash(self, user_id: int) -> str | None:
        return await self._sessions.run(_password_hash, user_id)

    async def set_password(self, user_id: int, password_hash: str) -> None:
        await self._sessions.run_immediate(_set_password, user_id, password_hash)

    async def set_display_name(self, user_id: int, display_name: str) -> User:
        return await self._sessions.run_immediate(_set_display_name, user_id, display_name)

    async def create_session(self, user_id: int, lifetime: timedelta, user_agent: str = "") -> tuple[str, str]:
        return await self._sessions.run_immediate(_create_session, user_id, lifetime, user_agent)

    async def session(self, token: str) -> WebSessionInfo | None:
        return await self._sessions.run(_session, token)

    async def end_session(self, token: str) -> None:
        await self._sessions.run_immediate(_end_session, token)

    async def create_reset(self, user_id: int, lifetime: timedelta) -> str:
        return await self._sessions.run_immediate(_create_reset, user_id, lifetime)

    async def reset_valid(self, token: str) -> bool:
        return await self._sessions.run(_reset_valid, token)

    async def redeem_reset(self, token: str, password_hash: str) -> User | None:
        return await self._sessions.run_immediate(_redeem_reset, token, password_hash)

    async def create_verification(self, user_id: int, lifetime: timedelta) -> str | None:
        return await self._sessions.run_immediate(_create_verification, user_id, lifetime)

    async def verify_email(self, token: str) -> User | None:
        return await self._sessions.run_immediate(_verify_email, token)

    async def tokens(self, user_id: int) -> list[ApiTokenInfo]:
        return await self._sessions.run(_tokens, user_id)

    async def revoke_token(self, user_id: int, token_id: int) -> bool:
        return await self._sessions.run_immediate(_revoke_token, user_id, token_id)

    async def revoke_tokens(self, user_id: int) -> int:
        return await self._sessions.run_immediate(_revoke_tokens, user_id)

    async def deleted_campaign_ids(self, user_id: int) -> list[int]:
        return await self._sessions.run(_deleted_campaign_ids, user_id)

    async def delete_account(self, user_id: int) -> None:
        await self._sessions.run_immediate(_delete_account, user_id)
