"""Site owners in the console: registering a site, proving control of it, its policy form.

Proof of control runs against a real HTTP server on 127.0.0.1 that the test controls (the server
under test allows loopback addresses with `site_check_private = 1`; without it they are refused).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio

from tests.conftest import LiveServer, StartServer

from .conftest import People, Visitor

Handler = Callable[[str], Awaitable[tuple[int, bytes]]]


@dataclass
class SiteServer:
    """An origin whose answers the test sets per path; unknown paths are 404."""

    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, path: str, body: bytes, status: int = 200) -> None:
        async def answer(_: str) -> tuple[int, bytes]:
            return status, body

        self.routes[path] = answer

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            path = data.split(b" ", 2)[1].decode("latin-1")
            handler = self.routes.get(path)
            status, body = await handler(path) if handler else (404, b"not found")
            location = f"Location: {body.decode()}\r\n" if status == 302 else ""  # a redirect's body is its target
            head = (
                f"HTTP/1.1 {status} X\r\nContent-Type: text/html\r\n{location}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(head.encode() + body)


@pytest.fixture
async def origin(nursery: trio.Nursery) -> AsyncIterator[SiteServer]:
    site = SiteServer()
    listeners = await nursery.start(partial(trio.serve_tcp, site.handle, 0, host="127.0.0.1"))
    site.port = int(listeners[0].socket.getsockname()[1])
    yield site


@pytest.fixture
async def server(start_server: StartServer, tmp_path: Any) -> LiveServer:
    return await start_server(
        signup_min_seconds=0.0,
        mail_outbox=str(tmp_path / "outbox"),
        site_check_private=1,
        site_check_timeout=2.0,
        site_check_max_bytes=4096,
    )


async def add_site(owner: Visitor, origin: str) -> tuple[int, str]:
    """Register `origin`; returns the site's id and its proof-of-control token."""
    response = await owner.post("/sites", {"origin": origin}, page="/sites")
    assert response.status_code == 302, response.text
    site_id = int(re.search(r"/sites/(\d+)", response.headers["location"])[1])  # type: ignore[index]
    page = (await owner.get(f"/sites/{site_id}")).text
    token = re.search(r'<pre id="token">([^<]+)</pre>', page)[1]  # type: ignore[index]
    return site_id, token


async def check(owner: Visitor, site_id: int) -> Any:
    return await owner.post(f"/sites/{site_id}/verify", page=f"/sites/{site_id}")


async def verified(server: LiveServer, site_id: int) -> bool:
    site = await server.platform.storage.sites.site(site_id)
    assert site is not None
    return site.verified


async def test_a_registered_site_gets_a_key_and_is_unverified(server: LiveServer, people_on: Any) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, "HTTPS://Blog.Example.org/")
    site = await server.platform.storage.sites.site(site_id)
    assert site is not None and site.origin == "https://blog.example.org" and site.token == token
    assert len(site.key) >= 20 and not site.verified
    assert site.key in (await owner.get(f"/sites/{site_id}")).text


async def test_an_origin_with_a_path_is_refused(server: LiveServer, people_on: Any) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    response = await owner.post("/sites", {"origin": "https://blog.example.org/articles"}, page="/sites")
    assert response.status_code == 400 and "no path" in response.text
    assert await server.platform.storage.sites.sites_of(1) == []


