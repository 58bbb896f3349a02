"""`distribute results --follow` and the cursor pages across a real server process that restarts.

The server runs as a child process on a fixed port; it is killed mid-campaign and started again on
the same database and port, as an operator's restart would. Workers are protocol clients in Python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import HandshakeError

from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, database_url
from tests.support.ports import free_port
from tests.support.protocol_client import work
from tests.support.serve_process import start_serve_process


@dataclass
class Restartable:
    nursery: trio.Nursery
    database: str
    port: int
    token: str
    log: Path
    process: trio.Process | None = None
    url: str = ""

    async def start(self) -> None:
        self.process, self.url = await start_serve_process(self.nursery, self.database, self.log, port=self.port)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Restartable]:
    database = database_url(tmp_path)
    created = await trio.run_process(
        [sys.executable, "-m", "distribute", "user", "create", "owner@example.org", "--database", database],
        capture_stdout=True,
        capture_stderr=True,
    )
    async with trio.open_nursery() as nursery:
        running = Restartable(nursery, database, free_port(), created.stdout.decode().split()[-1], tmp_path / "s.log")
        await running.start()
        yield running
        nursery.cancel_scope.cancel()


async def _campaign(server: Restartable) -> int:
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.txt", SEED_STATIC.encode()),
    }
    async with server.api() as client:
        response = await client.post("/api/campaigns", files=files, data={"name": "seed"})
        assert response.status_code == 201, response.text
        campaign_id: int = response.json()["id"]
    return campaign_id


async def _volunteer(server: Restartable, campaign_id: int, done: trio.Event) -> None:
    """A worker that reconnects whenever its server goes away, until the campaign is complete."""
    while not done.is_set():
        try:
            outcome = await work(
                server.url.replace("http://", "ws://") + "/ws", campaign=campaign_id, slots=2, delay=0.02
            )
        except (OSError, HandshakeError):
            outcome = None
        if outcome is not None and outcome.bye == "complete":
            return
        await trio.sleep(0.1)


async def test_follow_prints_every_dataset_once_across_a_server_restart(server: Restartable) -> None:
    campaign_id = await _campaign(server)
    command = [sys.executable, "-m", "distribute", "results", str(campaign_id), "--follow", "--format", "json"]
    env = {"DISTRIBUTE_SERVER": server.url, "DISTRIBUTE_TOKEN": server.token}
    lines: list[dict[str, Any]] = []
    complete = trio.Event()
    follower = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **env}
    )
    assert follower.stdout is not None

    async def read_lines() -> None:
        buffer = b""
        while chunk := await follower.stdout.receive_some():  # type: ignore[union-attr]
            buffer += chunk
            *whole, buffer = buffer.split(b"\n")
            lines.extend(json.loads(line) for line in whole)

    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_lines)
                nursery.start_soon(_volunteer, server, campaign_id, complete)
                while len(lines) < 20:
                    await trio.sleep(0.02)
                await server.kill()  # mid-campaign: the follower's connection drops
                await server.start()
                assert await follower.wait() == 0
                complete.set()
    finally:
        if follower.returncode is None:
            follower.kill()
    numbers = [line["dataset_number"] for line in lines]
    assert sorted(numbers) == list(range(1, 101))  # every dataset, once
    assert all("cursor" in line and "result" in line for line in lines)


async def test_a_cursor_stays_valid_across_a_server_restart(server: Restartable) -> None:
    campaign_id = await _campaign(server)
    await _volunteer(server, campaign_id, trio.Event())
    async with server.api() as client:
        first = (await client.get(f"/api/campaigns/{campaign_id}/results", params={"limit": 40})).json()
    await server.kill()
    await server.start()
    async with server.api() as client:
        rest = (await client.get(f"/api/campaigns/{campaign_id}/results", params={"after": first["cursor"]})).json()
    numbers = [row["dataset_number"] for row in first["results"] + rest["results"]]
    assert sorted(numbers) == list(range(1, 101)) and rest["complete"]
