"""Campaigns through a real server: datasets leased over real WebSockets, results stored exactly once."""

from __future__ import annotations

import msgpack
import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_ANSWER, LiveServer, StartServer
from tests.support.protocol_client import receive, receive_tasks, send, work

LAZY_GENERATOR = """({ main: function* () { for (var i = 0; i < %d; i++) yield {n: i}; } })"""
SQUARE = """({ loadStaticDataset: function () {}, main: function (d) { return d.n * d.n; } })"""


def flatten(results: list[dict]) -> list[int]:
    return sorted(n for row in results for n in row["result"])


async def result_rows_per_dataset(server: LiveServer, campaign_id: int) -> dict[int, int]:
    rows = await server.results(campaign_id, include_empty=True)
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["dataset_id"]] = counts.get(row["dataset_id"], 0) + 1
    return counts


async def test_seed_campaign_with_two_workers_finds_exactly_the_multiples_of_123(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(work, live_server.ws_url)
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete"
    assert flatten(await live_server.results(campaign_id)) == SEED_ANSWER
    per_dataset = await result_rows_per_dataset(live_server, campaign_id)
    assert len(per_dataset) == 100 and set(per_dataset.values()) == {1}


async def test_both_workers_took_part(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with trio.open_nursery() as nursery:
        outcomes = []

        async def run() -> None:
            outcomes.append(await work(live_server.ws_url, campaign=campaign_id, slots=1))

        for _ in range(2):
            nursery.start_soon(run)
    await live_server.wait_complete(campaign_id)
    assert all(o.bye == "complete" for o in outcomes)
    assert sum(len(o.done) for o in outcomes) == 100
    assert all(o.done for o in outcomes)


async def test_a_lazy_generator_serves_its_first_task_before_generation_finishes(start_server: StartServer) -> None:
    server = await start_server(generator_batch=1000, generator_low_water=5000)
    campaign_id = await server.create_campaign(kernel=SQUARE, generator=LAZY_GENERATOR % 100_000, static="")
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=8))
        with trio.fail_after(10):
            assert isinstance(await receive(ws), p.CampaignInfo)
            while isinstance(tasks := await receive(ws), p.Idle):
                pass  # the first batch is still being generated
        assert isinstance(tasks, list) and tasks
    campaign = await server.campaign(campaign_id)
    assert campaign["status"] == "generating"
    assert campaign["datasets"]["total"] < 100_000


async def test_a_lazy_generator_of_100000_datasets_delivers_every_result(start_server: StartServer) -> None:
    server = await start_server(generator_batch=5000, generator_low_water=20000, flush_batch=5000)
    campaign_id = await server.create_campaign(kernel=SQUARE, generator=LAZY_GENERATOR % 100_000, static="")
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(lambda: work(server.ws_url, lambda d: d["n"] * d["n"], campaign=campaign_id, slots=64))
    campaign = await server.wait_complete(campaign_id, timeout=240)
    assert campaign["status"] == "complete"
    assert campaign["datasets"]["done"] == campaign["datasets"]["total"] == 100_000
    results = await server.results(campaign_id, include_empty=True)
    assert len(results) == 100_000
    assert all(row["result"] == row["dataset"]["n"] ** 2 for row in results)


