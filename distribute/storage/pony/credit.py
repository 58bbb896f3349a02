"""The Pony backend's volunteer credit (`storage.credit`): aggregate SQL over the result table, and claims."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..credit import CREDITED, CampaignCredit, Credit, Leaderboard, tally
from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonyCredit"]

_STATUSES = ",".join("?" * len(CREDITED))
_CHUNK = 500  # identities per IN list


def _credit(sql: SqlDialect, identities: Sequence[str]) -> Credit:
    per: dict[int, float] = {}
    unique = sorted(set(identities))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        rows = sql.query(
            f"SELECT campaign, SUM(compute_ms) FROM result WHERE identity IN ({','.join('?' * len(chunk))})"
            f" AND status IN ({_STATUSES}) GROUP BY campaign",
            (*chunk, *CREDITED),
        )
        for campaign, ms in rows:
            per[campaign] = per.get(campaign, 0.0) + float(ms) / 1000.0
    campaigns = tuple(CampaignCredit(c, s) for c, s in sorted(per.items(), key=lambda item: (-item[1], item[0])))
    return Credit(sum(per.values()), campaigns)


def _leaderboard(sql: SqlDialect, campaign_id: int | None, site_id: int | None, limit: int) -> Leaderboard:
    where, args = [f"r.status IN ({_STATUSES})"], list[object](CREDITED)
    if campaign_id is not None:
        where.append("r.campaign = ?")
        args.append(campaign_id)
    if site_id is not None:
        where.append("r.site = ?")
        args.append(site_id)
    rows = sql.query(
        "SELECT c.account, r.identity, SUM(r.compute_ms) FROM result r"
        " LEFT JOIN volunteer_claim c ON c.identity = r.identity"
        f" WHERE {' AND '.join(where)} GROUP BY c.account, r.identity",
        tuple(args),
    )
    listed = sql.query("SELECT a.id, a.display_name FROM volunteer_listing l JOIN account a ON a.id = l.account", ())
    names = {row[0]: row[1] or "" for row in listed}
    return tally(((row[0], row[1], float(row[2]) / 1000.0) for row in rows), names, limit)


def _claim(sql: SqlDialect, user_id: int, identity: str) -> bool:
    claim = sql.e["VolunteerClaim"].get(identity=identity)
    if claim is None:
        sql.e["VolunteerClaim"](identity=identity, account=user_id, created=time.time())
        return True
    return bool(claim.account == user_id)


def _claimed(sql: SqlDialect, user_id: int) -> list[str]:
    rows = sql.query("SELECT identity FROM volunteer_claim WHERE account = ? ORDER BY created, identity", (user_id,))
    return [row[0] for row in rows]


def _set_listed(sql: SqlDialect, user_id: int, listed: bool) -> None:
    row = sql.e["VolunteerListing"].get(account=user_id)
    if listed and row is None:
        sql.e["VolunteerListing"](account=user_id)
    elif not listed and row is not None:
        row.delete()


def _listed(sql: SqlDialect, user_id: int) -> bool:
    return sql.e["VolunteerListing"].get(account=user_id) is not None


class PonyCredit:
    """Credit per identity, registered site and campaign; every call is one transaction in a storage thread."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def credit(self, identities: Sequence[str]) -> Credit:
        return await self._sessions.run(_credit, list(identities))

    async def leaderboard(
        self, *, campaign_id: int | None = None, site_id: int | None = None, limit: int = 20
    ) -> Leaderboard:
        return await self._sessions.run(_leaderboard, campaign_id, site_id, limit)

    async def claim(self, user_id: int, identity: str) -> bool:
        return await self._sessions.run_immediate(_claim, user_id, identity)

    async def claimed(self, user_id: int) -> list[str]:
        return await self._sessions.run(_claimed, user_id)

    async def set_listed(self, user_id: int, listed: bool) -> None:
        await self._sessions.run_immediate(_set_listed, user_id, listed)

    async def listed(self, user_id: int) -> bool:
        return await self._sessions.run(_listed, user_id)
