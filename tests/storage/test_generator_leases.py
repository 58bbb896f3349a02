"""Exactly one server process runs each campaign's generator, and another takes over if it dies.

Several processes on one database each resume the campaigns that were generating when they start.
The lease calls run on every backend (the suite's database, SQLite or PostgreSQL in
`make test-postgres`, and memory://); the servers here are in-process, each with its own process
name, exactly as separate `distribute serve` processes would be.
"""

from __future__ import annotations

import time

import msgpack
import pytest
import trio

from distribute.errors import LeaseLost
from distribute.plugins import open_storage
from distribute.storage import Storage
from tests.conftest import StartServer
from tests.support.protocol_client import work

LAZY = """({ main: function* () { for (var i = 0; i < %d; i++) yield {n: i}; } })"""
SQUARE = """({ loadStaticDataset: function () {}, main: function (d) { return d.n * d.n; } })"""
# A lazy generator stays `generating` while more than `generator_low_water` datasets wait.
PAUSING = {"generator_batch": 50, "generator_low_water": 100}


async def generating_campaign(storage: Storage) -> int:
    user = await storage.create_user(f"u{time.time_ns()}@example.org")
    campaign = await storage.create_campaign(
        user.id, name="c", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    return campaign.id


async def test_a_held_generator_lease_cannot_be_claimed_by_another_process(storage: Storage) -> None:
    leases = storage.generator_leases
    campaign_id = await generating_campaign(storage)
    assert await leases.claim(campaign_id, "first", 30)
    assert not await leases.claim(campaign_id, "second", 30)
    assert await leases.claim(campaign_id, "first", 30)  # renewing


async def test_an_expired_generator_lease_goes_to_the_next_claimant(storage: Storage) -> None:
    leases = storage.generator_leases
    campaign_id = await generating_campaign(storage)
    assert await leases.claim(campaign_id, "crashed", 0.2)
    await trio.sleep(0.3)
    assert await leases.claim(campaign_id, "survivor", 30)
    assert not await leases.claim(campaign_id, "crashed", 30)


async def test_a_released_generator_lease_is_free_at_once(storage: Storage) -> None:
    leases = storage.generator_leases
    campaign_id = await generating_campaign(storage)
    assert await leases.claim(campaign_id, "first", 30)
    await leases.release(campaign_id, "first")
    assert await leases.claim(campaign_id, "second", 30)


async def test_a_process_that_lost_its_generator_lease_stores_nothing(storage: Storage) -> None:
    leases = storage.generator_leases
    campaign_id = await generating_campaign(storage)
    assert await leases.claim(campaign_id, "stalled", 0.2)
    await trio.sleep(0.3)
    assert await leases.claim(campaign_id, "new", 30)
    with pytest.raises(LeaseLost):
        await storage.add_datasets(campaign_id, [msgpack.packb(1)], generator="stalled")
    assert await storage.add_datasets(campaign_id, [msgpack.packb(1)], generator="new") == 1


async def test_processes_starting_together_agree_on_the_console_secret(storage_url: str) -> None:
    stores = [await open_storage(storage_url) for _ in range(3)]
    secrets: list[bytes] = []
    try:
        async with trio.open_nursery() as nursery:
            for store in stores:

                async def read(store: Storage = store) -> None:
                    secrets.append(await store.accounts.secret())

                nursery.start_soon(read)
    finally:
        for store in stores:
            await store.aclose()
    assert len(secrets) == 3 and len(set(secrets)) == 1 and len(secrets[0]) == 32


async def test_servers_resuming_one_lazy_generator_store_each_dataset_once(start_server: StartServer) -> None:
    first = await start_server(**PAUSING)
    campaign_id = await first.create_campaign(generator=LAZY % 1000, kernel=SQUARE)
    await first.wait_for(campaign_id, lambda c: c["datasets"]["total"] >= 100)
    # Two more processes start while the generator is paused: both see a `generating` campaign.
    others = [await start_server(**PAUSING) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for server in (first, *others, first):
            nursery.start_soon(lambda url=server.ws_url: work(url, lambda d: d["n"] ** 2, campaign=campaign_id))
    campaign = await first.wait_complete(campaign_id)
    assert campaign["datasets"]["total"] == 1000
    rows = await first.results(campaign_id, include_empty=True)
    assert sorted(row["result"] for row in rows) == sorted(n * n for n in range(1000))


async def test_a_generator_whose_process_died_is_taken_over(start_server: StartServer) -> None:
    server = await start_server(lease_seconds=1.0)
    storage = server.platform.storage
    user = await storage.create_user("orphan@example.org")
    # A campaign whose generator a crashed process held: its lease is simply never renewed.
    orphan = await storage.create_campaign(
        user.id, name="orphan", kernel=SQUARE, generator=LAZY % 300, static_dataset="", task_timeout=5.0
    )
    assert await storage.generator_leases.claim(orphan.id, "crashed-process", 1.0)
    with trio.fail_after(20):
        outcome = await work(server.ws_url, lambda d: d["n"] ** 2, campaign=orphan.id)
    assert outcome.bye == "complete" and len(outcome.done) == 300
