"""Volunteers' credit in storage (`storage.credit`), on every backend: what counts, per identity, site
and campaign, claims by accounts, and leaderboards that name only listed accounts."""

from __future__ import annotations

import msgpack

from distribute.models import FinishedTask, ResultStatus, Verdicts
from distribute.storage import Storage
from tests.storage.conftest import make_campaign

ALICE = "a" * 32
BOB = "b" * 32


def answer(
    dataset: int,
    campaign: int,
    identity: str,
    ms: float,
    host: str = "https://news.example",
    status: str = "accepted",
    site: int | None = None,
) -> FinishedTask:
    return FinishedTask(dataset, campaign, msgpack.packb(1), ms, f"w@{identity[:4]}", host, status, identity, site=site)


async def leased(storage: Storage, campaign: int, n: int, replicated: bool = False) -> list[int]:
    return [d.id for d in await storage.lease(campaign, n, "p", 30, replicated=replicated)]


async def test_accepted_results_credit_their_identity_per_campaign(storage: Storage) -> None:
    first, second = await make_campaign(storage, 3), await make_campaign(storage, 2)
    one, two = await leased(storage, first, 3), await leased(storage, second, 2)
    await storage.store_outcomes(
        [
            answer(one[0], first, ALICE, 60_000),
            answer(one[1], first, ALICE, 30_000),
            answer(one[2], first, BOB, 5_000),
            answer(two[0], second, ALICE, 120_000),
        ],
        [],
        3,
    )
    credit = await storage.credit.credit([ALICE])
    assert credit.seconds == 210.0
    assert [(c.campaign_id, c.seconds) for c in credit.campaigns] == [(second, 120.0), (first, 90.0)]
    assert (await storage.credit.credit([BOB])).seconds == 5.0
    assert (await storage.credit.credit([ALICE, BOB])).seconds == 215.0
    assert (await storage.credit.credit(["c" * 32])).seconds == 0.0
    assert (await storage.credit.credit([])).campaigns == ()


async def test_replicas_count_only_once_verified_and_never_when_invalid(storage: Storage) -> None:
    campaign = await make_campaign(storage, 1, replication=2)
    (dataset,) = await leased(storage, campaign, 1, replicated=True)
    await storage.store_outcomes(
        [
            answer(dataset, campaign, ALICE, 10_000, status=ResultStatus.PENDING),
            answer(dataset, campaign, BOB, 10_000, status=ResultStatus.PENDING),
        ],
        [],
        3,
    )
    assert (await storage.credit.credit([ALICE, BOB])).seconds == 0.0  # pending: not yet
    alice, bob = (await storage.replica_votes([dataset]))[dataset]
    await storage.apply_verdicts(
        Verdicts(
            statuses=((alice.result_id, ResultStatus.CANONICAL), (bob.result_id, ResultStatus.INVALID)),
            done=(dataset,),
            agreed=(ALICE,),
            liars=(BOB,),
        )
    )
    assert (await storage.credit.credit([ALICE])).seconds == 10.0
    assert (await storage.credit.credit([BOB])).seconds == 0.0


async def test_a_liars_trusted_results_stop_counting_when_they_are_reopened(storage: Storage) -> None:
    campaign = await make_campaign(storage, 2, replication=2)
    ids = await leased(storage, campaign, 2, replicated=True)
    await storage.store_outcomes([answer(i, campaign, BOB, 4_000, status=ResultStatus.TRUSTED) for i in ids], [], 3)
    assert (await storage.credit.credit([BOB])).seconds == 8.0
    await storage.apply_verdicts(Verdicts(liars=(BOB,)))
    assert (await storage.credit.credit([BOB])).seconds == 0.0


async def test_a_leaderboard_names_only_listed_accounts_and_counts_everyone_else(storage: Storage) -> None:
    campaign = await make_campaign(storage, 4)
    ids = await leased(storage, campaign, 4)
    carol = "c" * 32
    await storage.store_outcomes(
        [
            answer(ids[0], campaign, ALICE, 50_000),
            answer(ids[1], campaign, BOB, 20_000),
            answer(ids[2], campaign, carol, 7_000),
            answer(ids[3], campaign, "d" * 32, 3_000),
        ],
        [],
        3,
    )
    listed = await storage.create_user("listed@example.org")
    await storage.accounts.set_display_name(listed.id, "Ada")
    quiet = await storage.create_user("quiet@example.org")
    assert await storage.credit.claim(listed.id, ALICE)
    assert await storage.credit.claim(quiet.id, BOB)
    board = await storage.credit.leaderboard(campaign_id=campaign)
    assert board.named == () and board.anonymous == 4 and board.seconds == 80.0  # nobody chose to be listed
    await storage.credit.set_listed(listed.id, True)
    assert await storage.credit.listed(listed.id) and not await storage.credit.listed(quiet.id)
    board = await storage.credit.leaderboard(campaign_id=campaign)
    assert [(e.name, e.seconds) for e in board.named] == [("Ada", 50.0)]
    assert (board.anonymous, board.anonymous_seconds, board.seconds) == (3, 30.0, 80.0)
    await storage.credit.set_listed(listed.id, False)
    assert (await storage.credit.leaderboard(campaign_id=campaign)).named == ()


