"""`client.map` against a real server and real protocol workers: results in input order (or as
they come), the open campaign closed at the end or cancelled when the caller stops early."""

from __future__ import annotations

import itertools

import httpx
import pytest
import trio

from distribute.client import AsyncClient, Client, Conflict, MissingResults
from tests.client.workers import DOUBLE_KERNEL, workers
from tests.conftest import LiveServer, StartServer


@pytest.mark.slow
async def test_async_map_over_100000_datasets_yields_every_result_in_input_order(live_server: LiveServer) -> None:
    count = 100_000
    values: list[int] = []
    async with (
        workers(live_server.ws_url, count=2, slots=256),
        AsyncClient(live_server.url, live_server.token) as client,
        client.map(DOUBLE_KERNEL, ({"x": x} for x in range(count)), batch_size=2000, window=20_000) as results,
    ):
        with trio.fail_after(300):
            async for result in results:
                values.append(result.value)
    assert values == [2 * x for x in range(count)]


async def test_sync_map_yields_results_in_input_order_and_closes_its_campaign(live_server: LiveServer) -> None:
    def run() -> tuple[list[int], list[int], int]:
        with Client(live_server.url, live_server.token) as client:
            results = list(client.map(DOUBLE_KERNEL, ({"x": x} for x in range(3000)), batch_size=500, window=1000))
            return [r.value for r in results], [r.dataset_number for r in results], results[0].dataset_id

    async with workers(live_server.ws_url):
        values, numbers, _ = await trio.to_thread.run_sync(run)
    assert values == [2 * x for x in range(3000)]
    assert numbers == list(range(1, 3001))
    (campaign,) = (await live_server.client.get("/api/campaigns")).json()["campaigns"]
    assert campaign["open"] is False


async def test_unordered_map_yields_each_result_once(live_server: LiveServer) -> None:
    async with (
        workers(live_server.ws_url),
        AsyncClient(live_server.url, live_server.token) as client,
        client.map(DOUBLE_KERNEL, [{"x": x} for x in range(2000)], ordered=False, batch_size=300) as results,
    ):
        pairs = [(r.dataset["x"], r.value) async for r in results]
    assert sorted(pairs) == [(x, 2 * x) for x in range(2000)]


async def test_a_map_stopped_early_cancels_its_campaign_and_stops_reading_an_endless_iterable(
    live_server: LiveServer,
) -> None:
    endless = ({"x": x} for x in itertools.count())

    def run() -> list[int]:
        with Client(live_server.url, live_server.token) as client:
            taken = []
            for result in client.map(DOUBLE_KERNEL, endless, batch_size=100, window=500):
                taken.append(result.value)
                if len(taken) == 1000:
                    break  # closes the generator: the campaign is cancelled
            return taken

    async with workers(live_server.ws_url):
        taken = await trio.to_thread.run_sync(run)
    assert taken == [2 * x for x in range(1000)]
    (campaign,) = (await live_server.client.get("/api/campaigns")).json()["campaigns"]
    assert campaign["status"] == "cancelled"
    assert campaign["datasets"]["total"] <= 1000 + 500 + 100  # the window bounded what went up


async def test_adding_to_a_closed_campaign_raises_conflict_with_the_servers_message(live_server: LiveServer) -> None:
    async with AsyncClient(live_server.url, live_server.token) as client:
        campaign = await client.create_campaign(kernel=DOUBLE_KERNEL, open=True)
        await campaign.add([{"x": 1}])
        await campaign.close()
        with pytest.raises(Conflict) as refused:
            await campaign.add([{"x": 2}])
    assert refused.value.status == 409
    assert refused.value.message  # the server's own words


async def test_map_waits_out_the_servers_back_pressure_and_loses_nothing(start_server: StartServer) -> None:
    server = await start_server(open_backlog=100)
    refused, finished = trio.Event(), trio.Event()
    values: list[int] = []

    def on_response(response: httpx.Response) -> None:
        if response.status_code == 429:
            trio.from_thread.run_sync(refused.set)

    def run() -> None:
        with Client(server.url, server.token) as client:
            client._http.event_hooks["response"].append(on_response)
            values.extend(r.value for r in client.map(DOUBLE_KERNEL, ({"x": x} for x in range(600)), batch_size=150))

    async def run_then_signal() -> None:
        await trio.to_thread.run_sync(run)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_then_signal)
        with trio.fail_after(60):
            await refused.wait()  # no worker yet: the second batch finds the backlog full
            async with workers(server.ws_url):
                await finished.wait()
    assert values == [2 * x for x in range(600)]


def double_but_seven(dataset: dict[str, int]) -> int:
    if dataset["x"] == 7:
        raise ValueError("seven is refused")
    return dataset["x"] * 2


async def test_a_dataset_that_fails_for_good_ends_map_with_missing_results_after_the_others(
    live_server: LiveServer,
) -> None:
    values: list[int] = []

    def run() -> None:
        with Client(live_server.url, live_server.token) as client:
            values.extend(r.value for r in client.map(DOUBLE_KERNEL, ({"x": x} for x in range(20))))

    async with workers(live_server.ws_url, compute=double_but_seven):
        with pytest.raises(MissingResults) as missing:
            await trio.to_thread.run_sync(run)
    assert missing.value.numbers == [8]  # the 8th dataset, x = 7
    assert values == [2 * x for x in range(20) if x != 7]  # the later ones were held, then handed out


async def test_leaving_an_async_map_early_cancels_its_campaign(live_server: LiveServer) -> None:
    taken: list[int] = []
    async with (
        workers(live_server.ws_url),
        AsyncClient(live_server.url, live_server.token) as client,
        client.map(DOUBLE_KERNEL, ({"x": x} for x in itertools.count()), window=500) as results,
    ):
        async for result in results:
            taken.append(result.value)
            if len(taken) == 300:
                break
    assert taken == [2 * x for x in range(300)]
    (campaign,) = (await live_server.client.get("/api/campaigns")).json()["campaigns"]
    assert campaign["status"] == "cancelled"
