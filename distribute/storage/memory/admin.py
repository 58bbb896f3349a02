"""The memory backend's operators' part: the admin role, campaign reviews, flagged workers."""

from __future__ import annotations

from ...errors import NotFound
from ...models import Campaign, Review, User, WorkerRecord
from .accounts import user_of
from .tables import Tables

__all__ = ["MemoryAdmin"]


class MemoryAdmin:
    """MemoryStorage's `AdminStore` (a base class: `tables` comes from MemoryStorage)."""

    tables: Tables

    async def set_admin(self, user_id: int, admin: bool) -> User:
        async with self.tables.session() as t:
            row = t.users.get(user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            row.admin = admin
            return user_of(row)

    async def claim_first_admin(self, user_id: int) -> bool:
        async with self.tables.session() as t:
            row = t.users.get(user_id)
            if row is None or any(other.admin for other in t.users.values()):
                return False
            row.admin = True
            return True

    async def list_users(self) -> list[User]:
        async with self.tables.session() as t:
            return [user_of(row) for _, row in sorted(t.users.items())]

    async def set_review(self, campaign_id: int, review: str, reason: str = "") -> Campaign:
        if review not in (Review.APPROVED, Review.PENDING, Review.REJECTED):
            raise ValueError(f"unknown review {review!r}")
        async with self.tables.session() as t:
            row = t.campaigns.get(campaign_id)
            if row is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            row.review = review
            row.review_reason = reason if review == Review.REJECTED else ""
            return row.campaign()

    async def flagged_workers(self, limit: int = 100) -> list[WorkerRecord]:
        async with self.tables.session() as t:
            flagged = [WorkerRecord(k, w.agreed, w.disagreed, True) for k, w in t.workers.items() if w.flagged]
        flagged.sort(key=lambda w: (-w.disagreed, w.key))
        return flagged[:limit]
