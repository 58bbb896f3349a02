"""The WebSocket handshake of `/ws`: no permessage-deflate, and browsers only from allowed origins."""

from __future__ import annotations

import os
import resource
import struct
import zlib
from urllib.parse import urlsplit

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection

from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import work

BOMB_BYTES = 64 * 1024 * 1024  # what the compressed message inflates to


async def handshake(ws_url: str, extra: dict[str, str]) -> tuple[int, dict[str, str], trio.SocketStream, bytes]:
    """Send an upgrade request by hand; the status, the response headers, the stream and bytes past the head."""
    parts = urlsplit(ws_url)
    stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 80)
    head = {
        "Host": parts.netloc,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **extra,
    }
    request = f"GET {parts.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    await stream.send_all(request.encode())
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"the server closed during the handshake: {data!r}"
            data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, stream, rest


def deflate_bomb() -> bytes:
    """A masked binary frame with RSV1 set (permessage-deflate) whose payload inflates to BOMB_BYTES."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(bytes(BOMB_BYTES)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]  # permessage-deflate drops the 00 00 ff ff tail
    assert len(payload) < 128 * 1024
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = (
        bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        if len(payload) < 65536
        else bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    )
    return bytes([0x80 | 0x40 | 0x2]) + length + mask + masked


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the server runs in this process
    return usage.ru_utime + usage.ru_stime


async def test_permessage_deflate_is_never_negotiated(live_server: LiveServer) -> None:
    status, headers, stream, _ = await handshake(
        live_server.ws_url, {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    )
    await stream.aclose()
    assert status == 101
    assert "sec-websocket-extensions" not in headers


async def test_a_compressed_message_is_a_protocol_error_and_costs_no_inflating(live_server: LiveServer) -> None:
    frame = deflate_bomb()
    status, _, stream, rest = await handshake(live_server.ws_url, {"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert status == 101
    before = cpu_seconds()
    await stream.send_all(frame)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(rest)
    code = None
    with trio.fail_after(10):
        while code is None:
            for event in client.events():
                if isinstance(event, CloseConnection):
                    code = event.code
            if code is None:
                data = await stream.receive_some(65536)
                if not data:
                    break  # closed
                client.receive_data(data)
    spent = cpu_seconds() - before
    await stream.aclose()
    # RSV1 without a negotiated extension is a protocol error: Hypercorn drops the TCP connection
    # (no close frame), where it used to inflate the message and close with 1009.
    assert code in (None, 1002)
    assert spent < 0.05, f"the server spent {spent * 1000:.0f} ms of CPU on one compressed message"
    campaign_id = await live_server.create_campaign()
    outcome = await work(live_server.ws_url, campaign=campaign_id)
    assert outcome.done
    assert (await live_server.wait_complete(campaign_id))["status"] == "complete"


async def upgrade_status(server: LiveServer, origin: str | None) -> int:
    status, _, stream, _ = await handshake(server.ws_url, {} if origin is None else {"Origin": origin})
    await stream.aclose()
    return status


async def test_a_foreign_origin_is_refused(live_server: LiveServer) -> None:
    assert await upgrade_status(live_server, "https://evil.example") == 403
    assert await upgrade_status(live_server, "null") == 403


async def test_the_own_origin_and_no_origin_are_welcome(live_server: LiveServer) -> None:
    assert await upgrade_status(live_server, live_server.url) == 101
    assert await upgrade_status(live_server, None) == 101


async def test_public_url_is_the_own_origin(start_server: StartServer) -> None:
    server = await start_server(public_url="https://compute.example.org/")
    assert await upgrade_status(server, "https://compute.example.org") == 101
    assert await upgrade_status(server, "http://compute.example.org") == 403


async def test_allowed_ws_origins_are_welcome(start_server: StartServer) -> None:
    server = await start_server(allowed_ws_origins="https://friend.example, https://other.example:8443")
    assert await upgrade_status(server, "https://friend.example") == 101
    assert await upgrade_status(server, "https://other.example:8443") == 101
    assert await upgrade_status(server, "https://evil.example") == 403
