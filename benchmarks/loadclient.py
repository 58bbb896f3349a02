"""A fast protocol-v1 load generator: many worker connections per process, answering instantly.

`tests/protocol_client.py` (trio-websocket) is the reference client; this one exists to put load on a
server without becoming the bottleneck itself: one `selectors` loop per process, a minimal RFC 6455
client (binary frames, masked with an all-zero key, which the RFC allows and which costs the client
nothing), msgpack in C, no per-task objects. Each `LoadGroup` runs its connections in separate
processes (never in the server's) and drives them through a pipe:

    ("connect", n[, campaign])  open n more connections (and send `hello` unless hello_on_go); reply ("ready", stats)
    ("go",)         send `hello` where not sent yet; workers start answering tasks
    ("stats",)      reply ("stats", stats) and carry on
    ("stop",)       stop answering; reply ("stats", stats); connections stay open
    ("close",)      close every connection and exit

Worker modes: ``batch`` answers every `tasks` frame with one `results` frame; ``single`` uses one slot
and answers with one `result` frame per task (a round trip per task); ``paced`` also holds one slot but
"computes" for `compute_seconds` (±50 %, uniformly) before answering and records the dispatch latency (result sent → next
task received); ``idle`` only says hello and counts the `idle` frames it receives.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import heapq
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import selectors
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgpack

__all__ = ["LoadGroup", "LoadParams", "LoadStats", "merge_stats"]

_ZERO_MASK = b"\x00\x00\x00\x00"
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_HANDSHAKES_AT_ONCE = 64  # connections being opened concurrently per process
_CONNECT_RETRIES = 5  # per 100 connections: a refused connect (accept backlog full) is tried again


@dataclass(frozen=True)
class LoadParams:
    url: str  # ws://127.0.0.1:PORT/ws
    campaign: int | None
    mode: str  # batch | single | paced | idle
    slots: int = 1
    tag: str = ""  # sent as the client's `host`: stored with every result, so runs can be told apart
    compute_seconds: float = 0.0  # paced mode
    hello_on_go: bool = True


@dataclass
class LoadStats:
    connections: int = 0
    failed_connects: int = 0
    tasks: int = 0
    results_sent: int = 0
    frames_in: int = 0
    frames_out: int = 0
    idle_frames: int = 0
    byes: int = 0
    closed: int = 0
    close_codes: dict[int, int] = field(default_factory=dict)
    first_task: float = 0.0  # time.time() of the first tasks frame
    last_task: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


def merge_stats(parts: list[LoadStats]) -> LoadStats:
    total = LoadStats()
    for s in parts:
        total.connections += s.connections
        total.failed_connects += s.failed_connects
        total.tasks += s.tasks
        total.results_sent += s.results_sent
        total.frames_in += s.frames_in
        total.frames_out += s.frames_out
        total.idle_frames += s.idle_frames
        total.byes += s.byes
        total.closed += s.closed
        for code, count in s.close_codes.items():
            total.close_codes[code] = total.close_codes.get(code, 0) + count
        if s.first_task and (not total.first_task or s.first_task < total.first_task):
            total.first_task = s.first_task
        total.last_task = max(total.last_task, s.last_task)
        total.latencies_ms.extend(s.latencies_ms)
    return total


def ws_frame(payload: bytes) -> bytes:
    """One masked binary frame (client to server), with the all-zero masking key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0xFF, n)
    return head + _ZERO_MASK + payload


