"""The worker daemon's pure parts and its supervision, with explicit random numbers and a mock clock.

No real time passes: `autojump_clock` jumps over every backoff wait, and the waits are read off the
clock. The live behaviour (real server, real processes) is in tests/process/test_worker_daemon.py.
"""

from __future__ import annotations

import io
import itertools
import re

import pytest
import trio
from rich.console import Console

from distribute.daemon import (
    Backoff,
    PlainDisplay,
    Rate,
    RichDisplay,
    Slot,
    choose_display,
    default_processes,
    supervise,
)
from distribute.worker import WorkerConnectionError, WorkerSummary, WorkerView


def test_backoff_doubles_from_the_base_up_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    highest = [backoff.next_delay(lambda: 0.999999) for _ in range(9)]
    assert [round(d) for d in highest] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_jitter_spreads_a_wait_over_the_whole_window() -> None:
    samples = iter([0.0, 0.5])
    backoff = Backoff(base=1.0, cap=60.0, failures=3)  # the window is [0, 8]
    assert backoff.next_delay(lambda: next(samples)) == 0.0
    assert backoff.next_delay(lambda: next(samples)) == 8.0  # the window doubled to [0, 16]


def test_backoff_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    for _ in range(10):
        backoff.next_delay(lambda: 0.5)
    backoff.reset()
    assert backoff.next_delay(lambda: 0.5) == 0.5


def test_backoff_never_overflows_after_many_failures() -> None:
    backoff = Backoff(base=1.0, cap=60.0, failures=10_000)
    assert backoff.next_delay(lambda: 0.5) == 30.0


def test_rate_is_tasks_per_second_over_the_window() -> None:
    rate = Rate(window=10.0)
    assert rate.sample(0.0, 0) == 0.0
    assert rate.sample(2.0, 10) == 5.0
    for t in range(3, 30):
        rate.sample(float(t), 10)  # nothing more done: the rate falls to 0 once the window passes
    assert rate.sample(30.0, 10) == 0.0


def test_the_default_number_of_processes_is_the_cores_this_process_may_use() -> None:
    import os

    assert default_processes() == len(os.sched_getaffinity(0))


class Script:
    """A stand-in for one connection per call: fails, or computes `done` tasks and ends with a reason."""

    def __init__(self, *steps: str | int) -> None:
        self.steps = list(steps)
        self.started: list[float] = []

    async def __call__(self, slot: Slot) -> WorkerSummary:
        self.started.append(trio.current_time())
        step = self.steps.pop(0) if self.steps else "server said bye: no work"
        if step == "down":
            raise WorkerConnectionError("cannot connect")
        if step == "crash":
            raise RuntimeError("a bug")
        if isinstance(step, int):
            slot.view.done += step
            return WorkerSummary(step, 0, (1,), "server said bye: complete")
        return WorkerSummary(0, 0, (), step)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


async def test_waiting_reconnects_with_growing_backoff_while_the_server_is_down(autojump_clock: trio.abc.Clock) -> None:
    script, stop = Script("down", "down", "down", "down", 5), trio.Event()

    async def stop_after_work() -> None:
        while slot.view.done < 5:
            await trio.sleep(0.01)
        stop.set()

    slot = Slot(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_after_work)
        await supervise(slot, script, wait=True, stop=stop, backoff=Backoff(1.0, 60.0), uniform=lambda: 0.5)
    assert gaps(script.started)[:4] == [0.5, 1.0, 2.0, 4.0]
    assert slot.restarts == 4


async def test_a_healthy_session_resets_the_backoff(autojump_clock: trio.abc.Clock) -> None:
    script, stop = Script("down", "down", "down", 3, "down"), trio.Event()
    slot = Slot(1)

    async def stop_at_the_sixth_connection() -> None:
        while len(script.started) < 6:
            await trio.sleep(0.01)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_at_the_sixth_connection)
        await supervise(slot, script, wait=True, stop=stop, backoff=Backoff(1.0, 60.0), uniform=lambda: 0.5)
    # 3 failures (0.5, 1, 2), a session that computed 3 tasks: reset, so 0.5 again, then 1.
    assert gaps(script.started)[:5] == [0.5, 1.0, 2.0, 0.5, 1.0]


