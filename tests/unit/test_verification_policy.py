"""The pure verification core: canonical bytes, quorum decisions, the adaptive-trust policy, replicas."""

from __future__ import annotations

import random

import msgpack
import pytest

from distribute.models import LeasedDataset, Vote
from distribute.work.replicas import Copy, Replicas
from distribute.work.verification import Conflict, More, Quorum, canonical, decide, trust_probability, worker_key


def vote(result_id: int, value: object, worker: str, address: str | None = None) -> Vote:
    return Vote(result_id, canonical(value), worker, address or f"10.0.0.{result_id}")


def test_canonical_bytes_are_equal_for_equal_maps_in_any_key_order() -> None:
    a = {"b": 1, "a": [{"y": 2, "x": 1}], 3: "int key"}
    b = {3: "int key", "a": [{"x": 1, "y": 2}], "b": 1}
    assert msgpack.packb(a) != msgpack.packb(b)  # plain packing keeps insertion order
    assert canonical(a) == canonical(b)
    assert msgpack.unpackb(canonical(a), strict_map_key=False) == a


def test_two_agreeing_votes_from_different_workers_are_a_quorum_of_two() -> None:
    verdict = decide([vote(1, [5], "a"), vote(2, [5], "b")], replication=2, max_copies=6)
    assert verdict == Quorum(canonical=1, agreeing=(1, 2), disagreeing=(), liars=())


def test_a_disagreement_asks_for_one_more_copy_and_the_third_decides() -> None:
    two = [vote(1, [5], "honest"), vote(2, [6], "liar")]
    assert decide(two, replication=2, max_copies=6) == More(wanted=3)
    three = [*two, vote(3, [5], "other")]
    assert decide(three, replication=2, max_copies=6) == Quorum(1, (1, 3), (2,), ("liar",))


def test_agreement_from_one_worker_or_one_address_is_not_a_quorum() -> None:
    same_worker = [vote(1, [5], "a"), vote(2, [5], "a")]
    assert decide(same_worker, replication=2, max_copies=6) == More(wanted=3)
    same_address = [vote(1, [5], "a", "10.1.1.1"), vote(2, [5], "b", "10.1.1.1")]
    assert decide(same_address, replication=2, max_copies=6) == More(wanted=3)
    assert isinstance(decide(same_address, replication=2, max_copies=6, distinct_addresses=False), Quorum)


def test_no_quorum_within_max_copies_is_a_conflict() -> None:
    votes = [vote(i, [i], f"w{i}") for i in range(1, 4)]
    assert decide(votes[:2], replication=2, max_copies=3) == More(wanted=3)
    assert decide(votes, replication=2, max_copies=3) == Conflict((1, 2, 3))


def test_a_comparator_groups_results_that_differ_only_by_float_noise() -> None:
    votes = [Vote(1, canonical(0.1 + 0.2), "a", "x"), Vote(2, canonical(0.3), "b", "y")]
    assert decide(votes, replication=2, max_copies=6) == More(wanted=3)

    def close(a: bytes | None, b: bytes | None) -> bool:
        return a is not None and b is not None and abs(msgpack.unpackb(a) - msgpack.unpackb(b)) < 1e-9

    assert isinstance(decide(votes, replication=2, max_copies=6, same=close), Quorum)


def test_trust_is_zero_until_the_threshold_then_rises_towards_the_ceiling() -> None:
    assert trust_probability(0, threshold=20, ceiling=0.9) == 0.0
    assert trust_probability(20, threshold=20, ceiling=0.9) == 0.0
    values = [trust_probability(n, threshold=20, ceiling=0.9) for n in (21, 40, 100, 1000, 10**6)]
    assert values == sorted(values) and values[0] > 0
    assert trust_probability(40, threshold=20, ceiling=0.9) == pytest.approx(0.45)
    assert values[-1] < 0.9
    assert trust_probability(10**6, threshold=0, ceiling=0.9) == 0.0  # 0 disables adaptive replication


def test_worker_key_is_the_identity_or_else_the_address() -> None:
    assert worker_key("abc", "1.2.3.4") == "abc"
    assert worker_key("", "1.2.3.4") == "ip:1.2.3.4"


def test_replicas_refuse_a_second_copy_to_one_connection_identity_or_address() -> None:
    rep = Replicas(LeasedDataset(1, 1, b"\x90"), wanted=2)
    rep.hand_out(Copy(holder=7, worker=("alice", "10.0.0.1"), deadline=0, timeout=1), trusted=False)
    assert not rep.eligible(7, ("other", "10.0.0.9"), distinct_addresses=True)  # same connection
    assert not rep.eligible(8, ("alice", "10.0.0.9"), distinct_addresses=True)  # same identity
    assert not rep.eligible(8, ("bob", "10.0.0.1"), distinct_addresses=True)  # same address
    assert rep.eligible(8, ("bob", "10.0.0.1"), distinct_addresses=False)
    assert rep.eligible(8, ("bob", "10.0.0.2"), distinct_addresses=True)
    assert rep.needs_copies()
    rep.take_back(7, late=False)  # the connection left: its copy is offered again, not to it
    assert rep.needs_copies() and not rep.eligible(7, ("x", "10.9.9.9"), distinct_addresses=True)


def test_a_trusted_copy_stops_further_copies_until_it_is_taken_back() -> None:
    rep = Replicas(LeasedDataset(1, 1, b"\x90"), wanted=2)
    rep.hand_out(Copy(holder=1, worker=("t", "a"), deadline=0, timeout=1), trusted=True)
    assert not rep.needs_copies()
    rep.take_back(1, late=True)
    assert rep.needs_copies() and rep.trusted is None


def test_the_trust_policy_rate_is_what_random_draws_give() -> None:
    # The dispatcher draws rng.random() < trust_probability(...): check that rate over many draws.
    p = trust_probability(100, threshold=20, ceiling=0.9)
    rng = random.Random(7)
    rate = sum(rng.random() < p for _ in range(20000)) / 20000
    assert rate == pytest.approx(p, abs=0.02)
