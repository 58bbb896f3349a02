"""Results with a cursor and the event stream, against a real server: pages, events, resuming, auth, caps."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from distribute.campaigns import stream
from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import work
from tests.support.sse import Event, read_events


async def _pages(server: LiveServer, campaign_id: int, limit: int, after: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        if after is not None:
            params["after"] = after
        response = await server.client.get(f"/api/campaigns/{campaign_id}/results", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["results"]
        after = page["cursor"]
        if page["complete"]:
            return rows


async def _events(server: LiveServer, campaign_id: int, **headers: str) -> list[Event]:
    """Every event of one stream until the server ends it (comments left out)."""
    found: list[Event] = []
    url = f"/api/campaigns/{campaign_id}/events"
    async with server.client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response):
            if event.name != "comment":
                found.append(event)
    return found


async def test_pages_list_every_result_once_in_order_of_storage(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    rows = await _pages(live_server, campaign_id, limit=7)
    download = await live_server.results(campaign_id, include_empty=True)
    assert sorted(r["dataset_number"] for r in rows) == list(range(1, 101))
    assert len({r["cursor"] for r in rows}) == 100
    by_id = {r["dataset_id"]: r for r in download}
    assert all({k: v for k, v in row.items() if k != "cursor"} == by_id[row["dataset_id"]] for row in rows)


async def test_a_page_from_the_last_cursor_of_a_complete_campaign_is_empty_and_complete(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    first = (await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"limit": 100})).json()
    assert len(first["results"]) == 100 and not first["complete"]  # a full page may not be the end
    last = await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"after": first["cursor"]})
    assert last.json() == {"results": [], "cursor": first["cursor"], "complete": True}


async def test_a_page_of_a_running_campaign_is_not_complete(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    page = (await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"limit": 10})).json()
    assert page["results"] == [] and page["complete"] is False


@pytest.mark.parametrize("params", [{"after": "nonsense"}, {"after": "c1.x"}, {"limit": 0}, {"limit": 10001}])
async def test_a_malformed_cursor_or_limit_is_400(live_server: LiveServer, params: dict[str, Any]) -> None:
    campaign_id = await live_server.create_campaign()
    response = await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params=params)
    assert response.status_code == 400 and "error" in response.json()


async def test_the_results_download_is_unchanged_without_cursor_parameters(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    response = await live_server.client.get(f"/api/campaigns/{campaign_id}/results")
    assert "attachment" in response.headers["content-disposition"]
    assert isinstance(response.json(), list) and "cursor" not in response.json()[0]


async def test_pages_and_events_without_a_token_are_401(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with httpx.AsyncClient(base_url=live_server.url) as anonymous:
        assert (await anonymous.get(f"/api/campaigns/{campaign_id}/results", params={"limit": 5})).status_code == 401
        assert (await anonymous.get(f"/api/campaigns/{campaign_id}/events")).status_code == 401


async def test_pages_and_events_of_another_users_campaign_are_404(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    storage = live_server.platform.storage
    other = await storage.create_user("intruder@example.org")
    headers = {"Authorization": f"Bearer {await storage.create_token(other.id)}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as intruder:
        assert (await intruder.get(f"/api/campaigns/{campaign_id}/results", params={"limit": 5})).status_code == 404
        assert (await intruder.get(f"/api/campaigns/{campaign_id}/events")).status_code == 404


async def test_events_send_each_result_progress_and_complete_then_end(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    events: list[Event] = []

    async def follow() -> None:
        events.extend(await _events(live_server, campaign_id))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await work(live_server.ws_url, campaign=campaign_id, slots=2, delay=0.01)
    results = [e for e in events if e.name == "result"]
    assert sorted(e.data["dataset_number"] for e in results) == list(range(1, 101))
    assert all(e.id == e.data["cursor"] for e in results)
    assert any(e.name == "progress" for e in events)
    assert events[-1].name == "complete" and events[-1].data["status"] == "complete"


async def test_events_resume_after_the_last_event_id(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    first: list[Event] = []
    async with live_server.client.stream("GET", f"/api/campaigns/{campaign_id}/events") as response:
        async for event in read_events(response):
            if event.name == "result":
                first.append(event)
                if len(first) == 30:
                    break  # the connection drops here
    assert first[-1].id is not None
    rest = await _events(live_server, campaign_id, **{"Last-Event-ID": first[-1].id})
    numbers = [e.data["dataset_number"] for e in (*first, *rest) if e.name == "result"]
    assert sorted(numbers) == list(range(1, 101))
    assert rest[-1].name == "complete"


async def test_an_account_holds_at_most_its_cap_of_event_streams(start_server: StartServer) -> None:
    server = await start_server(event_streams_per_user=1)
    campaign_id = await server.create_campaign()
    url = f"/api/campaigns/{campaign_id}/events"

    async def status_of_another() -> int:
        async with server.client.stream("GET", url) as another:  # never read: an accepted stream does not end
            return another.status_code

    with trio.fail_after(30):
        async with server.client.stream("GET", url) as open_stream:
            assert open_stream.status_code == 200
            # A named reader: one left to the garbage collector would be finalised, closing the stream.
            reader = read_events(open_stream)
            async for event in reader:
                assert event.name != "error", event
                if event.name == "progress":
                    break  # the stream is running
            refused = await server.client.get(url)  # a 429 is a short answer
            assert refused.status_code == 429 and "too many" in refused.json()["error"]
            await reader.aclose()
        # Closing the first frees its slot.
        while await status_of_another() != 200:
            await trio.sleep(0.05)


def _picky(dataset: dict[str, int]) -> list[int]:
    """Fails on the first dataset (min 0) only."""
    if dataset["min"] == 0:
        raise ValueError("cannot handle zero")
    return [dataset["min"]]


def _broken(dataset: Any) -> Any:
    raise RuntimeError("broken kernel")


async def test_events_report_kernel_errors_with_their_dataset_number(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    events: list[Event] = []

    async def follow() -> None:
        events.extend(await _events(live_server, campaign_id))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await work(live_server.ws_url, _picky, campaign=campaign_id, slots=2, delay=0.01)
    errors = [e.data for e in events if e.name == "kernel_error"]
    assert errors and {(e["dataset_number"], e["message"]) for e in errors} == {(1, "cannot handle zero")}
    assert len([e for e in events if e.name == "result"]) == 99


async def test_events_report_a_pause_and_the_resume(start_server: StartServer) -> None:
    server = await start_server(pause_after_failures=10)
    campaign_id = await server.create_campaign()
    url = f"/api/campaigns/{campaign_id}/events"
    with trio.fail_after(60):
        async with server.client.stream("GET", url) as response:
            reader = read_events(response)
            async for event in reader:
                if event.name == "progress":
                    break
            await work(server.ws_url, _broken, campaign=campaign_id, slots=2)  # the campaign pauses itself
            async for event in reader:
                if event.name == "paused":
                    assert event.data["state"]["key"] == "paused"
                    break
            assert (await server.client.post(f"/api/campaigns/{campaign_id}/resume")).status_code == 200
            async for event in reader:
                if event.name == "resumed":
                    assert event.data["state"]["key"] in ("generating", "running")
                    break
            await reader.aclose()


async def test_two_streams_of_one_campaign_each_get_every_result_once(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    streams: list[list[Event]] = [[], []]

    async def follow(into: list[Event]) -> None:
        into.extend(await _events(live_server, campaign_id))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for into in streams:
                nursery.start_soon(follow, into)
            await work(live_server.ws_url, campaign=campaign_id, slots=64)
    for events in streams:
        assert sorted(e.data["dataset_number"] for e in events if e.name == "result") == list(range(1, 101))


async def test_a_group_commit_wakes_the_streams_of_its_campaign(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream would next poll storage in an hour: only the commits of this process wake it.
    monkeypatch.setattr(stream, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(stream, "IDLE_POLL_SECONDS", 3600.0)
    campaign_id = await live_server.create_campaign()
    numbers: list[int] = []

    async def follow() -> None:
        async with live_server.client.stream("GET", f"/api/campaigns/{campaign_id}/events") as response:
            async for event in read_events(response):
                if event.name == "result":
                    numbers.append(event.data["dataset_number"])
                    if len(numbers) == 100:
                        return

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await work(live_server.ws_url, campaign=campaign_id, slots=2, delay=0.01)
    assert sorted(numbers) == list(range(1, 101))


async def test_the_openapi_document_describes_result_pages_and_the_event_stream(live_server: LiveServer) -> None:
    document = (await live_server.client.get("/api/openapi.json")).json()
    results = document["paths"]["/api/campaigns/{campaign_id}/results"]["get"]
    assert {"after", "limit"} <= {p["name"] for p in results["parameters"]}
    events = document["paths"]["/api/campaigns/{campaign_id}/events"]["get"]
    assert "Last-Event-ID" in events["description"] and "after" in {p["name"] for p in events["parameters"]}
