"""The live view's server-sent events: snapshots with counts, hosts and history, until the page closes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import LiveServer
from tests.support.protocol_client import work

from .conftest import PASSWORD, Api, FailingCampaign, People, Visitor, age_results, counting_generator


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The live view's module, sending a snapshot every 50 ms (and checking the session every 5: 0.25 s)."""
    from distribute.console import live

    monkeypatch.setattr(live, "INTERVAL", 0.05)
    return live


def stream(visitor: Visitor, campaign_id: int) -> AbstractAsyncContextManager[httpx.Response]:
    """The live view's event stream of `campaign_id`, as `visitor`'s browser opens it."""
    return visitor.client.stream("GET", f"/campaigns/{campaign_id}/live")


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def first_event(visitor: Visitor, campaign_id: int) -> dict[str, Any]:
    with trio.fail_after(10):
        async with stream(visitor, campaign_id) as response:
            return await anext(events(response))


async def running_campaign(people: People, api_of: Any, datasets: int) -> tuple[Visitor, Api, int]:
    """Alice, her API client, and her campaign of `datasets` datasets, once it runs."""
    alice = await people.sign_up("alice@example.org")
    api: Api = await api_of(alice)
    campaign_id = await api.create(generator=counting_generator(datasets))
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    return alice, api, campaign_id


async def test_the_stream_follows_a_campaign_to_completion(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice, _, campaign_id = await running_campaign(people, api_of, 40)
    seen: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with stream(alice, campaign_id) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in events(response):
                seen.append(event)
                if len(seen) == 1:
                    host = {"host": "https://news.example"}
                    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign_id, client=host)
                if event["status"] == "complete" and event["hosts"]:
                    break
    first, last = seen[0], seen[-1]
    assert first["history"]["counts"] == [0] * 60 and first["datasets"]["done"] == 0
    assert "history" not in last
    assert last["datasets"] == {"total": 40, "pending": 0, "leased": 0, "done": 40, "failed": 0}
    assert last["hosts"] == [{"host": "https://news.example", "results": 40, "compute_seconds": 0.004}]  # 0.1 ms each
    assert last["t"] > first["t"]


async def test_the_first_event_carries_the_throughput_history(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice, api, campaign_id = await running_campaign(people, api_of, 25)
    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    event = await first_event(alice, campaign_id)
    history = event["history"]
    assert (history["width"], history["window"], len(history["counts"])) == (10.0, 600.0, 60)
    assert sum(history["counts"]) == 25
    # The window ends now: its last bucket (still filling) holds the server's clock.
    assert history["start"] + 59 * 10.0 <= event["t"] < history["start"] + 60 * 10.0


async def test_the_history_counts_a_pause_as_empty_buckets(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice, api, campaign_id = await running_campaign(people, api_of, 6)
    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    await age_results(console_server, campaign_id, 400.0)
    event = await first_event(alice, campaign_id)
    counts = event["history"]["counts"]
    stored_at = [i for i, n in enumerate(counts) if n]
    assert sum(counts) == 6 and stored_at and max(stored_at) <= 60 - 40  # about 400 s, i.e. 40 buckets, ago
    assert counts[max(stored_at) + 1 :] == [0] * (59 - max(stored_at))


async def test_an_event_carries_each_kernel_errors_message_stack_dataset_and_count(
    failing_campaign: FailingCampaign,
) -> None:
    campaign = failing_campaign
    first = await first_event(campaign.owner, campaign.id)
    shown = {e["dataset_id"]: e for e in first["kernel_errors"]}
    assert sorted(campaign.failed) == [3, 7] and sorted(shown) == sorted(campaign.failed.values())
    stacks = {row.dataset_id: row.stack for row in campaign.errors}
    for i, dataset_id in campaign.failed.items():
        error = shown[dataset_id]
        assert (error["message"], error["count"]) == (f"RangeError: no {i} here", campaign.tries)
        assert "kernel.js:3" in error["stack"] and error["stack"] == stacks[dataset_id]


async def test_the_stream_stops_when_the_page_closes(
    people: People, api_of: Any, live: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distribute.campaigns import CampaignService

    snapshots = 0
    real: Callable[[Any, Any], Awaitable[dict[str, Any]]] = CampaignService.describe  # a snapshot's data

    async def counting(service: Any, campaign: Any) -> dict[str, Any]:
        nonlocal snapshots
        snapshots += 1
        return await real(service, campaign)

    monkeypatch.setattr(CampaignService, "describe", counting)
    alice = await people.sign_up("alice@example.org")
    campaign_id = await (await api_of(alice)).create()
    with trio.fail_after(10):
        async with stream(alice, campaign_id) as response:
            snapshots_seen = events(response)
            for _ in range(3):
                await anext(snapshots_seen)
    await trio.sleep(0.3)
    after_close = snapshots
    await trio.sleep(0.5)
    assert snapshots == after_close


async def stream_until_it_ends(visitor: Visitor, campaign_id: int, after_first: Any) -> list[str]:
    """The names of the events of one stream ("message" for snapshots), calling `after_first()` after
    the first snapshot; returns when the server ends the stream."""
    names: list[str] = []
    async with stream(visitor, campaign_id) as response:
        assert response.status_code == 200
        name = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                names.append(name)
                if names == ["message"]:
                    await after_first()
                name = "message"
    return names


async def test_the_stream_ends_when_its_session_signs_out(people: People, api_of: Any, live: ModuleType) -> None:
    alice = await people.sign_up("alice@example.org")
    campaign_id = await (await api_of(alice)).create()

    async def sign_out() -> None:
        assert (await alice.post("/signout", page="/account")).status_code == 303

    with trio.fail_after(10):
        names = await stream_until_it_ends(alice, campaign_id, sign_out)
    assert names[-1] == "signedout" and names[:-1] == ["message"] * (len(names) - 1)


async def test_the_stream_of_another_device_ends_when_the_password_changes(
    people: People, api_of: Any, live: ModuleType
) -> None:
    laptop = await people.sign_up("alice@example.org")
    phone = await people.sign_in("alice@example.org")
    campaign_id = await (await api_of(laptop)).create()

    async def change_password() -> None:
        data = {"current": PASSWORD, "password": "a much better passphrase"}
        assert (await laptop.post("/account/password", data, page="/account")).status_code == 303

    with trio.fail_after(10):
        names = await stream_until_it_ends(phone, campaign_id, change_password)
    assert names[-1] == "signedout"
    # An EventSource reconnecting with the old cookie is refused.
    reconnect = await phone.get(f"/campaigns/{campaign_id}/live", headers={"Accept": "text/event-stream"})
    assert reconnect.status_code == 401


async def test_an_event_shows_the_tasks_in_progress_with_their_kernels_progress(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    from trio_websocket import open_websocket_url

    from distribute import protocol as p
    from tests.support.protocol_client import receive, receive_tasks, send

    alice, _, campaign_id = await running_campaign(people, api_of, 10)
    async with open_websocket_url(console_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=2, client={"kind": "test"}))
        assert isinstance(await receive(ws), p.CampaignInfo)
        tasks = await receive_tasks(ws)
        await send(ws, p.Progress(tasks[0].id, 0.75))
        with trio.fail_after(10):
            async with stream(alice, campaign_id) as response:
                async for event in events(response):
                    if event["in_progress"]["each"] == [0.75, 0.0]:
                        break
    assert event["in_progress"] == {"tasks": 2, "mean": 0.375, "each": [0.75, 0.0]}