async def test_a_worker_that_vanishes_mid_task_has_its_datasets_recomputed(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    quitter = await work(live_server.ws_url, campaign=campaign_id, slots=8, vanish_after=10)
    assert len(quitter.done) == 10
    survivor = await work(live_server.ws_url, campaign=campaign_id)
    assert survivor.bye == "complete"
    assert flatten(await live_server.results(campaign_id)) == SEED_ANSWER
    assert set((await result_rows_per_dataset(live_server, campaign_id)).values()) == {1}


async def test_tasks_never_answered_are_reissued_after_their_deadline(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=0.5)
    async with open_websocket_url(live_server.ws_url) as silent:
        await send(silent, p.Hello(campaign=campaign_id, slots=5))
        with trio.fail_after(10):
            hoarded = await receive_tasks(silent)
        assert len(hoarded) == 5
        # The silent connection stays open holding its 5 tasks; another worker must still finish.
        honest = await work(live_server.ws_url, campaign=campaign_id)
        assert honest.bye == "complete"
        assert {t.id for t in hoarded} <= set(honest.done)
    assert flatten(await live_server.results(campaign_id)) == SEED_ANSWER


async def test_a_late_answer_after_the_deadline_is_stored_once(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=0.3)
    async with open_websocket_url(live_server.ws_url) as slow:
        await send(slow, p.Hello(campaign=campaign_id, slots=1))
        (task,) = await receive_tasks(slow)
        await trio.sleep(1.0)  # past the deadline: the dataset went back to the queue
        await send(slow, p.Result(task.id, ["late"], 1.0))
        honest = await work(live_server.ws_url, campaign=campaign_id)
        assert honest.bye == "complete"
    per_dataset = await result_rows_per_dataset(live_server, campaign_id)
    assert per_dataset[task.id] == 1 and len(per_dataset) == 100


async def test_a_kernel_that_throws_on_some_datasets_reports_errors_and_finishes_the_rest(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign()

    def picky(dataset: dict) -> list[int]:
        if dataset["min"] % 1000 == 0:
            raise ValueError(f"cannot handle {dataset['min']}")
        return [dataset["min"]]

    outcome = await work(live_server.ws_url, picky, campaign=campaign_id)
    assert outcome.bye == "complete"
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["datasets"]["failed"] == 10 and campaign["datasets"]["done"] == 90
    assert campaign["errors"] == 10 * live_server.settings.max_task_errors
    results = await live_server.results(campaign_id)
    by_dataset = {row["dataset_id"]: row["dataset"] for row in results}
    messages = {e["message"] for e in campaign["kernel_errors"]}
    assert {f"cannot handle {n}" for n in range(0, 10000, 1000)} == messages
    assert all(e["dataset_id"] not in by_dataset for e in campaign["kernel_errors"])


async def test_results_are_batched_in_one_frame(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=p.MAX_SLOTS))
        done = 0
        with trio.fail_after(20):
            while done < 100:
                tasks = await receive_tasks(ws)
                items = tuple(p.Result(t.id, msgpack.unpackb(t.dataset)["min"], 0.0) for t in tasks)
                await send(ws, p.Results(items))
                done += len(items)
            while (message := await receive(ws)) == p.Idle("waiting for work"):
                pass  # the last results are being committed
            assert message == p.Bye("complete")
    assert len(await live_server.results(campaign_id)) == 100


async def test_pings_are_answered(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1))
        await send(ws, p.Ping(42))
        with trio.fail_after(5):
            while (message := await receive(ws)) != p.Pong(42):
                assert isinstance(message, (p.Idle, p.CampaignInfo, list))


async def test_a_worker_for_any_campaign_is_told_when_there_is_no_work(live_server: LiveServer) -> None:
    outcome = await work(live_server.ws_url)
    assert outcome.bye == "no work" and not outcome.done


async def test_a_worker_for_a_campaign_finished_before_a_restart_hears_complete(start_server: StartServer) -> None:
    first = await start_server()
    campaign_id = await first.create_campaign()
    await work(first.ws_url, campaign=campaign_id)
    await first.wait_complete(campaign_id)
    restarted = await start_server()  # a new process on the same database: the campaign is not active
    outcome = await work(restarted.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete" and not outcome.done


async def test_a_worker_for_a_campaign_that_does_not_exist_hears_unavailable(live_server: LiveServer) -> None:
    outcome = await work(live_server.ws_url, campaign=999_999)
    assert outcome.bye == "unavailable" and not outcome.done


async def test_a_known_kernel_is_not_sent_again(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    first = await work(live_server.ws_url, campaign=campaign_id, max_tasks=1)
    info = first.campaigns[0]
    assert info.kernel and info.static
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1, have=(info.hash,)))
        again = await receive(ws)
    assert again == p.CampaignInfo(
        info.id,
        info.name,
        info.hash,
        None,
        None,
        info.task_timeout,
        info.max_result_bytes,
        p.FEATURES,
        info.checkpoint_max_bytes,
        info.checkpoint_interval,
    )


async def test_a_connection_that_keeps_answering_keeps_its_prefetched_tasks(live_server: LiveServer) -> None:
    two = "({ main: function () { return [{min: 0, max: 100}, {min: 100, max: 200}]; } })"
    campaign_id = await live_server.create_campaign(generator=two, task_timeout=0.8)
    async with open_websocket_url(live_server.ws_url) as busy:
        await send(busy, p.Hello(campaign=campaign_id, slots=2))
        first, second = await receive_tasks(busy)
        await trio.sleep(0.5)
        await send(busy, p.Result(first.id, [0], 1.0))
        outcomes = []
        async with trio.open_nursery() as nursery:

            async def other_worker() -> None:
                outcomes.append(await work(live_server.ws_url, campaign=campaign_id))

            nursery.start_soon(other_worker)
            await trio.sleep(0.6)  # past the second task's deadline, but the connection is making progress
            await send(busy, p.Result(second.id, [123], 1.0))
        (other,) = outcomes
        assert other.bye == "complete" and other.done == []  # nothing was taken from the busy connection
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["results"] == 2
