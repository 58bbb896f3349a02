"""The Pony backend's operators' part (`AdminStore`): the admin role, campaign reviews, flagged workers."""

from __future__ import annotations

from pony.orm import select

from ...errors import NotFound
from ...models import Campaign, Review, User, WorkerRecord
from .accounts import to_user
from .campaigns import to_campaign
from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonyAdmin"]

# Any constant: the PostgreSQL advisory lock that makes "the first admin" one account even when two
# people claim it at the same moment (SQLite's BEGIN IMMEDIATE serialises the claims by itself).
_FIRST_ADMIN_LOCK = 0x61646D6E


def _set_admin(sql: SqlDialect, user_id: int, admin: bool) -> User:
    row = sql.e["User"].get(id=user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    row.admin = admin
    return to_user(row)


def _claim_first_admin(sql: SqlDialect, user_id: int) -> bool:
    if sql.postgres:
        sql.query("SELECT pg_advisory_xact_lock(?)", (_FIRST_ADMIN_LOCK,))
    row = sql.e["User"].get(id=user_id)
    if row is None or sql.query("SELECT 1 FROM account WHERE admin = ? LIMIT 1", (True,)):
        return False
    row.admin = True
    return True


def _list_users(sql: SqlDialect) -> list[User]:
    return [to_user(row) for row in select(u for u in sql.e["User"]).order_by(lambda u: u.id)]


def _set_review(sql: SqlDialect, campaign_id: int, review: str, reason: str) -> Campaign:
    if review not in (Review.APPROVED, Review.PENDING, Review.REJECTED):
        raise ValueError(f"unknown review {review!r}")
    row = sql.e["Campaign"].get_for_update(id=campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    row.review = review
    row.review_reason = reason if review == Review.REJECTED else ""
    return to_campaign(row)


def _flagged_workers(sql: SqlDialect, limit: int) -> list[WorkerRecord]:
    rows = sql.query(
        "SELECT key, agreed, disagreed FROM worker_record WHERE flagged = ? ORDER BY disagreed DESC, key LIMIT ?",
        (True, limit),
    )
    return [WorkerRecord(key=r[0], agreed=r[1], disagreed=r[2], flagged=True) for r in rows]


class PonyAdmin:
    """PonyStorage's `AdminStore` methods (a base class: `_sessions` comes from PonyStorage)."""

    _sessions: Sessions

    async def set_admin(self, user_id: int, admin: bool) -> User:
        return await self._sessions.run_immediate(_set_admin, user_id, admin)

    async def claim_first_admin(self, user_id: int) -> bool:
        return await self._sessions.run_immediate(_claim_first_admin, user_id)

    async def list_users(self) -> list[User]:
        return await self._sessions.run(_list_users)

    async def set_review(self, campaign_id: int, review: str, reason: str = "") -> Campaign:
        return await self._sessions.run_immediate(_set_review, campaign_id, review, reason)

    async def flagged_workers(self, limit: int = 100) -> list[WorkerRecord]:
        return await self._sessions.run(_flagged_workers, limit)
