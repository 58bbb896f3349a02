"""Password reset by mail: through a real local SMTP server, and the development outbox."""

from __future__ import annotations

import email
import email.policy
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from tests.conftest import LiveServer, StartServer

from .conftest import PASSWORD, Inbox, People, reset_link, table_rows

NEW_PASSWORD = "a brand new passphrase"


async def mailing_server(start_server: StartServer, inbox: Inbox, **settings: Any) -> Any:
    return await start_server(
        signup_min_seconds=0.0, smtp_host="127.0.0.1", smtp_port=inbox.port, smtp_security="none", **settings
    )


async def test_a_reset_mail_arrives_and_its_link_sets_a_new_password(
    start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await mailing_server(start_server, smtp_inbox)
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    response = await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    assert response.status_code == 200 and "If an account exists" in response.text

    mail = await smtp_inbox.wait_for("alice@example.org")
    assert mail["Subject"] == "Reset your distribute password"
    path = urlsplit(reset_link(mail)).path
    assert (await visitor.get(path)).status_code == 200
    done = await visitor.post(path, {"password": NEW_PASSWORD}, page=path)
    assert done.status_code == 303 and done.headers["location"] == "/signin?done=reset"

    await crowd.sign_in("alice@example.org", NEW_PASSWORD)
    old = await visitor.post("/signin", {"email": "alice@example.org", "password": PASSWORD}, page="/signin")
    assert old.status_code == 401


async def test_a_reset_link_works_only_once(start_server: StartServer, smtp_inbox: Inbox, people_on: Any) -> None:
    server = await mailing_server(start_server, smtp_inbox)
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    path = urlsplit(reset_link(await smtp_inbox.wait_for("alice@example.org"))).path
    assert (await visitor.post(path, {"password": NEW_PASSWORD}, page=path)).status_code == 303
    again = await visitor.post(path, {"password": "yet another passphrase"}, page="/reset")
    assert again.status_code == 410 and "does not work any more" in again.text
    await crowd.sign_in("alice@example.org", NEW_PASSWORD)


async def test_a_reset_link_expires(start_server: StartServer, smtp_inbox: Inbox, people_on: Any) -> None:
    server = await mailing_server(start_server, smtp_inbox, reset_minutes=0.005)  # 0.3 s
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    path = urlsplit(reset_link(await smtp_inbox.wait_for("alice@example.org"))).path
    await trio.sleep(0.5)
    assert (await visitor.get(path)).status_code == 410
    assert (await visitor.post(path, {"password": NEW_PASSWORD}, page="/reset")).status_code == 410
    await crowd.sign_in("alice@example.org")


async def test_a_reset_ends_every_session_of_the_account(
    start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await mailing_server(start_server, smtp_inbox)
    crowd: People = people_on(server)
    alice = await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    path = urlsplit(reset_link(await smtp_inbox.wait_for("alice@example.org"))).path
    await visitor.post(path, {"password": NEW_PASSWORD}, page=path)
    assert (await alice.get("/account")).status_code == 302


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(
    start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await mailing_server(start_server, smtp_inbox)
    crowd: People = people_on(server)
    visitor = await crowd.anonymous()
    response = await visitor.post("/reset", {"email": "nobody@example.org"}, page="/reset")
    assert response.status_code == 200 and "If an account exists" in response.text
    await trio.sleep(0.3)
    assert smtp_inbox.messages == []


async def reset_into_the_outbox(start_server: StartServer, people_on: Any, outbox: Path) -> LiveServer:
    """A server without SMTP, where alice has an account and has asked for a password reset."""
    server = await start_server(signup_min_seconds=0.0, mail_outbox=str(outbox))
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    return server


async def test_without_smtp_the_mail_is_written_to_the_outbox(
    start_server: StartServer, people_on: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    await reset_into_the_outbox(start_server, people_on, outbox)
    files = list(outbox.glob("*.eml"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "To: alice@example.org" in text and "/reset/" in text


async def test_only_the_hash_of_a_reset_token_is_stored(
    start_server: StartServer, people_on: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    server = await reset_into_the_outbox(start_server, people_on, outbox)
    (mail,) = outbox.glob("*.eml")
    link = reset_link(email.message_from_bytes(mail.read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    token = urlsplit(link).path.rsplit("/", 1)[1]
    rows = await table_rows(server, "password_reset")
    stored = [str(value) for row in rows for value in row]
    assert len(rows) == 1 and not any(token in value for value in stored)  # a copy of the database resets nothing
    assert hashlib.sha256(token.encode()).hexdigest() in stored
