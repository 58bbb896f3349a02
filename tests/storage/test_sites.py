"""The storage of registered sites and what their visitors gave, on every backend (and the migration to 5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
import trio
from pony.orm import db_session

from distribute.models import FinishedTask, ResultStatus, SitePolicy
from distribute.storage import Storage
from distribute.storage.pony.entities import SCHEMA_VERSION
from distribute.storage.pony.store import PonyStorage
from tests.storage.conftest import make_campaign
from tests.support.pg import fresh_database
from tests.support.schema import BACK_TO_VERSION_3


async def test_a_new_site_is_unverified_with_policy_any(storage: Storage) -> None:
    owner = await storage.create_user("site@example.org")
    site = await storage.sites.create_site(owner.id, "https://blog.example", "key-1", "token-1")
    assert (site.owner_id, site.origin, site.key, site.token) == (owner.id, "https://blog.example", "key-1", "token-1")
    assert not site.verified and site.policy == SitePolicy.ANY and site.allowlist == () and site.max_throttle == "high"
    assert await storage.sites.site(site.id) == site
    assert await storage.sites.site_by_key("key-1") == site
    assert await storage.sites.site_by_key("key-2") is None


async def test_sites_of_lists_only_the_owners_sites(storage: Storage) -> None:
    alice = await storage.create_user("alice@example.org")
    bob = await storage.create_user("bob@example.org")
    first = await storage.sites.create_site(alice.id, "https://a.example", "ka", "ta")
    await storage.sites.create_site(bob.id, "https://b.example", "kb", "tb")
    second = await storage.sites.create_site(alice.id, "https://c.example", "kc", "tc")
    assert [s.id for s in await storage.sites.sites_of(alice.id)] == [first.id, second.id]


async def test_verification_and_policy_are_kept(storage: Storage) -> None:
    owner = await storage.create_user("site@example.org")
    site = await storage.sites.create_site(owner.id, "https://blog.example", "key-1", "token-1")
    await storage.sites.set_site_verified(site.id)
    updated = await storage.sites.set_site_policy(site.id, SitePolicy.CAMPAIGNS, [3, 1], "medium")
    assert updated is not None and updated.verified
    assert (updated.policy, updated.allowlist, updated.max_throttle) == ("campaigns", (3, 1), "medium")
    assert await storage.sites.site(site.id) == updated
    assert await storage.sites.set_site_policy(999, SitePolicy.ANY, [], "low") is None


async def test_a_deleted_site_and_a_deleted_owners_sites_are_gone(storage: Storage) -> None:
    owner = await storage.create_user("site@example.org")
    one = await storage.sites.create_site(owner.id, "https://a.example", "ka", "ta")
    two = await storage.sites.create_site(owner.id, "https://b.example", "kb", "tb")
    await storage.sites.delete_site(one.id)
    assert await storage.sites.site(one.id) is None
    await storage.accounts.delete_account(owner.id)
    assert await storage.sites.site(two.id) is None


async def test_site_days_count_tasks_verified_results_and_compute_per_campaign(storage: Storage) -> None:
    owner = await storage.create_user("site@example.org")
    site = await storage.sites.create_site(owner.id, "https://blog.example", "key-1", "token-1")
    first, second = await make_campaign(storage, 4), await make_campaign(storage, 2, replication=2)
    leased = await storage.lease(first, 4, "p", 30)
    copies = await storage.lease(second, 2, "p", 30)
    outcomes = [
        FinishedTask(leased[0].id, first, msgpack.packb(1), 1500.0, "1@x", "", site=site.id),
        FinishedTask(leased[1].id, first, msgpack.packb(1), 500.0, "1@x", "", site=site.id),
        FinishedTask(leased[2].id, first, msgpack.packb(1), 9000.0, "2@x", "", site=None),  # another page
        FinishedTask(
            copies[0].id,
            second,
            msgpack.packb(1),
            250.0,
            "1@x",
            "",
            status=ResultStatus.PENDING,
            identity="i",
            site=site.id,
        ),
    ]
    await storage.store_outcomes(outcomes, [], 3)
    today = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%d")
    days = await storage.sites.site_days(site.id)
    assert [(d.day, d.campaign_id, d.tasks, d.verified) for d in days] == [(today, first, 2, 2), (today, second, 1, 0)]
    assert days[0].compute_seconds == pytest.approx(2.0) and days[1].compute_seconds == pytest.approx(0.25)
    assert await storage.sites.site_days(site.id + 1) == []


# --------------------------------------------------------------------------- the Pony migration


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'v3.db'}" if request.param == "sqlite" else fresh_database()


def _to_version_3(storage: PonyStorage) -> None:
    with db_session:
        for statement in BACK_TO_VERSION_3:  # every index, table and column of version 4, not only the sites'
            storage.sql.execute(statement)
        storage.sql.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


async def test_a_version_3_database_gains_sites_and_keeps_its_results(url: str) -> None:
    storage = await PonyStorage.open(url)
    campaign = await make_campaign(storage, 1)  # type: ignore[arg-type]
    leased = await storage.lease(campaign, 1, "p", 30)
    await storage.store_outcomes([FinishedTask(leased[0].id, campaign, msgpack.packb(5), 1.0, "1@x", "h")], [], 3)
    await trio.to_thread.run_sync(_to_version_3, storage)
    await storage.aclose()

    migrated = await PonyStorage.open(url)
    try:
        assert await migrated.schema_version() == SCHEMA_VERSION == 4
        assert [msgpack.unpackb(r.value) for r in await migrated.results(campaign)] == [5]
        owner = await migrated.create_user("new@example.org")
        site = await migrated.sites.create_site(owner.id, "https://blog.example", "k", "t")
        assert await migrated.sites.site_days(site.id) == []
    finally:
        await migrated.aclose()
