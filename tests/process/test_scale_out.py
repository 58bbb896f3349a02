"""Scale-out: three `distribute serve` processes on one PostgreSQL database, one campaign.

Each test starts three real server processes (`python -m distribute serve --port 0`) on a fresh
database of the throwaway cluster from tests/pg.py, whatever DISTRIBUTE_TEST_DATABASE says, so it
runs in every `make test`. About thirty protocol-level workers spread over the three servers, as a
TCP load balancer would spread them, and the results must be exact: every dataset answered once,
no dataset with two result rows. The second test SIGKILLs one server mid-run while it holds leases
nobody will answer; they expire after `lease_seconds` (3 s here) and the survivors finish them.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC
from tests.support.exactly_once import assert_seed_answered_exactly_once
from tests.support.pg import fresh_database, stop_cluster
from tests.support.protocol_client import Outcome, receive, receive_tasks, seed_kernel, send, work
from tests.support.serve_process import start_serve_process

pytestmark = pytest.mark.slow

SERVERS = 3
WORKERS_PER_SERVER = 10
LEASE_SECONDS = 3
SERVER_ENV = {
    "DISTRIBUTE_LEASE_SECONDS": str(LEASE_SECONDS),
    # Small storage leases, so that the 100 seed datasets are shared by all three processes rather
    # than all taken by the first one that asks.
    "DISTRIBUTE_REFILL_BATCH": "8",
    "DISTRIBUTE_REFILL_GROWTH": "1",  # and no growth: a fast process must not lease half of them at once
}
# What a worker sees when its server is SIGKILLed (trio-websocket may wrap it in an exception group).
GONE = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


@pytest.fixture(scope="session", autouse=True)
def _remove_postgres_cluster_at_session_end() -> Iterator[None]:
    yield
    stop_cluster()


@dataclass
class Server:
    process: trio.Process
    url: str
    log: Path
    alive: bool = True

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@dataclass
class Cluster:
    database: str
    token: str
    servers: list[Server]
    outcomes: dict[int, list[Outcome]] = field(default_factory=dict)  # server index -> its workers' sessions

    def client(self, index: int = 0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.servers[index].url, headers=headers, timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- server {i} ({s.url}):\n{s.log.read_text()[-3000:]}" for i, s in enumerate(self.servers))


async def _start_server(nursery: trio.Nursery, database: str, log: Path) -> Server:
    process, url = await start_serve_process(nursery, database, log, SERVER_ENV)
    return Server(process, url, log)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    database = fresh_database()
    created = await trio.run_process(
        [sys.executable, "-m", "distribute", "user", "create", "owner@example.org", "--database", database],
        capture_stdout=True,
        capture_stderr=True,
    )
    token = created.stdout.decode().split()[-1]
    async with trio.open_nursery() as nursery:
        servers = [await _start_server(nursery, database, tmp_path / f"server{i}.log") for i in range(SERVERS)]
        yield Cluster(database, token, servers)
        nursery.cancel_scope.cancel()  # run_process terminates the servers still running


async def _create_seed_campaign(cluster: Cluster) -> int:
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.txt", SEED_STATIC.encode()),
    }
    async with cluster.client() as client:
        response = await client.post("/api/campaigns", files=files, data={"name": "seed"})
        assert response.status_code == 201, response.text
        campaign_id: int = response.json()["id"]
        with trio.fail_after(30):
            while (await _campaign(client, campaign_id))["status"] == "generating":
                await trio.sleep(0.05)
    # A server learns of a new campaign on its next refresh (every 2 s); until then it would tell a
    # worker asking for this campaign that it is complete. Wait until every server knows it.
    for server in cluster.servers:
        with trio.fail_after(30):
            while not await _knows(server, campaign_id):
                await trio.sleep(0.2)
    return campaign_id


async def _campaign(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def _knows(server: Server, campaign_id: int) -> bool:
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1, client={"kind": "probe"}))
        return isinstance(await receive(ws), p.CampaignInfo)


async def _volunteer(cluster: Cluster, first: int, campaign_id: int) -> None:
    """A worker behind a load balancer: when its server goes away it reconnects to another one."""
    index = first
    while True:
        outcome = None
        try:
            outcome = await work(cluster.servers[index].ws_url, seed_kernel, campaign=campaign_id)
        except* GONE:
            pass  # the server died under us (or refused the connection while dying)
        if outcome is not None:
            cluster.outcomes.setdefault(index, []).append(outcome)
            if outcome.bye == "complete":
                return
        alive = [i for i, s in enumerate(cluster.servers) if s.alive]
        index = alive[(alive.index(index) + 1) % len(alive)] if index in alive else alive[first % len(alive)]
        await trio.sleep(0.1)


async def _hoard(server: Server, campaign_id: int, *, task_status: trio.TaskStatus[list[int]]) -> None:
    """Take tasks and never answer them, until the server goes away."""
    try:
        async with open_websocket_url(server.ws_url) as ws:
            await send(ws, p.Hello(campaign=campaign_id, slots=8, client={"kind": "hoarder"}))
            task_status.started([task.id for task in await receive_tasks(ws)])
            while True:
                await ws.get_message()
    except* GONE:
        pass


async def _check_exact(cluster: Cluster, campaign_id: int) -> dict[str, Any]:
    async with cluster.client() as client:
        campaign = await _campaign(client, campaign_id)
        response = await client.get(
            f"/api/campaigns/{campaign_id}/results", params={"format": "json", "include_empty": "true"}
        )
    assert response.status_code == 200, response.text
    rows = response.json()
    assert_seed_answered_exactly_once(cluster.database, campaign_id, campaign, rows)
    assert campaign["results"] == len(SEED_ANSWER)  # one dataset per multiple of 123 (123 > 100)
    assert campaign["compute_seconds"] > 0  # summed in the database over all three processes
    return campaign


async def test_three_servers_on_one_database_give_exact_results(cluster: Cluster) -> None:
    campaign_id = await _create_seed_campaign(cluster)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(SERVERS * WORKERS_PER_SERVER):
                nursery.start_soon(_volunteer, cluster, i % SERVERS, campaign_id)
    await _check_exact(cluster, campaign_id)
    served = {index: sum(len(o.done) for o in outcomes) for index, outcomes in cluster.outcomes.items()}
    assert sorted(served) == list(range(SERVERS)) and all(served.values()), served


async def test_a_server_killed_mid_run_loses_nothing(cluster: Cluster) -> None:
    campaign_id = await _create_seed_campaign(cluster)
    victim = cluster.servers[-1]
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            # Tasks taken on the victim and never answered: at the kill they are leased in storage
            # to a process that is gone, so only lease expiry can bring them back.
            hoarded: list[int] = await nursery.start(_hoard, victim, campaign_id)
            for i in range(SERVERS * WORKERS_PER_SERVER):
                nursery.start_soon(_volunteer, cluster, i % SERVERS, campaign_id)
            async with cluster.client() as client:
                while (await _campaign(client, campaign_id))["datasets"]["done"] < 20:
                    await trio.sleep(0.02)
            victim.alive = False
            victim.process.send_signal(signal.SIGKILL)
    assert await victim.process.wait() == -signal.SIGKILL
    try:
        await _check_exact(cluster, campaign_id)
    except AssertionError:
        print(cluster.logs())  # shown by pytest with the failure
        raise
    assert hoarded  # ... and _check_exact saw each of them answered exactly once, by a survivor
