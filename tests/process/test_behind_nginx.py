"""Debian's nginx, configured with deploy/nginx.conf, in front of three `distribute serve` processes on PostgreSQL.

Each test starts three real server processes on a fresh database of the throwaway cluster
(tests/support/pg.py) with `forwarded_allow_ips = "127.0.0.1"`, the address nginx connects from, and
nginx in front of them terminating TLS (tests/support/nginx.py), and talks only to nginx unless it
says otherwise. No server has a `public_url`: the scheme and host they see are what nginx forwards.

Clients bound to other loopback addresses (127.0.0.2, 127.0.0.3) are different clients to nginx, and
so, through the trusted proxy, to every per-address mechanism of the servers. The per-address limits
are kept per process, so the tests that count them fill every process's share first.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url

from distribute import protocol as p
from tests.browser.conftest import BrowserThread, HostSite, host_page
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC
from tests.support.exactly_once import assert_seed_answered_exactly_once
from tests.support.nginx import NGINX_CONF, Nginx, open_ws, start_nginx
from tests.support.pg import fresh_database
from tests.support.protocol_client import Outcome, receive, receive_tasks, seed_kernel, send, work_on
from tests.support.serve_process import start_serve_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVERS = 3
PASSWORD = "correct horse battery"
OWNER = "owner@example.org"
SERVER_ENV = {
    "DISTRIBUTE_FORWARDED_ALLOW_IPS": "127.0.0.1",
    "DISTRIBUTE_LEASE_SECONDS": "3",
    "DISTRIBUTE_REFILL_BATCH": "8",  # small leases: the 100 seed datasets are shared by all three processes
    "DISTRIBUTE_REFILL_GROWTH": "1",
}
# What a worker sees when its server is SIGKILLed under nginx (trio-websocket may wrap it in a group).
GONE = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass
class Server:
    process: trio.Process
    url: str
    alive: bool = True

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@dataclass
class Site:
    """Three servers on one database, nginx in front, and the owner's API token and console password."""

    database: str
    token: str
    servers: list[Server]
    nginx: Nginx
    logs: Path
    outcomes: list[Outcome] = field(default_factory=list)

    def api(self, source: str = "127.0.0.1") -> httpx.AsyncClient:
        client = self.nginx.http_client(source)
        client.headers["Authorization"] = f"Bearer {self.token}"
        return client

    def report(self) -> str:
        servers = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in sorted(self.logs.glob("*.log")))
        return servers + "\n" + self.nginx.logs()


StartSite = Callable[..., Awaitable[Site]]


async def _start_server(nursery: trio.Nursery, database: str, log: Path, env: dict[str, str]) -> Server:
    process, url = await start_serve_process(nursery, database, log, {**SERVER_ENV, **env})
    return Server(process, url)


@pytest.fixture
def start_site(nursery: trio.Nursery, tmp_path: Path) -> StartSite:
    """`await start_site(**settings)`: the servers (with these DISTRIBUTE_ settings) and nginx, until the test ends."""

    async def start(**settings: Any) -> Site:
        database = fresh_database()
        created = await trio.run_process(
            [sys.executable, "-m", "distribute", "user", "create", OWNER, "--password-stdin", "--database", database],
            stdin=PASSWORD.encode(),
            capture_stdout=True,
            capture_stderr=True,
        )
        token = created.stdout.decode().split()[-1]
        env = {f"DISTRIBUTE_{name.upper()}": str(value) for name, value in settings.items()}
        servers = [await _start_server(nursery, database, tmp_path / f"server{i}.log", env) for i in range(SERVERS)]
        proxy = await start_nginx(nursery, tmp_path / "nginx", [s.port for s in servers])
        return Site(database, token, servers, proxy, tmp_path)

    return start


# --------------------------------------------------------------------------- helpers


async def _campaign(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


async def _knows(server: Server, campaign_id: int) -> bool:
    async with open_websocket_url(server.url.replace("http://", "ws://") + "/ws") as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1, client={"kind": "probe"}))
        return isinstance(await receive(ws), p.CampaignInfo)


async def _seed_campaign(site: Site, **fields: str) -> int:
    """The seed campaign (100 datasets), created through nginx; returns once every server knows it."""
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.txt", SEED_STATIC.encode()),
    }
    async with site.api() as client:
        response = await client.post("/api/campaigns", files=files, data={"name": "seed", **fields})
        assert response.status_code == 201, response.text
        campaign_id: int = response.json()["id"]
        with trio.fail_after(30):
            while (await _campaign(client, campaign_id))["status"] == "generating":
                await trio.sleep(0.05)
    for server in site.servers:  # a server learns of a new campaign on its next refresh (every 2 s)
        with trio.fail_after(30):
            while not await _knows(server, campaign_id):
                await trio.sleep(0.2)
    return campaign_id


