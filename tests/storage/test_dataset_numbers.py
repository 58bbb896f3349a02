"""Per-campaign dataset numbers (1..N in generation order) and results counted per time bucket, on every backend."""

from __future__ import annotations

import time

import msgpack

from distribute.storage import Storage

from .conftest import finished, make_campaign


async def numbered(storage: Storage, campaign: int) -> dict[int, int]:
    """{dataset payload: dataset number} of every result of the campaign, through every read of results."""
    by_key = {msgpack.unpackb(r.dataset): r.dataset_number for r in await storage.results(campaign)}
    page = await storage.queries.results_page(campaign, 0, 1000)
    assert {msgpack.unpackb(r.dataset): r.dataset_number for r in page} == by_key
    for row in page:
        one = await storage.queries.result(campaign, row.id)
        assert one is not None and one.dataset_number == row.dataset_number
    return by_key


async def answer_all(storage: Storage, campaign: int) -> None:
    leased = await storage.lease(campaign, 1000, "p", 30)
    await storage.store_outcomes([finished(d.id, campaign) for d in leased], [], 3)


async def test_datasets_are_numbered_from_1_in_generation_order(storage: Storage) -> None:
    campaign = await make_campaign(storage, 0)
    await storage.add_datasets(campaign, [msgpack.packb(i) for i in range(3)])
    await storage.add_datasets(campaign, [msgpack.packb(i) for i in range(3, 5)], exhausted=True)
    await answer_all(storage, campaign)
    assert await numbered(storage, campaign) == {i: i + 1 for i in range(5)}


async def test_numbers_of_campaigns_generating_at_once_are_independent(storage: Storage) -> None:
    first, second = await make_campaign(storage, 0), await make_campaign(storage, 0)
    for batch in range(3):  # interleaved: global ids alternate between the two campaigns
        await storage.add_datasets(first, [msgpack.packb(10 * batch), msgpack.packb(10 * batch + 1)])
        await storage.add_datasets(second, [msgpack.packb(100 + batch)])
    await answer_all(storage, first)
    await answer_all(storage, second)
    assert await numbered(storage, first) == {0: 1, 1: 2, 10: 3, 11: 4, 20: 5, 21: 6}
    assert await numbered(storage, second) == {100: 1, 101: 2, 102: 3}


async def test_numbers_survive_a_reset(storage: Storage) -> None:
    campaign = await make_campaign(storage, 4)
    await answer_all(storage, campaign)
    before = await numbered(storage, campaign)
    await storage.reset_campaign(campaign)
    await answer_all(storage, campaign)
    assert await numbered(storage, campaign) == before == {i: i + 1 for i in range(4)}


async def test_throughput_counts_results_per_bucket_with_empty_buckets_as_zero(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3)
    before = time.time()
    await answer_all(storage, campaign)
    after = time.time()
    # Six 100 s buckets ending with the one that holds the results: five explicit zeros before it.
    counts = await storage.queries.throughput(campaign, before - 500, 100.0, 6)
    assert counts == [0, 0, 0, 0, 0, 3]
    assert await storage.queries.throughput(campaign, after + 1, 100.0, 4) == [0, 0, 0, 0]
    assert await storage.queries.throughput(campaign, before - 1000, 100.0, 5) == [0] * 5


async def test_throughput_of_a_campaign_without_results_is_all_zeros(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3)
    assert await storage.queries.throughput(campaign, time.time() - 60, 10.0, 6) == [0] * 6
