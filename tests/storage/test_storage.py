"""The storage contract: what the dispatcher and the API rely on, checked on every backend.

Each test runs on the suite's database (SQLite, or PostgreSQL with DISTRIBUTE_TEST_DATABASE=postgres)
and on memory:// (the `storage` fixture of tests/storage/conftest.py). What only the SQL backend can
show (several processes, schema migrations, SKIP LOCKED, connections) is in test_pony.py.
"""

from __future__ import annotations

from datetime import timedelta

import msgpack
import pytest
import trio

from distribute.errors import NotFound, SettingsError
from distribute.models import CampaignStatus, FailedTask, FinishedTask
from distribute.storage import Storage, content_hash
from distribute.storage.pony.entities import SCHEMA_VERSION
from tests.storage.conftest import finished, make_campaign


async def test_schema_version_is_recorded(storage: Storage) -> None:
    assert await storage.schema_version() == SCHEMA_VERSION


async def test_lease_hands_out_each_dataset_once_oldest_first(storage: Storage) -> None:
    campaign = await make_campaign(storage, 10)
    first = await storage.lease(campaign, 4, "p1", 30)
    second = await storage.lease(campaign, 10, "p2", 30)
    ids = [d.id for d in first] + [d.id for d in second]
    assert len(ids) == len(set(ids)) == 10
    assert [msgpack.unpackb(d.payload) for d in first] == [0, 1, 2, 3]
    assert await storage.lease(campaign, 5, "p3", 30) == []


async def test_concurrent_leases_are_disjoint(storage: Storage) -> None:
    campaign = await make_campaign(storage, 200)
    claimed: list[int] = []

    async def claim(owner: str) -> None:
        while batch := await storage.lease(campaign, 7, owner, 30):
            claimed.extend(d.id for d in batch)

    async with trio.open_nursery() as nursery:
        for owner in ("a", "b", "c", "d"):
            nursery.start_soon(claim, owner)
    assert len(claimed) == len(set(claimed)) == 200


async def test_expired_storage_leases_return_to_the_pool(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3)
    await storage.lease(campaign, 3, "dead-process", -1)  # already expired
    assert await storage.expire_leases() == 3
    assert len(await storage.lease(campaign, 3, "alive", 30)) == 3


async def test_release_returns_only_the_owners_leases(storage: Storage) -> None:
    campaign = await make_campaign(storage, 4)
    mine = await storage.lease(campaign, 2, "me", 30)
    theirs = await storage.lease(campaign, 2, "them", 30)
    await storage.release("me", [d.id for d in mine] + [d.id for d in theirs])
    assert {d.id for d in await storage.lease(campaign, 4, "next", 30)} == {d.id for d in mine}


