"""Kernel versions: the storage contract on every backend, and the columns a version 3 Pony database gains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import trio
from pony.orm import db_session

from distribute.errors import NotFound
from distribute.models import CampaignStatus, FailedTask, FinishedTask
from distribute.storage import Storage
from distribute.storage.hashing import content_hash
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.storage.conftest import finished, make_campaign
from tests.support.pg import fresh_database
from tests.support.schema import BACK_TO_VERSION_3

# What version 4 added (the migration tests of older versions take them away too).


def computed(task: FinishedTask, version: int) -> FinishedTask:
    return replace(task, kernel_version=version)


async def answer_all(storage: Storage, campaign_id: int, value: object, version: int, owner: str = "p") -> list[int]:
    """Lease every pending dataset and answer each with `value`, computed with kernel `version`."""
    leased = await storage.lease(campaign_id, 100, owner, 30)
    return await storage.store_outcomes([computed(finished(d.id, campaign_id, value), version) for d in leased], [], 3)


async def test_a_new_campaign_is_kernel_version_1(storage: Storage) -> None:
    campaign = await storage.get_campaign(await make_campaign(storage))
    assert campaign is not None and campaign.kernel_version == 1


async def test_an_update_makes_version_2_with_the_new_kernel_and_hash(storage: Storage) -> None:
    campaign_id = await make_campaign(storage)
    updated = await storage.update_kernel(campaign_id, "k2", "s2")
    assert (updated.kernel_version, updated.kernel, updated.static_dataset) == (2, "k2", "s2")
    assert updated.content_hash == content_hash("k2", "s2")
    assert await storage.get_campaign(campaign_id) == updated


async def test_each_result_keeps_the_version_it_was_computed_with(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=4)
    first = await storage.lease(campaign_id, 2, "p", 30)
    await storage.store_outcomes([finished(d.id, campaign_id) for d in first], [], 3)
    await storage.update_kernel(campaign_id, "k2", "")
    await answer_all(storage, campaign_id, 2, 2)
    assert [r.kernel_version for r in await storage.results(campaign_id)] == [1, 1, 2, 2]


async def test_an_update_without_recompute_leaves_done_datasets_done(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=3)
    await answer_all(storage, campaign_id, 1, 1)
    await storage.update_kernel(campaign_id, "k2", "")
    counts = await storage.counts(campaign_id)
    assert (counts.done, counts.pending) == (3, 0)


async def test_a_recompute_puts_done_datasets_back_to_pending(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=3)
    await answer_all(storage, campaign_id, 1, 1)
    assert await storage.complete_if_done(campaign_id)
    updated = await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    counts = await storage.counts(campaign_id)
    assert (counts.done, counts.pending, updated.status) == (0, 3, CampaignStatus.RUNNING)


async def test_after_a_recompute_results_show_each_datasets_newest_version(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=3)
    await answer_all(storage, campaign_id, "old", 1)
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    await answer_all(storage, campaign_id, "new", 2)
    newest = await storage.results(campaign_id)
    assert [(r.kernel_version, msgpack.unpackb(r.value)) for r in newest] == [(2, "new")] * 3
    assert (await storage.counts(campaign_id)).results == 3


async def test_older_versions_stay_readable_with_every_version(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=2)
    await answer_all(storage, campaign_id, "old", 1)
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    await answer_all(storage, campaign_id, "new", 2)
    every = await storage.results(campaign_id, every_version=True)
    assert [(r.dataset_number, r.kernel_version) for r in every] == [(1, 1), (1, 2), (2, 1), (2, 2)]


async def test_a_late_answer_of_the_old_version_after_a_recompute_is_kept_but_not_accepted(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=2)
    leased = await storage.lease(campaign_id, 2, "p", 30)  # handed out under version 1
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    accepted = await storage.store_outcomes([computed(finished(d.id, campaign_id), 1) for d in leased], [], 3)
    counts = await storage.counts(campaign_id)
    assert accepted == [] and (counts.done, counts.pending) == (0, 2)
    assert [r.kernel_version for r in await storage.results(campaign_id)] == [1, 1]


async def test_a_late_answer_of_the_old_version_without_recompute_is_accepted(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=2)
    leased = await storage.lease(campaign_id, 2, "p", 30)
    await storage.update_kernel(campaign_id, "k2", "")
    accepted = await storage.store_outcomes([computed(finished(d.id, campaign_id), 1) for d in leased], [], 3)
    assert sorted(accepted) == sorted(d.id for d in leased)
    assert [r.kernel_version for r in await storage.results(campaign_id)] == [1, 1]


async def test_a_late_failure_of_the_old_version_after_a_recompute_counts_no_error(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=1)
    (leased,) = await storage.lease(campaign_id, 1, "p", 30)  # handed out under version 1
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    failure = FailedTask(leased.id, campaign_id, "old kernel", "", 1.0, "w", kernel_version=1)
    await storage.store_outcomes([], [failure], 1)  # one error would fail the dataset for good
    counts = await storage.counts(campaign_id)
    assert (counts.pending, counts.failed, counts.errors) == (1, 0, 0)


async def test_a_failure_of_the_new_version_counts_as_usual(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=1)
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    (leased,) = await storage.lease(campaign_id, 1, "p", 30)
    failure = FailedTask(leased.id, campaign_id, "new kernel", "", 1.0, "w", kernel_version=2)
    await storage.store_outcomes([], [failure], 1)
    counts = await storage.counts(campaign_id)
    assert (counts.pending, counts.failed, counts.errors) == (0, 1, 1)


async def test_an_update_of_an_unknown_campaign_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.update_kernel(12345, "k", "")


# --------------------------------------------------------------------------- the Pony migration


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v3.db'}" if request.param == "sqlite" else fresh_database()


def _to_version_3(storage: PonyStorage) -> None:
    with db_session:
        for statement in BACK_TO_VERSION_3:  # every column of version 4, not only this feature's
            storage.sql.execute(statement)
        storage.sql.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


async def test_a_version_3_database_gains_kernel_versions_and_its_results_are_version_1(url: str) -> None:
    storage = await PonyStorage.open(url)
    campaign_id = await make_campaign(storage, n=2)
    await answer_all(storage, campaign_id, 7, 1)
    await trio.to_thread.run_sync(_to_version_3, storage)
    await storage.aclose()

    migrated = await PonyStorage.open(url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION == 4
        campaign = await migrated.get_campaign(campaign_id)
        assert campaign is not None and campaign.kernel_version == 1
        assert [r.kernel_version for r in await migrated.results(campaign_id)] == [1, 1]
        assert (await migrated.update_kernel(campaign_id, "k2", "")).kernel_version == 2
    finally:
        await migrated.aclose()


async def test_the_consoles_results_table_shows_each_datasets_newest_version(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, n=2)
    await answer_all(storage, campaign_id, "old", 1)
    await storage.update_kernel(campaign_id, "k2", "", recompute=True)
    await answer_all(storage, campaign_id, "new", 2)
    page = await storage.queries.results_page(campaign_id, 0, 10)
    assert [r.kernel_version for r in page] == [2, 2] and await storage.queries.result_count(campaign_id) == 2
