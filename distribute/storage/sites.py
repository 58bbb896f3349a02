"""The storage of registered sites (`Storage.sites`): their rows, policies and what their visitors gave.

A protocol of its own next to `base.py`'s, on the same database; every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..models import Site, SiteDay

__all__ = ["VERIFIED_STATUSES", "SiteStore"]

# The result statuses that count as given: the campaign keeps the answer (see models.ResultStatus).
VERIFIED_STATUSES = ("accepted", "canonical", "agreed", "trusted")


class SiteStore(Protocol):
    """Sites registered by their owners."""

    async def create_site(self, owner_id: int, origin: str, key: str, token: str) -> Site:
        """Add an unverified site with policy "any", no allowlist and max throttle "high"; `key` is unique."""
        ...

    async def site(self, site_id: int) -> Site | None:
        """The site with this id, or None."""
        ...

    async def site_by_key(self, key: str) -> Site | None:
        """The site whose key this is (exact match), or None."""
        ...

    async def sites_of(self, owner_id: int) -> list[Site]:
        """The owner's sites, oldest first."""
        ...

    async def set_site_verified(self, site_id: int) -> None:
        """Mark the site verified (its owner proved control of the origin); no-op for an unknown id."""
        ...

    async def set_site_policy(
        self, site_id: int, policy: str, allowlist: Sequence[int], max_throttle: str
    ) -> Site | None:
        """Replace the site's policy, allowlist and max throttle; the updated site, or None if unknown."""
        ...

    async def delete_site(self, site_id: int) -> None:
        """Remove the site; the results it gave keep their site id (its dashboard is gone with it)."""
        ...

    async def site_days(self, site_id: int) -> list[SiteDay]:
        """What the site's visitors gave: one row per (UTC day, campaign) with results stored with this site,
        ordered by day then campaign; `verified` counts the results of VERIFIED_STATUSES, `compute_seconds`
        adds up the compute time of all of them."""
        ...