async def test_a_dataset_accepts_only_its_first_result(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    first = leased[0].id
    accepted = await storage.store_outcomes(
        [finished(first, campaign, "a", "w1"), finished(first, campaign, "b", "w2")], [], 3
    )
    assert accepted == [first]
    assert await storage.store_outcomes([finished(first, campaign, "c", "w3")], [], 3) == []
    results = await storage.results(campaign)
    assert [(r.dataset_id, msgpack.unpackb(r.value), r.worker) for r in results] == [(first, "a", "w1")]


async def test_kernel_errors_are_counted_and_fail_the_dataset_at_the_limit(storage: Storage) -> None:
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


async def test_campaign_completes_when_nothing_is_open(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    await storage.store_outcomes([finished(leased[0].id, campaign)], [], 3)
    assert not await storage.complete_if_done(campaign)
    await storage.store_outcomes([finished(leased[1].id, campaign)], [], 3)
    assert await storage.complete_if_done(campaign)
    assert (await storage.get_campaign(campaign)).status == CampaignStatus.COMPLETE


async def test_counts_and_compute_time(storage: Storage) -> None:
    campaign = await make_campaign(storage, 5)
    leased = await storage.lease(campaign, 3, "p", 30)
    await storage.store_outcomes(
        [finished(leased[0].id, campaign), FinishedTask(leased[1].id, campaign, None, 1500.0, "w", "")], [], 3
    )
    counts = await storage.counts(campaign)
    assert (counts.total, counts.pending, counts.leased, counts.done, counts.results) == (5, 2, 1, 2, 1)
    assert counts.compute_seconds == pytest.approx(1.501)


async def test_reset_forgets_results_and_reopens_every_dataset(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    leased = await storage.lease(campaign, 2, "p", 30)
    await storage.store_outcomes([finished(d.id, campaign) for d in leased], [], 3)
    assert await storage.complete_if_done(campaign)
    await storage.reset_campaign(campaign)
    counts = await storage.counts(campaign)
    assert (counts.pending, counts.done, counts.results) == (2, 0, 0)
    assert (await storage.get_campaign(campaign)).status == CampaignStatus.RUNNING


async def test_tokens_resolve_to_their_user_until_revoked(storage: Storage) -> None:
    user = await storage.create_user("a@example.org")
    token = await storage.create_token(user.id, "laptop")
    assert token.startswith("dst_")
    assert (await storage.user_for_token(token)) == user
    assert await storage.user_for_token(token + "x") is None
    (info,) = await storage.accounts.tokens(user.id)
    assert (info.name, info.revoked) == ("laptop", False)
    assert not await storage.accounts.revoke_token(user.id + 1, info.id)  # not theirs
    assert await storage.accounts.revoke_token(user.id, info.id)
    assert await storage.user_for_token(token) is None


async def test_revoke_tokens_and_a_password_reset_revoke_every_api_token_of_the_user(storage: Storage) -> None:
    user = await storage.create_user("tokens@example.org", "hash")
    other = await storage.create_user("other@example.org", "hash")
    first, second = await storage.create_token(user.id, "a"), await storage.create_token(user.id, "b")
    kept = await storage.create_token(other.id, "theirs")
    assert await storage.accounts.revoke_tokens(user.id) == 2
    assert await storage.user_for_token(first) is None and await storage.user_for_token(second) is None
    assert await storage.user_for_token(kept) == other
    assert await storage.accounts.revoke_tokens(user.id) == 0
    third = await storage.create_token(user.id, "c")
    reset = await storage.accounts.create_reset(user.id, timedelta(minutes=5))
    assert await storage.accounts.redeem_reset(reset, "new hash") == user
    assert await storage.user_for_token(third) is None
    assert await storage.user_for_token(kept) == other


async def test_users_are_found_by_id_and_email_and_emails_are_unique(storage: Storage) -> None:
    user = await storage.create_user("b@example.org", "hash")
    assert await storage.get_user(user.id) == user == await storage.user_by_email("b@example.org")
    assert await storage.get_user(user.id + 1) is None and await storage.user_by_email("c@example.org") is None
    with pytest.raises(SettingsError):
        await storage.create_user("b@example.org")


async def test_a_campaign_is_created_with_its_spot_checks(storage: Storage) -> None:
    user = await storage.create_user("owner@example.org")
    checks = [(msgpack.packb(i), msgpack.packb(i * i)) for i in range(3)]
    campaign = await storage.create_campaign(
        user.id, spot_checks=checks, name="c", kernel="k", generator="g", static_dataset="s", task_timeout=5.0
    )
    assert (campaign.status, campaign.owner_id, campaign.generated) == (CampaignStatus.GENERATING, user.id, 0)
    assert campaign.content_hash == content_hash("k", "s")
    assert await storage.get_campaign(campaign.id) == campaign
    spots = await storage.spot_checks(campaign.id)
    assert [(s.payload, s.expected) for s in spots] == checks
    assert [s.id for s in spots] == sorted(s.id for s in spots)
    # Spot checks are never leased and never counted.
    await storage.add_datasets(campaign.id, [msgpack.packb("x")], exhausted=True)
    assert [d.payload for d in await storage.lease(campaign.id, 10, "p", 30)] == [msgpack.packb("x")]
    counts = await storage.counts(campaign.id)
    assert (counts.total, counts.leased) == (1, 1)


async def test_campaigns_are_listed_newest_first_without_deleted_ones(storage: Storage) -> None:
    first, second, third = [await make_campaign(storage, 1) for _ in range(3)]
    owner = await storage.get_campaign(second)
    assert owner is not None
    listed = [c.id for c in await storage.list_campaigns()]
    assert listed[:3] == [third, second, first]
    assert [c.id for c in await storage.list_campaigns(owner.owner_id)] == [second]
    await storage.set_deleted(second, True)
    assert second not in [c.id for c in await storage.list_campaigns()]
    assert (await storage.get_campaign(second)) is not None  # hidden, not gone
    assert second in await storage.accounts.deleted_campaign_ids(owner.owner_id)
    await storage.set_deleted(second, False)
    assert second in [c.id for c in await storage.list_campaigns()]
    await storage.set_status(first, CampaignStatus.FAILED, "boom")
    failed = await storage.get_campaign(first)
    assert failed is not None and (failed.status, failed.generation_error) == (CampaignStatus.FAILED, "boom")
    active = [c.id for c in await storage.list_campaigns(active_only=True)]
    assert first not in active and third in active
    for call in (storage.set_deleted(10**6, True), storage.set_status(10**6, CampaignStatus.RUNNING)):
        with pytest.raises(NotFound):
            await call


async def test_generation_appends_datasets_and_counts_pending_up_to_a_bound(storage: Storage) -> None:
    user = await storage.create_user("gen@example.org")
    campaign = await storage.create_campaign(
        user.id, name="c", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    assert await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(5)]) == 5
    assert not await storage.complete_if_done(campaign.id)  # still generating
    assert await storage.add_datasets(campaign.id, [msgpack.packb(5)], exhausted=True) == 6
    running = await storage.get_campaign(campaign.id)
    assert running is not None and (running.status, running.generated) == (CampaignStatus.RUNNING, 6)
    assert await storage.pending_count(campaign.id, at_most=4) == 4
    assert await storage.pending_count(campaign.id, at_most=100) == 6
    leased = await storage.lease(campaign.id, 6, "p", 30)
    assert [msgpack.unpackb(d.payload) for d in leased] == list(range(6))


async def test_renewed_leases_do_not_expire(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2)
    await storage.lease(campaign, 1, "renewing", -1)
    await storage.lease(campaign, 1, "dead", -1)
    await storage.renew_leases("renewing", 30)
    assert await storage.expire_leases() == 1
    assert (await storage.counts(campaign)).leased == 1


async def test_pending_replicas_leave_their_dataset_open(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1, replication=2)
    (dataset,) = await storage.lease(campaign, 1, "p", 30, replicated=True)
    assert dataset.votes == ()
    replica = finished(dataset.id, campaign, "a", "w1@10.0.0.1", status="pending", identity="id-1")
    assert await storage.store_outcomes([replica], [], 3) == []
    await storage.release("p", [dataset.id])
    (again,) = await storage.lease(campaign, 1, "q", 30, replicated=True)
    assert again.votes == (("id-1", "10.0.0.1"),)
    counts = await storage.counts(campaign)
    assert (counts.done, counts.pending_verification, counts.results) == (0, 1, 1)


async def test_results_page_by_key_and_kernel_errors_come_newest_first(storage: Storage) -> None:
    campaign = await make_campaign(storage, 5)
    leased = await storage.lease(campaign, 5, "p", 30)
    await storage.store_outcomes([finished(d.id, campaign, i) for i, d in enumerate(leased[:4])], [], 3)
    first = await storage.results(campaign, limit=2)
    rest = await storage.results(campaign, after=(first[-1].dataset_id, first[-1].id))
    assert [msgpack.unpackb(r.value) for r in first + rest] == [0, 1, 2, 3]
    assert [msgpack.unpackb(r.dataset) for r in first + rest] == [0, 1, 2, 3]
    assert await storage.results(campaign, verified=True) == []
    for message in ("first", "second"):
        await storage.store_outcomes([], [FailedTask(leased[4].id, campaign, message, "", 1.0, "w")], 5)
        await trio.sleep(0.01)
    assert [e.message for e in await storage.kernel_errors(campaign)] == ["second", "first"]
    assert len(await storage.kernel_errors(campaign, limit=1)) == 1


async def test_a_spot_dataset_is_no_open_dataset(storage: Storage) -> None:
    user = await storage.create_user("spot@example.org")
    campaign = await storage.create_campaign(
        user.id, spot_checks=[(b"\x01", b"\x02")], name="c", kernel="k", generator="g", task_timeout=5.0
    )
    (spot,) = await storage.spot_checks(campaign.id)
    await storage.add_datasets(campaign.id, [], exhausted=True)
    assert await storage.complete_if_done(campaign.id)
    assert await storage.store_outcomes([finished(spot.id, campaign.id)], [], 3) == []
    assert (await storage.counts(campaign.id)).total == 0


async def test_account_usage_counts_the_owners_campaigns_datasets_and_result_bytes(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3)
    owner = (await storage.get_campaign(campaign)).owner_id
    other = await make_campaign(storage, 5)  # another owner's: never counted
    leased = await storage.lease(campaign, 2, "p", 30)
    outcomes = [FinishedTask(leased[0].id, campaign, b"12345", 1.0, "w", ""), finished(leased[1].id, campaign, "ab")]
    await storage.store_outcomes([*outcomes, finished((await storage.lease(other, 1, "p", 30))[0].id, other)], [], 3)
    second = await storage.create_campaign(
        owner, name="d", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    await storage.set_deleted(second.id, True)  # deleted campaigns still count: they can be restored
    third = await storage.create_campaign(
        owner, name="e", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    usage = await storage.account_usage(owner)
    assert usage == (3, 3, 5 + len(msgpack.packb("ab")), 1)  # only the third is generating and not deleted
    assert await storage.account_usage(owner, result_bytes=False) == (3, 3, 0, 1)
    await storage.add_datasets(third.id, [b"x", b"y"], exhausted=True)
    assert await storage.account_usage(owner, result_bytes=False) == (3, 5, 0, 0)
    assert await storage.account_usage(owner + 1000) == (0, 0, 0, 0)
