"""priority: strictly highest priority first, round-robin within a level."""

from __future__ import annotations

from distribute.plugins import make_scheduler
from distribute.scheduler import Candidate, Priority

LEVELS = {1: 0, 2: 5, 3: 5, 4: 1, 5: 5, 6: 1}


def pick(scheduler: Priority, ids: list[int]) -> int:
    chosen = scheduler.choose([Candidate(i, LEVELS[i], weight=1.0 + i, compute_seconds=0.0) for i in ids])
    assert chosen is not None
    scheduler.task_finished(chosen.campaign_id, 5.0)
    return chosen.campaign_id


def test_registered_as_priority() -> None:
    assert isinstance(make_scheduler("priority"), Priority)


def test_exact_order() -> None:
    scheduler = Priority()
    everything = [6, 5, 4, 3, 2, 1]
    assert [pick(scheduler, everything) for _ in range(6)] == [2, 3, 5, 2, 3, 5]
    # level 5 ran dry: level 1 gets the workers, round-robin
    assert [pick(scheduler, [1, 4, 6]) for _ in range(4)] == [4, 6, 4, 6]
    # only level 0 left
    assert [pick(scheduler, [1]) for _ in range(2)] == [1, 1]


def test_lower_levels_wait_while_a_higher_level_has_work() -> None:
    scheduler = Priority()
    assert {pick(scheduler, [1, 4, 2]) for _ in range(50)} == {2}


def test_round_robin_within_a_level_resumes_after_a_higher_level_leaves() -> None:
    scheduler = Priority()
    assert [pick(scheduler, [4, 6]) for _ in range(3)] == [4, 6, 4]
    assert [pick(scheduler, [2, 4, 6]) for _ in range(2)] == [2, 2]  # level 5 pre-empts level 1
    assert [pick(scheduler, [4, 6]) for _ in range(3)] == [6, 4, 6]  # level 1 continues after 4


def test_negative_and_large_priorities() -> None:
    scheduler = Priority()
    candidates = [Candidate(1, -10, 1.0, 0.0), Candidate(2, 10**12, 1.0, 0.0), Candidate(3, 0, 1.0, 0.0)]
    assert [scheduler.choose(candidates).campaign_id for _ in range(3)] == [2, 2, 2]  # type: ignore[union-attr]
