"""compute-time: workers' measured compute time is shared in proportion to campaign weight.

Most tests run a discrete-event simulation: workers take tasks, report random (seeded) compute
times, and a simulated storage publishes the reported seconds to the scheduler(s) after a group
commit lag, as the dispatcher does.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from distribute.plugins import make_scheduler
from distribute.scheduler import Candidate, ComputeTime

WEIGHTS = {1: 1.0, 2: 2.0, 3: 4.0}
# Mean task length differs per campaign, so a fair share of *time* is not a fair share of *tasks*.
MEAN_TASK = {1: 3.0, 2: 1.0, 3: 0.4, 4: 2.0, 5: 0.7}


@dataclass
class Simulation:
    weights: dict[int, float]
    workers: int = 12
    processes: int = 1  # server processes, each with its own scheduler, sharing one storage
    flush_every: float = 2.0  # group-commit lag of storage (0 = immediate, inf = never)
    seed: int = 1
    active: Callable[[float], set[int]] | None = None  # campaigns with work at a given time
    now: float = 0.0
    stored: dict[int, float] = field(default_factory=dict)
    delivered: list[tuple[float, int, float]] = field(default_factory=list)  # (finish time, campaign, seconds)
    choices: list[tuple[float, int]] = field(default_factory=list)  # (time, campaign)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.schedulers = [ComputeTime() for _ in range(self.processes)]
        self.unflushed: list[tuple[int, float]] = []
        self.next_flush = self.flush_every
        self.running: list[tuple[float, int, int, float]] = []
        for worker in range(self.workers):
            self._assign(worker)

    def _candidates(self) -> list[Candidate]:
        ids = self.active(self.now) if self.active else set(self.weights)
        return [Candidate(cid, 0, self.weights[cid], self.stored.get(cid, 0.0)) for cid in sorted(ids)]

    def _assign(self, worker: int) -> None:
        chosen = self.schedulers[worker % self.processes].choose(self._candidates())
        if chosen is None:  # nothing to do now: look again in a second
            heapq.heappush(self.running, (self.now + 1.0, worker, 0, 0.0))
            return
        self.choices.append((self.now, chosen.campaign_id))
        seconds = self.rng.uniform(0.1, 2 * MEAN_TASK[chosen.campaign_id] - 0.1)
        heapq.heappush(self.running, (self.now + seconds, worker, chosen.campaign_id, seconds))

    def run_until(self, end: float) -> None:
        while self.running and self.running[0][0] <= end:
            self.now, worker, cid, seconds = heapq.heappop(self.running)
            if cid:
                self.delivered.append((self.now, cid, seconds))
                self.schedulers[worker % self.processes].task_finished(cid, seconds)
                self.unflushed.append((cid, seconds))
            if self.flush_every == 0 or self.now >= self.next_flush:
                for flushed_cid, flushed in self.unflushed:
                    self.stored[flushed_cid] = self.stored.get(flushed_cid, 0.0) + flushed
                self.unflushed.clear()
                self.next_flush = self.now + self.flush_every
            self._assign(worker)

    def shares(self, start: float = 0.0, end: float = math.inf) -> dict[int, float]:
        seconds: dict[int, float] = {}
        for t, cid, s in self.delivered:
            if start <= t < end:
                seconds[cid] = seconds.get(cid, 0.0) + s
        total = sum(seconds.values())
        return {cid: s / total for cid, s in sorted(seconds.items())}


def assert_shares(shares: dict[int, float], weights: dict[int, float], tolerance: float = 0.05) -> None:
    total = sum(weights.values())
    assert set(shares) == set(weights), shares
    for cid, weight in weights.items():
        expected = weight / total
        assert abs(shares[cid] - expected) <= tolerance * expected, (cid, shares, expected)


def test_registered_as_compute_time() -> None:
    assert isinstance(make_scheduler("compute-time"), ComputeTime)


def test_shares_follow_weights_one_two_four() -> None:
    sim = Simulation(WEIGHTS)
    sim.run_until(1500.0)  # about 18 000 s of compute in 30 000 tasks
    assert len(sim.delivered) > 20_000
    assert_shares(sim.shares(), WEIGHTS)
    assert_shares(sim.shares(750.0, 1500.0), WEIGHTS)  # and it stays there


@pytest.mark.parametrize("flush_every", [0.0, 2.0, 30.0, math.inf], ids=["immediate", "2s", "30s", "never"])
def test_shares_follow_weights_across_server_processes_sharing_storage(flush_every: float) -> None:
    sim = Simulation(WEIGHTS, workers=15, processes=3, flush_every=flush_every, seed=5)
    sim.run_until(1500.0)
    assert_shares(sim.shares(), WEIGHTS)


def test_a_burst_of_idle_workers_is_spread_by_weight() -> None:
    """Choices not yet answered count too (stride): 70 workers arriving together split 10:20:40."""
    scheduler = ComputeTime()
    candidates = [Candidate(cid, 0, weight, 0.0) for cid, weight in WEIGHTS.items()]
    counts = dict.fromkeys(WEIGHTS, 0)
    for _ in range(70):
        chosen = scheduler.choose(candidates)
        assert chosen is not None
        counts[chosen.campaign_id] += 1
    assert counts == {1: 10, 2: 20, 3: 40}


def test_a_campaign_that_runs_dry_leaves_its_workers_to_the_others() -> None:
    sim = Simulation(WEIGHTS, active=lambda t: {1, 2} if t >= 1000.0 else {1, 2, 3}, seed=2)
    sim.run_until(3000.0)
    assert_shares(sim.shares(0.0, 1000.0), WEIGHTS)
    after = sim.shares(1010.0, 3000.0)  # allow the tasks of campaign 3 in flight to finish
    assert_shares(after, {1: 1.0, 2: 2.0})
    assert all(cid != 3 for t, cid in sim.choices if t >= 1000.0)


def test_a_late_campaign_does_not_monopolise_the_workers() -> None:
    weights = {**WEIGHTS, 4: 1.0}
    sim = Simulation(weights, active=lambda t: {1, 2, 3, 4} if t >= 1000.0 else {1, 2, 3}, seed=3)
    sim.run_until(1000.0)
    # Campaign 4 joins with no usage at all while the others have used ~12 000 s. Without the
    # stride offset it would get every worker for ~1000 s; it gets its weighted share at once.
    sim.run_until(1400.0)
    first_choices = [cid for t, cid in sim.choices if t >= 1000.0][:64]
    assert 4 <= first_choices.count(4) <= 16  # 1/8 of 64 = 8
    assert_shares(sim.shares(1000.0, 1400.0), weights, tolerance=0.1)
    sim.run_until(3000.0)
    assert_shares(sim.shares(1000.0, 3000.0), weights)


def test_a_campaign_that_comes_back_gets_no_credit_for_its_absence() -> None:
    def active(t: float) -> set[int]:
        return {1, 2, 3} if 500.0 <= t < 1500.0 else {1, 2, 3, 5}

    weights = {**WEIGHTS, 5: 1.0}
    sim = Simulation(weights, active=active, seed=4)
    sim.run_until(1500.0)
    sim.run_until(1800.0)
    # back after 1000 s away: it takes its share again, not the whole cluster to catch up
    assert_shares(sim.shares(1500.0, 1800.0), weights, tolerance=0.15)
    back = [cid for t, cid in sim.choices if t >= 1500.0][:64]
    assert back.count(5) <= 16


def test_reported_time_is_not_counted_twice_once_storage_has_it() -> None:
    scheduler = ComputeTime()
    assert scheduler.choose([Candidate(1, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]).campaign_id == 1  # type: ignore[union-attr]
    scheduler.task_finished(1, 10.0)
    # storage has not caught up: the local report counts
    assert scheduler.choose([Candidate(1, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]).campaign_id == 2  # type: ignore[union-attr]
    scheduler.task_finished(2, 10.0)
    # storage has caught up with both: 10 s each, a tie, so the lowest id
    assert scheduler.choose([Candidate(1, 0, 1.0, 10.0), Candidate(2, 0, 1.0, 10.0)]).campaign_id == 1  # type: ignore[union-attr]


def test_a_local_report_is_not_added_again_to_stored_time_that_includes_it() -> None:
    scheduler = ComputeTime()
    assert scheduler.choose([Candidate(1, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]).campaign_id == 1  # type: ignore[union-attr]
    scheduler.task_finished(1, 10.0)
    # storage now holds this process's 10 s for campaign 1 and 15 s another process delivered to 2
    candidates = [Candidate(1, 0, 1.0, 10.0), Candidate(2, 0, 1.0, 15.0)]
    assert scheduler.choose(candidates).campaign_id == 1  # type: ignore[union-attr]


def test_stored_time_from_other_processes_counts() -> None:
    scheduler = ComputeTime()
    candidates = [Candidate(1, 0, 1.0, 500.0), Candidate(2, 0, 1.0, 10.0)]
    assert [scheduler.choose(candidates).campaign_id for _ in range(3)] == [2, 2, 2]  # type: ignore[union-attr]


def test_ties_go_to_the_lowest_id_and_weight_scales_usage() -> None:
    scheduler = ComputeTime()
    # 40 s at weight 4 is the same normalised usage as 10 s at weight 1
    candidates = [Candidate(7, 0, 4.0, 40.0), Candidate(3, 0, 1.0, 10.0)]
    assert scheduler.choose(candidates).campaign_id == 3  # type: ignore[union-attr]


def test_bad_reports_are_ignored() -> None:
    scheduler = ComputeTime()
    candidates = [Candidate(1, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]
    for bad in (-5.0, math.nan, math.inf):
        scheduler.task_finished(1, bad)
    assert scheduler.choose(candidates).campaign_id == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf])
def test_weight_must_be_positive_and_finite(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Candidate(1, 0, weight, 0.0)


@pytest.mark.parametrize("seconds", [-0.5, math.nan, math.inf])
def test_stored_compute_seconds_must_be_finite_and_not_negative(seconds: float) -> None:
    with pytest.raises(ValueError, match="compute_seconds"):
        Candidate(1, 0, 1.0, seconds)


def test_a_reset_campaign_starts_at_the_current_minimum() -> None:
    scheduler = ComputeTime()
    usage = {1: 0.0, 2: 0.0}
    for _ in range(200):
        chosen = scheduler.choose([Candidate(cid, 0, 1.0, s) for cid, s in usage.items()])
        assert chosen is not None
        usage[chosen.campaign_id] += 1.0
        scheduler.task_finished(chosen.campaign_id, 1.0)
    usage[2] = 0.0  # campaign 2 was reset: its stored compute time is gone
    picks = []
    for _ in range(20):
        chosen = scheduler.choose([Candidate(cid, 0, 1.0, s) for cid, s in usage.items()])
        assert chosen is not None
        picks.append(chosen.campaign_id)
        usage[chosen.campaign_id] += 1.0
        scheduler.task_finished(chosen.campaign_id, 1.0)
    assert picks.count(2) == 10  # alternates; it does not take 100 turns to "catch up"


def test_unanswered_choices_expire() -> None:
    scheduler = ComputeTime(charge_horizon=5)
    candidates = [Candidate(1, 0, 1.0, 0.0), Candidate(2, 0, 1.0, 0.0)]
    for _ in range(100):  # workers vanish: nothing is ever reported
        scheduler.choose(candidates)
    assert all(len(state.charges) <= 5 for state in scheduler._campaigns.values())
    with pytest.raises(ValueError):
        ComputeTime(charge_horizon=0)


def test_memory_of_absent_campaigns_is_bounded() -> None:
    scheduler = ComputeTime(max_remembered=100)
    for cid in range(1, 1000):
        scheduler.choose([Candidate(cid, 0, 1.0, 0.0)])
        scheduler.task_finished(cid + 10_000, 1.0)
    assert len(scheduler._campaigns) <= 100
