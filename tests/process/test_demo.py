"""`make run` (`python -m distribute.demo`) as a user starts it: a server, the demo campaign, a host page.

The demo runs as a process on free ports (DISTRIBUTE_PORT=0) with its database in a temporary
folder (one demo shared by the tests that only use it, one per test that stops or restarts it); the
tests read what it prints and check that every printed address and token works.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from distribute.plugins import open_storage
from tests.conftest import SEED_ANSWER
from tests.support.protocol_client import receive_tasks, send, work

pytestmark = pytest.mark.sqlite_only  # its server uses SQLite in both runs of the suite

PRINTED_LAST = "Ctrl+C stops the server"


@dataclass
class Demo:
    """A running demo process and what it printed."""

    process: subprocess.Popen[bytes]
    output: str
    log: Path
    database: str

    @property
    def url(self) -> str:
        return self._printed(r"distribute is running at (\S+)")

    @property
    def campaign_id(self) -> int:
        return int(self._printed(r"demo campaign (\d+);"))

    @property
    def token(self) -> str:
        return self._printed(r"API token of \S+: (\S+)")

    @property
    def host_page(self) -> str:
        return self._printed(r"demo host page \(another origin\): (\S+)")

    def _printed(self, pattern: str) -> str:
        match = re.search(pattern, self.output)
        assert match is not None, f"{pattern!r} not in the demo's output:\n{self.output}"
        return match.group(1)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    async def campaign(self) -> dict[str, Any]:
        async with self.client() as client:
            response = await client.get(f"/api/campaigns/{self.campaign_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while not predicate(campaign := await self.campaign()):
                await trio.sleep(0.05)
        return campaign

    async def stop(self, timeout: float = 10) -> int:
        """SIGTERM, as an operator's service manager sends it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await trio.to_thread.run_sync(lambda: self.process.wait(timeout=timeout))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def launch_demo(folder: Path, database: str) -> Demo:
    """Start the demo in `folder` (it may create ./var there); `read_banner` waits for its lines."""
    env = {k: v for k, v in os.environ.items() if k != "DISTRIBUTE_DEMO_HOST_PORT"}
    env.update({"DISTRIBUTE_PORT": "0", "DISTRIBUTE_DATABASE": database, "PYTHONUNBUFFERED": "1"})
    env["DISTRIBUTE_CAMPAIGN_REVIEW"] = "required"  # the default: the demo campaign is an admin's, served anyway
    log = folder / f"demo-{len(list(folder.glob('demo-*.log')))}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute.demo"], stdout=subprocess.PIPE, stderr=sink, cwd=folder, env=env
        )
    return Demo(process, "", log, database)


def read_banner(demo: Demo) -> None:
    """Read what the demo prints once it is up (blocking: a hung demo meets the test's timeout)."""
    assert demo.process.stdout is not None
    lines: list[str] = []
    while not lines or PRINTED_LAST not in lines[-1]:
        line = demo.process.stdout.readline().decode()
        assert line, f"the demo exited early:\n{''.join(lines)}\n{demo.log.read_text()}"
        lines.append(line)
    demo.output = "".join(lines)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for the tests that only look at it (or compute its campaign, which they all allow)."""
    folder = tmp_path_factory.mktemp("demo")
    running = launch_demo(folder, f"sqlite:///{folder / 'demo.db'}")
    try:
        read_banner(running)
        yield running
    finally:
        running.kill()


StartDemo = Callable[[], Awaitable[Demo]]


@pytest.fixture
def run_demo(tmp_path: Path) -> Iterator[StartDemo]:
    """Start a demo on the test's own database (again and again); all are killed afterwards."""
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    started: list[Demo] = []

    async def run() -> Demo:
        demo = launch_demo(tmp_path, database)
        started.append(demo)
        with trio.fail_after(60):  # killing the demo afterwards ends the abandoned read
            await trio.to_thread.run_sync(read_banner, demo, abandon_on_cancel=True)
        return demo

    yield run
    for demo in started:
        demo.kill()


