"""Liveness and abuse limits through a real server: each limit closes or throttles only its offender.

Every test sets the limit it exercises to a small value (the defaults are generous); all clients
connect from 127.0.0.1, so per-address limits see them as one address.
"""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from distribute import protocol as p
from distribute.asgi import hypercorn_config
from distribute.gateway import MAX_PENDING_PONGS
from distribute.settings import load_settings
from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import closed_with, receive, receive_tasks, send, work


async def closed(ws: WebSocketConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.code, exc.reason.reason or ""


async def flood(ws: WebSocketConnection, frames: list[bytes]) -> tuple[int | None, str]:
    """Send frames as fast as possible (the server may close midway); the close code and reason."""
    try:
        for frame in frames:
            await ws.send_message(frame)
    except ConnectionClosed:
        pass
    return await closed(ws)


async def pong(ws: WebSocketConnection, nonce: int) -> None:
    await send(ws, p.Ping(nonce))
    with trio.fail_after(5):
        while (message := await receive(ws)) != p.Pong(nonce):
            assert not isinstance(message, p.Bye), message


def answers(tasks: list[p.Task]) -> p.Results:
    return p.Results(tuple(p.Result(t.id, None, 1.0) for t in tasks))


# --------------------------------------------------------------------------- frames and bytes


async def test_a_connection_over_the_frame_rate_is_closed_with_1008_and_the_reason(start_server: StartServer) -> None:
    server = await start_server(max_frames_per_second=2.0)  # a burst of 4 frames, then 2 a second
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=1, campaign=await server.create_campaign()))
        # Exactly one frame too many: frames still unread when the server closes the socket would
        # make TCP reset the connection, and the close frame with its reason could be lost.
        code, reason = await flood(ws, [p.encode(p.Ping(n)) for n in range(5)])
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "frame rate over 2 frames/s")


async def test_frames_within_the_rate_burst_are_all_answered(start_server: StartServer) -> None:
    server = await start_server(max_frames_per_second=10.0)  # 2 s of burst: 20 frames
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=1, campaign=await server.create_campaign()))
        for n in range(15):
            await pong(ws, n)


async def test_a_connection_over_the_byte_rate_is_closed_with_1008_and_the_reason(start_server: StartServer) -> None:
    server = await start_server(max_bytes_per_second=1024, max_frame_bytes=8192)  # burst: one largest frame
    padded = [msgpack.packb({"t": "ping", "n": n, "pad": b"x" * 3000}) for n in range(3)]
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=1, campaign=await server.create_campaign()))
        code, reason = await flood(ws, padded)
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "byte rate over 1,024 bytes/s")


async def test_the_frame_rate_of_one_address_is_shared_by_its_connections(start_server: StartServer) -> None:
    server = await start_server(max_frames_per_second_per_ip=2.0)  # a burst of 4 frames per address
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as first, open_websocket_url(server.ws_url) as second:
        for ws in (first, second):
            await send(ws, p.Hello(slots=1, campaign=campaign_id))
        for n in range(2):
            await pong(first, n)  # within the address's burst: fine
        code, reason = await flood(second, [p.encode(p.Ping(n)) for n in range(3)])  # 2 fit, 1 too many
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "frame rate over 2 frames/s from this address")


async def test_the_byte_rate_of_one_address_is_shared_by_its_connections(start_server: StartServer) -> None:
    """Two connections from one address, each within its own byte rate, together over the address's.

    Each connection may send a burst of 8,192 bytes (4,096 bytes/s); the address as a whole a burst
    of one largest frame, 8,192 bytes too, refilled at only 512 bytes/s. The first sends two frames
    of 3,518 bytes, the second one: 3,518 bytes is well within the second's own burst, but the
    address has about 1,150 bytes left (and would need some 4.6 s to earn the rest).
    """
    server = await start_server(max_bytes_per_second=4096, max_bytes_per_second_per_ip=512, max_frame_bytes=8192)
    padded = [msgpack.packb({"t": "ping", "n": n, "pad": b"x" * 3500}) for n in range(3)]
    assert {len(frame) for frame in padded} == {3518}
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as first, open_websocket_url(server.ws_url) as second:
        for ws in (first, second):
            await send(ws, p.Hello(slots=1, campaign=campaign_id))
        for n, frame in enumerate(padded[:2]):  # 7,036 bytes: within both bursts, so both answered
            await first.send_message(frame)
            with trio.fail_after(5):
                while await receive(first) != p.Pong(n):
                    pass
        code, reason = await flood(second, padded[2:])
        await pong(first, 3)  # a small frame still fits the address's rest: the first stays served
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "byte rate over 512 bytes/s from this address")


