"""Auto-pause: the early-failure watch (pure), and the dispatcher stopping a paused campaign.

The dispatcher runs on the in-memory backend; connections are played by direct calls (`take`,
`finish`), as the gateway makes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgpack
import pytest
import trio

from distribute.models import CampaignStatus, FailedTask, FinishedTask
from distribute.scheduler.builtin import RoundRobin
from distribute.settings import Settings
from distribute.storage.memory.store import MemoryStorage
from distribute.work.dispatcher import Dispatcher
from distribute.work.early import EarlyFailures

SETTINGS = Settings(flush_interval=0.01, flush_interval_low_rate=0.05, refill_batch=4, pause_after_failures=10)


def ok(campaign_id: int, dataset_id: int = 1) -> FinishedTask:
    return FinishedTask(dataset_id, campaign_id, msgpack.packb(1), 1.0, "w", "")


def bad(campaign_id: int, message: str = "ReferenceError: main is not defined", dataset_id: int = 1) -> FailedTask:
    return FailedTask(dataset_id, campaign_id, message, "", 1.0, "w")


# --------------------------------------------------------------------------- the watch


def feed(early: EarlyFailures, outcomes: list[FinishedTask | FailedTask]) -> list[str]:
    """The reasons to pause that the outcomes, one by one, brought."""
    return [reason for outcome in outcomes if (reason := early.record(outcome)) is not None]


def test_a_window_of_mostly_failures_pauses_with_the_count_and_the_most_common_message() -> None:
    early = EarlyFailures(10, 0.8)
    early.open(7)
    assert feed(early, [ok(7), bad(7, "other"), ok(7)]) == []
    assert feed(early, [bad(7)] * 7) == ["8 of its first 10 tasks failed: ReferenceError: main is not defined"]


def test_a_healthy_campaign_with_a_few_bad_datasets_is_not_paused() -> None:
    early = EarlyFailures(20, 0.9)
    early.open(1)
    # Two bad datasets failing three times each among the first twenty outcomes.
    assert feed(early, [bad(1)] * 6 + [ok(1)] * 14) == []


def test_each_window_is_judged_once_and_reopening_starts_afresh() -> None:
    early = EarlyFailures(4, 0.75)
    early.open(1)
    assert feed(early, [ok(1)] * 4) == []
    assert feed(early, [bad(1)] * 10) == []  # closed: later failures do not pause
    early.open(1)
    assert len(feed(early, [bad(1)] * 4)) == 1


def test_other_campaigns_outcomes_do_not_count() -> None:
    early = EarlyFailures(4, 0.75)
    early.open(1)
    assert feed(early, [bad(2)] * 10 + [bad(1)] * 3) == []


def test_a_window_of_size_zero_turns_auto_pause_off() -> None:
    early = EarlyFailures(0, 0.5)
    early.open(1)
    assert feed(early, [bad(1)] * 100) == []


# --------------------------------------------------------------------------- the dispatcher


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    store = await MemoryStorage.open("memory://")
    yield store
    await store.aclose()


async def new_campaign(storage: MemoryStorage, n: int, name: str) -> int:
    owner = await storage.create_user(f"{name}@example.org")
    campaign = await storage.create_campaign(
        owner.id, name=name, kernel="({main: function (d) { return d; }})", generator="[]", task_timeout=10.0
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    return campaign.id


async def status_of(storage: MemoryStorage, campaign_id: int, status: str) -> str | None:
    with trio.fail_after(5):
        while (campaign := await storage.get_campaign(campaign_id)) is None or campaign.status != status:
            await trio.sleep(0.01)
    return campaign.generation_error


async def test_a_campaign_whose_first_tasks_fail_pauses_itself_with_its_reason(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 50, "broken")
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, SETTINGS, RoundRobin())
        await nursery.start(dispatcher.run)
        while (queue := dispatcher.queue(campaign_id)) is not None and not queue.complete:
            for task in await dispatcher.take(campaign_id, 4, holder=1, timeout=10.0, max_bytes=1 << 20):
                dispatcher.finish(1, bad(campaign_id, dataset_id=task.id))
            await trio.sleep(0.01)
        reason = await status_of(storage, campaign_id, CampaignStatus.PAUSED)
        assert reason == "10 of its first 10 tasks failed: ReferenceError: main is not defined"
        nursery.cancel_scope.cancel()


async def test_a_paused_campaign_hands_out_no_task_and_its_queued_datasets_go_back_to_storage(
    storage: MemoryStorage,
) -> None:
    campaign_id = await new_campaign(storage, 20, "paused")
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, SETTINGS, RoundRobin())
        await nursery.start(dispatcher.run)
        assert await dispatcher.take(campaign_id, 1, holder=1, timeout=10.0, max_bytes=1 << 20)
        await dispatcher.pause(campaign_id, "paused by its owner")
        assert await dispatcher.take(campaign_id, 4, holder=2, timeout=10.0, max_bytes=1 << 20) == []
        with trio.fail_after(5):  # the next group commit releases what was queued here
            while (await storage.counts(campaign_id)).leased != 1:  # only the task a connection holds
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_worker_for_any_campaign_moves_on_from_a_paused_one(storage: MemoryStorage) -> None:
    paused = await new_campaign(storage, 10, "first")
    other = await new_campaign(storage, 10, "second")
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, SETTINGS, RoundRobin())
        await nursery.start(dispatcher.run)
        await dispatcher.pause(paused, "paused by its owner")
        chosen = {(c.id if (c := dispatcher.choose_campaign()) else None) for _ in range(4)}
        assert chosen == {other}
        nursery.cancel_scope.cancel()


async def test_a_resumed_campaign_is_served_again(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 30, "resumed")
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, SETTINGS, RoundRobin())
        await nursery.start(dispatcher.run)
        await dispatcher.pause(campaign_id, "paused by its owner")
        assert await dispatcher.take(campaign_id, 4, holder=1, timeout=10.0, max_bytes=1 << 20) == []
        await storage.set_status(campaign_id, CampaignStatus.RUNNING)
        await dispatcher.refresh_campaigns()
        assert len(await dispatcher.take(campaign_id, 4, holder=1, timeout=10.0, max_bytes=1 << 20)) == 4
        nursery.cancel_scope.cancel()


async def test_a_resumed_campaign_that_still_fails_pauses_again_after_a_fresh_window(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 100, "still-broken")
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(storage, SETTINGS, RoundRobin())
        await nursery.start(dispatcher.run)
        for _ in range(2):
            await storage.set_status(campaign_id, CampaignStatus.RUNNING)
            await dispatcher.refresh_campaigns()
            failures = 0
            while (queue := dispatcher.queue(campaign_id)) is not None and not queue.complete:
                for task in await dispatcher.take(campaign_id, 2, holder=1, timeout=10.0, max_bytes=1 << 20):
                    failures += dispatcher.finish(1, bad(campaign_id, dataset_id=task.id))
                await trio.sleep(0.01)
            await status_of(storage, campaign_id, CampaignStatus.PAUSED)
            assert failures >= SETTINGS.pause_after_failures
        nursery.cancel_scope.cancel()