async def test_the_printed_server_answers_its_health_check(demo: Demo) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{demo.url}/-/health")
    assert response.status_code == 200 and response.json()["ok"] is True


async def test_the_printed_token_shows_the_printed_demo_campaign(demo: Demo) -> None:
    campaign = await demo.wait_for(lambda c: c["datasets"]["total"] == 100)  # once the generator ran
    assert campaign["id"] == demo.campaign_id and campaign["name"] == "Multiples of 123"


async def test_the_host_page_is_on_another_free_port_and_embeds_the_campaign(demo: Demo) -> None:
    host_port = int(demo.host_page.rstrip("/").rsplit(":", 1)[1])
    server_port = int(demo.url.rsplit(":", 1)[1])
    assert host_port not in (1, server_port)  # another origin, and not settings.port + 1 with port 0
    async with httpx.AsyncClient() as client:
        response = await client.get(demo.host_page)
    assert response.status_code == 200
    assert "<iframe" in response.text and f"{demo.url}/embed/{demo.campaign_id}" in response.text


async def test_a_headless_worker_completes_the_demo_campaign_with_the_seed_answer(demo: Demo) -> None:
    command = [sys.executable, "-m", "distribute", "worker", "--server", demo.url]
    command += ["--campaign", str(demo.campaign_id), "--quiet"]
    with trio.fail_after(120):
        worker = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    assert worker.returncode == 0, worker.stderr.decode()
    assert (await demo.wait_for(lambda c: c["status"] == "complete"))["datasets"]["done"] == 100
    async with demo.client() as client:
        rows = (await client.get(f"/api/campaigns/{demo.campaign_id}/results")).json()
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER


async def test_sigterm_stops_the_demo_cleanly_and_releases_the_datasets_a_worker_held(run_demo: StartDemo) -> None:
    demo = await run_demo()
    async with open_websocket_url(demo.url.replace("http", "ws") + "/ws") as ws:
        await send(ws, p.Hello(campaign=demo.campaign_id, slots=4))
        assert len(await receive_tasks(ws)) == 4  # held, never answered
        code = await demo.stop()
    assert code == 0
    log = demo.log.read_text()
    assert "Traceback" not in log and "stopping (SIGTERM)" in log
    storage = await open_storage(demo.database)
    try:
        counts = await storage.counts(demo.campaign_id)
    finally:
        await storage.aclose()
    assert counts.leased == 0 and counts.pending == counts.total == 100


async def test_a_second_run_reuses_the_completed_demo_campaign_reset_for_new_visitors(run_demo: StartDemo) -> None:
    first = await run_demo()
    outcome = await work(first.url.replace("http", "ws") + "/ws", campaign=first.campaign_id)
    assert outcome.bye == "complete"
    await first.wait_for(lambda c: c["status"] == "complete")
    assert await first.stop() == 0

    second = await run_demo()
    assert second.campaign_id == first.campaign_id
    campaign = await second.campaign()
    assert campaign["status"] == "running"
    assert campaign["datasets"]["done"] == 0 and campaign["datasets"]["pending"] == 100
    assert campaign["results"] == 0
    async with second.client() as client:
        assert [c["id"] for c in (await client.get("/api/campaigns")).json()["campaigns"]] == [first.campaign_id]


async def test_a_second_run_keeps_the_progress_of_an_unfinished_demo_campaign(run_demo: StartDemo) -> None:
    first = await run_demo()
    outcome = await work(first.url.replace("http", "ws") + "/ws", campaign=first.campaign_id, max_tasks=10)
    computed = len(outcome.done)
    await first.wait_for(lambda c: c["datasets"]["done"] == computed)
    assert await first.stop() == 0

    second = await run_demo()
    assert second.campaign_id == first.campaign_id
    campaign = await second.campaign()
    assert campaign["status"] == "running" and campaign["datasets"]["done"] == computed