async def test_waiting_keeps_polling_when_the_server_has_no_work_up_to_the_cap(autojump_clock: trio.abc.Clock) -> None:
    script, stop = Script(*["server said bye: no work"] * 12), trio.Event()

    async def stop_later() -> None:
        await trio.sleep(1000)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_later)
        await supervise(Slot(1), script, wait=True, stop=stop, backoff=Backoff(1.0, 8.0), uniform=lambda: 0.999999)
    assert max(gaps(script.started)) == pytest.approx(8.0, abs=1e-3)
    assert len(script.started) > 12


async def test_a_crashed_session_is_restarted_and_counted(autojump_clock: trio.abc.Clock) -> None:
    script = Script("crash", 2)
    slot = Slot(1)
    reasons = await supervise(slot, script, wait=False, stop=trio.Event(), backoff=Backoff(1.0, 60.0))
    assert reasons == ["crashed: RuntimeError: a bug", "server said bye: complete"]
    assert slot.restarts == 1 and slot.view.done == 2


async def test_without_wait_a_server_that_cannot_be_reached_at_all_is_an_error_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = Script("down", 5)
    with pytest.raises(WorkerConnectionError):
        await supervise(Slot(1), script, wait=False, stop=trio.Event(), backoff=Backoff(1.0, 60.0))
    assert len(script.started) == 1


async def test_without_wait_a_session_ends_when_the_server_says_bye(autojump_clock: trio.abc.Clock) -> None:
    script = Script(4, 4)
    reasons = await supervise(Slot(1), script, wait=False, stop=trio.Event(), backoff=Backoff(1.0, 60.0))
    assert reasons == ["server said bye: complete"] and len(script.started) == 1


async def test_a_stop_during_a_backoff_wait_ends_it_at_once(autojump_clock: trio.abc.Clock) -> None:
    script, stop = Script("down", "down", "down", "down", "down", "down", "down", "down"), trio.Event()

    async def stop_soon() -> None:
        await trio.sleep(3.0)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_soon)
        await supervise(Slot(1), script, wait=True, stop=stop, backoff=Backoff(1.0, 60.0), uniform=lambda: 0.999999)
        ended = trio.current_time()
    assert ended == pytest.approx(3.0, abs=1e-3)


def two_slots() -> list[Slot]:
    return [
        Slot(1, WorkerView(status="computing", campaign="3 Multiples of 123", done=40, errors=1)),
        Slot(2, WorkerView(status="retrying in 4 s: cannot connect", done=0)),
    ]


def test_on_a_terminal_the_display_is_a_live_table() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    display = choose_display(console, quiet=False)
    assert isinstance(display, RichDisplay)
    slots = two_slots()
    display.render(slots, 0.0)
    slots[0].view.done = 60
    display.render(slots, 2.0)
    display.close()
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal control sequences
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "3 Multiples of 123" in plain and "retrying in 4 s" in plain
    assert re.search(r"│\s*1\s*│\s*computing\s*│\s*3 Multiples of 123\s*│\s*60\s*│\s*1\s*│\s*10\.0\s*│", plain)


def test_off_a_terminal_the_display_is_plain_log_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    display = choose_display(console, quiet=False)
    assert isinstance(display, PlainDisplay)
    display.every = 10.0
    slots = two_slots()
    display.render(slots, 0.0)
    slots[0].view.done = 140
    display.render(slots, 20.0)
    display.render(slots, 21.0)  # nothing changed: no new line
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "worker 1: computing (campaign 3 Multiples of 123)",
        "worker 2: retrying in 4 s: cannot connect",
        "worker 1: 140 tasks, 1 errors, 5.0 tasks/s",
    ]


def test_quiet_means_no_display() -> None:
    assert choose_display(Console(file=io.StringIO(), force_terminal=True), quiet=True) is None


async def test_waiting_on_one_campaign_ends_when_it_is_complete(autojump_clock: trio.abc.Clock) -> None:
    script = Script("server said bye: no work", 3)
    reasons = await supervise(
        Slot(1),
        script,
        wait=True,
        stop=trio.Event(),
        backoff=Backoff(1.0, 60.0),
        last=lambda reason: reason.endswith("bye: complete"),
    )
    assert reasons == ["server said bye: no work", "server said bye: complete"]
