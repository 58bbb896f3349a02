"""The scheduler contract: `Candidate` (what the dispatcher offers) and `Scheduler` (the policy).

A scheduler decides which campaign a worker that accepts "any" campaign serves: when it arrives or
its campaign runs dry, and again every `reschedule_seconds` (a setting) while it works, when choosing
the campaign it serves keeps it there. It is pure policy: no I/O, no clocks, no randomness unless seeded, so every decision is reproducible from
the sequence of calls it received. The dispatcher owns all state that must survive a restart or be
shared between server processes (stored compute time, priorities, weights) and hands it in through
`Candidate`; a scheduler keeps only what it learns from its own calls.

This module also holds `next_in_rotation`, the id-order rotation that the built-in policies share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Candidate", "Scheduler", "next_in_rotation"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A campaign that has work right now, as the dispatcher sees it.

    Raises `ValueError` on construction if `weight` is not a finite number > 0, `compute_seconds` or
    `placement_seconds` is not a finite number >= 0, or `workers` is not an integer >= 0: such a value
    would make fair sharing meaningless, so it is refused where it enters rather than deep inside a policy.
    """

    campaign_id: int
    priority: int  # higher first
    weight: float  # share for compute-time
    compute_seconds: float  # measured compute time delivered so far (from storage; shared across processes)
    # What a choice commits. The live path places a worker on a campaign for a while (it serves the
    # chosen campaign until it is placed again), not for one task: `workers` is how many other
    # connections of this process serve this campaign now (the one being placed not counted), and
    # `placement_seconds` how long the worker being placed will serve the chosen one before it is
    # placed again. Both 0 (the defaults) for a caller that asks once per task.
    workers: int = 0
    placement_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"campaign {self.campaign_id}: weight must be a finite number > 0, got {self.weight!r}")
        if not (
            isinstance(self.compute_seconds, (int, float))
            and math.isfinite(self.compute_seconds)
            and self.compute_seconds >= 0
        ):
            raise ValueError(
                f"campaign {self.campaign_id}: compute_seconds must be a finite number >= 0, "
                f"got {self.compute_seconds!r}"
            )
        if not (isinstance(self.workers, int) and self.workers >= 0):
            raise ValueError(f"campaign {self.campaign_id}: workers must be an integer >= 0, got {self.workers!r}")
        seconds = self.placement_seconds
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(
                f"campaign {self.campaign_id}: placement_seconds must be a finite number >= 0, got {seconds!r}"
            )


@runtime_checkable
class Scheduler(Protocol):
    """A campaign scheduling policy. One instance lives per server process and is called from one Trio task.

    - `choose(candidates)`: `candidates` are the campaigns that have work now, in any order, each
      `campaign_id` at most once. Return one of them, or `None` only when `candidates` is empty. The
      set may change freely between calls (campaigns join, run dry, come back). A call places one
      worker, which may be serving one of the candidates already (it is then not counted in that
      candidate's `workers`); choosing that candidate keeps it there.
    - `task_finished(campaign_id, compute_seconds)`: a worker reported the compute time of one task
      (a result or a kernel error). Ids the scheduler never saw must be accepted; values that are
      negative or not finite must be ignored, never raise.
    """

    name: str

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None: ...

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None: ...


def next_in_rotation(candidates: Sequence[Candidate], last_id: int | None) -> Candidate:
    """The candidate with the smallest id greater than `last_id`, wrapping round to the smallest id.

    This is round-robin in campaign-id order that keeps working when the candidate set changes
    between calls: it needs to remember only the last chosen id. `candidates` must not be empty.
    """
    first: Candidate | None = None
    after: Candidate | None = None
    for candidate in candidates:
        cid = candidate.campaign_id
        if first is None or cid < first.campaign_id:
            first = candidate
        if last_id is not None and cid > last_id and (after is None or cid < after.campaign_id):
            after = candidate
    if first is None:
        raise ValueError("next_in_rotation needs at least one candidate")
    return after if after is not None else first
