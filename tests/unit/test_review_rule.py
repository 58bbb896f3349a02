"""The review rule: which campaigns workers that ask for any campaign may get (`servable_to_any`), which
ones workers that name a campaign may get (`servable_when_named`), and the dispatcher's choice for the
former, on the in-memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import msgpack
import pytest
import trio

from distribute.models import Campaign, Review, servable_to_any, servable_when_named
from distribute.scheduler.builtin import RoundRobin
from distribute.settings import Settings
from distribute.storage.memory.store import MemoryStorage
from distribute.work.dispatcher import Dispatcher

CAMPAIGN = Campaign(
    id=1,
    owner_id=1,
    name="c",
    description="",
    kernel="k",
    static_dataset="",
    generator="g",
    priority=0,
    weight=1.0,
    replication=1,
    task_timeout=5.0,
    status="running",
    generation_error=None,
    deleted=False,
    created=datetime.now(UTC),
    content_hash="h",
    generated=1,
    compute_seconds=0.0,
)


@pytest.mark.parametrize(
    ("review", "deleted", "to_any", "when_named"),
    [
        (Review.APPROVED, False, True, True),
        (Review.PENDING, False, False, True),
        (Review.REJECTED, False, False, False),
        (Review.APPROVED, True, False, False),
        (Review.PENDING, True, False, False),
    ],
)
def test_who_may_be_served_a_campaign(review: str, deleted: bool, to_any: bool, when_named: bool) -> None:
    campaign = replace(CAMPAIGN, review=review, deleted=deleted)
    assert (servable_to_any(campaign), servable_when_named(campaign)) == (to_any, when_named)


def test_a_campaign_is_approved_unless_said_otherwise() -> None:
    assert CAMPAIGN.review == Review.APPROVED and CAMPAIGN.review_reason == ""


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    store = await MemoryStorage.open("memory://")
    yield store
    await store.aclose()


async def campaign_with_work(storage: MemoryStorage, review: str) -> int:
    owner = await storage.create_user(f"{review}@example.org")
    campaign = await storage.create_campaign(
        owner.id, name=review, kernel="k", generator="[]", task_timeout=10.0, review=review
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(4)], exhausted=True)
    return campaign.id


async def test_the_dispatcher_chooses_only_approved_campaigns_for_any_worker(storage: MemoryStorage) -> None:
    pending = await campaign_with_work(storage, Review.PENDING)
    approved = await campaign_with_work(storage, Review.APPROVED)
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, Settings(), RoundRobin())
        await nursery.start(dispatcher.run)
        chosen = {dispatcher.choose_campaign().id for _ in range(6)}  # type: ignore[union-attr]
        assert chosen == {approved}
        assert dispatcher.choose_campaign(exclude=[approved]) is None
        assert dispatcher.queue(pending) is not None  # learnt all the same: workers that name it get it
        await storage.set_review(pending, Review.APPROVED)
        await dispatcher.refresh_campaigns()
        assert dispatcher.choose_campaign(exclude=[approved]).id == pending  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def test_the_dispatcher_drops_a_campaign_once_rejected(storage: MemoryStorage) -> None:
    campaign_id = await campaign_with_work(storage, Review.PENDING)
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, Settings(), RoundRobin())
        await nursery.start(dispatcher.run)
        await storage.set_review(campaign_id, Review.REJECTED, "no")
        await dispatcher.refresh_campaigns()
        queue = dispatcher.queue(campaign_id)
        assert queue is not None and queue.complete  # retired: nobody gets its tasks
        nursery.cancel_scope.cancel()
