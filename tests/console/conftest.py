"""Fixtures for the console's tests: a server with a fast sign-up, visitors with cookie jars, an SMTP
server that receives the console's mail, and (re-exported) the headless Chromium of tests/browser.

A `Visitor` is a person with a browser-like cookie jar driving the console over plain HTTP: it reads
each form's CSRF token from the page, as a browser submitting the form would.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio

from tests.browser.conftest import browser, embedding, engines, host_site  # noqa: F401  (the shared Chromium, the card)
from tests.conftest import LiveServer, StartServer
from tests.support.ports import free_port

PASSWORD = "correct horse battery"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_STAMP = re.compile(r'name="stamp" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


@dataclass
class Visitor:
    server: LiveServer
    client: httpx.AsyncClient
    email: str = ""

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def csrf(self, page: str = "/") -> str:
        response = await self.get(page)
        return csrf_of(response.text)

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, page: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Submit a form the way a browser does: with the CSRF token of the page that shows it."""
        token = await self.csrf(page or "/")
        return await self.client.post(path, data={"csrf": token, **(data or {})}, **kwargs)

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get("distribute_session")


@dataclass
class People:
    """Makes visitors of one server (and closes their clients after the test)."""

    server: LiveServer
    made: list[Visitor] = field(default_factory=list)

    async def anonymous(self) -> Visitor:
        visitor = Visitor(self.server, httpx.AsyncClient(base_url=self.server.url, timeout=30))
        self.made.append(visitor)
        return visitor

    async def sign_up(self, address: str, password: str = PASSWORD) -> Visitor:
        visitor = await self.anonymous()
        form = (await visitor.get("/signup")).text
        response = await visitor.client.post(
            "/signup",
            data={
                "csrf": csrf_of(form),
                "stamp": stamp_of(form),
                "email": address,
                "password": password,
                "password2": password,
                "website": "",
            },
        )
        assert response.status_code == 303, response.text
        visitor.email = address
        return visitor

    async def sign_in(self, address: str, password: str = PASSWORD) -> Visitor:
        visitor = await self.anonymous()
        response = await visitor.post("/signin", {"email": address, "password": password}, page="/signin")
        assert response.status_code == 303, response.text
        visitor.email = address
        return visitor


def stamp_of(html: str) -> str:
    match = _STAMP.search(html)
    assert match, "the page has no sign-up stamp"
    return match.group(1)


