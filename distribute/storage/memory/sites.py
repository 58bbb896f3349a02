"""The memory backend's registered sites, and what their visitors gave (the results' `site`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from ...models import Site, SiteDay
from ..sites import VERIFIED_STATUSES
from .tables import Tables

__all__ = ["MemorySites"]


class MemorySites:
    """Sites and their figures; every call is one transaction."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def create_site(self, owner_id: int, origin: str, key: str, token: str) -> Site:
        async with self.tables.session() as t:
            site = Site(t.next_id("site"), owner_id, origin, key, token, False)
            t.sites[site.id] = site
            return site

    async def site(self, site_id: int) -> Site | None:
        async with self.tables.session() as t:
            return t.sites.get(site_id)

    async def site_by_key(self, key: str) -> Site | None:
        async with self.tables.session() as t:
            return next((site for site in t.sites.values() if site.key == key), None)

    async def sites_of(self, owner_id: int) -> list[Site]:
        async with self.tables.session() as t:
            return sorted((s for s in t.sites.values() if s.owner_id == owner_id), key=lambda s: s.id)

    async def set_site_verified(self, site_id: int) -> None:
        async with self.tables.session() as t:
            if (site := t.sites.get(site_id)) is not None:
                t.sites[site_id] = dataclasses.replace(site, verified=True)

    async def set_site_policy(
        self, site_id: int, policy: str, allowlist: Sequence[int], max_throttle: str
    ) -> Site | None:
        async with self.tables.session() as t:
            site = t.sites.get(site_id)
            if site is None:
                return None
            ids = tuple(int(i) for i in allowlist)
            site = t.sites[site_id] = dataclasses.replace(site, policy=policy, allowlist=ids, max_throttle=max_throttle)
            return site

    async def delete_site(self, site_id: int) -> None:
        async with self.tables.session() as t:
            t.sites.pop(site_id, None)

    async def site_days(self, site_id: int) -> list[SiteDay]:
        async with self.tables.session() as t:
            days: dict[tuple[int, int], list[float]] = {}
            for result in t.results.values():
                if result.site == site_id:
                    row = days.setdefault((int(result.created // 86400), result.campaign_id), [0, 0, 0.0])
                    row[0] += 1
                    row[1] += result.status in VERIFIED_STATUSES
                    row[2] += result.compute_ms
            return [
                SiteDay(datetime.fromtimestamp(d * 86400, UTC).strftime("%Y-%m-%d"), c, int(n), int(v), ms / 1000)
                for (d, c), (n, v, ms) in sorted(days.items())
            ]
