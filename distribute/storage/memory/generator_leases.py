"""The memory backend's generator leases: which server runs a campaign's generator, and until when.

As in the SQL backends (storage/pony/generator_leases.py): the holder renews its lease while it
generates, another claimant wins the campaign only once the lease has expired, and `add_datasets`
checks the lease in the same transaction as the insert (`holds`).
"""

from __future__ import annotations

import time

from .tables import Tables

__all__ = ["MemoryGeneratorLeases", "holds"]


def holds(t: Tables, campaign_id: int, owner: str) -> bool:
    """Does `owner` hold the generator lease of this campaign now? (Inside a session.)"""
    held = t.generator_leases.get(campaign_id)
    return held is not None and held[0] == owner and held[1] >= time.time()


class MemoryGeneratorLeases:
    """Claim, renew and release generator leases; every call is one transaction."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def claim(self, campaign_id: int, owner: str, seconds: float) -> bool:
        """Take or renew the lease; False while another process holds it."""
        async with self.tables.session() as t:
            now = time.time()
            holder, until = t.generator_leases.get(campaign_id, ("", 0.0))
            if holder != owner and until >= now:
                return False
            t.generator_leases[campaign_id] = (owner, now + seconds)
            return True

    async def release(self, campaign_id: int, owner: str) -> None:
        async with self.tables.session() as t:
            held = t.generator_leases.get(campaign_id)
            if held is not None and held[0] == owner:
                del t.generator_leases[campaign_id]