async def test_hellos_count_towards_the_byte_rate_of_their_address(start_server: StartServer) -> None:
    """New connections are no way around the rates: each one's hello is metered like later frames.

    The address may send a burst of 8,192 bytes refilled at 512 bytes/s; three hellos of about
    3,560 bytes each (padded client maps) do not fit, so the third connection is closed."""
    server = await start_server(max_bytes_per_second_per_ip=512, max_frame_bytes=8192)
    campaign_id = await server.create_campaign()
    hello = p.encode(p.Hello(slots=1, campaign=campaign_id, client={"kind": "test", "pad": "x" * 3500}))
    async with (
        open_websocket_url(server.ws_url) as first,
        open_websocket_url(server.ws_url) as second,
        open_websocket_url(server.ws_url) as third,
    ):
        for ws in (first, second):
            await ws.send_message(hello)
            await receive_tasks(ws)
        code, reason = await flood(third, [hello])
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "byte rate over 512 bytes/s from this address")


# --------------------------------------------------------------------------- connections and tasks per address


async def test_the_connection_over_the_per_address_cap_is_refused_while_the_others_stay_healthy(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections_per_ip=3)
    campaign_id = await server.create_campaign()
    async with (
        open_websocket_url(server.ws_url) as a,
        open_websocket_url(server.ws_url) as b,
        open_websocket_url(server.ws_url) as c,
    ):
        for ws in (a, b, c):
            await send(ws, p.Hello(slots=1, campaign=campaign_id))
            await receive_tasks(ws)
        async with open_websocket_url(server.ws_url) as refused:
            assert await closed(refused) == (
                p.CLOSE_POLICY_VIOLATION,
                "too many connections from this address (limit 3)",
            )
        for n, ws in enumerate((a, b, c)):
            await pong(ws, n)
    # Once they have gone, the address may connect again.
    outcome = await work(server.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete"


async def test_tasks_in_flight_per_connection_are_capped_below_the_slots_asked_for(start_server: StartServer) -> None:
    server = await start_server(max_tasks_per_connection=3)
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=8, campaign=campaign_id))
        assert len(await receive_tasks(ws)) == 3


