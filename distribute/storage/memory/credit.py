"""The memory backend's volunteer credit (`storage.credit`): sums over the result rows, and claims."""

from __future__ import annotations

from collections.abc import Sequence

from ..credit import CREDITED, CampaignCredit, Credit, Leaderboard, tally
from .tables import Tables

__all__ = ["MemoryCredit"]


class MemoryCredit:
    """Credit per identity, registered site and campaign, read from the results; every call is one transaction."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def credit(self, identities: Sequence[str]) -> Credit:
        wanted = set(identities)
        per: dict[int, float] = {}
        async with self.tables.session() as t:
            for result in t.results.values():
                if result.identity in wanted and result.status in CREDITED:
                    per[result.campaign_id] = per.get(result.campaign_id, 0.0) + result.compute_ms / 1000.0
        campaigns = tuple(CampaignCredit(c, s) for c, s in sorted(per.items(), key=lambda item: (-item[1], item[0])))
        return Credit(sum(per.values()), campaigns)

    async def leaderboard(
        self, *, campaign_id: int | None = None, site_id: int | None = None, limit: int = 20
    ) -> Leaderboard:
        async with self.tables.session() as t:
            rows = [
                (t.claims.get(r.identity) if r.identity else None, r.identity, r.compute_ms / 1000.0)
                for r in t.results.values()
                if r.status in CREDITED
                and (campaign_id is None or r.campaign_id == campaign_id)
                and (site_id is None or r.site == site_id)
            ]
            names = {u: t.users[u].display_name for u in t.listed if u in t.users}
        return tally(rows, names, limit)

    async def claim(self, user_id: int, identity: str) -> bool:
        async with self.tables.session() as t:
            owner = t.claims.setdefault(identity, user_id)
            return owner == user_id

    async def claimed(self, user_id: int) -> list[str]:
        async with self.tables.session() as t:
            return [identity for identity, owner in t.claims.items() if owner == user_id]

    async def set_listed(self, user_id: int, listed: bool) -> None:
        async with self.tables.session() as t:
            if listed:
                t.listed.add(user_id)
            else:
                t.listed.discard(user_id)

    async def listed(self, user_id: int) -> bool:
        async with self.tables.session() as t:
            return user_id in t.listed
