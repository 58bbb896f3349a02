"""The storage contract: what the dispatcher and the API rely on, checked on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import trio

from distribute.errors import SettingsError
from distribute.models import CampaignStatus, FailedTask, FinishedTask
from distribute.storage import PonyStorage, open_storage
from distribute.storage.entities import SCHEMA_VERSION
from tests.conftest import database_url


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[PonyStorage]:
    store = await open_storage(database_url(tmp_path))
    yield store
    await store.aclose()


async def make_campaign(storage: PonyStorage, n: int = 10) -> int:
    user = await storage.create_user(f"u{trio.current_time()}@example.org")
    campaign = await storage.create_campaign(
        user.id, name="c", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    return campaign.id


def finished(dataset_id: int, campaign_id: int, value: object = 1, worker: str = "w") -> FinishedTask:
    return FinishedTask(dataset_id, campaign_id, msgpack.packb(value), 1.0, worker, "")


async def test_schema_version_is_recorded(storage: PonyStorage) -> None:
    assert await storage.schema_version() == SCHEMA_VERSION


async def test_tokens_are_stored_hashed_and_resolve_to_their_user(storage: PonyStorage) -> None:
    user = await storage.create_user("a@example.org")
    token = await storage.create_token(user.id)
    assert (await storage.user_for_token(token)) == user
    assert await storage.user_for_token(token + "x") is None
    hashes = await trio.to_thread.run_sync(_all_token_hashes, storage)
    assert token not in hashes and len(hashes) == 1  # the plain token is stored nowhere


def _all_token_hashes(storage: PonyStorage) -> list[str]:
    from pony.orm import db_session

    with db_session:
        return [row[0] for row in storage.sql.query("SELECT token_hash FROM api_token")]


async def test_lease_hands_out_each_dataset_once_oldest_first(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 10)
    first = await storage.lease(campaign, 4, "p1", 30)
    second = await storage.lease(campaign, 10, "p2", 30)
    ids = [d.id for d in first] + [d.id for d in second]
    assert len(ids) == len(set(ids)) == 10
    assert [msgpack.unpackb(d.payload) for d in first] == [0, 1, 2, 3]
    assert await storage.lease(campaign, 5, "p3", 30) == []


async def test_concurrent_leases_are_disjoint(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 200)
    claimed: list[int] = []

    async def claim(owner: str) -> None:
        while batch := await storage.lease(campaign, 7, owner, 30):
            claimed.extend(d.id for d in batch)

    async with trio.open_nursery() as nursery:
        for owner in ("a", "b", "c", "d"):
            nursery.start_soon(claim, owner)
    assert len(claimed) == len(set(claimed)) == 200


async def test_expired_storage_leases_return_to_the_pool(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 3)
    await storage.lease(campaign, 3, "dead-process", -1)  # already expired
    assert await storage.expire_leases() == 3
    assert len(await storage.lease(campaign, 3, "alive", 30)) == 3


async def test_release_returns_only_the_owners_leases(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 4)
    mine = await storage.lease(campaign, 2, "me", 30)
    theirs = await storage.lease(campaign, 2, "them", 30)
    await storage.release("me", [d.id for d in mine] + [d.id for d in theirs])
    assert {d.id for d in await storage.lease(campaign, 4, "next", 30)} == {d.id for d in mine}


async def test_a_dataset_accepts_only_its_first_result(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    first = leased[0].id
    accepted = await storage.store_outcomes([finished(first, campaign, "a", "w1"), finished(first, campaign, "b", "w2")], [], 3)
    assert accepted == [first]
    assert await storage.store_outcomes([finished(first, campaign, "c", "w3")], [], 3) == []
    results = await storage.results(campaign)
    assert [(r.dataset_id, msgpack.unpackb(r.value), r.worker) for r in results] == [(first, "a", "w1")]


async def test_kernel_errors_are_counted_and_fail_the_dataset_at_the_limit(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 1)
    for attempt in range(3):
        leased = await storage.lease(campaign, 1, "p", 30)
        assert len(leased) == 1, f"attempt {attempt}: the dataset should be back in the pool"
        await storage.store_outcomes([], [FailedTask(leased[0].id, campaign, "TypeError: x", "at main", 2.0, "w")], 3)
    assert await storage.lease(campaign, 1, "p", 30) == []
    counts = await storage.counts(campaign)
    assert (counts.failed, counts.errors) == (1, 3)
    (error,) = await storage.kernel_errors(campaign)
    assert (error.message, error.stack, error.count) == ("TypeError: x", "at main", 3)


async def test_campaign_completes_when_nothing_is_open(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    await storage.store_outcomes([finished(leased[0].id, campaign)], [], 3)
    assert not await storage.complete_if_done(campaign)
    await storage.store_outcomes([finished(leased[1].id, campaign)], [], 3)
    assert await storage.complete_if_done(campaign)
    assert (await storage.get_campaign(campaign)).status == CampaignStatus.COMPLETE


async def test_counts_and_compute_time(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 5)
    leased = await storage.lease(campaign, 3, "p", 30)
    await storage.store_outcomes([finished(leased[0].id, campaign), FinishedTask(leased[1].id, campaign, None, 1500.0, "w", "")], [], 3)
    counts = await storage.counts(campaign)
    assert (counts.total, counts.pending, counts.leased, counts.done, counts.results) == (5, 2, 1, 2, 1)
    assert counts.compute_seconds == pytest.approx(1.501)


async def test_reset_forgets_results_and_reopens_every_dataset(storage: PonyStorage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    await storage.store_outcomes([finished(d.id, campaign) for d in leased], [], 3)
    assert await storage.complete_if_done(campaign)
    await storage.reset_campaign(campaign)
    counts = await storage.counts(campaign)
    assert (counts.pending, counts.done, counts.results) == (2, 0, 0)
    assert (await storage.get_campaign(campaign)).status == CampaignStatus.RUNNING


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    store = await open_storage(url)
    await trio.to_thread.run_sync(_set_version, store, "999")
    await store.aclose()
    with pytest.raises(SettingsError, match="schema version 999"):
        await open_storage(url)


def _set_version(storage: PonyStorage, value: str) -> None:
    from pony.orm import db_session

    with db_session:
        storage.sql.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
