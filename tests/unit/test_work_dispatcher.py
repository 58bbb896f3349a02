"""The dispatcher and its verifier on the in-memory backend: no server, no sockets, no database.

Connections are played by direct calls (`take`, `finish`, `drop_connection`), as the gateway makes
them; what the dispatcher stored is read back from storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgpack
import pytest
import trio

from distribute.models import CampaignStatus, FinishedTask, LeasedDataset
from distribute.scheduler.builtin import RoundRobin
from distribute.settings import Settings
from distribute.storage.memory.store import MemoryStorage
from distribute.work.dispatcher import Dispatcher
from distribute.work.verification import canonical

SETTINGS = Settings(flush_interval=0.01, flush_interval_low_rate=0.05, refill_batch=4, trust_threshold=0)


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    store = await MemoryStorage.open("memory://")
    yield store
    await store.aclose()


async def running(nursery: trio.Nursery, storage: MemoryStorage, **settings: object) -> Dispatcher:
    dispatcher = Dispatcher(storage, SETTINGS.replace(**settings), RoundRobin())
    await nursery.start(dispatcher.run)
    return dispatcher


async def new_campaign(
    storage: MemoryStorage, n: int, *, replication: int = 1, spot_checks: list[tuple[bytes, bytes]] | None = None
) -> int:
    owner = await storage.create_user(f"owner{n}-{replication}@example.org")
    campaign = await storage.create_campaign(
        owner.id,
        name="c",
        kernel="({main: function (d) { return d; }})",
        generator="[]",
        replication=replication,
        task_timeout=10.0,
        spot_checks=spot_checks or (),
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    return campaign.id


def answer(dataset: LeasedDataset, holder: int) -> FinishedTask:
    value = dataset.expected if dataset.expected is not None else canonical(msgpack.unpackb(dataset.payload))
    return FinishedTask(dataset.id, dataset.campaign_id, value, 1.0, f"{holder}@10.0.0.{holder}", "")


async def wait_status(storage: MemoryStorage, campaign_id: int, status: str) -> None:
    with trio.fail_after(5):
        while (campaign := await storage.get_campaign(campaign_id)) is None or campaign.status != status:
            await trio.sleep(0.01)


async def test_every_dataset_is_answered_once_and_the_campaign_completes(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 10)
    async with trio.open_nursery() as nursery:
        dispatcher = await running(nursery, storage)
        seen: list[LeasedDataset] = []
        while tasks := await dispatcher.take(campaign_id, 3, holder=1, timeout=10.0, max_bytes=1 << 20):
            for dataset in tasks:
                assert dispatcher.finish(1, answer(dataset, 1))
                seen.append(dataset)
        assert not dispatcher.finish(1, answer(seen[0], 1))  # answered already: no longer held
        assert not dispatcher.finish(2, answer(seen[0], 2))  # never held by this connection
        await wait_status(storage, campaign_id, CampaignStatus.COMPLETE)
        queue = dispatcher.queue(campaign_id)
        assert queue is not None and queue.complete
        nursery.cancel_scope.cancel()
    assert len({d.id for d in seen}) == len(seen) == 10
    assert len(await storage.results(campaign_id)) == 10


async def test_a_dropped_connections_datasets_go_to_the_next_one(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 4)
    async with trio.open_nursery() as nursery:
        dispatcher = await running(nursery, storage)
        held = await dispatcher.take(campaign_id, 2, holder=1, timeout=10.0, max_bytes=1 << 20)
        dispatcher.drop_connection(1, [d.id for d in held])
        again = await dispatcher.take(campaign_id, 2, holder=2, timeout=10.0, max_bytes=1 << 20)
        assert {d.id for d in again} == {d.id for d in held}  # back at the front of the queue
        nursery.cancel_scope.cancel()


async def test_replicas_from_two_workers_are_verified_and_complete_the_campaign(storage: MemoryStorage) -> None:
    campaign_id = await new_campaign(storage, 3, replication=2)
    async with trio.open_nursery() as nursery:
        dispatcher = await running(nursery, storage)
        for holder, worker in ((1, ("alice", "10.0.0.1")), (2, ("bob", "10.0.0.2"))):
            tasks = await dispatcher.take(campaign_id, 10, holder, 10.0, 1 << 20, worker=worker)
            assert len(tasks) == 3
            for dataset in tasks:
                assert dispatcher.finish(holder, answer(dataset, holder))
        await wait_status(storage, campaign_id, CampaignStatus.COMPLETE)
        nursery.cancel_scope.cancel()
    counts = await storage.counts(campaign_id)
    assert counts.verified == 3
    records = {r.key: r for r in await storage.worker_records(["alice", "bob"])}
    assert records["alice"].agreed == records["bob"].agreed == 3


async def test_spot_checks_stored_with_the_campaign_are_mixed_in_from_the_first_take(storage: MemoryStorage) -> None:
    expected = canonical([42])
    campaign_id = await new_campaign(storage, 4, spot_checks=[(msgpack.packb("spot"), expected)])
    async with trio.open_nursery() as nursery:
        dispatcher = await running(nursery, storage, spot_check_rate=1.0)
        tasks = await dispatcher.take(campaign_id, 2, 1, 10.0, 1 << 20, worker=("liar", "10.0.0.1"))
        spots = [d for d in tasks if d.expected is not None]
        assert len(spots) == 1 and len(tasks) == 3
        wrong = FinishedTask(spots[0].id, campaign_id, canonical([0]), 1.0, "1@test", "")
        assert dispatcher.finish(1, wrong)
        with trio.fail_after(5):
            while not (records := await storage.worker_records(["liar"])) or not records[0].flagged:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(await storage.results(campaign_id)) == 0  # a spot-check answer is not a result