def _control(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + _ZERO_MASK + payload


class _Conn:
    __slots__ = ("awaiting_since", "hello_sent", "open", "rbuf", "sock", "state", "wbuf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"  # connecting -> handshake -> open -> closed
        self.rbuf = bytearray()
        self.wbuf = b""
        self.hello_sent = False
        self.open = False
        self.awaiting_since = 0.0  # paced mode: when our last result left


class _Loop:
    """One load process: a selectors loop over all its connections and the control pipe."""

    def __init__(self, params: LoadParams, control: multiprocessing.connection.Connection) -> None:
        self.p = params
        self.control = control
        self.sel = selectors.DefaultSelector()
        self.sel.register(control.fileno(), _READ, None)
        parts = urlsplit(params.url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.hello = self._hello(params.campaign)
        self.conns: list[_Conn] = []
        self.to_open = 0
        self.opening = 0
        self.report_pending = False
        self.retries = 0
        self.running = False  # answering tasks
        self.stats = LoadStats()
        self.latencies = array("d")
        self.timers: list[tuple[float, int, _Conn, list[int]]] = []  # paced: (due, seq, conn, task ids)
        self._seq = 0
        self.done = False

    def _hello(self, campaign: int | None) -> bytes:
        client = {"kind": "bench", "host": self.p.tag}
        body = {"t": "hello", "v": 1, "campaign": campaign, "slots": self.p.slots, "client": client, "have": []}
        return ws_frame(msgpack.packb(body))

    # -- control

    def _command(self) -> None:
        message = self.control.recv()
        kind = message[0]
        if kind == "connect":
            if len(message) > 2:
                self.hello = self._hello(message[2])  # a campaign known only now
            self.to_open += message[1]
            self.report_pending = True
            self._open_more()
            self._maybe_ready()
        elif kind == "go":
            self.running = True
            for conn in self.conns:
                if conn.open and not conn.hello_sent:
                    self._send_hello(conn)
        elif kind == "stats":
            self.control.send(("stats", self._snapshot()))
        elif kind == "stop":
            self.running = False
            self.timers.clear()
            self.control.send(("stats", self._snapshot()))
        elif kind == "close":
            self.done = True

    def _snapshot(self) -> LoadStats:
        self.stats.connections = sum(1 for c in self.conns if c.open)
        self.stats.latencies_ms = list(self.latencies)
        return self.stats

    def _maybe_ready(self) -> None:
        if self.report_pending and self.to_open == 0 and self.opening == 0:
            self.report_pending = False
            self.control.send(("ready", self._snapshot()))

    # -- connections

    def _open_more(self) -> None:
        while self.to_open > 0 and self.opening < _HANDSHAKES_AT_ONCE:
            self.to_open -= 1
            self.opening += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Conn(sock)
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):
                self._connect_failed(conn)
                continue
            self.sel.register(sock, _WRITE, conn)

    def _connect_failed(self, conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        conn.state = "closed"
        self.opening -= 1
        if self.retries < _CONNECT_RETRIES * max(1, len(self.conns) // 100):
            self.retries += 1
            self.to_open += 1  # try again with a fresh socket
        else:
            self.stats.failed_connects += 1
        self._open_more()
        self._maybe_ready()

    def _on_connected(self, conn: _Conn) -> None:
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._connect_failed(conn)
            return
        conn.state = "handshake"
        conn.sock.send(self.request)
        self.sel.modify(conn.sock, _READ, conn)

    def _on_handshake(self, conn: _Conn, data: bytes) -> None:
        conn.rbuf += data
        end = conn.rbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        status = bytes(conn.rbuf[: conn.rbuf.find(b"\r\n")])
        del conn.rbuf[: end + 4]
        if b" 101 " not in status:
            self._connect_failed(conn)
            return
        conn.state = "open"
        conn.open = True
        self.conns.append(conn)
        self.opening -= 1
        if not self.p.hello_on_go or self.running:
            self._send_hello(conn)
        if conn.rbuf:
            self._parse(conn)
        self._open_more()
        self._maybe_ready()

    def _send_hello(self, conn: _Conn) -> None:
        conn.hello_sent = True
        self._send(conn, self.hello)

    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.state != "open":
            return
        self.stats.frames_out += 1
        if conn.wbuf:
            conn.wbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._closed(conn)
            return
        if sent < len(data):
            conn.wbuf = data[sent:]
            self.sel.modify(conn.sock, _READ | _WRITE, conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.wbuf)
        except BlockingIOError:
            return
        except OSError:
            self._closed(conn)
            return
        conn.wbuf = conn.wbuf[sent:]
        if not conn.wbuf:
            self.sel.modify(conn.sock, _READ, conn)

    def _closed(self, conn: _Conn, code: int = 1006) -> None:
        if conn.state == "closed":
            return
        if conn.state != "open":
            self._connect_failed(conn)
            return
        conn.state = "closed"
        conn.open = False
        self.stats.closed += 1
        self.stats.close_codes[code] = self.stats.close_codes.get(code, 0) + 1
        with contextlib.suppress(Exception):
            self.sel.unregister(conn.sock)
        conn.sock.close()

    # -- frames

    def _parse(self, conn: _Conn) -> None:
        buf = conn.rbuf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 2:
                self._message(conn, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                with contextlib.suppress(OSError):
                    conn.sock.send(_control(8, payload[:2]))
                self._closed(conn, code)
                return
            elif opcode == 9:
                self._send(conn, _control(0xA, payload))
            if conn.state != "open":
                return
        del buf[:pos]

    def _message(self, conn: _Conn, payload: bytes) -> None:
        self.stats.frames_in += 1
        body = msgpack.unpackb(payload)
        kind = body["t"]
        if kind == "tasks":
            now = time.time()
            tasks = body["tasks"]
            stats = self.stats
            stats.tasks += len(tasks)
            if not stats.first_task:
                stats.first_task = now
            stats.last_task = now
            if not self.running:
                return
            mode = self.p.mode
            if mode == "batch":
                items = [[t[0], t[1]["i"] if type(t[1]) is dict else 1, 0.01] for t in tasks]
                self._send(conn, ws_frame(msgpack.packb({"t": "results", "items": items})))
                stats.results_sent += len(items)
            elif mode == "single":
                for t in tasks:
                    value = t[1]["i"] if type(t[1]) is dict else 1
                    self._send(conn, ws_frame(msgpack.packb({"t": "result", "id": t[0], "value": value, "ms": 0.01})))
                stats.results_sent += len(tasks)
            elif mode == "paced":
                mono = time.monotonic()
                if conn.awaiting_since:
                    self.latencies.append((mono - conn.awaiting_since) * 1000.0)
                    conn.awaiting_since = 0.0
                self._seq += 1
                # Compute times vary (uniformly ±50 %), as real tasks on real machines do: workers
                # that all finish at the same instant would measure a thundering herd instead.
                due = mono + self.p.compute_seconds * random.uniform(0.5, 1.5)
                heapq.heappush(self.timers, (due, self._seq, conn, [t[0] for t in tasks]))
        elif kind == "idle":
            self.stats.idle_frames += 1
        elif kind == "bye":
            self.stats.byes += 1

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, conn, ids = heapq.heappop(self.timers)
            for task in ids:
                self._send(conn, ws_frame(msgpack.packb({"t": "result", "id": task, "value": 1, "ms": 1.0})))
            self.stats.results_sent += len(ids)
            conn.awaiting_since = time.monotonic()

    # -- the loop

    def run(self) -> None:
        while not self.done:
            timeout = 0.5
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            for key, events in self.sel.select(timeout):
                conn = key.data
                if conn is None:
                    self._command()
                    continue
                if conn.state == "connecting":
                    self._on_connected(conn)
                    continue
                if events & _WRITE and conn.wbuf:
                    self._flush(conn)
                if events & _READ:
                    try:
                        data = conn.sock.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._closed(conn)
                        continue
                    if conn.state == "handshake":
                        self._on_handshake(conn, data)
                    else:
                        conn.rbuf += data
                        self._parse(conn)
            if self.timers:
                self._fire_timers()
        linger = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT eating the ephemeral ports
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                conn.sock.close()


def _process_main(params: LoadParams, control: multiprocessing.connection.Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _Loop(params, control).run()


class LoadGroup:
    """`processes` load processes with `params`, driven together; a context manager."""

    def __init__(self, params: LoadParams, processes: int) -> None:
        self.params = params
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_process_main, args=(params, theirs), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def __enter__(self) -> LoadGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gather(self, kind: str, timeout: float) -> list[LoadStats]:
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a load process did not report '{kind}' within {timeout} s")
            got, stats = pipe.recv()
            assert got == kind, got
            out.append(stats)
        return out

    def connect(self, n: int, timeout: float = 300.0, *, campaign: int | None = None) -> LoadStats:
        """Open n more connections, spread over the processes; returns the merged stats once all are up.

        `campaign` overrides the one in the params (for a campaign created after the processes started).
        """
        share, extra = divmod(n, len(self.pipes))
        for i, pipe in enumerate(self.pipes):
            count = share + (1 if i < extra else 0)
            pipe.send(("connect", count) if campaign is None else ("connect", count, campaign))
        return merge_stats(self._gather("ready", timeout))

    def go(self) -> None:
        for pipe in self.pipes:
            pipe.send(("go",))

    def stats(self, timeout: float = 60.0) -> LoadStats:
        """The merged stats so far; the workers carry on."""
        for pipe in self.pipes:
            pipe.send(("stats",))
        return merge_stats(self._gather("stats", timeout))

    def stop(self, timeout: float = 60.0) -> LoadStats:
        for pipe in self.pipes:
            pipe.send(("stop",))
        return merge_stats(self._gather("stats", timeout))

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self.pipes:
            pipe.close()
