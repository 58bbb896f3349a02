"""JSON logs of a real `distribute serve`: one object per line, request and connection ids, no secrets.

One server process (log_format json, log_level debug, so every message any library writes is seen)
goes through a whole console and API life: a sign-up whose verification mail is followed, a sign-in,
an API token made in the console and used with `Authorization: Bearer`, a campaign created with it,
a headless worker's WebSocket session, and a password reset by mail. Then everything the process
wrote is searched for every secret it saw.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, database_url
from tests.console.conftest import PASSWORD, csrf_of, stamp_of

NEW_PASSWORD = "a brand new passphrase"
SMTP_PASSWORD = "smtp-password-never-logged"
DB_PASSWORD = "database-password-never-logged"
TRUSTED_ID = "proxy-req.0042"


@dataclass
class Session:
    """What the server process wrote, and every secret it was shown or handed out."""

    lines: list[str]
    stdout: str
    secrets: dict[str, str] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)  # the X-Request-Id of every response


def with_password(url: str) -> str:
    """A PostgreSQL URL with a password (the throwaway cluster trusts local connections and ignores it)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"))


def outbox_link(outbox: Path, kind: str, count: int = 1) -> str:
    """The newest `/kind/TOKEN` link mailed to the outbox, once `count` such links exist."""
    links: list[str] = []
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        links += re.findall(rf"https?://\S+/{kind}/\S+", body.get_content())
    assert len(links) >= count, f"no {kind} link in {outbox}"
    return urlsplit(links[-1]).path


def wait_for_link(outbox: Path, kind: str) -> str:
    """Mail goes out in the background: poll the outbox (bounded) until the link is there."""

    async def poll() -> str:
        with trio.fail_after(15):
            while True:
                try:
                    return outbox_link(outbox, kind)
                except AssertionError:
                    await trio.sleep(0.05)

    return trio.run(poll)


def worker_session(url: str) -> None:
    """A headless worker connects, says hello and is told to wait or leave; then it hangs up."""

    async def run() -> None:
        ws_url = url.replace("http://", "ws://") + "/ws"
        with trio.fail_after(15):
            async with open_websocket_url(ws_url) as ws:
                await ws.send_message(p.encode(p.Hello(campaign=None, slots=1)))
                await ws.get_message()

    trio.run(run)


def console_and_api_life(url: str, outbox: Path, session: Session) -> None:
    def note_id(response: httpx.Response) -> None:
        session.request_ids.append(response.headers["x-request-id"])

    hooks = {"response": [note_id]}
    client = httpx.Client(base_url=url, timeout=30, event_hooks=hooks)
    anonymous = httpx.Client(base_url=url, timeout=30, event_hooks=hooks)
    with client, anonymous:
        person(client, anonymous, outbox, session)


