"""What operators see and decide through storage: the admin role, campaign reviews, flagged workers.
Part of the `Storage` protocol (`base.Storage`).
"""

from __future__ import annotations

from typing import Protocol

from ..models import Campaign, User, WorkerRecord

__all__ = ["AdminStore"]


class AdminStore(Protocol):
    """What operators see and decide: the admin role, campaign reviews, flagged workers."""

    async def set_admin(self, user_id: int, admin: bool) -> User:
        """Grant (or take away) the admin role; `NotFound` for an unknown user."""
        ...

    async def claim_first_admin(self, user_id: int) -> bool:
        """Atomically make the user an admin if no account is one yet; False (nothing changed) otherwise."""
        ...

    async def list_users(self) -> list[User]:
        """Every account, oldest (lowest id) first."""
        ...

    async def set_review(self, campaign_id: int, review: str, reason: str = "") -> Campaign:
        """Set a campaign's review (models.Review) and its reason ("" unless rejected); `NotFound` if unknown."""
        ...

    async def flagged_workers(self, limit: int = 100) -> list[WorkerRecord]:
        """Flagged worker records, most disagreements first (then by key), at most `limit`."""
        ...