async def test_an_empty_frame_is_a_protocol_error_and_the_server_carries_on(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    code, _ = await closed_with(live_server.ws_url, b"", campaign=campaign_id)
    assert code == p.CLOSE_PROTOCOL_ERROR
    assert (await work(live_server.ws_url, campaign=campaign_id)).bye == "complete"


async def test_tasks_in_flight_per_address_are_capped_across_two_connections(start_server: StartServer) -> None:
    server = await start_server(max_tasks_per_ip=5)
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as a, open_websocket_url(server.ws_url) as b:
        await send(a, p.Hello(slots=4, campaign=campaign_id))
        held_by_a = await receive_tasks(a)
        await send(b, p.Hello(slots=4, campaign=campaign_id))
        held_by_b = await receive_tasks(b)
        assert (len(held_by_a), len(held_by_b)) == (4, 1)
        with trio.move_on_after(0.5):
            extra = await receive(b)
            raise AssertionError(f"the address holds 5 tasks already, yet b got {extra}")
        # a answers one task (too few for a to top up at half its slots): b may take that room.
        await send(a, answers(held_by_a[:1]))
        with trio.fail_after(5):
            more = await receive_tasks(b)
        assert len(more) == 1
        assert server.platform.gateway.addresses.by_address["127.0.0.1"].held == 5


# --------------------------------------------------------------------------- bytes in flight

INFLIGHT_BOUND = 64 * 1024
LARGE_DATASETS = """({ main: function () {
  var datasets = [];
  for (var n = 0; n < 40; ++n) datasets.push({ n: n, pad: 'x'.repeat(20000) });
  return datasets;
} })"""
LARGE_DATASET_BYTES = len(msgpack.packb({"n": 0, "pad": "x" * 20000}))  # 20,011 for n < 128


async def tasks_until_quiet(ws: WebSocketConnection, quiet: float = 1.0) -> list[p.Task]:
    """Every task the server sends until it has sent none for `quiet` seconds."""
    tasks: list[p.Task] = []
    while True:
        with trio.move_on_after(quiet):
            tasks += await receive_tasks(ws)
            continue
        return tasks


async def test_dataset_bytes_in_flight_to_a_connection_stop_at_the_bound_crossed_by_at_most_one_dataset(
    start_server: StartServer,
) -> None:
    """A worker that asks for 64 slots and answers nothing holds 4 datasets of 20,011 bytes, not 40.

    The gateway sends more only while the bytes in flight are below `max_inflight_bytes`, and the
    last dataset sent may cross it: 3 datasets (60,033 bytes) are below 64 KiB, so a 4th follows
    (80,044 bytes), and then nothing. Answering 2 of them brings it below the bound again: 2 more.
    """
    server = await start_server(max_inflight_bytes=INFLIGHT_BOUND)
    campaign_id = await server.create_campaign(generator=LARGE_DATASETS, kernel="({ main: function () {} })", static="")
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=64, campaign=campaign_id))
        held = await tasks_until_quiet(ws)
        sizes = [len(t.dataset) for t in held]
        assert sizes == [LARGE_DATASET_BYTES] * 4
        assert sum(sizes[:-1]) < INFLIGHT_BOUND < sum(sizes)
        (session,) = server.platform.gateway.sessions.values()
        assert session.inflight_bytes == sum(sizes)

        await send(ws, answers(held[:2]))
        more = await tasks_until_quiet(ws)
        assert [len(t.dataset) for t in more] == [LARGE_DATASET_BYTES] * 2
        assert {t.id for t in more}.isdisjoint(t.id for t in held)
        assert session.inflight_bytes == 4 * LARGE_DATASET_BYTES


# --------------------------------------------------------------------------- workers that do not answer


async def test_a_worker_that_lets_tasks_expire_gets_fewer_slots_next_time_and_regains_them_by_answering(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=0.3)
    async with open_websocket_url(live_server.ws_url) as hoarder:
        await send(hoarder, p.Hello(slots=8, campaign=campaign_id))
        assert len(await receive_tasks(hoarder)) == 8
        await trio.sleep(1.0)  # every deadline passes; the dispatcher hands the tasks to others
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(slots=8, campaign=campaign_id))
        batches = []
        with trio.fail_after(10):
            for _ in range(4):
                tasks = await receive_tasks(ws)
                batches.append(len(tasks))
                await send(ws, answers(tasks))
    assert batches == [1, 2, 4, 8]


async def test_a_silent_connection_holding_tasks_is_closed_after_the_heartbeat_timeout_and_its_tasks_go_to_another_worker(
    start_server: StartServer,
) -> None:
    server = await start_server(heartbeat_timeout=0.5)
    campaign_id = await server.create_campaign(task_timeout=3600)  # no task deadline will pass
    async with open_websocket_url(server.ws_url) as silent:
        await send(silent, p.Hello(slots=5, campaign=campaign_id))
        hoarded = await receive_tasks(silent)
        started = trio.current_time()
        code, reason = await closed(silent)
        waited = trio.current_time() - started
    assert (code, reason) == (p.CLOSE_POLICY_VIOLATION, "heartbeat timeout: no frame for 0.5 s while holding tasks")
    assert 0.4 <= waited < 3
    honest = await work(server.ws_url, campaign=campaign_id)
    assert honest.bye == "complete"
    assert {t.id for t in hoarded} <= set(honest.done)


