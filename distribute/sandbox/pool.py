"""The pool of sandbox children, and a job's lease on one of them.

Untrusted JavaScript never runs in this process. Each job (one generator run, one kernel, one syntax
check) holds a `Lease` on a child process (`distribute.sandbox.process`) borrowed from a
`SandboxPool`. A healthy child goes back to the pool after a job (a fresh `MiniRacer()` per job costs
a few ms, a fresh process ~0.3 s); one that crashed, timed out or grew too much is killed and a fresh
one started for the next job.

A pool is opened with ``async with open_sandbox_pool() as pool:`` and kills its idle children when
the block exits. While the block runs, the pool is also the *current* pool of that context (a
`contextvars.ContextVar`, which Trio copies into every task started below it): the platform opens one
around its services and its web server, so request handlers and services reach it without it being
threaded through every call. A job started where no pool is open gets a pool of its own for just
that job.

A pool keeps at most `PoolLimits.max_children` children alive (idle or leased); a job that finds them
all taken waits its turn. Long jobs (a lazy generator holds its child until it is exhausted) may take
all but a quarter of them (at least one), so upload checks and comparators always get through. A task
that already holds a child is never made to wait for another (the verifier loads one comparator per
campaign of a round, and waiting for itself would never end): only such nested leases go over the cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import SandboxError
from .process import CHILD_MODULE, REPLY_BYTES, ChildDied, HardTimeout, NoteHandler, SandboxProcess

__all__ = [
    "GRACE",
    "ChildDied",
    "HardTimeout",
    "Lease",
    "PoolLimits",
    "SandboxPool",
    "current_pool",
    "lease",
    "open_sandbox_pool",
]

GRACE = 2.0  # beyond mini-racer's own timeout before the parent kills a silent child


@dataclass(frozen=True)
class PoolLimits:
    max_idle: int = 2  # warm children kept for the next job
    max_jobs_per_child: int = 500  # recycle long-lived children: Python's heap in the child only grows
    max_children: int = 8  # children alive at once (idle or leased); more jobs wait their turn
    jitless: bool = False  # V8 without its JIT compilers (no WebAssembly then)
    module: str = CHILD_MODULE  # what the children run (tests start stand-ins through the same path)

    @property
    def max_long(self) -> int:
        """Children that long jobs (lazy generators) may hold at once: the rest is kept for short jobs."""
        return max(1, self.max_children - max(1, self.max_children // 4))


class SandboxPool:
    """Warm sandbox children for the jobs of one `open_sandbox_pool` block."""

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self._idle: list[SandboxProcess] = []
        self._open = True
        self.live = 0  # children alive or starting: idle, leased (slots held by leases), starting
        self._long = 0  # of them, held by long jobs
        self._holders: dict[trio.lowlevel.Task, int] = {}  # slots held, by task
        self._turn = trio.lowlevel.ParkingLot()

    async def acquire(self, long: bool = False) -> SandboxProcess:
        """A warm child, or a freshly started one, once the limits allow (SandboxError if none can start).

        The slot it takes is the caller's until `release` or `discard`.
        """
        task = trio.lowlevel.current_task()
        while True:
            if not self._open:
                raise SandboxError("the JavaScript sandbox is shut down")
            nested = self._holders.get(task, 0) > 0
            if nested or not long or self._long < self.limits.max_long:
                if self._idle:
                    child = self._idle.pop()
                    if not child.alive:
                        await child.kill()
                        self.live -= 1
                        continue
                    break
                if nested or self.live < self.limits.max_children:
                    self.live += 1
                    try:
                        child = await SandboxProcess.start(self.limits.module, jitless=self.limits.jitless)
                    except BaseException:
                        self.live -= 1
                        self._turn.unpark_all()
                        raise
                    break
            await self._turn.park()
        self._holders[task] = self._holders.get(task, 0) + 1
        self._long += long
        child.jobs += 1
        return child

    def _give_back(self, task: trio.lowlevel.Task, long: bool) -> None:
        held = self._holders.get(task, 0) - 1
        if held > 0:
            self._holders[task] = held
        else:
            self._holders.pop(task, None)
        self._long -= long

    async def release(self, child: SandboxProcess, task: trio.lowlevel.Task, long: bool = False) -> None:
        """Take a child back after its job: kept warm if healthy and there is room, killed otherwise."""
        self._give_back(task, long)
        limits = self.limits
        if child.alive and self._open and child.jobs < limits.max_jobs_per_child and len(self._idle) < limits.max_idle:
            self._idle.append(child)
        else:
            await child.kill()
            self.live -= 1
        self._turn.unpark_all()

    async def discard(self, child: SandboxProcess, task: trio.lowlevel.Task, long: bool = False) -> None:
        """Kill a leased child (its isolate is in an unknown state) and free its slot."""
        self._give_back(task, long)
        await child.kill()
        self.live -= 1
        self._turn.unpark_all()

    async def aclose(self) -> None:
        """Kill the idle children; children still leased are killed when they come back."""
        self._open = False
        while self._idle:
            await self._idle.pop().kill()
            self.live -= 1
        self._turn.unpark_all()


_CURRENT: ContextVar[SandboxPool | None] = ContextVar("distribute_sandbox_pool", default=None)


def current_pool() -> SandboxPool | None:
    """The pool of the innermost `open_sandbox_pool` block around this task, if any."""
    return _CURRENT.get()


@asynccontextmanager
async def open_sandbox_pool(limits: PoolLimits | None = None) -> AsyncIterator[SandboxPool]:
    """A pool of sandbox children, current in this context until the block exits, then closed."""
    pool = SandboxPool(limits or PoolLimits())
    token = _CURRENT.set(pool)
    try:
        yield pool
    finally:
        _CURRENT.reset(token)
        await pool.aclose()


class Lease:
    """A job's hold on one child: returns it to the pool when healthy, kills it otherwise.

    `long`: the job may hold its child for a long time (a lazy generator); see the pool's limits.
    """

    def __init__(self, pool: SandboxPool, long: bool = False) -> None:
        self.pool = pool
        self.long = long
        self._child: SandboxProcess | None = None
        self._task: trio.lowlevel.Task | None = None

    async def call(
        self,
        request: dict[str, Any],
        timeout: float,
        max_reply: int = REPLY_BYTES,
        on_note: NoteHandler | None = None,
        max_note_bytes: int = 0,
    ) -> dict[str, Any]:
        """Send one request to the job's child (started or replaced if needed); wall clock timeout + GRACE.

        Raises HardTimeout (the child was killed) or ChildDied (also for a reply over `max_reply` bytes,
        or a note `SandboxProcess.call` refuses); the next call starts a fresh child.
        """
        if self._child is None or not self._child.alive:
            await self.drop()
            self._child = await self.pool.acquire(self.long)
            self._task = trio.lowlevel.current_task()
        return await self._child.call(
            request, wall=timeout + GRACE, max_reply=max_reply, on_note=on_note, max_note_bytes=max_note_bytes
        )

    async def drop(self) -> None:
        """Kill the job's child (its isolate is in an unknown state, or it broke the protocol)."""
        child, self._child = self._child, None
        if child is not None and self._task is not None:
            with trio.CancelScope(shield=True):
                await self.pool.discard(child, self._task, self.long)

    async def release(self) -> None:
        """End the job in the child (frees its isolate now) and hand the child back."""
        child, self._child = self._child, None
        if child is None or self._task is None:
            return
        with trio.CancelScope(shield=True):
            if child.alive:
                with suppress(ChildDied):
                    if (await child.call({"op": "end"}, wall=5)).get("recycle"):
                        child.broken = True  # it grew (V8 keeps pages of big isolates): start afresh
            await self.pool.release(child, self._task, self.long)


@asynccontextmanager
async def lease(pool: SandboxPool | None = None, *, long: bool = False) -> AsyncIterator[Lease]:
    """A lease for one job on `pool`, else on the current pool, else on a pool of its own for this job."""
    if pool is None:
        pool = current_pool()
    if pool is None:
        async with open_sandbox_pool() as own, lease(own, long=long) as held:
            yield held
        return
    held = Lease(pool, long)
    try:
        yield held
    finally:
        await held.release()
