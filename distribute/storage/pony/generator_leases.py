"""Generator leases: which server process runs a campaign's generator.

Several server processes share one database, and each resumes the campaigns that were generating
when it starts; without a lease two of them would run the same lazy generator and store its
datasets twice. One row per generating campaign names the process running its generator and
until when. The holder renews it while it generates; another process takes the campaign over only
once the lease has expired (its holder crashed). `add_datasets` checks the lease in the same
transaction as the insert, so a holder that stalled past its lease cannot add a batch after the
new holder started.
"""

from __future__ import annotations

import time
from typing import Any

from pony.orm import Database, PrimaryKey, Required, db_session

from .sql import SqlDialect

__all__ = ["GeneratorLeases", "define_generator_lease_entities", "holds"]


def define_generator_lease_entities(db: Database) -> dict[str, Any]:
    class GeneratorLease(db.Entity):
        _table_ = "generator_lease"
        campaign = PrimaryKey(int)  # not a foreign key: the row outlives nothing and joins nothing
        owner = Required(str)
        until = Required(float)

    return {"GeneratorLease": GeneratorLease}


def holds(sql: SqlDialect, campaign_id: int, owner: str) -> bool:
    """Does `owner` hold the generator lease of this campaign now? (Inside a db_session.)"""
    rows = sql.query("SELECT until FROM generator_lease WHERE campaign = ? AND owner = ?", (campaign_id, owner))
    return bool(rows) and rows[0][0] >= time.time()


class GeneratorLeases:
    """Claim, renew and release generator leases; every call is one short transaction."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    async def claim(self, campaign_id: int, owner: str, seconds: float) -> bool:
        """Take or renew the lease; False while another process holds it."""
        return await self.storage._run(self._claim, campaign_id, owner, seconds)

    async def release(self, campaign_id: int, owner: str) -> None:
        await self.storage._run(self._release, campaign_id, owner)

    @db_session(immediate=True)
    def _claim(self, campaign_id: int, owner: str, seconds: float) -> bool:
        sql: SqlDialect = self.storage.sql
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

    @db_session
    def _release(self, campaign_id: int, owner: str) -> None:
        self.storage.sql.execute("DELETE FROM generator_lease WHERE campaign = ? AND owner = ?", (campaign_id, owner))
