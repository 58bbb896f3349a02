"""`campaign.results()` against real servers: every result once, in storage order, resumed from its
cursor after a server restart; the lifecycle calls answer the campaign's new state."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from distribute.client import AsyncClient, Client, Result
from tests.client.workers import DOUBLE_KERNEL, workers
from tests.conftest import LiveServer
from tests.support.ports import free_port
from tests.support.serve_process import start_serve_process

DATASETS = 4000
GENERATOR = (
    f"({{ main: function () {{ var d = []; for (var i = 0; i < {DATASETS}; i++) d.push({{x: i}}); return d; }} }})"
)


@pytest.mark.sqlite_only
@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["events", "pages"])
async def test_the_results_iterator_survives_a_server_restart_without_gaps_or_duplicates(
    tmp_path: Path, stream: bool
) -> None:
    database, log, port = f"sqlite:///{tmp_path / 'distribute.db'}", tmp_path / "server.log", free_port()
    created = subprocess.run(
        [sys.executable, "-m", "distribute", "user", "create", "owner@example.org", "--database", database],
        capture_output=True,
        check=True,
    )
    token = created.stdout.decode().split()[-1]
    env = {"DISTRIBUTE_LEASE_SECONDS": "2"}
    received: list[Result] = []
    async with trio.open_nursery() as nursery:
        server, url = await start_serve_process(nursery, database, log, env, port=port)
        ws_url = url.replace("http://", "ws://") + "/ws"
        async with AsyncClient(url, token, retry_for=60) as client:
            campaign = await client.create_campaign(kernel=DOUBLE_KERNEL, generator=GENERATOR)
            async with workers(ws_url, campaign.id, slots=8):
                with trio.fail_after(240):
                    async for result in campaign.results(stream=stream):
                        received.append(result)
                        if len(received) == DATASETS // 3:  # mid-run: the server dies and comes back
                            server.send_signal(signal.SIGKILL)
                            await server.wait()
                            server, _ = await start_serve_process(nursery, database, log, env, port=port)
        server.terminate()
    numbers = [r.dataset_number for r in received]
    assert sorted(numbers) == list(range(1, DATASETS + 1))  # no gap, no duplicate
    assert all(r.value == 2 * r.dataset["x"] for r in received)
    assert len({r.cursor for r in received}) == DATASETS


async def test_results_resume_after_a_cursor_and_end_when_the_campaign_is_complete(live_server: LiveServer) -> None:
    def read(campaign_id: int, after: str | None) -> list[Result]:
        with Client(live_server.url, live_server.token) as client:
            return list(client.campaign(campaign_id).results(after=after))

    campaign_id = await live_server.create_campaign(kernel=DOUBLE_KERNEL, generator=GENERATOR.replace("4000", "300"))
    async with workers(live_server.ws_url, campaign_id):
        everything = await trio.to_thread.run_sync(read, campaign_id, None)
    rest = await trio.to_thread.run_sync(read, campaign_id, everything[99].cursor)
    assert sorted(r.dataset_number for r in everything) == list(range(1, 301))
    assert rest == everything[100:]


async def test_pause_resume_and_cancel_answer_the_campaigns_new_state(live_server: LiveServer) -> None:
    async with AsyncClient(live_server.url, live_server.token) as client:
        campaign = await client.create_campaign(kernel=DOUBLE_KERNEL, open=True)
        await campaign.add([{"x": x} for x in range(10)])
        assert (await campaign.pause())["status"] == "paused"
        assert (await campaign.resume())["status"] == "generating"
        assert (await campaign.cancel())["status"] == "cancelled"
        assert (await campaign.refresh())["status"] == "cancelled"


async def test_wait_returns_the_final_state_once_the_open_campaign_is_closed_and_answered(
    live_server: LiveServer,
) -> None:
    async with AsyncClient(live_server.url, live_server.token) as client:
        campaign = await client.create_campaign(kernel=DOUBLE_KERNEL, open=True)
        await campaign.add([{"x": x} for x in range(50)])
        await campaign.close()
        async with workers(live_server.ws_url, campaign.id):
            with trio.fail_after(60):
                info = await campaign.wait(progress=True, interval=0.1)
    assert info["status"] == "complete"
    assert info["results"] == 50
