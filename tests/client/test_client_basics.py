"""The client against a real server: creating campaigns from strings or paths, reading them back,
downloads, errors that carry the server's words, the token from the environment; sync and async."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from distribute.client import AsyncClient, BadRequest, Client, ClientError, NotFound, Unauthorized
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer
from tests.support.protocol_client import work


def found(rows: list[dict[str, object]]) -> list[int]:
    return sorted(n for row in rows for n in row["result"])  # type: ignore[attr-defined]


async def test_async_client_creates_a_campaign_from_paths_and_downloads_its_results(
    live_server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "multiples.js").write_text(SEED_KERNEL)
    (tmp_path / "ranges.js").write_text(SEED_GENERATOR)
    (tmp_path / "static.json").write_text(SEED_STATIC)
    async with AsyncClient(live_server.url, live_server.token) as client:
        campaign = await client.create_campaign(
            kernel=tmp_path / "multiples.js", generator=tmp_path / "ranges.js", static=tmp_path / "static.json"
        )
        assert campaign.info["name"] == "multiples"  # named after the kernel's file
        await work(live_server.ws_url, campaign=campaign.id)
        info = await campaign.wait(progress=False)
        assert info["status"] == "complete"
        assert found(json.loads(await campaign.download())) == SEED_ANSWER


async def test_sync_client_creates_a_campaign_from_strings_and_reads_it_back(live_server: LiveServer) -> None:
    def create() -> tuple[int, str, str]:
        with Client(live_server.url, live_server.token) as client:
            campaign = client.create_campaign(
                kernel=SEED_KERNEL, generator=SEED_GENERATOR, static={"divisor": 123}, name="strings", priority=3
            )
            again = client.campaign(campaign.id)
            return again.id, again.info["name"], str(again.info["priority"])

    campaign_id, name, priority = await trio.to_thread.run_sync(create)
    assert (name, priority) == ("strings", "3")
    await work(live_server.ws_url, campaign=campaign_id)
    assert found(await live_server.results(campaign_id)) == SEED_ANSWER  # the static dict went up as JSON


async def test_a_refused_upload_raises_bad_request_with_the_servers_message(live_server: LiveServer) -> None:
    async with AsyncClient(live_server.url, live_server.token) as client:
        with pytest.raises(BadRequest) as refused:
            await client.create_campaign(kernel="function main( {", generator=SEED_GENERATOR)
    assert refused.value.status == 400
    assert refused.value.message.startswith("kernel: ")  # the field the server blamed, then its words
    assert refused.value.body["field"] == "kernel"


async def test_a_missing_campaign_raises_not_found(live_server: LiveServer) -> None:
    def missing() -> None:
        with Client(live_server.url, live_server.token) as client:
            client.campaign(987654)

    with pytest.raises(NotFound) as raised:
        await trio.to_thread.run_sync(missing)
    assert raised.value.status == 404
    assert "987654" in raised.value.message or "not found" in raised.value.message.lower()


async def test_a_transition_the_state_forbids_raises_with_the_servers_reason(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with AsyncClient(live_server.url, live_server.token) as client:
        campaign = await client.campaign(campaign_id)
        with pytest.raises(ClientError) as refused:
            await campaign.resume()  # not paused
    assert refused.value.status in (400, 409)
    assert "not paused" in refused.value.message


async def test_server_and_token_come_from_the_environment(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign_id = await live_server.create_campaign()
    monkeypatch.setenv("DISTRIBUTE_SERVER", live_server.url)
    monkeypatch.setenv("DISTRIBUTE_TOKEN", live_server.token)
    async with AsyncClient() as client:
        assert (await client.campaign(campaign_id)).id == campaign_id
    monkeypatch.setenv("DISTRIBUTE_TOKEN", "not-a-token")
    async with AsyncClient() as client:
        with pytest.raises(Unauthorized) as refused:
            await client.campaign(campaign_id)
    assert "invalid" in refused.value.message


def test_a_client_without_a_token_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)
    with pytest.raises(ClientError, match="DISTRIBUTE_TOKEN"):
        Client("http://127.0.0.1:9")
