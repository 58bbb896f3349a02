"""The volunteer's worker daemon (`distribute worker`): N supervised sessions, waiting, a display, a clean stop.

Why sessions in one process rather than N worker processes: the JavaScript never runs in a worker's
Python process. Each session loads its campaign's kernel into a sandbox child of its own (a separate
OS process, `distribute.sandbox`), so N sessions compute on N cores at once, while this process only
moves frames (a fraction of a millisecond per task). One process shares the sandbox pool, the worker
identity (replicas of a dataset never go to two sessions of one machine), the task budget, the
display and the signal handling; a fatal V8 error kills only the child of that one session. A session that
fails (a connection lost, an unexpected error) is restarted by its supervisor with backoff.

With `wait`, a session also reconnects when the server is unreachable, restarts or has no work, with
exponential backoff and full jitter (`Backoff`, pure and tested with explicit random numbers); a
session that computed something resets it. SIGTERM or SIGINT sets `stop`: every session hands its
unanswered tasks back to the server (the `release` frame) and closes, and the daemon returns.

Display: a table (rich) when the console is a terminal, plain log lines otherwise.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .errors import DistributeError, ValidationError
from .sandbox.pool import PoolLimits, open_sandbox_pool
from .worker import TaskBudget, WorkerConnectionError, WorkerSummary, WorkerView, run_worker

__all__ = [
    "Backoff",
    "DaemonOptions",
    "DaemonSummary",
    "PlainDisplay",
    "Rate",
    "RichDisplay",
    "choose_display",
    "default_processes",
    "run_daemon",
    "supervise",
]

GIVE_UP_AFTER = 5  # failures in a row after which a session without `wait` stops retrying


def default_processes() -> int:
    """The cores this process may run on (its affinity), at least 1."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return max(1, count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th wait in a row is uniform in [0, min(cap, base·2ⁿ)].

    Full jitter spreads the volunteers of a restarted server over the whole window instead of
    having them all knock at once. `reset` after a healthy session.
    """

    base: float = 1.0
    cap: float = 60.0
    failures: int = 0

    def next_delay(self, uniform: Callable[[], float]) -> float:
        """The next wait, in seconds; `uniform()` returns a number in [0, 1)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return uniform() * ceiling

    def reset(self) -> None:
        self.failures = 0