async def test_the_well_known_file_proves_control(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    origin.serve("/.well-known/distribute.txt", f"# distribute\n{token}\n".encode())
    response = await check(owner, site_id)
    assert response.status_code == 302 and await verified(server, site_id)


async def test_the_meta_tag_proves_control(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    origin.serve(
        "/", f'<html><head><meta content="{token}" name="distribute-site-verification"></head></html>'.encode()
    )
    response = await check(owner, site_id)
    assert response.status_code == 302 and await verified(server, site_id)


async def test_no_token_anywhere_is_refused(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, _ = await add_site(owner, origin.origin)
    response = await check(owner, site_id)
    assert response.status_code == 400 and "HTTP status 404" in response.text
    assert not await verified(server, site_id)


async def test_a_wrong_token_is_refused(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    wrong = token[:-1] + ("y" if token.endswith("x") else "x")  # one character off, whatever the token
    origin.serve("/.well-known/distribute.txt", wrong.encode())
    origin.serve("/", b'<meta name="distribute-site-verification" content="distribute-site-someone-else">')
    response = await check(owner, site_id)
    assert response.status_code == 400 and "the token is not there" in response.text
    assert not await verified(server, site_id)


async def test_a_proof_over_the_size_cap_is_refused(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    origin.serve("/.well-known/distribute.txt", b"x" * 5000 + f"\n{token}\n".encode())  # the cap is 4096 bytes
    response = await check(owner, site_id)
    assert response.status_code == 400 and "more than 4096 bytes" in response.text
    assert not await verified(server, site_id)


async def test_a_site_that_never_answers_is_refused(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, _ = await add_site(owner, origin.origin)

    async def never(_: str) -> tuple[int, bytes]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    origin.routes["/.well-known/distribute.txt"] = origin.routes["/"] = never
    response = await check(owner, site_id)
    assert response.status_code == 400 and "no answer within 2 s" in response.text
    assert not await verified(server, site_id)


async def test_a_redirect_to_another_origin_is_refused(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    elsewhere = f"http://localhost:{origin.port}/proof.txt"  # the same server under another origin
    origin.serve("/.well-known/distribute.txt", elsewhere.encode(), status=302)
    origin.serve("/proof.txt", token.encode())
    response = await check(owner, site_id)
    assert response.status_code == 400 and "redirects to another origin" in response.text
    assert not await verified(server, site_id)


async def test_a_redirect_within_the_origin_is_followed(server: LiveServer, people_on: Any, origin: SiteServer) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    origin.serve("/.well-known/distribute.txt", b"/proof.txt", status=302)
    origin.serve("/proof.txt", token.encode())
    response = await check(owner, site_id)
    assert response.status_code == 302 and await verified(server, site_id)


async def test_loopback_origins_are_refused_unless_allowed(
    start_server: StartServer, people_on: Any, origin: SiteServer, tmp_path: Any
) -> None:
    server = await start_server(signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"))
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, token = await add_site(owner, origin.origin)
    origin.serve("/.well-known/distribute.txt", token.encode())
    response = await check(owner, site_id)
    assert response.status_code == 400 and "private, loopback or reserved address" in response.text
    assert not await verified(server, site_id)


async def test_the_policy_form_stores_owners_as_account_ids(server: LiveServer, people_on: Any) -> None:
    crowd: People = people_on(server)
    owner = await crowd.sign_up("owner@example.org")
    other = await crowd.sign_up("science@example.org")
    site_id, _ = await add_site(owner, "https://blog.example.org")
    data = {"policy": "owners", "allowlist": other.email, "max_throttle": "medium"}
    response = await owner.post(f"/sites/{site_id}/policy", data, page=f"/sites/{site_id}")
    assert response.status_code == 302, response.text
    site = await server.platform.storage.sites.site(site_id)
    user = await server.platform.storage.user_by_email(other.email)
    assert site is not None and user is not None
    assert (site.policy, site.allowlist, site.max_throttle) == ("owners", (user.id,), "medium")


async def test_the_policy_form_refuses_a_campaign_that_does_not_exist(server: LiveServer, people_on: Any) -> None:
    owner = await people_on(server).sign_up("owner@example.org")
    site_id, _ = await add_site(owner, "https://blog.example.org")
    data = {"policy": "campaigns", "allowlist": "4242", "max_throttle": "high"}
    response = await owner.post(f"/sites/{site_id}/policy", data, page=f"/sites/{site_id}")
    assert response.status_code == 400 and "there is no campaign" in response.text
    site = await server.platform.storage.sites.site(site_id)
    assert site is not None and site.policy == "any"
