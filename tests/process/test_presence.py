"""Two `distribute serve` processes on one PostgreSQL: each one's console counts the workers of both.

Every process renews its presence row (its connected workers per campaign) every few seconds and
reads the others'; the console of either shows the sum. Always on a fresh database of the throwaway
PostgreSQL cluster (tests/support/pg.py), whatever DISTRIBUTE_TEST_DATABASE says: several processes
on one database is what PostgreSQL is for.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC
from tests.support.pg import fresh_database, stop_cluster
from tests.support.protocol_client import receive, send
from tests.support.serve_process import start_serve_process

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@pytest.fixture(scope="session", autouse=True)
def _remove_postgres_cluster_at_session_end() -> Iterator[None]:
    yield
    stop_cluster()


@dataclass
class Pair:
    database: str
    urls: list[str]
    token: str
    processes: list[trio.Process]

    def api(self, index: int) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.urls[index], headers=headers, timeout=30)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    database = fresh_database()
    command = ["user", "create", "owner@example.org", "--password-stdin", "--database", database]
    created = await trio.run_process(
        [sys.executable, "-m", "distribute", *command],
        stdin=(PASSWORD + "\n").encode(),
        capture_stdout=True,
        capture_stderr=True,
    )
    token = created.stdout.decode().split()[-1]
    async with trio.open_nursery() as nursery:
        started = [await start_serve_process(nursery, database, tmp_path / f"server{i}.log") for i in range(2)]
        yield Pair(database, [url for _, url in started], token, [process for process, _ in started])
        nursery.cancel_scope.cancel()


async def _create_campaign(pair: Pair) -> int:
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.txt", SEED_STATIC.encode()),
    }
    async with pair.api(0) as client:
        response = await client.post("/api/campaigns", files=files, data={"name": "seed"})
        assert response.status_code == 201, response.text
        campaign_id: int = response.json()["id"]
        with trio.fail_after(30):
            while (await client.get(f"/api/campaigns/{campaign_id}")).json()["status"] != "running":
                await trio.sleep(0.05)
    return campaign_id


async def _serving(stack: AsyncExitStack, url: str, campaign_id: int) -> WebSocketConnection:
    """A worker connected to `url` that was given the campaign and stays (whether it gets tasks or not:
    the other process may hold them all)."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    ws = await stack.enter_async_context(open_websocket_url(ws_url, connect_timeout=30))
    with trio.fail_after(30):
        await send(ws, p.Hello(campaign=campaign_id, slots=1, client={"kind": "test"}))
        while not isinstance(message := await receive(ws), p.CampaignInfo):
            assert not isinstance(message, p.Bye), message
    return ws


async def _signed_in(url: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=30)
    form = (await client.get("/signin")).text
    match = CSRF.search(form)
    assert match, "the sign-in page has no CSRF token"
    data = {"csrf": match.group(1), "email": "owner@example.org", "password": PASSWORD}
    response = await client.post("/signin", data=data)
    assert response.status_code == 303, response.text
    return client


async def _first_live_snapshot(console: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    async with console.stream("GET", f"/campaigns/{campaign_id}/live") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                snapshot: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return snapshot
    raise AssertionError("the live stream ended without a snapshot")


async def test_the_console_of_one_process_counts_the_workers_of_both(pair: Pair) -> None:
    campaign_id = await _create_campaign(pair)
    async with AsyncExitStack() as workers:
        await _serving(workers, pair.urls[0], campaign_id)
        await _serving(workers, pair.urls[1], campaign_id)
        console = await _signed_in(pair.urls[0])
        try:
            with trio.fail_after(30):  # within a heartbeat or two of the other process
                while (await _first_live_snapshot(console, campaign_id))["workers"] != 2:
                    await trio.sleep(0.2)
            home = (await console.get("/")).text
            assert "2 workers connected now" in home
        finally:
            await console.aclose()


async def test_a_worker_that_leaves_the_other_process_stops_counting(pair: Pair) -> None:
    campaign_id = await _create_campaign(pair)
    async with AsyncExitStack() as staying:
        await _serving(staying, pair.urls[0], campaign_id)
        async with AsyncExitStack() as leaving:
            await _serving(leaving, pair.urls[1], campaign_id)
            async with pair.api(0) as api:
                with trio.fail_after(30):
                    while (await api.get(f"/api/campaigns/{campaign_id}")).json()["workers"] != 2:
                        await trio.sleep(0.2)
        async with pair.api(0) as api:
            with trio.fail_after(30):
                while (await api.get(f"/api/campaigns/{campaign_id}")).json()["workers"] != 1:
                    await trio.sleep(0.2)


def _presence_rows(database: str) -> int:
    with closing(psycopg2.connect(database)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM presence")
        (count,) = cursor.fetchone()
        return int(count)


async def test_a_process_that_stops_cleanly_deletes_its_presence_row(pair: Pair) -> None:
    campaign_id = await _create_campaign(pair)
    async with AsyncExitStack() as workers:
        await _serving(workers, pair.urls[1], campaign_id)
        async with pair.api(0) as api:
            with trio.fail_after(30):
                while (await api.get(f"/api/campaigns/{campaign_id}")).json()["workers"] != 1:
                    await trio.sleep(0.2)
        assert await trio.to_thread.run_sync(_presence_rows, pair.database) == 2
        pair.processes[1].terminate()
        with trio.fail_after(30):
            await pair.processes[1].wait()
        assert await trio.to_thread.run_sync(_presence_rows, pair.database) == 1
