"""Registered sites on SQLite and PostgreSQL (table site), and what their visitors gave (result.site).

The allowlist is a JSON list of ids in one column: it is read and written whole with its site.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ...models import Site, SiteDay
from ..sites import VERIFIED_STATUSES
from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonySites"]

_COLUMNS = "id, owner, origin, key, token, verified, policy, allowlist, max_throttle"


def _site(row: Sequence[Any]) -> Site:
    allowlist = tuple(int(i) for i in json.loads(row[7] or "[]"))
    return Site(int(row[0]), int(row[1]), row[2], row[3], row[4], bool(row[5]), row[6], allowlist, row[8])


def _one(sql: SqlDialect, where: str, arg: Any) -> Site | None:
    rows = sql.query(f"SELECT {_COLUMNS} FROM site WHERE {where} = ?", (arg,))
    return _site(rows[0]) if rows else None


def _create(sql: SqlDialect, owner_id: int, origin: str, key: str, token: str) -> Site:
    row = sql.e["Site"](owner=owner_id, origin=origin, key=key, token=token, allowlist="[]", created=time.time())
    row.flush()
    return Site(row.id, owner_id, origin, key, token, False)


def _sites_of(sql: SqlDialect, owner_id: int) -> list[Site]:
    return [_site(row) for row in sql.query(f"SELECT {_COLUMNS} FROM site WHERE owner = ? ORDER BY id", (owner_id,))]


def _set_policy(sql: SqlDialect, site_id: int, policy: str, allowlist: Sequence[int], throttle: str) -> Site | None:
    ids = json.dumps([int(i) for i in allowlist])
    sql.execute(
        "UPDATE site SET policy = ?, allowlist = ?, max_throttle = ? WHERE id = ?", (policy, ids, throttle, site_id)
    )
    return _one(sql, "id", site_id)


def _days(sql: SqlDialect, site_id: int) -> list[SiteDay]:
    # Whole days of epoch seconds: PostgreSQL's CAST rounds, SQLite's truncates (and FLOOR is not in
    # every SQLite build), as the throughput buckets in queries.py.
    day = "FLOOR(created / 86400)" if sql.postgres else "CAST(created / 86400 AS INTEGER)"
    marks = ", ".join("?" * len(VERIFIED_STATUSES))
    rows = sql.query(
        f"SELECT {day} AS d, campaign, COUNT(*), SUM(CASE WHEN status IN ({marks}) THEN 1 ELSE 0 END), "
        "COALESCE(SUM(compute_ms), 0) FROM result WHERE site = ? GROUP BY d, campaign ORDER BY d, campaign",
        (*VERIFIED_STATUSES, site_id),
    )
    return [
        SiteDay(
            datetime.fromtimestamp(int(d) * 86400, UTC).strftime("%Y-%m-%d"), int(c), int(n), int(v), float(ms) / 1000
        )
        for d, c, n, v, ms in rows
    ]


class PonySites:
    """Sites and their figures; every call is one short transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def create_site(self, owner_id: int, origin: str, key: str, token: str) -> Site:
        return await self._sessions.run(_create, owner_id, origin, key, token)

    async def site(self, site_id: int) -> Site | None:
        return await self._sessions.run(_one, "id", site_id)

    async def site_by_key(self, key: str) -> Site | None:
        return await self._sessions.run(_one, "key", key)

    async def sites_of(self, owner_id: int) -> list[Site]:
        return await self._sessions.run(_sites_of, owner_id)

    async def set_site_verified(self, site_id: int) -> None:
        await self._sessions.run(lambda sql: sql.execute("UPDATE site SET verified = ? WHERE id = ?", (True, site_id)))

    async def set_site_policy(
        self, site_id: int, policy: str, allowlist: Sequence[int], max_throttle: str
    ) -> Site | None:
        return await self._sessions.run(_set_policy, site_id, policy, allowlist, max_throttle)

    async def delete_site(self, site_id: int) -> None:
        await self._sessions.run(lambda sql: sql.execute("DELETE FROM site WHERE id = ?", (site_id,)))

    async def site_days(self, site_id: int) -> list[SiteDay]:
        return await self._sessions.run(_days, site_id)
