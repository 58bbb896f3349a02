"""The memory backend's presence rows: server processes sharing this database and their workers.

As in the SQL backends (storage/pony/presence.py): one row per process with its workers per campaign
and the time of its last heartbeat; readers sum the rows renewed recently.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..base import PRESENCE_FORGET_SECONDS
from .tables import Tables

__all__ = ["MemoryPresence"]


class MemoryPresence:
    """Heartbeats of the server processes; every call is one transaction."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def beat(self, process: str, workers: Mapping[int, int]) -> None:
        async with self.tables.session() as t:
            now = time.time()
            t.presence[process] = ({campaign: n for campaign, n in workers.items() if n > 0}, now)
            for name, (_, heard) in list(t.presence.items()):
                if heard < now - PRESENCE_FORGET_SECONDS:
                    del t.presence[name]

    async def workers(self, max_age: float, exclude: str = "") -> dict[int, int]:
        async with self.tables.session() as t:
            since = time.time() - max_age
            total: dict[int, int] = {}
            for name, (counts, heard) in t.presence.items():
                if heard >= since and name != exclude:
                    for campaign, n in counts.items():
                        total[campaign] = total.get(campaign, 0) + n
            return total

    async def leave(self, process: str) -> None:
        async with self.tables.session() as t:
            t.presence.pop(process, None)
