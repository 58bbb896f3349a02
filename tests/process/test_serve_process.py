"""`distribute serve` as an operator runs it: a process that stops cleanly on SIGINT and SIGTERM.

A stop must run the shutdown path (outcomes flushed, storage leases released), so that another
process, or the restarted one, can hand the datasets out at once instead of after `lease_seconds`.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from distribute.plugins import open_storage
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, database_url, launch_server_process
from tests.support.protocol_client import receive_tasks, send


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_stopped_server_exits_cleanly_and_releases_its_leases(tmp_path: Path, signum: int) -> None:
    database = database_url(tmp_path)
    launched = launch_server_process(tmp_path, database, "ops@example.org")
    server, url, token, log = launched.process, launched.url, launched.token, launched.log
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            files = {
                "kernel": ("k.js", SEED_KERNEL),
                "generator": ("g.js", SEED_GENERATOR),
                "static_dataset": SEED_STATIC,
            }
            campaign_id = (await client.post("/api/campaigns", files=files)).json()["id"]
        async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
            await send(ws, p.Hello(campaign=campaign_id, slots=4))
            assert len(await receive_tasks(ws)) == 4  # held, never answered
            server.send_signal(signum)
            code = await trio.to_thread.run_sync(lambda: server.wait(timeout=20))
    finally:
        if server.poll() is None:
            server.kill()
    assert code == 0
    assert "Traceback" not in log.read_text()
    storage = await open_storage(database)
    try:
        counts = await storage.counts(campaign_id)
    finally:
        await storage.aclose()
    assert counts.leased == 0 and counts.pending == counts.total == 100