async def test_a_connection_that_pings_keeps_its_tasks_past_the_heartbeat_timeout(start_server: StartServer) -> None:
    server = await start_server(heartbeat_timeout=0.5)
    campaign_id = await server.create_campaign(task_timeout=3600)
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(slots=2, campaign=campaign_id))
        held = await receive_tasks(ws)
        for n in range(8):  # 1.6 s, three heartbeat timeouts
            await trio.sleep(0.2)
            await pong(ws, n)
        await send(ws, answers(held))
        assert len(await receive_tasks(ws)) == 2  # not closed: still served


async def test_a_connection_that_never_says_hello_is_closed_after_the_heartbeat_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(heartbeat_timeout=0.3)
    async with open_websocket_url(server.ws_url) as ws:
        assert await closed(ws) == (p.CLOSE_POLICY_VIOLATION, "no 'hello' before the heartbeat timeout")


def ping_interval(**overrides: object) -> float | None:
    return hypercorn_config(load_settings(overrides=overrides, environ={})).websocket_ping_interval


def test_websocket_pings_are_off_by_default_and_configured_from_the_settings() -> None:
    assert ping_interval() is None
    assert ping_interval(ws_ping_interval=7.5) == 7.5


def test_accepted_connections_inherit_tcp_keepalive_from_the_listening_socket() -> None:
    config = hypercorn_config(load_settings(overrides={"port": 0, "tcp_keepalive": 42.0}, environ={}))
    (listener,) = config.create_sockets().insecure_sockets
    listener.listen()  # as Hypercorn does when it starts serving
    with listener, socket.create_connection(listener.getsockname()[:2]) as client:
        accepted, _ = listener.accept()
        with accepted:
            for sock in (listener, accepted):
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 6
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0  # the client's own choice


def test_tcp_keepalive_zero_leaves_sockets_alone() -> None:
    config = hypercorn_config(load_settings(overrides={"port": 0, "tcp_keepalive": 0}, environ={}))
    (listener,) = config.create_sockets().insecure_sockets
    with listener:
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


SLOW_KERNEL = """({ main: function (d) { var t = Date.now(); while (Date.now() - t < 1000) {} return d.n; } })"""
TWO_DATASETS = """({ main: function () { return [{n: 1}, {n: 2}]; } })"""


async def test_the_headless_worker_pings_through_a_task_longer_than_the_heartbeat_timeout(
    start_server: StartServer,
) -> None:
    from distribute.worker import run_worker

    server = await start_server(heartbeat_timeout=0.5)
    campaign_id = await server.create_campaign(kernel=SLOW_KERNEL, generator=TWO_DATASETS, static="")
    with trio.fail_after(60):
        summary = await run_worker(server.url, campaign=campaign_id, slots=1, ping_interval=0.1)
    assert (summary.tasks_done, summary.errors) == (2, 0)
    assert summary.reason == "server said bye: complete"


# --------------------------------------------------------------------------- what a connection may pin


async def connect_from(nursery: trio.Nursery, server: LiveServer, local: str) -> WebSocketConnection:
    """A WebSocket to the server from another loopback address (all of 127/8 is this machine)."""
    url = urlsplit(server.ws_url)
    assert url.hostname is not None and url.port is not None
    stream = await trio.open_tcp_stream(url.hostname, url.port, local_address=local)
    return await wrap_client_stream(nursery, stream, url.netloc, url.path)


async def test_a_hello_over_max_hello_bytes_is_closed_as_too_big(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    hello = p.encode(p.Hello(campaign=campaign_id, slots=1, client={"kind": "x" * 2**20}))
    code, reason = await closed_with(live_server.ws_url, hello, hello=False)
    assert (code, reason) == (p.CLOSE_TOO_BIG, f"'hello' of {len(hello)} bytes is over the limit of 4096")
    assert live_server.platform.gateway.sessions == {}
    assert live_server.platform.gateway.addresses.connections == 0


async def test_client_strings_of_a_hello_are_kept_clipped_to_256_characters(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1, client={"kind": "k" * 1500, "host": "h" * 1500}))
        await receive_tasks(ws)
        (session,) = live_server.platform.gateway.sessions.values()
        assert session.hello.client == {"kind": "k" * 256, "host": "h" * 256}
        assert len(session.host) <= 256