async def test_an_account_adds_up_its_claimed_identities_and_cannot_take_anothers(storage: Storage) -> None:
    first, second = await make_campaign(storage, 1), await make_campaign(storage, 1)
    (one,), (two,) = await leased(storage, first, 1), await leased(storage, second, 1)
    await storage.store_outcomes([answer(one, first, ALICE, 6_000), answer(two, second, BOB, 9_000)], [], 3)
    owner = await storage.create_user("vol@example.org")
    other = await storage.create_user("other@example.org")
    assert await storage.credit.claim(owner.id, ALICE)
    assert await storage.credit.claim(owner.id, BOB)
    assert await storage.credit.claim(owner.id, ALICE)  # again: no change
    assert not await storage.credit.claim(other.id, ALICE)
    assert await storage.credit.claimed(owner.id) == [ALICE, BOB]
    assert await storage.credit.claimed(other.id) == []
    credit = await storage.credit.credit(await storage.credit.claimed(owner.id))
    assert credit.seconds == 15.0 and len(credit.campaigns) == 2
    board = await storage.credit.leaderboard(campaign_id=first)
    assert board.anonymous == 1  # one account, counted once


async def test_deleting_an_account_releases_its_claims_and_listing(storage: Storage) -> None:
    volunteer = await storage.create_user("gone@example.org")
    assert await storage.credit.claim(volunteer.id, ALICE)
    await storage.credit.set_listed(volunteer.id, True)
    await storage.accounts.delete_account(volunteer.id)
    assert await storage.credit.claimed(volunteer.id) == [] and not await storage.credit.listed(volunteer.id)
    other = await storage.create_user("next@example.org")
    assert await storage.credit.claim(other.id, ALICE)


async def test_a_sites_leaderboard_counts_only_results_attributed_to_that_registered_site(storage: Storage) -> None:
    campaign = await make_campaign(storage, 5)
    ids = await leased(storage, campaign, 5)
    owner = await storage.create_user("owner@example.org")
    blog = await storage.sites.create_site(owner.id, "https://blog.example", "blog-key", "blog-token")
    news = await storage.sites.create_site(owner.id, "https://news.example", "news-key", "news-token")
    carol = "c" * 32
    await storage.store_outcomes(
        [
            answer(ids[0], campaign, ALICE, 50_000, host="https://blog.example", site=blog.id),
            answer(ids[1], campaign, BOB, 20_000, host="https://blog.example", site=blog.id),
            answer(ids[2], campaign, carol, 7_000, host="https://blog.example"),  # claims the blog, unverified
            answer(ids[3], campaign, carol, 3_000, host="https://blog.example", site=news.id),  # what was verified
            answer(ids[4], campaign, ALICE, 9_000, host="https://blog.example", site=blog.id, status="invalid"),
        ],
        [],
        3,
    )
    listed = await storage.create_user("listed@example.org")
    await storage.accounts.set_display_name(listed.id, "Ada")
    assert await storage.credit.claim(listed.id, ALICE)
    await storage.credit.set_listed(listed.id, True)
    board = await storage.credit.leaderboard(site_id=blog.id)
    assert [(e.name, e.seconds) for e in board.named] == [("Ada", 50.0)]
    assert (board.anonymous, board.anonymous_seconds, board.seconds) == (1, 20.0, 70.0)
    other = await storage.credit.leaderboard(site_id=news.id)
    assert (other.named, other.anonymous, other.seconds) == ((), 1, 3.0)
    assert (await storage.credit.leaderboard(campaign_id=campaign, site_id=news.id)).seconds == 3.0
    assert (await storage.credit.leaderboard(campaign_id=campaign + 1, site_id=blog.id)).seconds == 0.0
    assert (await storage.credit.leaderboard(campaign_id=campaign)).seconds == 80.0  # every credited result
