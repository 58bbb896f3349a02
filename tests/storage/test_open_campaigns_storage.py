"""The storage contract of open campaigns and of the owner's lifecycle changes, on every backend:
datasets added only while open (numbered on), closing, conditional status changes, and no lease
from a paused or cancelled campaign."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from distribute.errors import NotFound
from distribute.models import CampaignStatus
from distribute.storage import Storage
from tests.storage.conftest import make_campaign

ACTIVE = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)


async def open_campaign(storage: Storage, **fields: Any) -> int:
    user = await storage.create_user(f"o{time.time_ns()}@example.org")
    campaign = await storage.create_campaign(
        user.id, name="open", kernel="k", generator="", task_timeout=5.0, is_open=True, **fields
    )
    return campaign.id


def packed(*values: int) -> list[bytes]:
    return [msgpack.packb(v) for v in values]


async def test_an_open_campaign_is_stored_open_generating_and_without_a_generator(storage: Storage) -> None:
    campaign = await storage.get_campaign(await open_campaign(storage))
    assert campaign is not None and campaign.is_open and campaign.generator == ""
    assert campaign.status == CampaignStatus.GENERATING


async def test_a_campaign_is_not_open_unless_created_open(storage: Storage) -> None:
    campaign = await storage.get_campaign(await make_campaign(storage, 1))
    assert campaign is not None and not campaign.is_open


async def test_open_datasets_are_numbered_on_from_the_last_batch(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    assert await storage.add_open_datasets(campaign_id, packed(10, 11, 12)) == 3
    assert await storage.add_open_datasets(campaign_id, packed(13, 14)) == 5
    leased = await storage.lease(campaign_id, 10, "p", 30)
    assert [msgpack.unpackb(d.payload) for d in leased] == [10, 11, 12, 13, 14]
    assert (await storage.counts(campaign_id)).total == 5


async def test_a_campaign_that_is_not_open_takes_no_open_datasets(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, 2)
    assert await storage.add_open_datasets(campaign_id, packed(1)) is None
    assert (await storage.counts(campaign_id)).total == 2


async def test_a_closed_campaign_takes_no_more_datasets(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    await storage.add_open_datasets(campaign_id, packed(1))
    assert await storage.close_campaign(campaign_id) is True
    assert await storage.add_open_datasets(campaign_id, packed(2)) is None
    assert (await storage.counts(campaign_id)).total == 1


async def test_closing_makes_a_generating_open_campaign_running_and_twice_changes_nothing(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    assert await storage.close_campaign(campaign_id) is True
    campaign = await storage.get_campaign(campaign_id)
    assert campaign is not None and campaign.status == CampaignStatus.RUNNING and not campaign.is_open
    assert await storage.close_campaign(campaign_id) is False


async def test_closing_a_paused_open_campaign_keeps_it_paused(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    await storage.change_status(campaign_id, ACTIVE, CampaignStatus.PAUSED, "paused by its owner")
    await storage.close_campaign(campaign_id)
    campaign = await storage.get_campaign(campaign_id)
    assert campaign is not None and campaign.status == CampaignStatus.PAUSED and not campaign.is_open


async def test_a_paused_open_campaign_still_takes_datasets(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    await storage.change_status(campaign_id, ACTIVE, CampaignStatus.PAUSED, "paused by its owner")
    assert await storage.add_open_datasets(campaign_id, packed(1)) == 1


async def test_an_open_campaign_never_completes_while_open(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    assert await storage.complete_if_done(campaign_id) is False
    await storage.close_campaign(campaign_id)
    assert await storage.complete_if_done(campaign_id) is True


async def test_change_status_changes_only_from_an_allowed_status(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, 2)
    paused = await storage.change_status(campaign_id, ACTIVE, CampaignStatus.PAUSED, "why")
    assert paused is not None and paused.status == CampaignStatus.PAUSED and paused.generation_error == "why"
    assert await storage.change_status(campaign_id, ACTIVE, CampaignStatus.PAUSED, "again") is None
    campaign = await storage.get_campaign(campaign_id)
    assert campaign is not None and campaign.generation_error == "why"


async def test_a_cancelled_open_campaign_is_no_longer_open(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    cancelled = await storage.change_status(campaign_id, ACTIVE, CampaignStatus.CANCELLED, "cancelled by its owner")
    assert cancelled is not None and cancelled.status == CampaignStatus.CANCELLED and not cancelled.is_open
    assert await storage.add_open_datasets(campaign_id, packed(1)) is None


@pytest.mark.parametrize("status", [CampaignStatus.PAUSED, CampaignStatus.CANCELLED])
async def test_a_stopped_campaign_leases_nothing(storage: Storage, status: str) -> None:
    campaign_id = await make_campaign(storage, 5)
    await storage.change_status(campaign_id, ACTIVE, status, "stopped")
    assert await storage.lease(campaign_id, 5, "p", 30) == []


async def test_a_resumed_campaign_leases_again(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, 5)
    await storage.change_status(campaign_id, ACTIVE, CampaignStatus.PAUSED, "stopped")
    await storage.change_status(campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.RUNNING)
    assert len(await storage.lease(campaign_id, 5, "p", 30)) == 5


async def test_open_campaigns_are_not_counted_as_generators(storage: Storage) -> None:
    campaign_id = await open_campaign(storage)
    campaign = await storage.get_campaign(campaign_id)
    assert campaign is not None
    assert (await storage.account_usage(campaign.owner_id, result_bytes=False)).generating == 0


async def test_lifecycle_changes_of_an_unknown_campaign_are_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.change_status(987654, ACTIVE, CampaignStatus.PAUSED)
    with pytest.raises(NotFound):
        await storage.close_campaign(987654)
    with pytest.raises(NotFound):
        await storage.add_open_datasets(987654, packed(1))
