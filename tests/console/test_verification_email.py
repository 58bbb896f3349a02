"""E-mail address verification: with `email_verification` on, a console sign-up is mailed a link and
creates no campaign (API or console) until it follows it; accounts the operator makes are verified."""

from __future__ import annotations

import email
import email.policy
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pony.orm import db_session

from distribute.settings import load_settings
from distribute.storage.memory.store import MemoryStorage
from distribute.storage.pony.store import PonyStorage
from tests.conftest import LiveServer, StartServer
from tests.console.conftest import COUNTING_KERNEL, Visitor, counting_generator

FILES = {"kernel": ("kernel.js", COUNTING_KERNEL.encode()), "generator": ("g.js", counting_generator(3).encode())}


@pytest.fixture
async def verifying_server(start_server: StartServer, tmp_path: Path) -> LiveServer:
    return await start_server(signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"), email_verification="on")


def outbox_links(server: LiveServer, to: str) -> list[str]:
    """The verification links mailed to `to` (outbox files, oldest first)."""
    links = []
    for path in sorted(Path(server.settings.mail_outbox).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        if message["To"] == to and body is not None:
            links += re.findall(r"https?://\S+/verify/\S+", body.get_content())
    return links


async def mailed_link(server: LiveServer, to: str, count: int = 1) -> str:
    """The newest verification link, once `count` of them have arrived (mail goes out in the background)."""
    with trio.fail_after(10):
        while len(links := outbox_links(server, to)) < count:
            await trio.sleep(0.05)
    return links[-1]


async def api_client(server: LiveServer, address: str) -> httpx.AsyncClient:
    user = await server.platform.storage.user_by_email(address)
    assert user is not None
    token = await server.platform.storage.create_token(user.id, "tests")
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


async def console_create(visitor: Visitor) -> httpx.Response:
    token = await visitor.csrf("/campaigns/new")
    files = {"kernel_file": FILES["kernel"], "generator_file": FILES["generator"]}
    return await visitor.client.post("/campaigns/new", data={"csrf": token}, files=files)


async def test_an_unverified_account_creates_no_campaign_until_it_follows_the_mailed_link(
    verifying_server: LiveServer, people_on: Any
) -> None:
    server = verifying_server
    alice = await people_on(server).sign_up("alice@example.org")
    assert "verify-banner" in (await alice.get("/campaigns")).text
    async with await api_client(server, "alice@example.org") as api:
        refused = await api.post("/api/campaigns", files=FILES)
        assert refused.status_code == 403, refused.text
        assert "must be verified" in refused.json()["error"]
        form = await console_create(alice)
        assert form.status_code == 400 and "must be verified" in form.text
        assert await server.platform.storage.list_campaigns() == []

        link = await mailed_link(server, "alice@example.org")
        assert link.startswith(server.url + "/verify/")  # the server's own address, never a Host header
        done = await alice.get(link.removeprefix(server.url))
        assert done.status_code == 200 and "email-verified" in done.text
        assert done.headers["Referrer-Policy"] == "no-referrer"
        assert "verify-banner" not in (await alice.get("/campaigns")).text

        created = await api.post("/api/campaigns", files=FILES)
        assert created.status_code == 201, created.text
        assert (await console_create(alice)).status_code == 303
        # Used once: the link does not work again.
        assert (await alice.get(link.removeprefix(server.url))).status_code == 410


async def test_a_forged_or_expired_token_does_not_verify(verifying_server: LiveServer, people_on: Any) -> None:
    server = verifying_server
    bob = await people_on(server).sign_up("bob@example.org")
    await mailed_link(server, "bob@example.org")
    storage = server.platform.storage
    user = await storage.user_by_email("bob@example.org")
    assert user is not None and not user.verified
    forged = await bob.get("/verify/" + "A" * 43)
    assert forged.status_code == 410 and "verify-invalid" in forged.text
    expired = await storage.accounts.create_verification(user.id, timedelta(seconds=-1))
    assert expired is not None
    assert (await bob.get(f"/verify/{expired}")).status_code == 410
    again = await storage.user_by_email("bob@example.org")
    assert again is not None and not again.verified
    assert (await console_create(bob)).status_code == 400


async def test_resend_mails_a_new_link_and_the_old_one_stops_working(
    verifying_server: LiveServer, people_on: Any
) -> None:
    server = verifying_server
    carol = await people_on(server).sign_up("carol@example.org")
    first = await mailed_link(server, "carol@example.org")
    sent = await carol.post("/account/verify", page="/campaigns")
    assert sent.status_code == 303
    second = await mailed_link(server, "carol@example.org", count=2)
    assert second != first
    assert (await carol.get(first.removeprefix(server.url))).status_code == 410
    assert (await carol.get(second.removeprefix(server.url))).status_code == 200
    assert (await console_create(carol)).status_code == 303


async def test_with_verification_off_a_sign_up_creates_at_once(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=0.0, email_verification="off")
    dave = await people_on(server).sign_up("dave@example.org")
    assert "verify-banner" not in (await dave.get("/campaigns")).text
    assert (await console_create(dave)).status_code == 303


async def test_a_user_made_by_the_cli_creates_campaigns_at_once(verifying_server: LiveServer) -> None:
    command = [sys.executable, "-m", "distribute", "user", "create", "ops@example.org"]
    with trio.fail_after(120):
        made = await trio.run_process(
            [*command, "--database", verifying_server.settings.database], capture_stdout=True, capture_stderr=True
        )
    token = made.stdout.decode().split()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=verifying_server.url, headers=headers, timeout=30) as api:
        created = await api.post("/api/campaigns", files=FILES)
    assert created.status_code == 201, created.text


def test_auto_verifies_exactly_when_smtp_is_set() -> None:
    assert not load_settings(environ={}).verifies_email
    assert load_settings(overrides={"smtp_host": "mail.example.org"}, environ={}).verifies_email
    assert load_settings(overrides={"email_verification": "on"}, environ={}).verifies_email
    assert not load_settings(
        overrides={"email_verification": "off", "smtp_host": "mail.example.org"}, environ={}
    ).verifies_email


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_both_backends_keep_the_verification_state(backend: str, tmp_path: Path) -> None:
    storage: Any = await (
        MemoryStorage.open("memory://") if backend == "memory" else PonyStorage.open(f"sqlite:///{tmp_path / 'v.db'}")
    )
    try:
        old = await storage.create_user("old@example.org")
        new = await storage.create_user("new@example.org", verified=False)
        assert old.verified and not new.verified
        assert await storage.accounts.create_verification(old.id, timedelta(hours=1)) is None
        first = await storage.accounts.create_verification(new.id, timedelta(hours=1))
        second = await storage.accounts.create_verification(new.id, timedelta(hours=1))
        assert first and second
        assert await storage.accounts.verify_email(first) is None  # replaced by the second
        verified = await storage.accounts.verify_email(second)
        assert verified is not None and verified.verified
        assert (await storage.get_user(new.id)).verified
        assert await storage.accounts.verify_email(second) is None
        await storage.accounts.delete_account(new.id)
    finally:
        await storage.aclose()


async def test_a_database_made_before_verification_opens_with_its_accounts_verified(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage = await PonyStorage.open(url)
    user = await storage.create_user("old@example.org")

    def drop() -> None:
        with db_session:
            storage.sql.execute("DROP TABLE email_verification")

    await trio.to_thread.run_sync(drop)
    await storage.aclose()
    reopened = await PonyStorage.open(url)
    try:
        again = await reopened.get_user(user.id)
        assert again is not None and again.verified
        assert (await reopened.create_user("new@example.org", verified=False)).verified is False
    finally:
        await reopened.aclose()
