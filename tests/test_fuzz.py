"""Property-based fuzzing of the worker protocol against a live server process.

Hypothesis generates random and mutated frames (more than 10,000 per run); each example sends a
batch of them over a real WebSocket to a `distribute serve` process. Meanwhile a headless worker
computes a campaign on another connection. Afterwards: the server still answers, its log holds no
traceback, and the worker's results are exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC

EXAMPLES = 250
FRAMES_PER_EXAMPLE = 44  # 11,000 frames a run

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
message_types = st.sampled_from(["hello", "result", "results", "error", "ping", "tasks", "bye", "campaign"]) | st.text(
    max_size=10
)
shaped = st.builds(
    lambda t, extra: msgpack.packb({"t": t, **extra}),
    message_types,
    st.dictionaries(
        st.sampled_from(
            ["id", "value", "ms", "v", "slots", "campaign", "items", "message", "stack", "n", "have", "client"]
        ),
        values,
        max_size=5,
    ),
)
valid = st.sampled_from(
    [
        p.encode(p.Hello(campaign=None, slots=2)),
        p.encode(p.Result(1, [1, 2], 1.0)),
        p.encode(p.Results((p.Result(2, None, 1.0),))),
        p.encode(p.TaskError(3, "boom", "stack", 1.0)),
        p.encode(p.Ping(9)),
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(frame) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            frame[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del frame[position:]
            if not frame:
                frame = bytearray(b"\x80")
        else:
            frame[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


frames = st.binary(max_size=64) | st.builds(msgpack.packb, values) | shaped | mutated() | valid | st.text(max_size=16)


@dataclass
class ServerProcess:
    url: str
    token: str
    log: Path
    process: subprocess.Popen[bytes]


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "distribute", *args], capture_output=True, check=True, timeout=60)
    return done.stdout.decode()


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    database = f"sqlite:///{folder / 'fuzz.db'}"
    token = _cli("user", "create", "fuzz@example.org", "--database", database).split()[-1]
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute", "serve", "--port", "0", "--database", database],
            stdout=subprocess.PIPE,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    first_line = process.stdout.readline().decode()
    assert first_line.startswith("distribute serving on "), first_line
    url = first_line.split()[3].rstrip(",")
    yield ServerProcess(url, token, log, process)
    process.terminate()
    process.wait(timeout=30)


async def send_frames(ws_url: str, batch: list[bytes | str], hello: bool) -> int:
    """Send every frame of the batch, reconnecting whenever the server closed the socket."""
    sent = 0
    while sent < len(batch):
        try:
            async with open_websocket_url(ws_url) as ws:
                if hello:
                    await ws.send_message(p.encode(p.Hello(campaign=None, slots=2)))
                while sent < len(batch):
                    frame = batch[sent]
                    sent += 1
                    await ws.send_message(frame)
                    if ws.closed:
                        break
                await ws.get_message()  # let the server react: a close is fine, a crash is not
        except ConnectionClosed:
            pass
    return sent


def test_random_and_mutated_frames_never_hurt_the_server_or_a_healthy_worker(server_process: ServerProcess) -> None:
    client = httpx.Client(base_url=server_process.url, headers={"Authorization": f"Bearer {server_process.token}"})
    files = {
        "kernel": ("k.js", SEED_KERNEL),
        "generator": ("g.js", SEED_GENERATOR),
        "static_dataset": ("s", SEED_STATIC),
    }
    campaign_id = client.post("/api/campaigns", files=files, data={"task_timeout": "5"}).json()["id"]
    # The healthy worker is slowed down to one task at a time so that it runs during the fuzzing.
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distribute",
            "worker",
            "--server",
            server_process.url,
            "--campaign",
            str(campaign_id),
            "--slots",
            "1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ws_url = server_process.url.replace("http://", "ws://") + "/ws"
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(batch=st.lists(frames, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE), hello=st.booleans())
    def fuzz(batch: list[bytes | str], hello: bool) -> None:
        nonlocal sent
        sent += trio.run(send_frames, ws_url, batch, hello)

    fuzz()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err.decode()
    assert sent >= 10_000
    assert client.get("/-/health").json()["ok"] is True
    rows = client.get(f"/api/campaigns/{campaign_id}/results").json()
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER
    log = server_process.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert server_process.process.poll() is None
