"""Password reset by mail: through a real local SMTP server, and the development outbox."""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from tests.conftest import LiveServer, StartServer
from tests.process.test_cli import distribute

from .conftest import PASSWORD, Inbox, People, csrf_of, reset_link, table_rows

NEW_PASSWORD = "a brand new passphrase"


async def mailing_server(start_server: StartServer, inbox: Inbox, **settings: Any) -> Any:
    return await start_server(
        signup_min_seconds=0.0,
        smtp_host="127.0.0.1",
        smtp_port=inbox.port,
        smtp_security="none",
        email_verification="off",
        **settings,
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


async def outbox_mails(outbox: Path, count: int = 1) -> list[Path]:
    """The mails in the outbox, once `count` have arrived (mail goes out in the background)."""
    with trio.fail_after(10):
        while len(files := sorted(outbox.glob("*.eml"))) < count:
            await trio.sleep(0.02)
    return files


async def reset_into_the_outbox(start_server: StartServer, people_on: Any, outbox: Path) -> LiveServer:
    """A server without SMTP, where alice has an account and has asked for a password reset."""
    server = await start_server(signup_min_seconds=0.0, mail_outbox=str(outbox))
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    await outbox_mails(outbox)
    return server


async def test_without_smtp_the_mail_is_written_to_the_outbox(
    start_server: StartServer, people_on: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    await reset_into_the_outbox(start_server, people_on, outbox)
    files = await outbox_mails(outbox)
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


async def ask_for_a_reset_with_a_forged_host(visitor: Any, address: str) -> None:
    form = (await visitor.get("/reset")).text
    data = {"csrf": csrf_of(form), "email": address}
    response = await visitor.client.post("/reset", data=data, headers={"Host": "evil.example"})
    assert response.status_code == 200


async def test_a_reset_link_is_on_public_url_whatever_host_the_request_named(
    start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await mailing_server(start_server, smtp_inbox, public_url="http://compute.example.org/")
    crowd: People = people_on(server)
    await server.platform.storage.create_user("alice@example.org")
    await ask_for_a_reset_with_a_forged_host(await crowd.anonymous(), "alice@example.org")
    link = reset_link(await smtp_inbox.wait_for("alice@example.org"))
    assert link.startswith("http://compute.example.org/reset/")


async def test_without_public_url_a_reset_link_is_never_built_from_the_host_header(
    start_server: StartServer, people_on: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    server = await start_server(signup_min_seconds=0.0, mail_outbox=str(outbox))
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    await ask_for_a_reset_with_a_forged_host(await crowd.anonymous(), "alice@example.org")
    (mail,) = await outbox_mails(outbox)
    link = reset_link(email.message_from_bytes(mail.read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    assert "evil.example" not in link
    assert link.startswith(server.url.rstrip("/") + "/reset/")  # the address the server listens on


async def test_the_log_never_holds_a_reset_token(
    start_server: StartServer, people_on: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    outbox = tmp_path / "outbox"
    await reset_into_the_outbox(start_server, people_on, outbox)
    (mail,) = await outbox_mails(outbox)
    link = reset_link(email.message_from_bytes(mail.read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    token = urlsplit(link).path.rsplit("/", 1)[1]
    assert "written to" in caplog.text  # the mail was logged, by its file name
    assert token not in caplog.text


async def test_serve_refuses_to_start_with_smtp_and_no_public_url(tmp_path: Path) -> None:
    env = {"DISTRIBUTE_SMTP_HOST": "127.0.0.1", "DISTRIBUTE_PUBLIC_URL": ""}
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = await distribute("serve", "--port", "0", "--database", database, env=env, check=False)
    assert result.returncode == 2
    assert "public_url" in result.stderr.decode() and "smtp_host" in result.stderr.decode()


async def api_answers(server: Any, token: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        return (await api.get("/api/campaigns")).status_code


async def test_a_password_reset_revokes_every_api_token_of_the_account(
    start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await mailing_server(start_server, smtp_inbox)
    crowd: People = people_on(server)
    await crowd.sign_up("alice@example.org")
    user = await server.platform.storage.user_by_email("alice@example.org")
    token = await server.platform.storage.create_token(user.id, "laptop")
    assert await api_answers(server, token) == 200
    visitor = await crowd.anonymous()
    await visitor.post("/reset", {"email": "alice@example.org"}, page="/reset")
    path = urlsplit(reset_link(await smtp_inbox.wait_for("alice@example.org"))).path
    assert (await visitor.post(path, {"password": NEW_PASSWORD}, page=path)).status_code == 303
    assert await api_answers(server, token) == 401


async def test_a_password_change_revokes_the_api_tokens_only_when_asked(
    start_server: StartServer, people_on: Any, tmp_path: Path
) -> None:
    server = await start_server(signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"))
    crowd: People = people_on(server)
    alice = await crowd.sign_up("alice@example.org")
    user = await server.platform.storage.user_by_email("alice@example.org")
    token = await server.platform.storage.create_token(user.id, "laptop")
    kept = await alice.post("/account/password", {"current": PASSWORD, "password": NEW_PASSWORD}, page="/account")
    assert kept.status_code == 303 and await api_answers(server, token) == 200
    form = {"current": NEW_PASSWORD, "password": "a third passphrase", "revoke_tokens": "1"}
    revoked = await alice.post("/account/password", form, page="/account")
    assert revoked.status_code == 303 and await api_answers(server, token) == 401
    assert "every API token was revoked" in (await alice.get(revoked.headers["location"])).text
