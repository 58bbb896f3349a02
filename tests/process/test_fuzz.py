"""Property-based fuzzing of the worker protocol against a live server process.

Hypothesis generates random and mutated frames (more than 10,000 sent per run); each example sends
a batch of them over a real WebSocket to a `distribute serve` process. The server reads a
connection's frames up to the first that breaks the protocol and then closes it, so the frames
written after that one are sent but never parsed. Meanwhile a headless worker computes a whole
campaign on another connection. Afterwards: the server still answers, its log holds no traceback,
and the worker's results are exact.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from distribute import protocol as p
from tests.conftest import SEED_STATIC, ServerProcess, launch_server_process

pytestmark = pytest.mark.sqlite_only  # its server uses SQLite in both runs of the suite

# The server closes a connection at its first frame that breaks the protocol, and nearly every fuzzed
# frame does: so each one goes on a connection of its own, or most would be sent and never read.
EXAMPLES = 260
FRAMES_PER_EXAMPLE = 40  # 10,400 frames, and as many connections, a run
CONCURRENT_CONNECTIONS = 8
# The healthy worker's campaign: 300 datasets of 100 numbers each, one at a time, each answered
# after a 10 ms sleep (Atomics.wait: no CPU taken from the fuzzing). It lasts a few seconds (about
# 7 s on a loaded 2-core machine), well inside the fuzzing (25 to 50 s there).
HEALTHY_DATASETS = 300
TASK_MS = 10
HEALTHY_GENERATOR = f"""(function() {{
  function main() {{
    var datasets = [];
    for (var i = 0; i < {HEALTHY_DATASETS * 100}; i += 100) {{
      datasets.push({{ min: i, max: i + 100 }});
    }}
    return datasets;
  }}
  return {{ main: main }};
}})()"""
HEALTHY_KERNEL = f"""(function() {{
  var divisor;
  var pause = new Int32Array(new SharedArrayBuffer(4));
  function loadStaticDataset(dataset) {{ divisor = JSON.parse(dataset).divisor; }}
  function main(dataset) {{
    Atomics.wait(pause, 0, 0, {TASK_MS});
    var results = [];
    for (var i = dataset.min; i < dataset.max; ++i) {{
      if (i % divisor === 0) results.push(i);
    }}
    return results.length > 0 ? results : null;
  }}
  return {{ main: main, loadStaticDataset: loadStaticDataset }};
}})()"""
HEALTHY_ANSWER = [n for n in range(HEALTHY_DATASETS * 100) if n % 123 == 0]

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
# Fuzzing connections that said hello are handed the healthy worker's tasks (dataset ids 1 to 300
# in the fresh database). The answers below name other ids: were one of them held, the server
# would rightly store its value, and the healthy campaign's results would no longer be exact.
FOREIGN_TASK = 1_000_000
valid = st.sampled_from(
    [
        p.encode(p.Hello(campaign=None, slots=2)),
        p.encode(p.Result(FOREIGN_TASK + 1, [1, 2], 1.0)),
        p.encode(p.Results((p.Result(FOREIGN_TASK + 2, None, 1.0),))),
        p.encode(p.TaskError(FOREIGN_TASK + 3, "boom", "stack", 1.0)),
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


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    launched = launch_server_process(folder, f"sqlite:///{folder / 'fuzz.db'}", "fuzz@example.org")
    yield launched
    launched.process.terminate()
    launched.process.wait(timeout=30)


PROBE = p.encode(p.Ping(424_242))
PROBE_PONG = p.encode(p.Pong(424_242))


@dataclass
class Tally:
    """What the fuzzing sent, and how many frames the server must have read to answer as it did."""

    frames: int = 0
    connections: int = 0
    read_at_least: int = 0


async def send_one(ws_url: str, frame: bytes | str, hello: bytes | None, tally: Tally) -> None:
    """One fuzzed frame on a connection of its own (behind a valid `hello`, if any), then a ping.

    The server answers in order, and after that hello it has no reason of its own to close: so its
    close or the ping's pong proves it read the fuzzed frame.
    """
    read = 0
    try:
        async with open_websocket_url(ws_url) as ws:
            tally.connections += 1
            if hello:
                await ws.send_message(hello)
            await ws.send_message(frame)
            tally.frames += 1
            await ws.send_message(PROBE)
            read = 2 if hello else 1  # if the server closes: the frame was read (or was the first frame)
            while await ws.get_message() != PROBE_PONG:
                pass
            read += 1  # the probe was read too
    except ConnectionClosed:
        pass
    tally.read_at_least += read


async def send_frames(ws_url: str, batch: list[bytes | str], hello: bytes | None, tally: Tally) -> None:
    """Each frame of the batch on its own connection, CONCURRENT_CONNECTIONS at a time."""
    frames = iter(batch)

    async def sender() -> None:
        for frame in frames:
            await send_one(ws_url, frame, hello, tally)

    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENT_CONNECTIONS):
            nursery.start_soon(sender)


def test_random_and_mutated_frames_never_hurt_the_server_or_a_healthy_worker(server_process: ServerProcess) -> None:
    client = httpx.Client(base_url=server_process.url, headers={"Authorization": f"Bearer {server_process.token}"})
    files = {
        "kernel": ("k.js", HEALTHY_KERNEL),
        "generator": ("g.js", HEALTHY_GENERATOR),
        "static_dataset": ("s", SEED_STATIC),
    }
    campaign_id = client.post("/api/campaigns", files=files, data={"task_timeout": "5"}).json()["id"]
    # The fuzzing connections that start with a valid hello ask for a campaign of their own, which
    # never runs out of work (they never answer): the server never has a reason to close them.
    target_files = {**files, "generator": ("g.js", "({ main: function () { return [1, 2, 3, 4, 5, 6, 7, 8]; } })")}
    target_id = client.post("/api/campaigns", files=target_files).json()["id"]
    target_hello = p.encode(p.Hello(campaign=target_id, slots=1))
    # One task at a time, so that the healthy worker computes through the fuzzing.
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
    tally = Tally()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(batch=st.lists(frames, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE), hello=st.booleans())
    def fuzz(batch: list[bytes | str], hello: bool) -> None:
        trio.run(send_frames, ws_url, batch, target_hello if hello else None, tally)

    read_before = client.get("/-/health").json()["frames_received"]
    fuzzing_started = time.time()  # wall clock, as the server's "created" timestamps
    fuzz()
    fuzzing_ended = time.time()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err.decode()
    assert tally.frames >= 10_000 and tally.connections == EXAMPLES * FRAMES_PER_EXAMPLE
    health = client.get("/-/health").json()
    assert health["ok"] is True
    # The server's own count (which also holds the healthy worker's frames) agrees with its answers.
    assert health["frames_received"] - read_before >= tally.read_at_least >= tally.frames
    rows = client.get(f"/api/campaigns/{campaign_id}/results", params={"include_empty": "true"}).json()
    assert len(rows) == HEALTHY_DATASETS
    assert sorted(n for row in rows if row["result"] for n in row["result"]) == HEALTHY_ANSWER
    # The worker's whole campaign ran under fire: its first result and its last were stored while
    # the fuzzing was going on.
    stored = sorted(datetime.fromisoformat(row["created"]).timestamp() for row in rows)
    assert fuzzing_started < stored[0] <= stored[-1] < fuzzing_ended, (
        fuzzing_started,
        stored[0],
        stored[-1],
        fuzzing_ended,
    )
    log = server_process.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert server_process.process.poll() is None
