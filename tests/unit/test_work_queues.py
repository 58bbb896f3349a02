"""The dispatcher's queues and the verifier's decisions about them, without a server or storage.

`Queues` is the one owner of the queues' state; the verifier only returns decisions (`CopyPick`,
`Answer`, datasets to offer again) that the queues carry out. Both are synchronous and pure.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from distribute.models import Campaign, CampaignStatus, FailedTask, FinishedTask, LeasedDataset, ResultStatus
from distribute.settings import Settings
from distribute.work.decisions import JUDGED, REFUSED, CopyPick, Store
from distribute.work.queues import Queues, has_work
from distribute.work.verifier import Verifier


def campaign(campaign_id: int = 1, **changes: Any) -> Campaign:
    fields: dict[str, Any] = dict(
        id=campaign_id,
        owner_id=1,
        name="c",
        description="",
        kernel="",
        static_dataset="",
        generator="",
        priority=0,
        weight=1.0,
        replication=1,
        task_timeout=10.0,
        status=CampaignStatus.RUNNING,
        generation_error=None,
        deleted=False,
        created=datetime.now(UTC),
        content_hash="",
        generated=0,
        compute_seconds=0.0,
    )
    fields.update(changes)
    return Campaign(**fields)


def datasets(campaign_id: int, *ids: int, size: int = 1) -> list[LeasedDataset]:
    return [LeasedDataset(i, campaign_id, b"\x00" * size) for i in ids]


def ready_ids(queues: Queues, campaign_id: int = 1) -> list[int]:
    queue = queues.get(campaign_id)
    assert queue is not None
    return [d.id for d in queue.ready]


# ---------------------------------------------------------------------- the queues


def test_a_new_campaign_gets_a_queue_and_a_status_change_makes_it_look_in_storage_again() -> None:
    queues = Queues()
    assert queues.learn(campaign(status=CampaignStatus.GENERATING))
    queue = queues.get(1)
    assert queue is not None and queues.accepts_work(1) and has_work(queue)
    queue.drained = True
    assert not queues.learn(campaign(status=CampaignStatus.GENERATING)) and queue.drained
    assert not queues.learn(campaign(status=CampaignStatus.RUNNING)) and not queue.drained
    assert queues.campaign(1) == campaign(status=CampaignStatus.RUNNING, created=queue.campaign.created)
    queues.retire(queue)
    assert not queues.accepts_work(1) and queues.campaign(1) is not None
    assert queues.learn(campaign()) and queues.get(1) is not queue  # reset after completion: a fresh queue


def test_take_skips_datasets_the_connection_let_expire_and_stops_at_the_byte_budget() -> None:
    queues = Queues()
    queues.learn(campaign())
    queue = queues.get(1)
    assert queue is not None
    queues.add_leased(queue, datasets(1, 1, 2, 3, 4, 5, size=10), batch=5, held=set(), wake_any=False)
    taken = queues.take(queue, n=10, max_bytes=25, passed_over={1})
    assert [d.id for d in taken] == [2, 3]  # 30 bytes would pass 25
    assert ready_ids(queues) == [1, 4, 5]  # the expired one stays at the front, for somebody else
    assert [d.id for d in queues.take(queue, n=1, max_bytes=1, passed_over=set())] == [1]  # one always
    assert queue.taken == 3


def test_queued_datasets_nobody_here_asked_for_go_back_and_the_queue_looks_in_storage_again() -> None:
    queues = Queues()
    for campaign_id in (1, 2, 3, 4):
        queues.learn(campaign(campaign_id, replication=3 if campaign_id == 3 else 1))
    for campaign_id, asked in ((1, 95.0), (2, 50.0), (3, 50.0), (4, 50.0)):
        queue = queues.get(campaign_id)
        assert queue is not None
        queues.add_leased(
            queue, datasets(campaign_id, 10 * campaign_id, 10 * campaign_id + 1), 9, set(), wake_any=False
        )
        queue.asked = asked
    busy = queues.get(4)
    assert busy is not None
    busy.refilling = True  # a refill on its way: its datasets arrive after this look
    assert sorted(queues.give_back_idle(now=100.0, idle_for=30.0)) == [20, 21]
    given_back = queues.get(2)
    assert given_back is not None and not given_back.ready and not given_back.drained and has_work(given_back)
    assert ready_ids(queues, 1) == [10, 11]  # asked 5 s ago
    assert ready_ids(queues, 3) == [30, 31]  # replicated: the verifier knows who holds which copy
    assert ready_ids(queues, 4) == [40, 41]
    assert queues.give_back_idle(now=100.0, idle_for=30.0) == []  # nothing twice


def test_a_refill_grows_with_demand_and_only_one_runs_at_a_time() -> None:
    queues = Queues()
    queues.learn(campaign())
    queue = queues.get(1)
    assert queue is not None
    assert queues.begin_refill(queue, base=10, growth=4, now=0.0) == 10
    assert queues.begin_refill(queue, base=10, growth=4, now=0.1) is None  # one is running
    queues.end_refill(queue)
    queue.taken = 30
    assert queues.begin_refill(queue, base=10, growth=4, now=0.5) == 40  # 2 x demand, capped at 4 x base
    queues.end_refill(queue)
    queue.taken = 30
    assert queues.begin_refill(queue, base=10, growth=4, now=5.0) == 10  # the demand is old


def test_leased_datasets_are_queued_once_and_a_short_batch_means_drained() -> None:
    queues = Queues()
    queues.learn(campaign())
    queue = queues.get(1)
    assert queue is not None
    assert queues.add_leased(queue, datasets(1, 1, 2), batch=2, held=set(), wake_any=False)  # was empty: wake
    assert not queue.drained
    assert not queues.add_leased(queue, datasets(1, 2, 3, 4), batch=5, held={4}, wake_any=False)
    assert ready_ids(queues) == [1, 2, 3] and queue.drained
    assert queues.add_leased(queue, [], batch=5, held=set(), wake_any=True)  # replicated: wake for any


def test_requeue_and_discard_change_only_open_queues() -> None:
    queues = Queues()
    queues.learn(campaign(1))
    queues.add_retired(campaign(2, status=CampaignStatus.COMPLETE))
    assert queues.requeue(LeasedDataset(7, 1, b""))
    assert not queues.requeue(LeasedDataset(8, 2, b""))  # retired: nobody would hand it out
    assert not queues.requeue(LeasedDataset(9, 3, b""))  # unknown
    queues.discard(1, 7)
    assert ready_ids(queues) == [] and queues.queued_ids() == set()


def test_a_copy_pick_drops_what_was_scanned_and_keeps_what_waits_for_others() -> None:
    queues = Queues()
    queues.learn(campaign(replication=2))
    queue = queues.get(1)
    assert queue is not None
    a, b, c, d = datasets(1, 1, 2, 3, 4)
    queues.add_leased(queue, [a, b, c, d], batch=4, held=set(), wake_any=True)
    queues.apply_pick(queue, CopyPick(scanned=3, taken=(a, c), kept=(a, b)))
    assert ready_ids(queues) == [1, 2, 4] and queue.taken == 2


# ---------------------------------------------------------------------- the verifier's decisions


class NoStorage:
    """The decisions below never reach storage."""


def verifier(queues: Queues, **settings: Any) -> Verifier:
    return Verifier(NoStorage(), Settings(**settings), queues, rng=random.Random(1))  # type: ignore[arg-type]


def replicated(queues: Queues, *ids: int) -> tuple[Verifier, list[LeasedDataset]]:
    queues.learn(campaign(replication=2))
    queue = queues.get(1)
    assert queue is not None
    v = verifier(queues, trust_threshold=0)
    fresh = v.add_leased(2, datasets(1, *ids))
    queues.add_leased(queue, fresh, batch=len(ids), held=set(), wake_any=True)
    return v, fresh


def pick_for(v: Verifier, queues: Queues, holder: int, worker: tuple[str, str], n: int = 10) -> list[int]:
    queue = queues.get(1)
    assert queue is not None
    pick = v.pick(queue.ready, n, holder, worker, deadline=10.0, timeout=5.0, max_bytes=1 << 20)
    queues.apply_pick(queue, pick)
    return [d.id for d in pick.taken]


def test_copies_go_to_distinct_workers_and_stay_queued_until_each_dataset_has_enough() -> None:
    queues = Queues()
    v, _ = replicated(queues, 1, 2)
    assert pick_for(v, queues, 1, ("alice", "10.0.0.1")) == [1, 2]
    assert ready_ids(queues) == [1, 2]  # each wants a second copy
    assert pick_for(v, queues, 2, ("alice", "10.0.0.2")) == []  # the same identity
    assert pick_for(v, queues, 3, ("bob", "10.0.0.1")) == []  # the same address
    assert ready_ids(queues) == [1, 2]
    assert pick_for(v, queues, 4, ("bob", "10.0.0.4"), n=1) == [1]
    assert ready_ids(queues) == [2]
    assert v.held(1) and v.busy()


def test_answers_are_stored_refused_or_judged_and_a_failed_copy_is_offered_again() -> None:
    queues = Queues()
    v, _ = replicated(queues, 1, 2)
    pick_for(v, queues, 1, ("alice", "10.0.0.1"))
    assert v.answer(9, FinishedTask(1, 1, b"\x01", 1.0, "w", "")) is REFUSED  # never held
    stored = v.answer(1, FinishedTask(1, 1, b"\x01", 1.0, "w", ""))
    assert isinstance(stored, Store) and stored.offer is None
    assert isinstance(stored.outcome, FinishedTask)
    assert stored.outcome.status == ResultStatus.PENDING and stored.outcome.identity == "alice"
    assert v.answer(1, FinishedTask(1, 1, b"\x01", 1.0, "w", "")) is REFUSED  # answered already
    failed = v.answer(1, FailedTask(2, 1, "boom", "", 1.0, "w"))
    assert isinstance(failed, Store) and isinstance(failed.outcome, FailedTask) and failed.outcome.replica
    assert failed.offer is None  # still queued for its second copy: nothing to offer
    assert ready_ids(queues) == [1, 2]
    # The dataset left the queue (both copies out); a failed copy brings it back.
    pick_for(v, queues, 2, ("bob", "10.0.0.2"))
    pick_for(v, queues, 3, ("carol", "10.0.0.3"))
    assert ready_ids(queues) == []
    again = v.answer(3, FailedTask(2, 1, "boom", "", 1.0, "w"))
    assert isinstance(again, Store) and again.offer is not None and again.offer.id == 2


def test_a_copy_whose_connection_left_is_offered_again_unless_its_campaign_is_closed() -> None:
    queues = Queues()
    v, _ = replicated(queues, 1)
    pick_for(v, queues, 1, ("alice", "10.0.0.1"))
    pick_for(v, queues, 2, ("bob", "10.0.0.2"))
    offer = v.drop(1, 1, late=False)
    assert offer is not None and offer.id == 1
    assert v.drop(1, 1, late=False) is None  # gone already
    queue = queues.get(1)
    assert queue is not None
    queues.retire(queue)
    assert v.drop(2, 1, late=False) is None  # retired: nobody would hand it out


def test_overdue_copies_are_offered_again_and_their_late_answers_still_count() -> None:
    queues = Queues()
    v, _ = replicated(queues, 1)
    pick_for(v, queues, 1, ("alice", "10.0.0.1"))
    pick_for(v, queues, 2, ("bob", "10.0.0.2"))
    offers = v.overdue(lambda holder, deadline, timeout: holder == 1)
    assert [d.id for d in offers] == [1]
    assert isinstance(v.answer(1, FinishedTask(1, 1, b"\x01", 1.0, "w", "")), Store)


def test_spot_checks_are_mixed_in_and_their_answers_judged_not_stored() -> None:
    queues = Queues()
    queues.learn(campaign())
    v = verifier(queues, spot_check_rate=1.0)
    spot = LeasedDataset(50, 1, b"\x01", expected=b"\x01")
    assert not v.has_spot_checks(1)
    v.set_spot_checks(1, [spot])
    assert v.has_spot_checks(1)
    assert v.mix_spot_checks(1, 3, holder=1, worker=("a", "x"), deadline=1.0, timeout=1.0) == [spot]  # once
    assert v.answer(1, FinishedTask(50, 1, b"\x01", 1.0, "w", "")) is JUDGED
    assert v.answer(1, FinishedTask(50, 1, b"\x01", 1.0, "w", "")) is REFUSED  # not held any more
    v.retire(1)
    assert not v.has_spot_checks(1)
