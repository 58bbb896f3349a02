"""The storage contract of operators, on every backend: the admin role (granted, the first one claimed
once), campaign reviews and what "active" leaves out, flagged workers for the admin page."""

from __future__ import annotations

import time

import pytest
import trio

from distribute.errors import NotFound
from distribute.models import Review, Verdicts
from distribute.storage import Storage
from tests.storage.conftest import make_campaign


async def test_a_user_is_not_an_admin_unless_created_one(storage: Storage) -> None:
    plain = await storage.create_user("plain@example.org")
    admin = await storage.create_user("admin@example.org", admin=True)
    assert plain.admin is False and admin.admin is True
    assert (await storage.get_user(admin.id)).admin is True  # type: ignore[union-attr]


async def test_the_admin_role_is_granted_and_taken_away(storage: Storage) -> None:
    user = await storage.create_user("later@example.org")
    assert (await storage.set_admin(user.id, True)).admin is True
    assert (await storage.user_by_email("later@example.org")).admin is True  # type: ignore[union-attr]
    assert (await storage.set_admin(user.id, False)).admin is False


async def test_granting_the_admin_role_to_an_unknown_user_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.set_admin(999_999, True)


async def test_only_one_account_claims_the_first_admin_role(storage: Storage) -> None:
    users = [await storage.create_user(f"first{i}@example.org") for i in range(4)]
    won: list[bool] = []

    async def claim(user_id: int) -> None:
        won.append(await storage.claim_first_admin(user_id))

    async with trio.open_nursery() as nursery:
        for user in users:
            nursery.start_soon(claim, user.id)
    assert sorted(won) == [False, False, False, True]
    assert sum(u.admin for u in await storage.list_users()) == 1


async def test_no_first_admin_claim_once_an_admin_exists(storage: Storage) -> None:
    await storage.create_user("op@example.org", admin=True)
    late = await storage.create_user("late@example.org")
    assert await storage.claim_first_admin(late.id) is False
    assert (await storage.get_user(late.id)).admin is False  # type: ignore[union-attr]


async def test_users_are_listed_oldest_first(storage: Storage) -> None:
    made = [await storage.create_user(f"l{i}-{time.time_ns()}@example.org") for i in range(3)]
    assert [u.id for u in await storage.list_users()] == [u.id for u in made]


async def test_a_campaign_is_approved_unless_created_pending(storage: Storage) -> None:
    approved = await storage.get_campaign(await make_campaign(storage))
    pending = await storage.get_campaign(await make_campaign(storage, review=Review.PENDING))
    assert approved is not None and (approved.review, approved.review_reason) == (Review.APPROVED, "")
    assert pending is not None and pending.review == Review.PENDING


async def test_a_rejection_keeps_its_reason_and_an_approval_clears_it(storage: Storage) -> None:
    campaign_id = await make_campaign(storage, review=Review.PENDING)
    rejected = await storage.set_review(campaign_id, Review.REJECTED, "mines coins")
    assert (rejected.review, rejected.review_reason) == (Review.REJECTED, "mines coins")
    stored = await storage.get_campaign(campaign_id)
    assert stored is not None and stored.review_reason == "mines coins"
    approved = await storage.set_review(campaign_id, Review.APPROVED, "ignored")
    assert (approved.review, approved.review_reason) == (Review.APPROVED, "")


async def test_reviewing_an_unknown_campaign_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.set_review(999_999, Review.APPROVED)


async def test_a_rejected_campaign_is_not_active_but_a_pending_one_is(storage: Storage) -> None:
    pending = await make_campaign(storage, review=Review.PENDING)
    rejected = await make_campaign(storage, review=Review.PENDING)
    await storage.set_review(rejected, Review.REJECTED, "no")
    active = {c.id for c in await storage.list_campaigns(active_only=True)}
    assert pending in active and rejected not in active
    assert rejected in {c.id for c in await storage.list_campaigns()}  # still listed, for its owner


async def test_flagged_workers_are_listed_most_disagreements_first(storage: Storage) -> None:
    await storage.apply_verdicts(Verdicts(agreed=("honest", "honest"), liars=("liar-once", "liar-twice")))
    await storage.apply_verdicts(Verdicts(liars=("liar-twice",)))
    flagged = await storage.flagged_workers()
    assert [(w.key, w.disagreed, w.flagged) for w in flagged] == [("liar-twice", 2, True), ("liar-once", 1, True)]
