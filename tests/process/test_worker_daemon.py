"""`distribute worker` as a volunteer's daemon: real server, real worker processes.

Several sessions at once, waiting for a server and for work, surviving a server restart, and a clean
stop on SIGTERM that hands the worker's tasks back to the server at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_STATIC, LiveServer, StartServer, slow_seed_kernel
from tests.support.ports import free_port
from tests.support.protocol_client import work


def numbers(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(n for row in rows for n in row["result"] or ())


@asynccontextmanager
async def worker(tmp_path: Path, server: str, *options: str) -> AsyncIterator[trio.Process]:
    """A `distribute worker` process (stdout and stderr to files, as under a service manager); killed if left running."""
    out, err = (tmp_path / "worker.out").open("wb"), (tmp_path / "worker.err").open("wb")
    command = [sys.executable, "-m", "distribute", "worker", "--server", server, *options]
    process = await trio.lowlevel.open_process(command, stdout=out, stderr=err, env={**os.environ, "COLUMNS": "120"})
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        out.close()
        err.close()


async def stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await process.wait()


async def test_two_processes_compute_a_campaign_exactly_over_two_connections(
    live_server: LiveServer, tmp_path: Path
) -> None:
    campaign_id = await live_server.create_campaign(kernel=slow_seed_kernel(20))
    async with worker(
        tmp_path, live_server.url, "--campaign", str(campaign_id), "--processes", "2", "--slots", "1"
    ) as w:
        with trio.fail_after(120):
            assert await w.wait() == 0, (tmp_path / "worker.err").read_text()
    assert "worker done: 100 tasks, 0 errors" in (tmp_path / "worker.out").read_text()
    rows = await live_server.results(campaign_id, include_empty=True)
    assert len(rows) == 100 and len({row["dataset_id"] for row in rows}) == 100
    assert numbers(rows) == SEED_ANSWER
    assert len({row["worker"] for row in rows}) == 2  # "connection@address": two sessions served it


async def test_a_waiting_worker_started_before_the_server_computes_a_campaign_created_later(
    start_server: StartServer, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with worker(tmp_path, url, "--wait", "--processes", "1", "--max-backoff", "1") as w:
        with trio.fail_after(30):
            while "cannot connect" not in (tmp_path / "worker.err").read_text():
                await trio.sleep(0.05)
        server = await start_server(port=port)
        campaign_id = await server.create_campaign(kernel=slow_seed_kernel(20))
        await server.wait_complete(campaign_id, timeout=60)
        assert w.returncode is None  # still waiting for more work
        assert await stop(w) == 0
    assert numbers(await server.results(campaign_id)) == SEED_ANSWER
    log = (tmp_path / "worker.err").read_text()
    assert "\x1b[" not in log  # not a terminal: plain lines, no control sequences
    assert "worker 1: retrying in" in log and "worker 1: computing (campaign" in log
    assert "worker done: 100 tasks, 0 errors (stopped)" in (tmp_path / "worker.out").read_text()


def serve(database: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "distribute", "serve", "--port", str(port), "--database", database],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


async def test_a_waiting_worker_survives_a_server_restart_and_finishes_the_campaign(tmp_path: Path) -> None:
    from tests.conftest import database_url

    database, port = database_url(tmp_path), free_port()
    url = f"http://127.0.0.1:{port}"
    created = await trio.run_process(
        [sys.executable, "-m", "distribute", "user", "create", "o@example.org", "--database", database],
        capture_stdout=True,
    )
    token = created.stdout.decode().split()[-1]
    server = serve(database, port, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:

            async def done() -> int:
                try:
                    response = await client.get(f"/api/campaigns/{campaign_id}")
                except httpx.TransportError:
                    return -1  # the server is restarting
                return int(response.json()["datasets"]["done"])

            with trio.fail_after(30):
                while True:
                    try:
                        files = {"kernel": ("k.js", slow_seed_kernel(40)), "generator": ("g.js", SEED_GENERATOR)}
                        files["static_dataset"] = ("s.json", SEED_STATIC)
                        response = await client.post("/api/campaigns", files=files)
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.1)  # not listening yet
            assert response.status_code == 201, response.text
            campaign_id = response.json()["id"]
            async with worker(tmp_path, url, "--wait", "--processes", "1", "--max-backoff", "1") as w:
                with trio.fail_after(60):
                    while await done() < 20:
                        await trio.sleep(0.1)
                server.terminate()
                await trio.to_thread.run_sync(server.wait, 30)
                server = serve(database, port, tmp_path / "server.log")
                with trio.fail_after(120):
                    while await done() < 100:
                        await trio.sleep(0.2)
                assert w.returncode is None
                assert await stop(w) == 0
            rows = (await client.get(f"/api/campaigns/{campaign_id}/results", params={"format": "json"})).json()
    finally:
        server.terminate()
        await trio.to_thread.run_sync(server.wait, 30)
    assert numbers(rows) == SEED_ANSWER
    assert "worker 1: retrying in" in (tmp_path / "worker.err").read_text()  # it noticed, and came back


async def test_sigterm_stops_the_worker_and_its_tasks_go_to_another_worker_at_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    # A deadline of 600 s: the campaign can only complete well before it if the tasks were handed back.
    campaign_id = await live_server.create_campaign(kernel=slow_seed_kernel(200), task_timeout=600)
    options = ("--campaign", str(campaign_id), "--processes", "2", "--slots", "8")
    async with worker(tmp_path, live_server.url, *options) as w:
        await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] >= 4, timeout=60)
        assert await stop(w) == 0, (tmp_path / "worker.err").read_text()
    assert "(stopped)" in (tmp_path / "worker.out").read_text()
    assert live_server.platform.dispatcher.leases == {}  # no task of it waits for its deadline
    with trio.fail_after(120):  # far below the 600 s deadline
        await work(live_server.ws_url, campaign=campaign_id)
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["errors"] == 0
    assert numbers(await live_server.results(campaign_id)) == SEED_ANSWER
    assert len(live_server.platform.gateway.allowance) == 0  # handed back, not dropped: no slots lost
