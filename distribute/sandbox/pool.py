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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import SandboxError
from .process import ChildDied, HardTimeout, SandboxProcess

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


class SandboxPool:
    """Warm sandbox children for the jobs of one `open_sandbox_pool` block."""

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self._idle: list[SandboxProcess] = []
        self._open = True

    async def acquire(self) -> SandboxProcess:
        """A warm child, or a freshly started one (SandboxError if none can start)."""
        if not self._open:
            raise SandboxError("the JavaScript sandbox is shut down")
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                child.jobs += 1
                return child
            await child.kill()
        child = await SandboxProcess.start()
        child.jobs += 1
        return child

    async def release(self, child: SandboxProcess) -> None:
        """Take a child back after its job: kept warm if healthy and there is room, killed otherwise."""
        limits = self.limits
        if child.alive and self._open and child.jobs < limits.max_jobs_per_child and len(self._idle) < limits.max_idle:
            self._idle.append(child)
        else:
            await child.kill()

    async def aclose(self) -> None:
        """Kill the idle children; children still leased are killed when they come back."""
        self._open = False
        while self._idle:
            await self._idle.pop().kill()


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
    """A job's hold on one child: returns it to the pool when healthy, kills it otherwise."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool
        self._child: SandboxProcess | None = None

    async def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request to the job's child (started or replaced if needed); wall clock timeout + GRACE.

        Raises HardTimeout (the child was killed) or ChildDied; the next call starts a fresh child.
        """
        if self._child is None or not self._child.alive:
            await self.drop()
            self._child = await self.pool.acquire()
        return await self._child.call(request, wall=timeout + GRACE)

    async def drop(self) -> None:
        """Kill the job's child (its isolate is in an unknown state)."""
        child, self._child = self._child, None
        if child is not None:
            await child.kill()

    async def release(self) -> None:
        """End the job in the child (frees its isolate now) and hand the child back."""
        child, self._child = self._child, None
        if child is None:
            return
        with trio.CancelScope(shield=True):
            if child.alive:
                with suppress(ChildDied):
                    if (await child.call({"op": "end"}, wall=5)).get("recycle"):
                        child.broken = True  # it grew (V8 keeps pages of big isolates): start afresh
            await self.pool.release(child)


@asynccontextmanager
async def lease(pool: SandboxPool | None = None) -> AsyncIterator[Lease]:
    """A lease for one job on `pool`, else on the current pool, else on a pool of its own for this job."""
    if pool is None:
        pool = current_pool()
    if pool is None:
        async with open_sandbox_pool() as own, lease(own) as held:
            yield held
        return
    held = Lease(pool)
    try:
        yield held
    finally:
        await held.release()
