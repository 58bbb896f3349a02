"""distribute-lottery-scheduler: an example distribute plugin adding the `lottery` scheduling policy.

Lottery scheduling (Waldspurger & Weihl, 1994): each candidate campaign holds tickets in proportion
to its weight, and the next idle worker serves the campaign whose ticket is drawn. Over many draws
each campaign gets a share of *tasks* proportional to its weight (unlike `compute-time`, which
shares measured compute *time*), without keeping any per-campaign state.

A draw places a worker for a while (distribute re-places it periodically), so the tickets are given
where workers are missing: a campaign holds tickets for the share of all workers its weight is due,
less the workers already serving it (`Candidate.workers`), never below zero (Waldspurger's
compensation tickets, counted in workers). A campaign at its share then draws nothing, a worker being
re-placed stays where it is when that campaign is not over its share, and the draws are random only
among campaigns short of a fractional share. A caller that passes no workers (each 0) gets the
plain lottery: tickets in proportion to weight.

Set ``DISTRIBUTE_LOTTERY_SEED`` to an integer for reproducible draws, or construct
``LotteryScheduler(seed=...)`` directly.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from distribute.plugins import Candidate, SchedulerRegistrar, hookimpl

__all__ = ["SEED_VARIABLE", "LotteryScheduler", "register_schedulers"]
__version__ = "0.1.0"

SEED_VARIABLE = "DISTRIBUTE_LOTTERY_SEED"


class LotteryScheduler:
    """Draw the next campaign at random, with probability proportional to its weight."""

    name = "lottery"

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    @classmethod
    def from_environment(cls) -> LotteryScheduler:
        """The factory registered with distribute: seeded from DISTRIBUTE_LOTTERY_SEED when it is set."""
        raw = os.environ.get(SEED_VARIABLE, "").strip()
        if not raw:
            return cls()
        try:
            return cls(seed=int(raw))
        except ValueError:
            raise ValueError(f"{SEED_VARIABLE} must be an integer, got {raw!r}") from None

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda c: c.campaign_id)  # the draw must not depend on input order
        tickets = _tickets(ordered)
        ticket = self._random.uniform(0.0, sum(tickets))
        for candidate, held in zip(ordered, tickets, strict=True):
            ticket -= held
            if ticket < 0:
                return candidate
        return [c for c, held in zip(ordered, tickets, strict=True) if held > 0][-1]  # ticket == total (rounding)

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None:
        """A lottery has no memory: reported compute time does not change the odds."""


def _tickets(candidates: Sequence[Candidate]) -> list[float]:
    """Each candidate's due share of all workers (the one being placed included), less those it has.

    They sum to at least one worker, so some candidate always holds tickets.
    """
    weights = sum(c.weight for c in candidates)
    workers = sum(c.workers for c in candidates) + 1
    return [max(0.0, c.weight / weights * workers - c.workers) for c in candidates]


@hookimpl
def register_schedulers(register: SchedulerRegistrar) -> None:
    register(LotteryScheduler.name, LotteryScheduler.from_environment)
