"""round-robin: exact rotation in campaign-id order, surviving changes of the candidate set."""

from __future__ import annotations

from collections.abc import Iterable

from distribute.plugins import make_scheduler
from distribute.scheduler import Candidate, RoundRobin


def cands(ids: Iterable[int]) -> list[Candidate]:
    return [Candidate(i, priority=-i, weight=float(i), compute_seconds=100.0 * i) for i in ids]


def picks(scheduler: RoundRobin, ids: Iterable[int], n: int) -> list[int]:
    out = []
    for _ in range(n):
        chosen = scheduler.choose(cands(ids))
        assert chosen is not None
        out.append(chosen.campaign_id)
        scheduler.task_finished(chosen.campaign_id, 1000.0)  # ignored
    return out


def test_registered_as_round_robin() -> None:
    assert isinstance(make_scheduler("round-robin"), RoundRobin)


def test_exact_alternation_over_three_campaigns() -> None:
    # the input order, priorities, weights and usage do not matter: only campaign ids do
    assert picks(RoundRobin(), [30, 10, 20], 9) == [10, 20, 30] * 3


def test_rotation_follows_a_changing_candidate_set() -> None:
    rr = RoundRobin()
    assert picks(rr, [1, 2, 3], 2) == [1, 2]
    assert picks(rr, [1, 3, 5], 3) == [3, 5, 1]  # continues after 2
    assert picks(rr, [1], 2) == [1, 1]
    assert picks(rr, [2, 4], 3) == [2, 4, 2]
    assert picks(rr, [1, 3], 2) == [3, 1]  # 2 ran dry: the next id after it
    assert rr.choose([]) is None
    assert picks(rr, [1, 2, 3], 3) == [2, 3, 1]  # an empty call does not reset the rotation
