"""Kernel errors grouped by message (`ResultStore.kernel_error_groups`), on every backend."""

from __future__ import annotations

import trio

from distribute.models import FailedTask
from distribute.storage import Storage
from tests.storage.conftest import make_campaign


def failure(dataset_id: int, campaign_id: int, message: str, stack: str = "") -> FailedTask:
    return FailedTask(dataset_id, campaign_id, message, stack, 1.0, "w")


async def test_errors_with_one_message_form_one_group_with_counts_times_and_examples(storage: Storage) -> None:
    campaign = await make_campaign(storage, 6)
    ids = [d.id for d in await storage.lease(campaign, 6, "p", 30)]
    await storage.store_outcomes([], [failure(i, campaign, "ReferenceError: main is not defined") for i in ids], 9)
    await trio.sleep(0.01)
    await storage.store_outcomes([], [failure(ids[0], campaign, "ReferenceError: main is not defined")], 9)
    (group,) = await storage.kernel_error_groups(campaign, examples=3)
    assert (group.message, group.count, group.datasets) == ("ReferenceError: main is not defined", 7, 6)
    assert group.examples == tuple(sorted(ids)[:3])
    assert group.first_seen < group.last_seen


async def test_a_groups_examples_carry_their_numbers_in_the_campaign(storage: Storage) -> None:
    await make_campaign(storage, 4)  # another campaign's datasets first: global ids and numbers differ
    campaign = await make_campaign(storage, 5)
    ids = sorted(d.id for d in await storage.lease(campaign, 5, "p", 30))
    await storage.store_outcomes([], [failure(i, campaign, "boom") for i in ids[1:4]], 9)
    (group,) = await storage.kernel_error_groups(campaign, examples=2)
    assert group.examples == tuple(ids[1:3])
    assert group.example_numbers == (2, 3)


async def test_groups_come_latest_first_and_the_limit_counts_groups(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3)
    ids = [d.id for d in await storage.lease(campaign, 3, "p", 30)]
    for dataset_id, message in zip(ids, ("older", "newer", "older"), strict=True):
        await storage.store_outcomes([], [failure(dataset_id, campaign, message)], 9)
        await trio.sleep(0.01)
    groups = await storage.kernel_error_groups(campaign)
    assert [(g.message, g.count) for g in groups] == [("older", 2), ("newer", 1)]
    assert [g.message for g in await storage.kernel_error_groups(campaign, limit=1)] == ["older"]


async def test_a_group_keeps_a_stack_only_when_one_was_reported(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    ids = [d.id for d in await storage.lease(campaign, 2, "p", 30)]
    await storage.store_outcomes([], [failure(ids[0], campaign, "with", "at main (kernel.js:3)")], 9)
    await trio.sleep(0.01)
    await storage.store_outcomes([], [failure(ids[1], campaign, "with", ""), failure(ids[0], campaign, "bare")], 9)
    stacks = {g.message: g.stack for g in await storage.kernel_error_groups(campaign)}
    assert stacks == {"with": "at main (kernel.js:3)", "bare": ""}


async def test_a_campaign_without_errors_or_unknown_has_no_groups(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1)
    assert await storage.kernel_error_groups(campaign) == []
    assert await storage.kernel_error_groups(campaign + 1000) == []
