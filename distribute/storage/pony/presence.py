"""Presence rows: the server processes sharing this database, and the workers each has connected.

One row per process (table presence): its name, its connected workers per campaign as a JSON object,
and the time of its last heartbeat (float epoch seconds of the writing process, so the processes'
clocks must agree to within a heartbeat or two, as NTP keeps them). A process renews its row every
few seconds and deletes it when it stops; a reader sums the rows renewed recently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping

from ..base import PRESENCE_FORGET_SECONDS
from .connect import Sessions
from .sql import SqlDialect

__all__ = ["PonyPresence", "beat", "leave", "workers"]


def beat(sql: SqlDialect, process: str, workers: Mapping[int, int]) -> None:
    now = time.time()
    counts = json.dumps({str(campaign): n for campaign, n in workers.items() if n > 0}, separators=(",", ":"))
    sql.execute(
        "INSERT INTO presence (process, workers, heartbeat) VALUES (?, ?, ?) "
        "ON CONFLICT (process) DO UPDATE SET workers = excluded.workers, heartbeat = excluded.heartbeat",
        (process, counts, now),
    )
    sql.execute("DELETE FROM presence WHERE heartbeat < ?", (now - PRESENCE_FORGET_SECONDS,))


def workers(sql: SqlDialect, max_age: float, exclude: str) -> dict[int, int]:
    rows = sql.query(
        "SELECT workers FROM presence WHERE heartbeat >= ? AND process <> ?", (time.time() - max_age, exclude)
    )
    return sum_workers(row[0] for row in rows)


def sum_workers(rows: Iterable[str]) -> dict[int, int]:
    """Add up the JSON objects of workers per campaign of several presence rows."""
    total: dict[int, int] = {}
    for text in rows:
        for campaign, n in json.loads(text).items():
            total[int(campaign)] = total.get(int(campaign), 0) + int(n)
    return total


def leave(sql: SqlDialect, process: str) -> None:
    sql.execute("DELETE FROM presence WHERE process = ?", (process,))


class PonyPresence:
    """Heartbeats of the server processes; every call is one short transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def beat(self, process: str, workers: Mapping[int, int]) -> None:
        await self._sessions.run(beat, process, workers)

    async def workers(self, max_age: float, exclude: str = "") -> dict[int, int]:
        return await self._sessions.run(workers, max_age, exclude)

    async def leave(self, process: str) -> None:
        await self._sessions.run(leave, process)
