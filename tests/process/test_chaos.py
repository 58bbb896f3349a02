"""Chaos: 50 workers, a fifth of them vanishing mid-task, and the server SIGKILLed and restarted.

The final results must equal a reference computed in the test, with exactly one result row per
dataset: nothing lost when workers vanish or the server dies, nothing counted twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from tests.conftest import database_url
from tests.support.ports import free_port
from tests.support.protocol_client import work

WORKERS = 50
DATASETS = 30000  # enough that the run lasts seconds, so the kill lands mid-run even on a fast server
DROP_RATE = 0.2
GENERATOR = (
    "({ main: function () { var d = []; for (var i = 0; i < 30000; i += 1) d.push({min: i, max: i + 1}); return d; } })"
)
KERNEL = "({ loadStaticDataset: function () {}, main: function (d) { var s = 0; for (var i = d.min; i < d.max; i++) s += i * i; return s; } })"


def reference(dataset: dict[str, int]) -> int:
    return sum(i * i for i in range(dataset["min"], dataset["max"]))


class Server:
    """A `distribute serve` process on a fixed port, so that it can be killed and started again."""

    def __init__(self, database: str, port: int, log: Path) -> None:
        self.database, self.port, self.log = database, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "DISTRIBUTE_LEASE_SECONDS": "2", "DISTRIBUTE_FLUSH_INTERVAL": "0.05"}
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "distribute", "serve", "--port", str(self.port), "--database", self.database],
                stdout=subprocess.PIPE,
                stderr=sink,
                env=env,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert line.startswith("distribute serving on"), line

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


async def flaky_worker(url: str, campaign_id: int, rng: random.Random, done: trio.Event) -> None:
    """Work, sometimes vanish mid-task, reconnect after server crashes, until the campaign is done."""
    while not done.is_set():
        vanish = rng.randint(1, 6) if rng.random() < DROP_RATE else None
        try:
            outcome = await work(url, reference, campaign=campaign_id, slots=2, vanish_after=vanish)
        except (OSError, ConnectionClosed, HandshakeError):
            await trio.sleep(0.2)  # the server is down: try again shortly
            continue
        if outcome.bye == "complete":
            done.set()
        else:
            await trio.sleep(0.2)  # as real workers do: never reconnect in a tight loop


async def progress(client: httpx.AsyncClient, campaign_id: int) -> dict[str, int]:
    return (await client.get(f"/api/campaigns/{campaign_id}")).json()["datasets"]


async def test_vanishing_workers_and_a_killed_server_lose_nothing_and_count_nothing_twice(tmp_path: Path) -> None:
    database = database_url(tmp_path)  # SQLite, or PostgreSQL in `make test-postgres`
    created = subprocess.run(
        [sys.executable, "-m", "distribute", "user", "create", "chaos@example.org", "--database", database],
        capture_output=True,
        check=True,
    )
    token = created.stdout.decode().split()[-1]
    server = Server(database, free_port(), tmp_path / "server.log")
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            files = {"kernel": ("k.js", KERNEL), "generator": ("g.js", GENERATOR)}
            response = await client.post("/api/campaigns", files=files, data={"task_timeout": "3"})
            campaign_id = response.json()["id"]
            done = trio.Event()
            rng = random.Random(7)
            with trio.fail_after(240):
                async with trio.open_nursery() as nursery:
                    for _ in range(WORKERS):
                        nursery.start_soon(
                            flaky_worker,
                            base.replace("http", "ws") + "/ws",
                            campaign_id,
                            random.Random(rng.random()),
                            done,
                        )
                    before = await progress(client, campaign_id)
                    while before["done"] < DATASETS // 5:  # kill once a fifth is done
                        await trio.sleep(0.05)
                        before = await progress(client, campaign_id)
                    await trio.to_thread.run_sync(server.kill)  # mid-run, with results in flight
                    await trio.sleep(0.5)
                    await trio.to_thread.run_sync(server.start)
            campaign = (await client.get(f"/api/campaigns/{campaign_id}")).json()
            rows = (await client.get(f"/api/campaigns/{campaign_id}/results", params={"include_empty": "true"})).json()
    finally:
        server.stop()
    assert 0 < before["done"] < before["total"], before  # the kill really happened mid-run
    assert campaign["status"] == "complete"
    assert campaign["datasets"]["total"] == DATASETS
    per_dataset: dict[int, int] = {}
    for row in rows:
        per_dataset[row["dataset_id"]] = per_dataset.get(row["dataset_id"], 0) + 1
        assert row["result"] == reference(row["dataset"])
    assert len(per_dataset) == DATASETS and set(per_dataset.values()) == {1}
    assert "Traceback" not in (tmp_path / "server.log").read_text()
