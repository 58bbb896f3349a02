"""Fixtures that start real servers: a distribute server on an ephemeral port with its own database.

`live_server` is the default server; `start_server(**settings)` starts one with other settings.
Set DISTRIBUTE_TEST_DATABASE=postgres to run the suite on a throwaway PostgreSQL cluster instead of
SQLite (see tests/pg.py), or DISTRIBUTE_TEST_DATABASE=memory to run it on the memory:// backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from distribute.settings import Settings, load_settings

if TYPE_CHECKING:
    from distribute.platform import Platform

pytest_plugins = ["tests.support.pg"]  # stops the throwaway PostgreSQL cluster at the end of the session

# Most tests create campaigns as plain users and then run workers that ask for any campaign: their
# servers (in this process, and `distribute serve` children, which inherit the environment) run
# without review. The tests about review ask for it (campaign_review="required").
REVIEW_OFF = {"campaign_review": "off"}
os.environ["DISTRIBUTE_CAMPAIGN_REVIEW"] = "off"

SEED_GENERATOR = """(function() {
  function main() {
    var datasets = [];
    for (var i = 0; i < 10000; i += 100) {
      datasets.push({ min: i, max: i + 100 });
    }
    return datasets;
  }
  return { main: main };
})()"""

SEED_STATIC = '{"divisor": 123}'

SEED_KERNEL = """(function() {
  var divisor;
  function loadStaticDataset(dataset) { divisor = JSON.parse(dataset).divisor; }
  function main(dataset) {
    var results = [];
    for (var i = dataset.min; i < dataset.max; ++i) {
      if (i % divisor === 0) results.push(i);
    }
    return results.length > 0 ? results : null;
  }
  return { main: main, loadStaticDataset: loadStaticDataset };
})()"""

SEED_ANSWER = [n for n in range(10000) if n % 123 == 0]


def slow_seed_kernel(ms: int) -> str:
    """The seed kernel, busy for `ms` milliseconds on each dataset (so a run lasts long enough to watch)."""
    main = "  function main(dataset) {\n"
    return SEED_KERNEL.replace(
        main, main + f"    var until = Date.now() + {ms};\n    while (Date.now() < until) {{}}\n"
    )


@dataclass
class ServerProcess:
    """A `distribute serve` child process on a free port; its stderr goes to `log`."""

    process: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path


def launch_server_process(folder: Path, database: str, email: str = "owner@example.org") -> ServerProcess:
    """Create a user on `database`, start `distribute serve --port 0` on it, wait for its URL.

    The caller stops the process (terminate, a signal, or kill).
    """
    created = subprocess.run(
        [sys.executable, "-m", "distribute", "user", "create", email, "--database", database],
        capture_output=True,
        check=True,
        timeout=60,
    )
    token = created.stdout.decode().split()[-1]
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute", "serve", "--port", "0", "--database", database],
            stdout=subprocess.PIPE,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    first_line = process.stdout.readline().decode()
    if not first_line.startswith("distribute serving on "):
        process.kill()
        process.wait()
        pytest.fail(f"distribute serve did not start: {first_line!r}\n{log.read_text()}")
    return ServerProcess(process, first_line.split()[3].rstrip(","), token, log)


@dataclass
class LiveServer:
    url: str
    ws_url: str
    token: str
    settings: Settings
    platform: Platform
    client: httpx.AsyncClient

    async def create_campaign(
        self, kernel: str = SEED_KERNEL, generator: str = SEED_GENERATOR, static: str = SEED_STATIC, **fields: Any
    ) -> int:
        response = await self.post_campaign(kernel, generator, static, **fields)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def post_campaign(self, kernel: str, generator: str, static: str = "", **fields: Any) -> httpx.Response:
        files = {"kernel": ("kernel.js", kernel.encode()), "generator": ("generator.js", generator.encode())}
        if static:
            files["static_dataset"] = ("static.txt", static.encode())
        return await self.client.post("/api/campaigns", files=files, data={k: str(v) for k, v in fields.items()})

    async def campaign(self, campaign_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/api/campaigns/{campaign_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(
        self, campaign_id: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                campaign = await self.campaign(campaign_id)
                if predicate(campaign):
                    return campaign
                await trio.sleep(0.05)

    async def wait_complete(self, campaign_id: int, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(campaign_id, lambda c: c["status"] in ("complete", "failed"), timeout)

    async def results(self, campaign_id: int, include_empty: bool = False) -> list[dict[str, Any]]:
        params = {"format": "json", "include_empty": str(include_empty).lower()}
        response = await self.client.get(f"/api/campaigns/{campaign_id}/results", params=params)
        assert response.status_code == 200, response.text
        return response.json()


def database_url(tmp_path: Path) -> str:
    if os.environ.get("DISTRIBUTE_TEST_DATABASE") == "memory":
        return f"memory://{tmp_path}"  # one named in-process database per test, shared by its servers
    if os.environ.get("DISTRIBUTE_TEST_DATABASE") == "postgres":
        from tests.support.pg import fresh_database

        return fresh_database()
    return f"sqlite:///{tmp_path / 'distribute.db'}"


StartServer = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartServer]:
    clients: list[httpx.AsyncClient] = []
    database = database_url(tmp_path)

    async def start(**overrides: Any) -> LiveServer:
        from distribute.app import serve

        settings = load_settings(
            overrides={"database": database, "port": 0, "lease_seconds": 5.0, **REVIEW_OFF, **overrides}, environ={}
        )
        running = await nursery.start(serve, settings)
        url = running.urls[0]
        storage = running.platform.storage
        email = f"owner{len(clients)}@example.org"
        user = await storage.create_user(email)
        token = await storage.create_token(user.id, "tests")
        client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(client)
        ws_url = url.replace("http://", "ws://") + "/ws"
        return LiveServer(url, ws_url, token, settings, running.platform, client)

    yield start
    for client in clients:
        await client.aclose()


@pytest.fixture
async def live_server(start_server: StartServer) -> LiveServer:
    return await start_server()