async def _results(site: Site, campaign_id: int) -> list[dict[str, Any]]:
    async with site.api() as client:
        response = await client.get(
            f"/api/campaigns/{campaign_id}/results", params={"format": "json", "include_empty": "true"}
        )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def _check_exact(site: Site, campaign_id: int) -> list[dict[str, Any]]:
    """Complete, every dataset answered exactly once (see `assert_seed_answered_exactly_once`)."""
    async with site.api() as client:
        campaign = await _campaign(client, campaign_id)
    rows = await _results(site, campaign_id)
    assert_seed_answered_exactly_once(site.database, campaign_id, campaign, rows)
    return rows


async def _volunteer(
    site: Site,
    campaign_id: int,
    source: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A protocol-level worker through nginx, from `source`; started once its first WebSocket is open.

    When its server goes away it reconnects (through nginx again), until a server says the campaign is complete.
    """
    started = False
    while True:
        outcome = None
        try:
            async with site.nginx.open_ws(source) as ws:
                if not started:
                    started = True
                    task_status.started()
                outcome = await work_on(ws, seed_kernel, campaign=campaign_id)
        except* GONE:
            pass
        if outcome is not None:
            site.outcomes.append(outcome)
            if outcome.bye == "complete":
                return
        await trio.sleep(0.1)


async def _volunteers(site: Site, campaign_id: int, nursery: trio.Nursery, sources: list[str]) -> None:
    """One volunteer per source address, each connected before the next starts.

    A process keeps the datasets it leased (renewing them) until one of its workers takes them, so every
    process needs a worker: nginx's least_conn gives each new connection to a process with the fewest,
    so connecting one after another spreads them over all three, and alternating sources give every
    process each address once there are enough of them.
    """
    for source in sources:
        await nursery.start(_volunteer, site, campaign_id, source)


async def _admitted(ws: WebSocketConnection, campaign_id: int) -> bool:
    """Say hello and wait for the first tasks (kept, never answered); False if the server closes with 1008."""
    try:
        await send(ws, p.Hello(campaign=campaign_id, slots=1, client={"kind": "holder"}))
        await receive_tasks(ws)
    except ConnectionClosed as closed:
        assert closed.reason is not None and closed.reason.code == p.CLOSE_POLICY_VIOLATION, closed.reason
        return False
    return True


async def _hold(
    site: Site, campaign_id: int, source: str, headers: list[tuple[bytes, bytes]] | None = None, *,
    task_status: trio.TaskStatus[bool],
) -> None:  # fmt: skip
    """Connect from `source` and report whether the server admitted us; if so, stay connected."""
    async with site.nginx.open_ws(source, headers) as ws:
        admitted = await _admitted(ws, campaign_id)
        task_status.started(admitted)
        if admitted:
            await trio.sleep_forever()


# --------------------------------------------------------------------------- the configuration


def test_scale_out_doc_shows_deploy_nginx_conf_verbatim() -> None:
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", doc, re.S)
    assert NGINX_CONF.read_text() in blocks


# --------------------------------------------------------------------------- through nginx


async def test_api_calls_through_nginx_reach_the_processes_on_one_database(start_site: StartSite) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    async with site.api() as client:
        listed = [await client.get("/api/campaigns") for _ in range(2 * SERVERS)]  # nginx spreads them
        health = await client.get("/-/health")
    assert [r.status_code for r in listed] == [200] * 2 * SERVERS
    assert all(campaign_id in [c["id"] for c in r.json()["campaigns"]] for r in listed)
    assert health.json()["ok"] is True


async def test_a_console_session_is_valid_whichever_process_answers(start_site: StartSite) -> None:
    site = await start_site()
    async with site.nginx.http_client() as visitor:
        form = (await visitor.get("/signin")).text
        csrf = re.search(r'name="csrf" value="([^"]*)"', form)
        assert csrf, form
        signed = await visitor.post("/signin", data={"csrf": csrf.group(1), "email": OWNER, "password": PASSWORD})
        assert signed.status_code == 303, signed.text
        # https as the visitor sees it (X-Forwarded-Proto): the session cookie is a Secure __Host- cookie.
        cookies = signed.headers.get_list("set-cookie")
        assert any(c.startswith("__Host-distribute_session=") and "Secure" in c for c in cookies), cookies
        pages = [await visitor.get("/campaigns") for _ in range(3 * SERVERS)]
    assert [r.status_code for r in pages] == [200] * 3 * SERVERS, [r.headers.get("location") for r in pages]


async def test_the_embed_page_is_served_through_nginx(start_site: StartSite) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    async with site.nginx.http_client() as client:
        page = await client.get(f"/embed/{campaign_id}")
    assert page.status_code == 200, page.text
    assert 'id="contribute"' in page.text


async def _origin_status(site: Site, origin: str) -> int:
    """The HTTP status of a WebSocket upgrade through nginx carrying this Origin (101: accepted)."""
    status = 101
    try:
        async with site.nginx.open_ws(headers=[(b"Origin", origin.encode())]):
            pass
    except* ConnectionRejected as rejected:  # raised in the connection's own nursery
        status = _leaf(rejected).status_code
    return status


def _leaf(group: BaseExceptionGroup[ConnectionRejected]) -> ConnectionRejected:
    first = group.exceptions[0]
    return first if isinstance(first, ConnectionRejected) else _leaf(first)


async def test_the_origin_check_behind_nginx_goes_by_the_scheme_the_visitor_used(start_site: StartSite) -> None:
    site = await start_site()  # no public_url: the servers learn https from nginx's X-Forwarded-Proto
    own = site.nginx.url
    assert await _origin_status(site, own) == 101
    assert await _origin_status(site, own.replace("https://", "http://")) == 403


async def test_headless_workers_complete_a_campaign_exactly_through_nginx(start_site: StartSite) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    command = [sys.executable, "-m", "distribute", "worker", "--server", site.nginx.url, "--campaign", str(campaign_id)]
    env = {**os.environ, "SSL_CERT_FILE": str(site.nginx.cert)}  # trust the test certificate
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(SERVERS):  # one each: a process keeps the datasets it leased for its own workers
                nursery.start_soon(
                    partial(trio.run_process, [*command, "--quiet"], env=env, capture_stdout=True, capture_stderr=True)
                )
    await _check_exact(site, campaign_id)


def _contribute(chromium: BrowserThread, url: str) -> Any:
    """On the browser thread: a fresh context trusting the test certificate, the host page, Contribute
    clicked; returns once the page's worker has its first tasks (its WebSocket is open), or has heard that
    nothing is left: the tabs opened first may finish the seed campaign before the last one connects."""
    context = chromium.browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(url)
    page.frame_locator("iframe").first.locator("#contribute").click()
    broker = next(f for f in page.frames if "/embed/" in f.url and "/embed/runner" not in f.url)
    broker.wait_for_function(
        "() => ['running', 'done'].includes(document.body.dataset.state) || Number(document.body.dataset.done) > 0",
        timeout=30_000,
    )
    return context


@pytest.mark.browser
async def test_chromium_workers_complete_a_campaign_exactly_through_nginx(
    start_site: StartSite, browser: BrowserThread, host_site: HostSite
) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    # The page is on http://localhost:PORT; the snippet's frame and its WebSocket go to nginx over https,
    # and the servers accept the frame's Origin (https://127.0.0.1:NGINX) only because nginx forwards https.
    url = host_site.add("page", host_page(site.nginx.url, campaign_id))
    contexts = []
    try:
        for _ in range(SERVERS):  # one tab per process, one after another (see _volunteers)
            contexts.append(await browser.run(_contribute, browser, url))
        async with site.api() as client:
            with trio.fail_after(90):
                while (await _campaign(client, campaign_id))["status"] != "complete":
                    await trio.sleep(0.2)
    finally:
        for context in contexts:
            await browser.run(context.close)
    await _check_exact(site, campaign_id)


async def test_a_process_killed_mid_run_loses_nothing_through_nginx(start_site: StartSite) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    victim = site.servers[-1]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await _volunteers(site, campaign_id, nursery, ["127.0.0.1"] * 4 * SERVERS)
            async with site.api() as client:
                while (await _campaign(client, campaign_id))["datasets"]["done"] < 20:
                    await trio.sleep(0.02)
            victim.alive = False
            victim.process.send_signal(signal.SIGKILL)
    assert await victim.process.wait() == -signal.SIGKILL
    try:
        await _check_exact(site, campaign_id)
    except AssertionError:
        print(site.report())
        raise


# --------------------------------------------------------------------------- the real client, through the trusted proxy


async def test_every_result_records_the_real_client_address_behind_nginx(start_site: StartSite) -> None:
    site = await start_site()
    campaign_id = await _seed_campaign(site)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await _volunteers(site, campaign_id, nursery, ["127.0.0.2", "127.0.0.3"] * SERVERS)
    rows = await _check_exact(site, campaign_id)
    assert {row["worker"].rsplit("@", 1)[1] for row in rows} == {"127.0.0.2", "127.0.0.3"}


async def test_replicas_go_to_distinct_real_addresses_behind_nginx(start_site: StartSite) -> None:
    # Two copies of each dataset, from different addresses (verify_distinct_addresses is on): the two
    # workers are one address to the servers unless nginx's X-Forwarded-For is believed.
    site = await start_site()
    campaign_id = await _seed_campaign(site, replication="2")
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await _volunteers(site, campaign_id, nursery, ["127.0.0.2", "127.0.0.3"] * (SERVERS + 1))
    async with site.api() as client:
        campaign = await _campaign(client, campaign_id)
    assert campaign["status"] == "complete", campaign


async def _fill_every_process(site: Site, campaign_id: int, nursery: trio.Nursery, source: str, cap: int) -> None:
    """Connect from `source` until every process holds `cap` of its connections (each one stays open)."""
    admitted = 0
    with trio.fail_after(60):
        while admitted < cap * SERVERS:
            admitted += await nursery.start(_hold, site, campaign_id, source)


async def test_connection_limits_count_each_client_behind_nginx_separately(start_site: StartSite) -> None:
    site = await start_site(max_connections_per_ip=2)
    campaign_id = await _seed_campaign(site)
    async with trio.open_nursery() as nursery:
        await _fill_every_process(site, campaign_id, nursery, "127.0.0.2", cap=2)
        assert await nursery.start(_hold, site, campaign_id, "127.0.0.2") is False  # every process is full for .2
        assert await nursery.start(_hold, site, campaign_id, "127.0.0.3") is True  # ... and not for .3
        nursery.cancel_scope.cancel()


async def test_a_forged_x_forwarded_for_through_nginx_is_not_believed(start_site: StartSite) -> None:
    site = await start_site(max_connections_per_ip=2)
    campaign_id = await _seed_campaign(site)
    async with trio.open_nursery() as nursery:
        await _fill_every_process(site, campaign_id, nursery, "127.0.0.2", cap=2)
        forged = [(b"X-Forwarded-For", b"203.0.113.9")]  # nginx appends 127.0.0.2: the right-most untrusted hop
        assert await nursery.start(partial(_hold, site, campaign_id, "127.0.0.2", forged)) is False
        nursery.cancel_scope.cancel()


async def test_a_forged_x_forwarded_for_sent_straight_to_a_server_is_not_believed(start_site: StartSite) -> None:
    site = await start_site(max_connections_per_ip=2)
    campaign_id = await _seed_campaign(site)
    admitted = []
    async with trio.open_nursery() as nursery:
        for n in range(3):  # each claims to be another client, but 127.0.0.2 is no trusted proxy
            forged = [(b"X-Forwarded-For", f"203.0.113.{n}".encode())]
            admitted.append(await nursery.start(_hold_direct, site.servers[0].port, campaign_id, forged))
        nursery.cancel_scope.cancel()
    assert admitted == [True, True, False]


async def _hold_direct(
    port: int, campaign_id: int, headers: list[tuple[bytes, bytes]], *, task_status: trio.TaskStatus[bool]
) -> None:
    async with open_ws(port, "127.0.0.2", None, headers) as ws:
        admitted = await _admitted(ws, campaign_id)
        task_status.started(admitted)
        if admitted:
            await trio.sleep_forever()


async def _sign_in(client: httpx.AsyncClient, email: str) -> int:
    """One failed sign-in attempt (a wrong password); its status: 401, or 429 when this client is limited."""
    form = (await client.get("/signin")).text
    csrf = re.search(r'name="csrf" value="([^"]*)"', form)
    assert csrf, form
    response = await client.post("/signin", data={"csrf": csrf.group(1), "email": email, "password": "wrong"})
    return response.status_code


async def test_sign_in_limits_count_each_client_behind_nginx_separately(start_site: StartSite) -> None:
    site = await start_site(signin_limit=1)
    async with site.nginx.http_client("127.0.0.2") as first, site.nginx.http_client("127.0.0.3") as second:
        statuses: list[int] = []
        with trio.fail_after(120):
            while statuses[-SERVERS:] != [429] * SERVERS:  # nginx turns round the processes: all of them refuse .2
                statuses.append(await _sign_in(first, f"guess{len(statuses)}@example.org"))
        assert [await _sign_in(second, "someone@example.org") for _ in range(SERVERS)] == [401] * SERVERS
