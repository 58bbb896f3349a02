"""Generator leases: which server process runs a campaign's generator.

Several server processes share one database, and each resumes the campaigns that were generating
when it starts; without a lease two of them would run the same lazy generator and store its
datasets twice. One row per generating campaign (table generator_lease) names the process running
its generator and until when. The holder renews it while it generates; another process takes the
campaign over only once the lease has expired (its holder crashed). `add_datasets` checks the lease
in the same transaction as the insert, so a holder that stalled past its lease cannot add a batch
after the new holder started.
"""

from __future__ import annotations

import time

from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonyGeneratorLeases", "claim", "holds", "release"]


def holds(sql: SqlDialect, campaign_id: int, owner: str) -> bool:
    """Does `owner` hold the generator lease of this campaign now? (Inside a db_session.)"""
    rows = sql.query("SELECT until FROM generator_lease WHERE campaign = ? AND owner = ?", (campaign_id, owner))
    return bool(rows) and rows[0][0] >= time.time()


def claim(sql: SqlDialect, campaign_id: int, owner: str, seconds: float) -> bool:
    now = time.time()
    # Insert-or-ignore, then a conditional update: on PostgreSQL two processes claiming at
    # once both reach the UPDATE, which locks the row, so exactly one of them wins it.
    sql.execute(
        "INSERT INTO generator_lease (campaign, owner, until) VALUES (?, ?, ?) ON CONFLICT (campaign) DO NOTHING",
        (campaign_id, "", 0.0),
    )
    claimed = sql.execute(
        "UPDATE generator_lease SET owner = ?, until = ? WHERE campaign = ? AND (owner = ? OR until < ?)",
        (owner, now + seconds, campaign_id, owner, now),
    )
    return claimed == 1


def release(sql: SqlDialect, campaign_id: int, owner: str) -> None:
    sql.execute("DELETE FROM generator_lease WHERE campaign = ? AND owner = ?", (campaign_id, owner))


class PonyGeneratorLeases:
    """Claim, renew and release generator leases; every call is one short transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def claim(self, campaign_id: int, owner: str, seconds: float) -> bool:
        return await self._sessions.run_immediate(claim, campaign_id, owner, seconds)

    async def release(self, campaign_id: int, owner: str) -> None:
        await self._sessions.run(release, campaign_id, owner)
