"""The security review's attacks, tried as a stranger would: against `distribute serve` started by the CLI.

Each test starts its own server as a child process (about a second), signs a stranger up through the
console's sign-up form over HTTP, makes an API token on the account page, and attacks from outside: raw
TCP, WebSocket frames, HTTP with forged headers, generators uploaded with the stranger's token. Each
checks that the defence held and that the server then still serves an honest worker a small campaign.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, ServerProcess, launch_server_process
from tests.process.test_memory_backend import sign_up_for_a_token
from tests.server.test_poisoned_results import result_frame
from tests.server.test_ws_handshake import handshake
from tests.support.protocol_client import closed, closed_with, receive_tasks, send, work

STRANGER = "stranger@example.net"
SECRET = "s3cret-the-sandbox-must-never-see"
SMALL_GENERATOR = "({ main: function () { return [{min: 0, max: 123}, {min: 123, max: 246}, {min: 246, max: 300}]; } })"


@dataclass
class Stranger:
    """A server started through the CLI, and a stranger's API client on it."""

    server: ServerProcess
    api: httpx.AsyncClient
    folder: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://") + "/ws"

    async def upload(self, kernel: str, generator: str, static: str = "") -> int:
        """Create a campaign past the trial run: these attacks are on generation and computing, not on the form."""
        files = {"kernel": ("kernel.js", kernel.encode()), "generator": ("generator.js", generator.encode())}
        if static:
            files["static_dataset"] = ("static.json", static.encode())
        created = await self.api.post("/api/campaigns", files=files, data={"skip_check": "true"})
        assert created.status_code == 201, created.text
        return int(created.json()["id"])

    async def campaign(self, campaign_id: int) -> dict[str, Any]:
        response = await self.api.get(f"/api/campaigns/{campaign_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_for(
        self, campaign_id: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while not predicate(campaign := await self.campaign(campaign_id)):
                await trio.sleep(0.05)
        return campaign

    async def the_one_mail(self, link: re.Pattern[str]) -> tuple[bytes, str]:
        """The only mail in the outbox once it arrives: its raw bytes and the link in its plain text."""
        with trio.fail_after(10):
            while not (mails := sorted((self.folder / "outbox").glob("*.eml"))):
                await trio.sleep(0.02)
        (mail,) = mails
        raw = mail.read_bytes()
        body = email.message_from_bytes(raw, policy=email.policy.default).get_body(preferencelist=("plain",))
        assert body is not None
        found = link.search(body.get_content())
        assert found, body.get_content()
        return raw, found.group(0)

    async def serves_an_honest_worker(self) -> None:
        """After the attack: a small campaign of the stranger's is computed to the end by a protocol worker."""
        campaign_id = await self.upload(SEED_KERNEL, SMALL_GENERATOR, SEED_STATIC)
        outcome = await work(self.ws_url, campaign=campaign_id)
        assert outcome.bye == "complete"
        done = await self.wait_for(campaign_id, lambda c: c["status"] == "complete")
        assert done["datasets"]["done"] == done["datasets"]["total"] == 3
        rows = (await self.api.get(f"/api/campaigns/{campaign_id}/results", params={"format": "json"})).json()
        assert sorted(n for row in rows for n in row["result"]) == [0, 123, 246]


StartStranger = Callable[..., Awaitable[Stranger]]


@pytest.fixture
async def start_stranger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartStranger]:
    """`start_stranger(NAME=value, ...)`: `distribute serve` with those DISTRIBUTE_ variables, and a stranger."""
    started: list[ServerProcess] = []
    clients: list[httpx.AsyncClient] = []

    async def start(**env: str) -> Stranger:
        monkeypatch.setenv("DISTRIBUTE_SIGNUP_MIN_SECONDS", "0")
        monkeypatch.setenv("DISTRIBUTE_MAIL_OUTBOX", str(tmp_path / "outbox"))
        monkeypatch.delenv("DISTRIBUTE_SMTP_HOST", raising=False)
        monkeypatch.delenv("DISTRIBUTE_PUBLIC_URL", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        server = launch_server_process(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
        started.append(server)
        token = await sign_up_for_a_token(server.url, STRANGER)
        api = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(api)
        return Stranger(server, api, tmp_path)

    try:
        yield start
    finally:
        for client in clients:
            await client.aclose()
        for server in started:
            server.process.terminate()
            try:
                server.process.wait(timeout=20)
            finally:
                if server.process.poll() is None:
                    server.process.kill()
                    server.process.wait()
        for server in started:
            assert "Traceback" not in server.log.read_text()


# --------------------------------------------------------------------------- the WebSocket door


async def test_a_permessage_deflate_offer_is_not_accepted(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    status, headers, stream, _ = await handshake(stranger.ws_url, offer)
    await stream.aclose()
    assert status == 101
    assert "sec-websocket-extensions" not in headers
    await stranger.serves_an_honest_worker()


async def test_a_hello_of_one_mebibyte_is_closed_as_too_big(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    campaign_id = await stranger.upload(SEED_KERNEL, SEED_GENERATOR, SEED_STATIC)
    hello = p.encode(p.Hello(campaign=campaign_id, slots=1, client={"kind": "x" * 2**20}))
    code, reason = await closed_with(stranger.ws_url, hello, hello=False)
    assert (code, reason) == (1009, f"'hello' of {len(hello)} bytes is over the limit of 4096")
    await stranger.serves_an_honest_worker()


async def test_the_65th_connection_from_one_address_is_refused(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    campaign_id = await stranger.upload(SEED_KERNEL, SEED_GENERATOR, SEED_STATIC)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(64):  # held open, each with a task, while the 65th knocks
            ws = await stack.enter_async_context(open_websocket_url(stranger.ws_url))
            await send(ws, p.Hello(campaign=campaign_id, slots=1))
            assert len(await receive_tasks(ws)) == 1
        refused = await stack.enter_async_context(open_websocket_url(stranger.ws_url))
        code, reason = await closed(refused)
        assert (code, reason) == (1008, "too many connections from this address (limit 64)")
    await stranger.serves_an_honest_worker()


async def test_a_foreign_origin_gets_403_on_the_websocket(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    status, _, stream, _ = await handshake(stranger.ws_url, {"Origin": "https://evil.example"})
    await stream.aclose()
    assert status == 403
    await stranger.serves_an_honest_worker()


async def test_a_poisoned_result_is_a_kernel_error_and_the_json_download_stays_whole(
    start_stranger: StartStranger,
) -> None:
    stranger = await start_stranger()
    campaign_id = await stranger.upload(SEED_KERNEL, SEED_GENERATOR, SEED_STATIC)
    async with open_websocket_url(stranger.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1))
        (task,) = await receive_tasks(ws)
        await ws.send_message(result_frame(task.id, b"\xc4\x02\x00\xff"))  # msgpack bin 00 ff
        campaign = await stranger.wait_for(campaign_id, lambda c: len(c["kernel_errors"]) >= 1, timeout=10)
    assert [e["message"] for e in campaign["kernel_errors"]] == [
        "result is not plain data: binary data (msgpack bin) at result"
    ]
    honest = await work(stranger.ws_url, campaign=campaign_id)
    assert honest.bye == "complete" and task.id in honest.done
    download = await stranger.api.get(
        f"/api/campaigns/{campaign_id}/results", params={"format": "json", "include_empty": "true"}
    )
    assert download.status_code == 200
    rows = json.loads(download.content)  # the whole body parses
    assert len(rows) == 100
    await stranger.serves_an_honest_worker()


# --------------------------------------------------------------------------- generators uploaded with the token

JOIN_REPLACED = """({ main: function* () {
  var join = Array.prototype.join;
  Array.prototype.join = function () { return join.call(new Array(20000).fill("0"), ","); };
  for (var i = 0; ; i++) yield {min: i, max: i + 1};
} })"""


async def test_a_generator_that_replaces_array_join_cannot_exceed_max_datasets(
    start_stranger: StartStranger,
) -> None:
    stranger = await start_stranger(DISTRIBUTE_MAX_DATASETS="5")
    campaign_id = await stranger.upload(SEED_KERNEL, JOIN_REPLACED, SEED_STATIC)
    async with trio.open_nursery() as nursery:  # a worker drains the queue so the generator is pulled on
        nursery.start_soon(lambda: work(stranger.ws_url, campaign=campaign_id))
        campaign = await stranger.wait_for(campaign_id, lambda c: c["status"] in ("failed", "complete"))
        nursery.cancel_scope.cancel()
    assert campaign["datasets"]["total"] <= 5, campaign
    assert campaign["status"] == "failed", campaign
    assert campaign["generation_error"] == "the generator produced more than 5 datasets (the limit)"
    await stranger.serves_an_honest_worker()


LAZY_FOREVER = "({ main: function* () { for (var i = 0; ; i++) yield {min: i, max: i + 1}; } })"


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:  # fields after the command: state, ppid, ...
                children.append(int(stat.parent.name))
    return children


async def test_the_sandbox_children_of_the_server_see_none_of_its_environment(
    start_stranger: StartStranger,
) -> None:
    stranger = await start_stranger(STRANGER_PROBE_SECRET=SECRET)
    server_pid = stranger.server.process.pid
    assert SECRET.encode() in Path(f"/proc/{server_pid}/environ").read_bytes()  # the server has it
    campaign_id = await stranger.upload(SEED_KERNEL, LAZY_FOREVER, SEED_STATIC)
    await stranger.wait_for(campaign_id, lambda c: c["datasets"]["total"] > 0)
    environs: dict[int, bytes] = {}
    with trio.fail_after(20):
        while not environs:
            for child in children_of(server_pid):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"distribute.sandbox" in cmdline:
                        try:
                            environs[child] = Path(f"/proc/{child}/environ").read_bytes()
                        except PermissionError:  # a non-dumpable child of another user: only root may look
                            pytest.fail(
                                "the sandbox child's environ is readable only by root: run the suite as root, as make test does"
                            )
            await trio.sleep(0.05)
    assert all(environ == b"" for environ in environs.values()), environs
    assert (await stranger.campaign(campaign_id))["status"] != "failed"  # the generator was running meanwhile
    await stranger.serves_an_honest_worker()


# --------------------------------------------------------------------------- the console


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_LINK = re.compile(r"https?://\S+/reset/\S+")


async def test_a_password_reset_with_a_forged_host_never_links_to_that_host(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    async with httpx.AsyncClient(base_url=stranger.url, timeout=30) as visitor:
        form = (await visitor.get("/reset")).text
        match = _CSRF.search(form)
        assert match, "no csrf field on /reset"
        response = await visitor.post(
            "/reset", data={"csrf": match.group(1), "email": STRANGER}, headers={"Host": "evil.example"}
        )
    assert response.status_code == 200, response.text
    raw, link = await stranger.the_one_mail(_LINK)
    assert b"evil.example" not in raw
    assert link.startswith(stranger.url.rstrip("/") + "/reset/")
    await stranger.serves_an_honest_worker()


_STAMP = re.compile(r'name="stamp" value="([^"]*)"')


async def test_a_non_ascii_sign_up_stamp_gets_400(start_stranger: StartStranger) -> None:
    stranger = await start_stranger()
    async with httpx.AsyncClient(base_url=stranger.url, timeout=30) as visitor:
        form = (await visitor.get("/signup")).text
        match = _CSRF.search(form)
        assert match and _STAMP.search(form), "no csrf or stamp field on /signup"
        response = await visitor.post(
            "/signup",
            data={
                "csrf": match.group(1),
                "stamp": "é." + "0" * 32,
                "email": "second@example.net",
                "password": "correct horse battery",
                "password2": "correct horse battery",
                "website": "",
            },
        )
    assert response.status_code == 400
    await stranger.serves_an_honest_worker()


async def test_a_stranger_past_the_campaign_quota_gets_403_naming_the_setting(start_stranger: StartStranger) -> None:
    stranger = await start_stranger(DISTRIBUTE_QUOTA_CAMPAIGNS="2")
    await stranger.serves_an_honest_worker()
    await stranger.upload(SEED_KERNEL, SMALL_GENERATOR, SEED_STATIC)
    files = {"kernel": ("kernel.js", SEED_KERNEL.encode()), "generator": ("generator.js", SMALL_GENERATOR.encode())}
    refused = await stranger.api.post("/api/campaigns", files=files)
    assert refused.status_code == 403, refused.text
    assert "quota_campaigns" in refused.json()["error"]
    listed = (await stranger.api.get("/api/campaigns")).json()["campaigns"]
    assert len(listed) == 2


_VERIFY_LINK = re.compile(r"https?://\S+/verify/\S+")


async def test_an_unverified_stranger_creates_no_campaign_until_following_the_mailed_link(
    start_stranger: StartStranger,
) -> None:
    stranger = await start_stranger(DISTRIBUTE_EMAIL_VERIFICATION="on")
    files = {"kernel": ("kernel.js", SEED_KERNEL.encode()), "generator": ("generator.js", SMALL_GENERATOR.encode())}
    refused = await stranger.api.post("/api/campaigns", files=files)
    assert refused.status_code == 403, refused.text
    assert "must be verified" in refused.json()["error"]
    _, link = await stranger.the_one_mail(_VERIFY_LINK)
    assert link.startswith(stranger.url.rstrip("/") + "/verify/"), link
    async with httpx.AsyncClient(timeout=30) as anyone:  # the link works without the session
        followed = await anyone.get(link)
    assert followed.status_code == 200, followed.text
    await stranger.serves_an_honest_worker()
