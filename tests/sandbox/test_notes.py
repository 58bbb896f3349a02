"""A running kernel's ctx.progress and ctx.checkpoint reach the caller while it runs, checked on both sides."""

from __future__ import annotations

import json

import msgpack
import pytest
import trio

from distribute.errors import KernelError
from distribute.sandbox.kernels import open_kernel
from distribute.sandbox.pool import PoolLimits, open_sandbox_pool
from distribute.sandbox.process import check_note

LIMITS = {"heap_mib": 128, "max_result_bytes": 1 << 20}
NOTES = {"checkpoint_max_bytes": 4096, "checkpoint_interval": 0.01, "progress": True}

# Busy for two seconds, reporting how far it is and checkpointing the milliseconds gone, all the time.
TWO_SECONDS = """({ main: function (d, ctx) {
  var t = Date.now(), ms = 0;
  while ((ms = Date.now() - t) < 2000) { ctx.progress(ms / 2000); ctx.checkpoint({ ms: ms }); }
  return ms;
} })"""

# Checkpoints `state` (an expression) once, then keeps busy for a second so that the child reads it.
ONE_STATE = """({ main: function (d, ctx) {
  ctx.checkpoint(STATE);
  var t = Date.now(); while (Date.now() - t < 1000) {}
  return 1;
} })"""


class Notes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float | bytes]] = []

    async def __call__(self, kind: str, value: float | bytes) -> None:
        self.seen.append((kind, value))

    def of(self, kind: str) -> list[float | bytes]:
        return [value for seen, value in self.seen if seen == kind]


async def test_a_kernels_progress_and_checkpoints_reach_the_caller_while_it_runs() -> None:
    notes = Notes()
    async with open_kernel(TWO_SECONDS, "", **LIMITS, **NOTES) as run:
        value, _ = await run.run(msgpack.packb(0), 60, None, notes)
    fractions = notes.of("progress")
    steps = [msgpack.unpackb(state)["ms"] for state in notes.of("checkpoint")]
    # Read while it ran: several distinct states, each short of the end (after it, only the last one remains).
    assert len(set(fractions)) >= 2 and fractions == sorted(fractions) and max(fractions) < 1
    assert len(set(steps)) >= 2 and steps == sorted(steps) and max(steps) < msgpack.unpackb(value)


async def test_a_checkpoint_arrives_as_the_msgpack_of_its_plain_data() -> None:
    state = {
        "text": "héllo, 世界 😀",
        "ints": [0, 127, 128, 255, 65535, 65536, 2**32, 2**40, -1, -32, -33, -129, -(2**31), -(2**40)],
        "floats": [1.5, -0.25, 1e300],
        "nested": {"empty": {}, "list": [], "flag": True, "none": None, "long": "x" * 300},
    }
    source = ONE_STATE.replace("STATE", f"Object.assign({json.dumps(state)}, {{typed: new Int8Array([1, -2])}})")
    notes = Notes()
    async with open_kernel(source, "", **LIMITS, **NOTES) as run:
        await run.run(msgpack.packb(0), 30, None, notes)
    (sent,) = notes.of("checkpoint")
    assert isinstance(sent, bytes)
    assert msgpack.unpackb(sent) == {**state, "typed": [1, -2]}


async def test_an_oversized_checkpoint_is_refused_inside_the_kernel_with_a_range_error() -> None:
    source = """({ main: function (d, ctx) {
      try { ctx.checkpoint({ big: "x".repeat(5000) }); } catch (e) { return String(e); }
      return "accepted";
    } })"""
    notes = Notes()
    async with open_kernel(source, "", **LIMITS, **NOTES) as run:
        value, _ = await run.run(msgpack.packb(0), 30, None, notes)
    assert (
        msgpack.unpackb(value)
        == "RangeError: ctx.checkpoint refused the state: it is too large: it is over the limit of 4,096 bytes"
    )
    assert notes.seen == []


async def test_a_checkpoint_nested_deeper_than_a_result_may_be_is_refused_inside_the_kernel() -> None:
    source = """({ main: function (d, ctx) {
      var state = [];
      for (var i = 0; i < 100; i++) state = [state];
      try { ctx.checkpoint(state); } catch (e) { return String(e); }
      return "accepted";
    } })"""
    async with open_kernel(source, "", **LIMITS, **NOTES) as run:
        value, _ = await run.run(msgpack.packb(0), 30, None, Notes())
    assert "nested deeper than 100 levels" in msgpack.unpackb(value)


async def test_a_kernel_without_ctx_runs_as_before_with_notes_asked_for() -> None:
    source = "({ main: function (d) { return d * 2; } })"
    async with open_kernel(source, "", **LIMITS, **NOTES) as run:
        value, _ = await run.run(msgpack.packb(21), 30, None, Notes())
    assert msgpack.unpackb(value) == 42


async def test_the_kernels_owner_code_cannot_get_a_mailbox_of_its_own() -> None:
    source = "({ main: function (d) { return __d.mailbox(100) === null; } })"
    async with open_kernel(source, "", **LIMITS, **NOTES) as run:
        value, _ = await run.run(msgpack.packb(0), 30, None, Notes())
    assert msgpack.unpackb(value) is True


@pytest.mark.parametrize("lie", ["big-checkpoint", "garbage-checkpoint", "bad-progress", "odd-note"])
async def test_a_child_that_sends_a_bad_note_is_killed_and_the_note_dropped(lie: str) -> None:
    notes = Notes()
    async with open_sandbox_pool(PoolLimits(module="tests.sandbox.liar_child")) as pool:
        with trio.fail_after(30), pytest.raises(KernelError, match=r"crashed .* it sent a .* and was killed"):
            async with open_kernel(lie, "", **LIMITS, **NOTES, pool=pool) as run:
                await run.run(msgpack.packb(0), 10, None, notes)
        assert pool.live == 0
    assert notes.seen == []


async def test_a_child_that_sends_notes_nobody_asked_for_is_killed() -> None:
    async with open_sandbox_pool(PoolLimits(module="tests.sandbox.liar_child")) as pool:
        with trio.fail_after(30), pytest.raises(KernelError, match="a note nobody asked for"):
            async with open_kernel("bad-progress", "", **LIMITS, pool=pool) as run:
                await run.run(msgpack.packb(0), 10)


def test_check_note_refuses_a_checkpoint_that_is_not_plain_data() -> None:
    with pytest.raises(ValueError, match="not plain data"):
        check_note({"note": "checkpoint", "state": msgpack.packb(msgpack.ExtType(1, b"x"))}, 100)


def test_check_note_refuses_a_note_with_extra_keys() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        check_note({"note": "progress", "f": 0.5, "task": 7}, 100)