def person(client: httpx.Client, anonymous: httpx.Client, outbox: Path, session: Session) -> None:
    def post(path: str, data: dict[str, str], page: str) -> httpx.Response:
        token = csrf_of(client.get(page).text)
        session.secrets.setdefault("csrf", token)
        return client.post(path, data={"csrf": token, **data})

    form = client.get("/signup").text
    signed_up = client.post(
        "/signup",
        data={
            "csrf": csrf_of(form),
            "stamp": stamp_of(form),
            "email": "alice@example.org",
            "password": PASSWORD,
            "password2": PASSWORD,
            "website": "",
        },
    )
    assert signed_up.status_code == 303, signed_up.text
    verify = wait_for_link(outbox, "verify")
    session.secrets["verification token"] = verify.rsplit("/", 1)[1]
    assert client.get(verify).status_code in (200, 303)
    client.post("/signout", data={"csrf": csrf_of(client.get("/account").text)})

    signed_in = post("/signin", {"email": "alice@example.org", "password": PASSWORD}, "/signin")
    assert signed_in.status_code == 303, signed_in.text
    session.secrets["session cookie"] = client.cookies["distribute_session"]

    made = post("/account/tokens", {"name": "laptop"}, "/account")
    assert made.status_code == 201, made.text
    token = re.search(r"dst_[A-Za-z0-9_-]+", made.text)
    assert token, "the account page shows no new token"
    session.secrets["API token"] = token.group(0)

    api = {"Authorization": f"Bearer {token.group(0)}", "X-Request-Id": TRUSTED_ID}
    files = {"kernel": ("k.js", SEED_KERNEL.encode()), "generator": ("g.js", SEED_GENERATOR.encode())}
    files["static_dataset"] = ("s.json", SEED_STATIC.encode())
    created = client.post("/api/campaigns", headers=api, files=files, data={"name": "logged"})
    assert created.status_code == 201, created.text
    assert client.get("/api/campaigns", headers=api).status_code == 200
    refused = client.get("/api/campaigns", headers={"Authorization": "Bearer dst_forged-token-123"})
    assert refused.status_code == 401
    session.secrets["forged token"] = "dst_forged-token-123"

    token = csrf_of(anonymous.get("/reset").text)
    assert anonymous.post("/reset", data={"csrf": token, "email": "alice@example.org"}).status_code == 200
    reset = wait_for_link(outbox, "reset")
    session.secrets["reset token"] = reset.rsplit("/", 1)[1]
    token = csrf_of(anonymous.get(reset).text)
    done = anonymous.post(reset, data={"csrf": token, "password": NEW_PASSWORD})
    assert done.status_code == 303, done.text
    session.secrets["new password"] = NEW_PASSWORD
    session.secrets["password"] = PASSWORD


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    folder = tmp_path_factory.mktemp("json-logs")
    outbox = folder / "outbox"
    database = with_password(database_url(folder))
    settings = folder / "server.toml"
    settings.write_text(
        f"""log_format = "json"
log_level = "debug"
port = 0
database = {json.dumps(database)}
email_verification = "on"
signup_min_seconds = 0.0
mail_outbox = {json.dumps(str(outbox))}
smtp_password = {json.dumps(SMTP_PASSWORD)}
"""
    )
    stderr = folder / "stderr.log"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute", "--settings", str(settings), "serve"],
            stdout=subprocess.PIPE,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    first = process.stdout.readline().decode()
    try:
        assert first.startswith("distribute serving on "), stderr.read_text()
        url = first.split()[3].rstrip(",")
        session = Session([], first)
        if DB_PASSWORD in database:
            session.secrets["database password"] = DB_PASSWORD
        session.secrets["SMTP password"] = SMTP_PASSWORD
        console_and_api_life(url, outbox, session)
        worker_session(url)
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    session.stdout += rest.decode()
    session.lines = stderr.read_text().splitlines()
    yield session


def records(session: Session) -> list[dict[str, Any]]:
    return [json.loads(line) for line in session.lines]


def test_every_line_of_the_json_log_is_an_object_with_time_level_logger_and_message(logged: Session) -> None:
    assert len(logged.lines) > 20
    for line in logged.lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line


def test_no_secret_of_the_session_appears_anywhere_in_what_the_server_wrote(logged: Session) -> None:
    written = "\n".join(logged.lines) + logged.stdout
    assert {"password", "API token", "session cookie", "reset token", "verification token"} <= logged.secrets.keys()
    leaked = [name for name, secret in logged.secrets.items() if secret in written]
    assert leaked == [], f"{leaked} found in the server's output"
    assert "Authorization" not in written and "Bearer dst_" not in written


def test_every_http_request_is_logged_with_the_id_its_response_carries(logged: Session) -> None:
    access = [r for r in records(logged) if r["logger"] == "hypercorn.access" and r["path"] != "/ws" and r["status"]]
    assert sorted(r["request_id"] for r in access) == sorted(logged.request_ids)
    own = [i for i in logged.request_ids if i != TRUSTED_ID]
    assert len(set(own)) == len(own)  # each request has its own
    assert all({"method", "path", "status", "duration_ms", "remote"} <= r.keys() for r in access)


def test_a_plain_request_id_from_a_proxy_on_this_machine_is_kept(logged: Session) -> None:
    assert TRUSTED_ID in logged.request_ids
    api_lines = [r for r in records(logged) if r.get("request_id") == TRUSTED_ID]
    assert any(r["logger"] == "hypercorn.access" and r["path"] == "/api/campaigns" for r in api_lines)


def test_messages_logged_inside_a_request_carry_its_request_id(logged: Session) -> None:
    mail = [r for r in records(logged) if r["logger"] == "distribute.mail"]
    assert len(mail) == 2  # the verification and the reset mail, sent in the background of a request
    assert all(r["request_id"] in logged.request_ids for r in mail)


def test_a_workers_session_is_logged_with_its_connection_id(logged: Session) -> None:
    gateway = [r for r in records(logged) if r["logger"] == "distribute.gateway"]
    connected = [r for r in gateway if r["message"].startswith("worker connected")]
    left = [r for r in gateway if r["message"].startswith("worker left")]
    assert len(connected) == len(left) == 1
    assert connected[0]["connection_id"] == left[0]["connection_id"] != ""
    assert "request_id" not in connected[0]
    upgrade = [r for r in records(logged) if r["logger"] == "hypercorn.access" and r["path"] == "/ws"]
    assert [r["connection_id"] for r in upgrade] == [connected[0]["connection_id"]]