class Rate:
    """Tasks per second over the last `window` seconds, from samples of a running count."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, done: int) -> float:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, before = samples[0]
        return (done - before) / (now - then) if now > then else 0.0


@dataclass
class Slot:
    """One supervised session as the display sees it."""

    number: int
    view: WorkerView = field(default_factory=WorkerView)
    restarts: int = 0
    rate: Rate = field(default_factory=Rate)


class Display(Protocol):
    def render(self, slots: list[Slot], now: float) -> None: ...
    def close(self) -> None: ...


class PlainDisplay:
    """Log lines (for a pipe, a file, journald): a line when the state of a session changes, and its
    progress at most every `every` seconds while it computes."""

    def __init__(self, stream: IO[str], every: float = 30.0) -> None:
        self.stream = stream
        self.every = every
        self._shown: dict[int, tuple[str, str]] = {}
        self._progress: dict[int, tuple[float, int]] = {}

    def render(self, slots: list[Slot], now: float) -> None:
        for slot in slots:
            view, rate = slot.view, slot.rate.sample(now, slot.view.done)
            if self._shown.get(slot.number) != (view.status, view.campaign):
                self._shown[slot.number] = (view.status, view.campaign)
                where = f" (campaign {view.campaign})" if view.campaign and view.status == "computing" else ""
                self._line(f"worker {slot.number}: {view.status}{where}")
            last_time, last_done = self._progress.get(slot.number, (now, 0))
            if view.done != last_done and now - last_time >= self.every:
                self._progress[slot.number] = (now, view.done)
                self._line(f"worker {slot.number}: {view.done} tasks, {view.errors} errors, {rate:.1f} tasks/s")
            elif slot.number not in self._progress:
                self._progress[slot.number] = (now, view.done)

    def _line(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichDisplay:
    """A live table on a terminal: per session its state, campaign, tasks, errors and rate."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, auto_refresh=False, transient=False)  # refreshed from Trio
        self.live.start()

    def render(self, slots: list[Slot], now: float) -> None:
        table = Table(title="distribute worker", title_justify="left", expand=False)
        for name, justify in (("#", "right"), ("state", "left"), ("campaign", "left")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for name in ("tasks", "errors", "tasks/s", "restarts"):
            table.add_column(name, justify="right")
        total_done = total_errors = 0
        total_rate = 0.0
        for slot in slots:
            view, rate = slot.view, slot.rate.sample(now, slot.view.done)
            total_done, total_errors, total_rate = total_done + view.done, total_errors + view.errors, total_rate + rate
            table.add_row(
                str(slot.number),
                view.status,
                view.campaign or "-",
                str(view.done),
                str(view.errors),
                f"{rate:.1f}",
                str(slot.restarts),
            )
        table.add_row("", "[bold]all[/]", "", f"[bold]{total_done}[/]", str(total_errors), f"{total_rate:.1f}", "")
        self.live.update(table, refresh=True)

    def close(self) -> None:
        self.live.stop()


def choose_display(console: Console, quiet: bool) -> Display | None:
    """The table when `console` is a terminal, plain lines otherwise, nothing when quiet."""
    if quiet:
        return None
    if console.is_terminal:
        return RichDisplay(console)
    return PlainDisplay(console.file)


@dataclass(frozen=True)
class DaemonOptions:
    server: str
    campaign: int | None = None
    processes: int = 1
    wait: bool = False
    slots: int = 2
    max_tasks: int | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 60.0


@dataclass(frozen=True)
class DaemonSummary:
    tasks_done: int
    errors: int
    reason: str


Connect = Callable[[Slot], Awaitable[WorkerSummary]]


async def supervise(
    slot: Slot,
    connect: Connect,
    *,
    wait: bool,
    stop: trio.Event,
    backoff: Backoff,
    uniform: Callable[[], float] = random.random,
    finished: Callable[[], bool] = lambda: False,
    last: Callable[[str], bool] = lambda reason: False,
) -> list[str]:
    """Run one session again and again as the options say; returns why each run ended.

    Without `wait`, it ends once a session ends normally (the server said bye), and a failure is
    retried with backoff (GIVE_UP_AFTER in a row, then it is raised; a server never reached: at once).
    With `wait`, every end is followed by a backoff wait and a new connection, until `stop` (or an end
    for which `last(reason)` is true: the one campaign it serves is complete).
    """
    reasons: list[str] = []
    connected_once = False
    while not stop.is_set() and not finished():
        before = slot.view.done
        try:
            summary = await connect(slot)
        except ValidationError:
            raise  # a malformed server URL: no retry will mend it
        except (WorkerConnectionError, OSError, DistributeError) as exc:
            failure: BaseException | None = exc
            reasons.append(str(exc))
        except Exception as exc:  # a crash in this one session: the others go on, it is restarted
            failure = exc
            reasons.append(f"crashed: {type(exc).__name__}: {exc}")
        else:
            failure = None
            connected_once = True
            reasons.append(summary.reason)
        if stop.is_set() or finished():
            break
        if failure is None and (not wait or last(summary.reason)):
            break
        unreachable = isinstance(failure, WorkerConnectionError) and not connected_once
        if failure is not None and not wait and (unreachable or backoff.failures + 1 >= GIVE_UP_AFTER):
            raise failure
        if slot.view.done > before:
            backoff.reset()  # a healthy session: the next wait is short again
        delay = backoff.next_delay(uniform)
        slot.restarts += failure is not None
        slot.view.status = f"retrying in {delay:.0f} s: {reasons[-1]}"[:160]
        with trio.move_on_after(delay):
            await stop.wait()
    return reasons


async def run_daemon(
    options: DaemonOptions,
    *,
    display: Display | None = None,
    stop: trio.Event | None = None,
    signals: bool = False,
    uniform: Callable[[], float] = random.random,
) -> DaemonSummary:
    """Run `options.processes` supervised sessions until they end, or until `stop` (or a signal)."""
    if options.processes < 1:
        raise DistributeError("--processes must be at least 1")
    stop = stop or trio.Event()
    slots = [Slot(number) for number in range(1, options.processes + 1)]
    budget = TaskBudget(options.max_tasks) if options.max_tasks is not None else None
    if budget is not None and budget.total <= 0:
        return DaemonSummary(0, 0, "no tasks requested")
    ended: list[str] = []
    limits = PoolLimits(max_children=options.processes + 1, max_idle=options.processes)
    async with open_sandbox_pool(limits) as pool:

        async def connect(slot: Slot) -> WorkerSummary:
            return await run_worker(
                options.server,
                campaign=options.campaign,
                slots=options.slots,
                view=slot.view,
                budget=budget,
                stop=stop,
                sandbox=pool,
            )

        async def one(slot: Slot) -> None:
            backoff = Backoff(options.backoff_base, options.backoff_cap)
            finished = (lambda: budget.left <= 0) if budget is not None else (lambda: False)
            reasons = await supervise(
                slot,
                connect,
                wait=options.wait,
                stop=stop,
                backoff=backoff,
                uniform=uniform,
                finished=finished,
                last=lambda reason: options.campaign is not None and reason.endswith("bye: complete"),
            )
            slot.view.status = "stopped" if stop.is_set() else "done"
            ended.extend(reasons[-1:])

        try:
            async with trio.open_nursery() as nursery:
                if signals:
                    nursery.start_soon(_stop_on_signal, stop)
                if display is not None:
                    nursery.start_soon(_render, display, slots)
                async with trio.open_nursery() as sessions:
                    for slot in slots:
                        sessions.start_soon(one, slot)
                nursery.cancel_scope.cancel()
        finally:
            if display is not None:
                display.render(slots, trio.current_time())
                display.close()
    done, errors = sum(s.view.done for s in slots), sum(s.view.errors for s in slots)
    if stop.is_set():
        reason = "stopped"
    elif budget is not None and budget.left <= 0:
        reason = f"reached {budget.total} tasks"
    else:
        reason = "; ".join(dict.fromkeys(ended)) or "done"
    return DaemonSummary(done, errors, reason)


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async for _ in received:
            stop.set()  # the sessions hand back their tasks and close; a second signal ends it at once
            return


async def _render(display: Display, slots: list[Slot]) -> None:
    while True:
        display.render(slots, trio.current_time())
        await trio.sleep(0.5)
