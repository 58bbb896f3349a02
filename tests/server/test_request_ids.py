"""Every HTTP answer carries the id its log lines carry (`X-Request-Id`); a proxy's own id is kept only
when it comes from this machine and is short and plain (asgi.RequestIds)."""

from __future__ import annotations

import re
from typing import cast

import pytest
from hypercorn.typing import HTTPScope

from distribute.asgi import loopback_peer
from tests.conftest import LiveServer

MADE = re.compile(r"[0-9a-f]{16}")


async def test_each_answer_carries_a_request_id_of_its_own(live_server: LiveServer) -> None:
    ids = [(await live_server.client.get(path)).headers["x-request-id"] for path in ("/-/health", "/-/health", "/")]
    assert all(MADE.fullmatch(i) for i in ids) and len(set(ids)) == 3


async def test_a_plain_id_from_a_proxy_on_this_machine_is_echoed(live_server: LiveServer) -> None:
    answer = await live_server.client.get("/api/campaigns", headers={"X-Request-Id": "nginx:4f2a-77.b_1"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "nginx:4f2a-77.b_1"


@pytest.mark.parametrize("sent", [b"two words", b"x" * 65, b"a<b>", "é".encode("latin-1"), b""])
async def test_an_id_that_is_not_short_and_plain_is_replaced(live_server: LiveServer, sent: bytes) -> None:
    answer = await live_server.client.get("/-/health", headers={b"X-Request-Id": sent})
    assert MADE.fullmatch(answer.headers["x-request-id"])
    assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]]


def test_only_a_peer_on_this_machine_may_name_the_request() -> None:
    def scope(client: tuple[str, int] | None) -> HTTPScope:
        return cast(HTTPScope, {"type": "http", "client": client})

    assert loopback_peer(scope(("127.0.0.1", 5000)))
    assert loopback_peer(scope(("::1", 5000)))
    assert loopback_peer(scope(None))  # a Unix socket
    assert not loopback_peer(scope(("203.0.113.7", 5000)))
    assert not loopback_peer(scope(("10.0.0.2", 5000)))
