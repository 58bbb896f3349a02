"""Checkpoints in storage: the latest state of a leased dataset, kept for whoever leases it next."""

from __future__ import annotations

import msgpack

from distribute.models import FailedTask
from distribute.storage import Storage
from tests.storage.conftest import finished, make_campaign

STATE = msgpack.packb({"step": 6, "sum": 21})


async def test_a_released_dataset_is_leased_again_with_its_latest_checkpoint(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    first, second = await storage.lease(campaign, 2, "me", 30)
    assert first.checkpoint is None
    assert await storage.save_checkpoints("me", {first.id: msgpack.packb({"step": 1})}) == 1
    assert await storage.save_checkpoints("me", {first.id: STATE}) == 1
    await storage.release("me", [first.id, second.id])
    again = {d.id: d.checkpoint for d in await storage.lease(campaign, 2, "other", 30)}
    assert again == {first.id: STATE, second.id: None}


async def test_a_checkpoint_of_a_process_that_crashed_is_found_after_its_lease_expires(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    (dataset,) = await storage.lease(campaign, 1, "dead-process", -1)
    await storage.save_checkpoints("dead-process", {dataset.id: STATE})
    await storage.expire_leases()
    assert [d.checkpoint for d in await storage.lease(campaign, 1, "alive", 30)] == [STATE]


async def test_only_the_leasing_process_may_store_a_checkpoint(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    (dataset,) = await storage.lease(campaign, 1, "me", 30)
    assert await storage.save_checkpoints("someone-else", {dataset.id: STATE}) == 0
    await storage.release("me", [dataset.id])
    assert await storage.save_checkpoints("me", {dataset.id: STATE}) == 0  # pending now: not mine
    assert [d.checkpoint for d in await storage.lease(campaign, 1, "next", 30)] == [None]


async def test_a_kernel_error_keeps_the_checkpoint_for_the_retry(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    (dataset,) = await storage.lease(campaign, 1, "me", 30)
    await storage.save_checkpoints("me", {dataset.id: STATE})
    await storage.store_outcomes([], [FailedTask(dataset.id, campaign, "boom", "", 1.0, "w")], 3)
    assert [d.checkpoint for d in await storage.lease(campaign, 1, "me", 30)] == [STATE]


async def test_a_done_dataset_forgets_its_checkpoint_and_takes_no_late_one(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    (dataset,) = await storage.lease(campaign, 1, "me", 30)
    await storage.save_checkpoints("me", {dataset.id: STATE})
    assert await storage.store_outcomes([finished(dataset.id, campaign)], [], 3) == [dataset.id]
    assert await storage.save_checkpoints("me", {dataset.id: STATE}) == 0
    await storage.reset_campaign(campaign)
    assert [d.checkpoint for d in await storage.lease(campaign, 1, "me", 30)] == [None]


async def test_a_reset_forgets_the_checkpoints(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    (dataset,) = await storage.lease(campaign, 1, "me", 30)
    await storage.save_checkpoints("me", {dataset.id: STATE})
    await storage.reset_campaign(campaign)
    assert [d.checkpoint for d in await storage.lease(campaign, 1, "me", 30)] == [None]