async def test_the_65th_connection_of_one_address_is_refused_while_another_address_connects(
    live_server: LiveServer, nursery: trio.Nursery
) -> None:
    """The default per-address cap is 64; 127.0.0.2 is another address and is served alongside."""
    campaign_id = await live_server.create_campaign()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(64):
            ws = await stack.enter_async_context(open_websocket_url(live_server.ws_url))
            await send(ws, p.Hello(campaign=campaign_id, slots=1))
            await receive_tasks(ws)
        refused = await stack.enter_async_context(open_websocket_url(live_server.ws_url))
        assert await closed(refused) == (p.CLOSE_POLICY_VIOLATION, "too many connections from this address (limit 64)")
        other = await connect_from(nursery, live_server, "127.0.0.2")
        await send(other, p.Hello(campaign=campaign_id, slots=1))
        assert len(await receive_tasks(other)) == 1
        assert live_server.platform.gateway.addresses.connections == 65
        await other.aclose()


async def test_the_connection_over_the_servers_cap_is_refused_whatever_its_address(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server = await start_server(max_connections=3)
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as a, open_websocket_url(server.ws_url) as b:
        c = await connect_from(nursery, server, "127.0.0.3")
        for ws in (a, b, c):
            await send(ws, p.Hello(campaign=campaign_id, slots=1))
            await receive_tasks(ws)
        for local in ("127.0.0.1", "127.0.0.4"):
            refused = await connect_from(nursery, server, local)
            assert await closed(refused) == (p.CLOSE_POLICY_VIOLATION, "too many connections to this server (limit 3)")
        await pong(a, 1)
        await c.aclose()
    outcome = await work(server.ws_url, campaign=campaign_id)  # room again once they have gone
    assert outcome.bye == "complete"


async def test_a_client_that_pings_without_reading_its_pongs_is_closed_with_a_bounded_queue(
    start_server: StartServer,
) -> None:
    """The server cannot send (a 12 MiB campaign frame to a client that reads nothing) while the
    client sends 100 pings: at most MAX_PENDING_PONGS pongs wait, then the connection is closed."""
    server = await start_server(max_source_bytes=16 * 2**20)
    campaign_id = await server.create_campaign(static="x" * (12 * 2**20), skip_check="true")  # bulk, not JSON
    url = urlsplit(server.ws_url)
    assert url.hostname is not None and url.port is not None
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((url.hostname, url.port))
    stream = trio.SocketStream(sock)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host=url.netloc, target=url.path)))
    while not any(isinstance(event, AcceptConnection) for event in client.events()):
        client.receive_data(await stream.receive_some())
    gateway = server.platform.gateway
    try:
        await stream.send_all(client.send(BytesMessage(p.encode(p.Hello(campaign=campaign_id, slots=1)))))
        with trio.fail_after(10):
            while not gateway.sessions:
                await trio.sleep(0.01)
        (session,) = gateway.sessions.values()
        pings = b"".join(client.send(BytesMessage(p.encode(p.Ping(n)))) for n in range(100))
        await stream.send_all(pings)
        with trio.fail_after(10):
            while session.close is None:
                assert len(session.pongs) <= MAX_PENDING_PONGS
                await trio.sleep(0.01)
        assert session.campaign is None  # still stuck sending the campaign: no pong could leave
        assert len(session.pongs) == MAX_PENDING_PONGS
        assert (session.close.code, session.close.reason) == (
            p.CLOSE_POLICY_VIOLATION,
            f"{MAX_PENDING_PONGS} pongs waiting: pings must wait for their pongs",
        )
    finally:
        await stream.aclose()
