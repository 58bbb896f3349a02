"""The Scheduler contract, checked for every registered policy (the built-ins and installed plugins alike)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distribute.plugins import Candidate, Scheduler, make_scheduler, scheduler_names

NAMES = scheduler_names()


def make(name: str) -> Scheduler:
    """A new scheduler; plugins that take a seed from the environment get a fixed one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTRIBUTE_LOTTERY_SEED", "7")
        return make_scheduler(name)


def c(
    campaign_id: int,
    priority: int = 0,
    weight: float = 1.0,
    compute_seconds: float = 0.0,
    workers: int = 0,
    placement_seconds: float = 0.0,
) -> Candidate:
    return Candidate(campaign_id, priority, weight, compute_seconds, workers, placement_seconds)


def test_the_built_ins_and_the_example_plugin_are_covered() -> None:
    assert {"round-robin", "priority", "compute-time", "lottery"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_is_a_scheduler_named_as_registered(name: str) -> None:
    scheduler = make(name)
    assert isinstance(scheduler, Scheduler)
    assert scheduler.name == name
    assert make(name) is not scheduler  # a new instance (and so new state) per call


@pytest.mark.parametrize("name", NAMES)
def test_no_candidates_gives_none(name: str) -> None:
    scheduler = make(name)
    assert scheduler.choose([]) is None
    assert scheduler.choose(()) is None
    scheduler.choose([c(1)])
    assert scheduler.choose([]) is None


@pytest.mark.parametrize("name", NAMES)
def test_a_single_candidate_is_always_chosen(name: str) -> None:
    scheduler = make(name)
    only = c(42, priority=-3, weight=0.25, compute_seconds=1e6)
    for _ in range(50):
        assert scheduler.choose([only]) == only
        scheduler.task_finished(42, 1.5)


@pytest.mark.parametrize("name", NAMES)
def test_changing_candidate_sets(name: str) -> None:
    scheduler = make(name)
    sets = [[1, 2, 3], [2, 3], [3], [1, 3, 4], [5], [], [1, 2, 3, 4, 5], [2], [9, 1]]
    usage: dict[int, float] = {}
    for ids in sets * 5:
        candidates = [c(i, weight=float(i), compute_seconds=usage.get(i, 0.0)) for i in ids]
        chosen = scheduler.choose(candidates)
        if not ids:
            assert chosen is None
            continue
        assert chosen in candidates
        usage[chosen.campaign_id] = usage.get(chosen.campaign_id, 0.0) + 2.0
        scheduler.task_finished(chosen.campaign_id, 2.0)


@pytest.mark.parametrize("name", NAMES)
def test_task_finished_accepts_unknown_ids_and_ignores_bad_values(name: str) -> None:
    scheduler = make(name)
    scheduler.task_finished(999, 3.0)  # before any choice, for a campaign never offered
    for bad in (-1.0, math.nan, math.inf, -math.inf):
        scheduler.task_finished(1, bad)
    candidates = [c(1), c(2)]
    assert scheduler.choose(candidates) in candidates
    scheduler.task_finished(12345, 0.0)
    scheduler.task_finished(2, 1e9)
    assert scheduler.choose(candidates) in candidates


@pytest.mark.parametrize("name", NAMES)
def test_equal_campaigns_are_all_served(name: str) -> None:
    scheduler = make(name)
    candidates = [c(i) for i in (3, 1, 4, 5, 9)]
    seen = set()
    for _ in range(200):
        chosen = scheduler.choose(candidates)
        assert chosen is not None
        seen.add(chosen.campaign_id)
        scheduler.task_finished(chosen.campaign_id, 1.0)
    assert seen == {1, 3, 4, 5, 9}


@pytest.mark.parametrize("name", NAMES)
def test_choices_do_not_depend_on_the_order_of_candidates(name: str) -> None:
    ordered, shuffled = make(name), make(name)
    rng = random.Random(3)
    base = [c(i, priority=i % 2, weight=1.0 + i % 3) for i in range(1, 8)]
    for _ in range(100):
        mixed = base[:]
        rng.shuffle(mixed)
        a, b = ordered.choose(base), shuffled.choose(mixed)
        assert a == b
        assert a is not None
        ordered.task_finished(a.campaign_id, 0.5)
        shuffled.task_finished(b.campaign_id, 0.5)


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("choose"),
            st.dictionaries(
                st.integers(1, 12),
                st.tuples(
                    st.integers(-3, 3), st.floats(0.01, 100), st.floats(0, 1e6), st.integers(0, 50), st.floats(0, 100)
                ),
                max_size=8,
            ),
        ),
        st.tuples(st.just("report"), st.tuples(st.integers(-5, 20), st.floats(allow_nan=True, allow_infinity=True))),
    ),
    max_size=60,
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_any_sequence_of_calls_keeps_the_contract(name: str, ops: list[tuple[str, object]]) -> None:
    scheduler = make(name)
    for kind, data in ops:
        if kind == "choose":
            assert isinstance(data, dict)
            candidates = [c(cid, p, w, s, n, h) for cid, (p, w, s, n, h) in data.items()]
            chosen = scheduler.choose(candidates)
            assert (chosen is None) == (not candidates)
            assert chosen is None or chosen in candidates
        else:
            assert isinstance(data, tuple)
            scheduler.task_finished(*data)
