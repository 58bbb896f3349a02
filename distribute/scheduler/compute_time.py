"""The `compute-time` policy: weighted fair share of measured compute time (stride scheduling, BOINC resource share).

Each campaign should receive worker compute time in proportion to its `weight`. The policy picks the
candidate with the smallest *pass*, its normalised usage::

    pass = (usage + in_flight + committed) / weight + offset          ties -> lowest campaign id

- ``usage`` is the compute time delivered so far: the stored ``compute_seconds`` (shared by every
  server process) plus what workers reported to *this* process through `task_finished` that storage
  has not caught up with yet. It is kept as ``max(stored, stored_when_reported + reported)``, so a
  report is never counted twice once the group commit lands, whatever the commit lag.
- ``in_flight`` charges each choice made but not yet answered with the campaign's mean task time
  (1 s before anything was reported). This is the stride "advance the pass on selection" step:
  without it, a burst of idle workers arriving together would all be sent to the one campaign that
  is behind. A report cancels the oldest charge of its campaign; a charge that is never answered (a
  worker vanished) expires after `charge_horizon` further choices.
- ``committed`` is what the placement would commit: ``(workers + 1) x placement_seconds`` of the
  candidate, the compute time its other workers and the worker being placed will deliver before that
  worker is placed again (a worker delivers about one second of compute time per second). So the
  pass is the campaign's normalised usage at the next placement if it gets the worker (a *virtual
  finish time*, as in weighted fair queueing), and the worker goes where that is lowest.
  The live path places a worker for a whole interval and re-places it while it works. Charging such
  a choice one task time would let workers placed together, or one after another before their first
  reports, all go to the campaign that is behind, and then stay there. With the commitment, workers
  placed together spread in proportion to the weights, and a re-placement keeps a worker where it is
  unless its campaign is ahead of its share by a fraction of an interval (about the interval times
  its weight over the weight of the campaign it would go to). Counting the worker being placed,
  rather than only the others, puts the first workers on the heaviest campaigns and makes that dead
  band proportional to the campaign's weight: the same relative error whatever the weight. A
  per-task caller leaves both fields 0, and then only ``usage`` and ``in_flight`` count.
- ``offset`` handles campaigns that join late: a campaign that appears for the first time starts at
  the current minimum pass of the campaigns already present, so a newcomer shares the workers
  instead of monopolising them until its usage catches up. A campaign that left (ran dry) and comes
  back is raised the same way if it fell behind meanwhile: time without work earns no credit. A
  campaign ahead of the others is never lowered, and one whose stored compute time goes down (it was
  reset) is treated as new. Offsets live in this process only: after a restart every campaign starts
  from its stored usage, which is the fair long-run state.

The policy is pure and deterministic: no clock, no randomness, no I/O; priority is ignored.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import Candidate

__all__ = ["ComputeTime"]

_DEFAULT_CHARGE = 1.0  # seconds charged per choice before any compute time was reported
_MEAN_ALPHA = 1 / 16  # weight of the newest report in the running mean of task seconds


@dataclass(slots=True)
class _Campaign:
    stored: float = 0.0  # compute_seconds in the last candidate seen
    local: float = 0.0  # stored-at-report-time + reported since: usage = max(stored, local)
    charges: deque[int] = field(default_factory=deque)  # choice numbers not yet answered by a report
    mean_task: float | None = None  # running mean of reported seconds per task
    offset: float = 0.0  # added to the normalised usage (only ever grows)


class ComputeTime:
    """Stride-scheduling share of measured compute time; see the module docstring for the exact rule."""

    name = "compute-time"

    def __init__(self, *, charge_horizon: int = 10_000, max_remembered: int = 50_000) -> None:
        if charge_horizon < 1 or max_remembered < 1:
            raise ValueError("charge_horizon and max_remembered must be >= 1")
        self._charge_horizon = charge_horizon
        self._max_remembered = max_remembered
        self._campaigns: dict[int, _Campaign] = {}
        self._present: set[int] = set()  # campaign ids of the last non-empty choose()
        self._floor: float | None = None  # minimum pass in the last non-empty choose()
        self._choices = 0
        self._mean_task: float | None = None  # over every campaign: the charge for a campaign never reported

    # -- the Scheduler protocol --------------------------------------------------------------------

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        self._choices += 1
        expired_before = self._choices - self._charge_horizon

        passes: dict[int, float] = {}
        joining: list[Candidate] = []
        for candidate in candidates:
            state = self._campaigns.get(candidate.campaign_id)
            if state is None:
                state = self._campaigns[candidate.campaign_id] = _Campaign(stored=candidate.compute_seconds)
                joining.append(candidate)
            elif candidate.compute_seconds < state.stored:  # storage was reset: start afresh
                state.stored = state.local = state.offset = 0.0
                state.charges.clear()
                joining.append(candidate)
            elif candidate.campaign_id not in self._present:
                joining.append(candidate)
            state.stored = candidate.compute_seconds
            while state.charges and state.charges[0] <= expired_before:
                state.charges.popleft()
            usage = max(state.stored, state.local) + len(state.charges) * self._charge(state)
            usage += (candidate.workers + 1) * candidate.placement_seconds
            passes[candidate.campaign_id] = usage / candidate.weight + state.offset

        self._settle_joiners(joining, passes)
        chosen = min(candidates, key=lambda c: (passes[c.campaign_id], c.campaign_id))
        self._campaigns[chosen.campaign_id].charges.append(self._choices)
        self._remember(passes)
        return chosen

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None:
        if not isinstance(compute_seconds, (int, float)) or not math.isfinite(compute_seconds) or compute_seconds < 0:
            return
        state = self._campaigns.get(campaign_id)
        if state is None:
            state = self._campaigns[campaign_id] = _Campaign()
        state.local = max(state.local, state.stored) + compute_seconds
        if state.charges:
            state.charges.popleft()
        state.mean_task = _running_mean(state.mean_task, compute_seconds)
        self._mean_task = _running_mean(self._mean_task, compute_seconds)

    # -- internals ---------------------------------------------------------------------------------

    def _charge(self, state: _Campaign) -> float:
        if state.mean_task is not None:
            return state.mean_task
        return self._mean_task if self._mean_task is not None else _DEFAULT_CHARGE

    def _settle_joiners(self, joining: list[Candidate], passes: dict[int, float]) -> None:
        """Raise the pass of every (re)joining candidate to the minimum pass of the others, if below it."""
        if not joining:
            return
        joining_ids = {candidate.campaign_id for candidate in joining}
        continuing = [p for cid, p in passes.items() if cid not in joining_ids]
        reference = min(continuing) if continuing else self._floor
        if reference is None:  # the first call of this process: stored usage alone decides
            return
        for candidate in joining:
            state = self._campaigns[candidate.campaign_id]
            current = passes[candidate.campaign_id]
            if reference > current:
                state.offset += reference - current
                passes[candidate.campaign_id] = reference

    def _remember(self, passes: dict[int, float]) -> None:
        self._present = set(passes)
        self._floor = min(passes.values())
        if len(self._campaigns) > self._max_remembered:
            self._forget_absent()

    def _forget_absent(self) -> None:
        """Drop the oldest-known absent campaigns until half the memory budget is left."""
        excess = len(self._campaigns) - self._max_remembered // 2
        for cid in [cid for cid in self._campaigns if cid not in self._present][:excess]:
            del self._campaigns[cid]


def _running_mean(mean: float | None, value: float) -> float:
    return value if mean is None else mean + _MEAN_ALPHA * (value - mean)