@pytest.fixture
async def console_server(start_server: StartServer, tmp_path: Path) -> LiveServer:
    """A server whose sign-up form may be sent at once (tests are quicker than people)."""
    return await start_server(signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"))


@pytest.fixture
async def people(console_server: LiveServer, people_on: Any) -> People:
    return people_on(console_server)


@pytest.fixture
async def people_on() -> AsyncIterator[Any]:
    """`people_on(server)`: People of a server a test started itself (closed after the test)."""
    crowds: list[People] = []

    def make(server: LiveServer) -> People:
        crowds.append(People(server))
        return crowds[-1]

    yield make
    for crowd in crowds:
        for visitor in crowd.made:
            await visitor.client.aclose()


# --------------------------------------------------------------------------- a real SMTP server


@dataclass
class Inbox:
    """Mail received by the local SMTP server, parsed."""

    messages: list[EmailMessage] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    async def wait_for(self, recipient: str, timeout: float = 10) -> EmailMessage:
        with trio.fail_after(timeout):
            while True:
                for message in reversed(self.messages):
                    if message["To"] == recipient:
                        return message
                await trio.sleep(0.05)


@pytest.fixture
def smtp_inbox() -> Iterator[Inbox]:
    from aiosmtpd.controller import Controller

    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def reset_link(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(r"https?://\S+/reset/\S+", body.get_content())
    assert match, body.get_content()
    return match.group(0)


# --------------------------------------------------------------------------- the same user's API


COUNTING_KERNEL = "({main: function (d) { return d.i; }})"


def counting_generator(count: int) -> str:
    return f"({{main: function () {{ var a = []; for (var i = 0; i < {count}; i++) a.push({{i: i}}); return a; }}}})"


@dataclass
class Api:
    """The JSON API with a token of one console user."""

    client: httpx.AsyncClient

    async def create(self, kernel: str = COUNTING_KERNEL, generator: str | None = None, static: str = "") -> int:
        files = {
            "kernel": ("kernel.js", kernel.encode()),
            "generator": ("g.js", (generator or counting_generator(20)).encode()),
        }
        if static:
            files["static_dataset"] = ("static.txt", static.encode())
        response = await self.client.post("/api/campaigns", files=files)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def campaign(self, campaign_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/api/campaigns/{campaign_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(self, campaign_id: int, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while not predicate(campaign := await self.campaign(campaign_id)):
                await trio.sleep(0.05)
            return campaign


@pytest.fixture
async def api_of(console_server: LiveServer) -> AsyncIterator[Any]:
    """`await api_of(visitor)`: an API client with a fresh token of that visitor's account."""
    clients: list[httpx.AsyncClient] = []

    async def make(visitor: Visitor) -> Api:
        storage = console_server.platform.storage
        user = await storage.user_by_email(visitor.email)
        assert user is not None
        token = await storage.create_token(user.id, "tests")
        client = httpx.AsyncClient(
            base_url=console_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        clients.append(client)
        return Api(client)

    yield make
    for client in clients:
        await client.aclose()


# --------------------------------------------------------------------------- the database, read directly


async def table_rows(server: LiveServer, table: str) -> list[tuple[Any, ...]]:
    """Every row of one of the server's tables, every column, as the database holds it."""
    from pony.orm import db_session

    storage = server.platform.storage

    def read() -> list[tuple[Any, ...]]:
        with db_session:
            return [tuple(row) for row in storage.sql.query(f"SELECT * FROM {table}")]

    return await trio.to_thread.run_sync(read)


async def age_results(server: LiveServer, campaign_id: int, seconds: float) -> None:
    """Make every stored result of the campaign `seconds` older, as if it had been stored back then."""
    storage: Any = server.platform.storage
    if not hasattr(storage, "sql"):  # memory://
        async with storage.tables.session() as t:
            for result in t.results.values():
                if result.campaign_id == campaign_id:
                    result.created -= seconds
            campaign = t.campaigns[campaign_id]
            campaign.created_times[:] = [created - seconds for created in campaign.created_times]
        return
    from pony.orm import db_session

    def update() -> None:
        with db_session:
            storage.sql.execute("UPDATE result SET created = created - ? WHERE campaign = ?", (seconds, campaign_id))

    await trio.to_thread.run_sync(update)


# --------------------------------------------------------------------------- kernel errors

# Throws on datasets 3 and 7 of `counting_generator(10)`; line 3 of the file is the throw.
PICKY_KERNEL = """({
  main: function (d) {
    if (d.i === 3 || d.i === 7) throw new RangeError("no " + d.i + " here");
    return d.i;
  }
})"""


@dataclass(frozen=True)
class KernelErrorRow:
    dataset_id: int
    message: str
    stack: str
    count: int


@dataclass
class FailingCampaign:
    """A finished campaign whose kernel threw on two datasets, computed by a real headless worker."""

    owner: Visitor
    id: int
    tries: int  # how often the kernel was tried on each refused dataset (max_task_errors)
    failed: dict[int, int]  # the datasets the kernel refused: their `i` -> their id
    errors: list[KernelErrorRow]  # the kernel_error table's rows of the campaign, as stored


@pytest.fixture
async def failing_campaign(start_server: StartServer, people_on: Any) -> FailingCampaign:
    from pony.orm import db_session

    from distribute.worker import run_worker

    # Two tries (not the default three) per refused dataset: each retry waits several seconds for
    # the dispatcher to notice the dataset is back in the pool.
    server = await start_server(signup_min_seconds=0.0, max_task_errors=2)
    alice = await people_on(server).sign_up("alice@example.org")
    storage = server.platform.storage
    user = await storage.user_by_email(alice.email)
    assert user is not None
    token = await storage.create_token(user.id, "tests")
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client:
        api = Api(client)
        campaign_id = await api.create(kernel=PICKY_KERNEL, generator=counting_generator(10))
        await api.wait_for(campaign_id, lambda c: c["status"] == "running")
        with trio.fail_after(60):
            await run_worker(server.url, campaign=campaign_id)
        await api.wait_for(campaign_id, lambda c: c["status"] == "complete")

    def stored() -> tuple[list[Any], list[Any]]:
        with db_session:
            failed = storage.sql.query(
                "SELECT id, payload FROM dataset WHERE campaign = ? AND state = 'failed'", (campaign_id,)
            )
            errors = storage.sql.query(
                "SELECT dataset, message, stack, count FROM kernel_error WHERE campaign = ?", (campaign_id,)
            )
            return list(failed), list(errors)

    failed, errors = await trio.to_thread.run_sync(stored)
    return FailingCampaign(
        owner=alice,
        id=campaign_id,
        tries=server.settings.max_task_errors,
        failed={msgpack.unpackb(bytes(payload))["i"]: dataset_id for dataset_id, payload in failed},
        errors=[KernelErrorRow(*row) for row in errors],
    )
