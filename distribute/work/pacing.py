"""When the next group commit runs: the wait after a commit, set by the rate results arrive at. Pure.

A commit costs a transaction and a thread hop however few results it carries: at ~100 results/s a
commit every `flush_interval` (20 ms) wrote two results each, 50 times a second. So the next wait aims
at commits of `flush_batch` / 20 results at the rate just seen, between `flush_interval` (high rates)
and `flush_interval_low_rate` (results trickle in, or none): a received result is still durable
within that bound (plus the commit itself). While a result stream follows the campaigns committed
here, the wait is `flush_interval`: its reader sees a trickle of results within that, not the
low-rate bound. `flush_batch` outcomes waiting start a commit at once (the dispatcher's business,
not this module's).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings

__all__ = ["FlushPacing"]


@dataclass(frozen=True, slots=True)
class FlushPacing:
    shortest: float  # seconds: the wait at high rates
    longest: float  # seconds: the wait when nothing or little arrives
    aim: int  # results per commit aimed at

    @classmethod
    def from_settings(cls, settings: Settings) -> FlushPacing:
        shortest = settings.flush_interval
        return cls(shortest, max(shortest, settings.flush_interval_low_rate), max(1, settings.flush_batch // 20))

    def next_wait(self, arrived: int, elapsed: float, followed: bool = False) -> float:
        """The wait before the next commit, after `arrived` outcomes came in `elapsed` seconds.

        `followed`: a result stream waits for this process's next commit (its reader is there to see
        each result at once, e.g. `client.map`), so results are committed every `shortest` seconds,
        as they were before pacing; with nothing arriving such a round is a timer, not a transaction.
        """
        if followed:
            return self.shortest
        rate = arrived / max(elapsed, 1e-3)
        return min(self.longest, max(self.shortest, self.aim / rate)) if rate else self.longest
