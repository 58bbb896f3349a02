"""compute-time when a choice places a worker for a whole interval, as the live path does.

The gateway places a worker that accepts any campaign, then places it again every interval while it
works (staggered per connection), telling the policy how many other workers serve each campaign
(`Candidate.workers`) and for how long a placement lasts (`Candidate.placement_seconds`). These
tests drive the policy with exactly those inputs: a simulation of seven workers, each delivering one
second of compute time per second to its campaign in 20 ms tasks, reported as they finish, and a
storage that publishes the reported time after a group-commit lag.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pytest

from distribute.scheduler import Candidate, ComputeTime

WEIGHTS = {1: 1.0, 2: 2.0, 3: 4.0}
DUE = {cid: w / sum(WEIGHTS.values()) for cid, w in WEIGHTS.items()}
INTERVAL = 10.0
TASK = 0.02  # seconds of compute per task
STEP = 0.1  # simulated seconds per step: each worker reports STEP / TASK tasks per step
GOLDEN = (math.sqrt(5) - 1) / 2


def candidates(usage: dict[int, float], serving: Counter[int], interval: float = INTERVAL) -> list[Candidate]:
    return [Candidate(cid, 0, WEIGHTS[cid], usage[cid], serving[cid], interval) for cid in WEIGHTS]


@dataclass
class Placing:
    """Seven workers placed for whole intervals; worker i arrives at i * arrive_every."""

    workers: int = 7
    arrive_every: float = 0.0
    flush_every: float = 2.0
    interval: float = INTERVAL
    policy: ComputeTime = field(default_factory=ComputeTime)
    delivered: dict[int, float] = field(default_factory=lambda: dict.fromkeys(WEIGHTS, 0.0))
    stored: dict[int, float] = field(default_factory=lambda: dict.fromkeys(WEIGHTS, 0.0))
    placed: dict[int, int] = field(default_factory=dict)  # worker -> campaign
    due: dict[int, float] = field(default_factory=dict)  # worker -> next placement

    def period(self, worker: int) -> float:
        """Staggered as the gateway staggers connections: the interval times a factor in [0.5, 1.5)."""
        return self.interval * (0.5 + ((worker + 1) * GOLDEN) % 1.0)

    def place(self, worker: int, now: float) -> None:
        serving = Counter(cid for w, cid in self.placed.items() if w != worker)
        chosen = self.policy.choose(candidates(self.stored, serving, self.interval))
        assert chosen is not None
        self.placed[worker] = chosen.campaign_id
        self.due[worker] = now + self.period(worker)

    def run(self, seconds: float) -> dict[int, float]:
        """Shares of the compute time delivered in `seconds`."""
        steps = round(seconds / STEP)
        for step in range(steps):
            now = step * STEP
            if step % round(self.flush_every / STEP) == 0:
                self.stored = dict(self.delivered)
            for worker in range(self.workers):
                next_placement = self.due[worker] if worker in self.placed else worker * self.arrive_every
                if now >= next_placement:
                    self.place(worker, now)
            for campaign in self.placed.values():
                for _ in range(round(STEP / TASK)):
                    self.policy.task_finished(campaign, TASK)
                    self.delivered[campaign] += TASK
        total = sum(self.delivered.values())
        return {cid: seconds / total for cid, seconds in self.delivered.items()}


def worst_relative_error(shares: dict[int, float]) -> float:
    return max(abs(shares[cid] - DUE[cid]) / DUE[cid] for cid in WEIGHTS)


def test_seven_workers_placed_together_after_usage_drifted_spread_one_two_four() -> None:
    # Tasks were reported (20 ms each), and the weight-1 campaign is one second behind its share:
    # charging each placement one task time sent all seven workers to it.
    policy = ComputeTime()
    for cid in WEIGHTS:
        policy.task_finished(cid, TASK)
    usage = {1: 9.0, 2: 20.0, 3: 40.0}
    serving: Counter[int] = Counter()
    for _ in range(7):
        chosen = policy.choose(candidates(usage, serving))
        assert chosen is not None
        serving[chosen.campaign_id] += 1
    assert serving == {1: 1, 2: 2, 3: 4}


def test_the_first_workers_go_to_the_heaviest_campaign() -> None:
    chosen = ComputeTime().choose(candidates(dict.fromkeys(WEIGHTS, 0.0), Counter()))
    assert chosen is not None and chosen.campaign_id == 3


def test_a_placement_at_its_share_keeps_every_worker_where_it_is() -> None:
    policy = ComputeTime()
    usage = {1: 30.0, 2: 60.0, 3: 120.0}
    placed = Counter({1: 1, 2: 2, 3: 4})
    for cid in WEIGHTS:
        others = placed.copy()
        others[cid] -= 1
        chosen = policy.choose(candidates(usage, others))
        assert chosen is not None and chosen.campaign_id == cid


@pytest.mark.parametrize(("ahead", "goes_to"), [(2.0, 1), (3.0, 3)])
def test_a_worker_moves_only_when_its_campaign_is_ahead_by_more_than_its_dead_band(ahead: float, goes_to: int) -> None:
    # the weight-1 campaign's worker moves to the weight-4 one once ahead by INTERVAL * 1 / 4 = 2.5 s
    usage = {1: 30.0 + ahead, 2: 60.0, 3: 120.0}
    chosen = ComputeTime().choose(candidates(usage, Counter({1: 0, 2: 2, 3: 4})))
    assert chosen is not None and chosen.campaign_id == goes_to


def test_seven_workers_arriving_together_and_placed_again_every_interval_get_their_shares() -> None:
    shares = Placing().run(60.0)
    assert worst_relative_error(shares) <= 0.05, shares


def test_seven_workers_arriving_one_after_another_get_their_shares() -> None:
    shares = Placing(arrive_every=0.3).run(60.0)
    assert worst_relative_error(shares) <= 0.05, shares


def test_shares_hold_over_a_long_run_with_frequent_placements() -> None:
    shares = Placing(arrive_every=0.3, interval=1.0).run(300.0)
    assert worst_relative_error(shares) <= 0.02, shares


@pytest.mark.parametrize(("workers", "seconds"), [(-1, 1.0), (1, -1.0), (1, math.nan), (1, math.inf)])
def test_placement_fields_must_be_sensible(workers: int, seconds: float) -> None:
    with pytest.raises(ValueError, match=r"workers|placement_seconds"):
        Candidate(1, 0, 1.0, 0.0, workers, seconds)
