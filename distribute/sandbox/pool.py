"""Parent side of the JavaScript sandbox: child processes, their pool, and generator runs, from Trio.

Untrusted JavaScript never runs in this process. Each job (one generator evaluation here, or one
kernel loaded by `distribute.sandbox.kernels`) borrows a child (`distribute.sandbox.child`) from a
small per-run pool and talks to it with length-prefixed msgpack frames over pipes. Three layers of
limits apply: mini-racer's own timeout and V8 heap limit inside the child, RLIMIT_DATA on the child
(off-heap ArrayBuffers), and here a hard wall clock that kills the child when it does not answer in
time. A child that crashes, runs out of memory or is killed is discarded and a fresh one started for
the next job; nothing of it reaches the caller but a clear `GenerationError` / `KernelError`.

A healthy child goes back to the pool after a job (a fresh `MiniRacer()` per job costs a few ms,
a fresh process ~0.3 s). Idle children are killed when the Trio run ends.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import IO, Any

import msgpack
import trio

from ..errors import GenerationError, SandboxError

__all__ = [
    "GRACE",
    "START_TIMEOUT",
    "GeneratorRun",
    "open_generator",
]

START_TIMEOUT = 30.0  # a child must import mini-racer and initialise V8 within this
GRACE = 2.0  # beyond mini-racer's own timeout before the parent kills a silent child
MAX_IDLE = 2  # warm children kept for the next job
MAX_JOBS_PER_CHILD = 500  # recycle long-lived children: Python's heap in the child only grows
_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _secs(value: float) -> str:
    """5.0 -> '5', 0.25 -> '0.25': limits as owners wrote them."""
    return f"{value:g}"


def _heap_note(reply: dict[str, Any], heap_mib: int) -> str:
    """For a timeout: a heap well on its way to the limit hints where the time went (allocation and GC)."""
    used = reply.get("heap_used_mib") or 0
    return f" (its heap had grown to {used} MiB of its {heap_mib} MiB memory limit)" if used * 4 >= heap_mib else ""


class _ChildDied(Exception):
    """The child process is gone (crash, fatal OOM, killed); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _HardTimeout(_ChildDied):
    """The child did not answer within the wall clock and was killed."""


# --------------------------------------------------------------------------- one child process


class _Child:
    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.stderr = stderr  # a temp file: read only to explain a crash
        self.buffer = bytearray()
        self.jobs = 0
        self.broken = False

    @classmethod
    async def start(cls) -> _Child:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the child object, closed in kill())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "distribute.sandbox.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,  # a Ctrl-C on the terminal is for us, not for the children
            )
        except OSError as exc:
            stderr.close()
            raise SandboxError(f"cannot start the JavaScript sandbox: {exc}") from None
        child = cls(process, stderr)
        try:
            with trio.fail_after(START_TIMEOUT):
                await child._receive()
        except (_ChildDied, trio.TooSlowError) as exc:
            await child.kill()
            raise SandboxError(f"the JavaScript sandbox did not start: {exc or 'timed out'}") from None
        except BaseException:
            await child.kill()
            raise
        return child

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.returncode is None

    async def call(self, request: dict[str, Any], wall: float) -> dict[str, Any]:
        """One request/reply; kills the child if it is silent for `wall` seconds or the call is cancelled."""
        body = msgpack.packb(request)
        self.broken = True  # until the reply is in: a cancelled call leaves the stream mid-frame
        with trio.move_on_after(wall) as scope:
            try:
                await self.process.stdin.send_all(_HEADER.pack(len(body)) + body)
            except trio.BrokenResourceError:
                raise _ChildDied(await self._death_reason()) from None
            reply = await self._receive()
        if scope.cancelled_caught:
            await self.kill()
            raise _HardTimeout("it did not answer in time and was killed")
        self.broken = False
        return reply

    async def _receive(self) -> dict[str, Any]:
        header = await self._read(4)
        return msgpack.unpackb(await self._read(_HEADER.unpack(header)[0]))

    async def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                chunk = await self.process.stdout.receive_some(max(1 << 16, n - len(self.buffer)))
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                raise _ChildDied(await self._death_reason())
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def _death_reason(self) -> str:
        self.broken = True
        with trio.move_on_after(5):
            await self.process.wait()
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 16384))
        tail = self.stderr.read().decode("utf-8", "replace")
        await self.kill()
        code = self.process.returncode
        if "out of memory" in tail:
            return "V8 ran out of memory (fatal out-of-memory error)"
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (possibly the system's out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"the sandbox process was killed by {name}{hint}"
        return f"the sandbox process exited unexpectedly with code {code}"

    async def kill(self) -> None:
        self.broken = True
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    await pipe.aclose()
        self.stderr.close()


# --------------------------------------------------------------------------- pool (one per Trio run)


class _Pool:
    def __init__(self) -> None:
        self.idle: list[_Child] = []
        self.open = True

    async def acquire(self) -> _Child:
        while self.idle:
            child = self.idle.pop()
            if child.alive:
                child.jobs += 1
                return child
            await child.kill()
        child = await _Child.start()
        child.jobs += 1
        return child

    async def release(self, child: _Child) -> None:
        if child.alive and self.open and child.jobs < MAX_JOBS_PER_CHILD and len(self.idle) < MAX_IDLE:
            self.idle.append(child)
        else:
            await child.kill()

    async def keep(self) -> None:
        """System task: lives as long as the run, then kills the idle children."""
        try:
            await trio.sleep_forever()
        finally:
            self.open = False
            while self.idle:
                await self.idle.pop().kill()


_POOL: trio.lowlevel.RunVar[_Pool] = trio.lowlevel.RunVar("distribute_sandbox_pool")


def _pool() -> _Pool:
    try:
        return _POOL.get()
    except LookupError:
        pool = _Pool()
        _POOL.set(pool)
        trio.lowlevel.spawn_system_task(pool.keep, name="distribute.sandbox.pool pool")
        return pool


class _Lease:
    """A job's hold on one child: returns it to the pool when healthy, kills it otherwise."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.child: _Child | None = None

    async def get(self) -> _Child:
        if self.child is None or not self.child.alive:
            await self.drop()
            self.child = await self.pool.acquire()
        return self.child

    async def drop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            await child.kill()

    async def release(self) -> None:
        """End the job in the child (frees its isolate now) and hand the child back."""
        child, self.child = self.child, None
        if child is None:
            return
        with trio.CancelScope(shield=True):
            if child.alive:
                with suppress(_ChildDied):
                    if (await child.call({"op": "end"}, wall=5)).get("recycle"):
                        child.broken = True  # it grew (V8 keeps pages of big isolates): start afresh
            await self.pool.release(child)


# --------------------------------------------------------------------------- generators


class GeneratorRun:
    """One generator evaluation; in iterator mode its iterator stays alive in the child."""

    mode: str  # "array" or "iterator"

    def __init__(
        self, lease: _Lease, *, timeout: float, heap_mib: int, max_dataset_bytes: int, max_datasets: int
    ) -> None:
        self.mode = ""
        self._lease = lease
        self._timeout = timeout
        self._max_dataset_bytes = max_dataset_bytes
        self._max_datasets = max_datasets
        self._heap_mib = heap_mib
        self._produced = 0  # datasets pulled or skipped so far: indexes in messages
        self._exhausted = False
        self._failure: GenerationError | None = None
        self._lock = trio.Lock()

    async def _call(self, request: dict[str, Any], during: str) -> dict[str, Any]:
        if self._failure is not None:
            raise GenerationError(f"the generator already failed: {self._failure}")
        try:
            child = await self._lease.get()
            reply = await child.call(request, wall=self._timeout + GRACE)
        except _HardTimeout:
            self._failure = GenerationError(f"generator timed out after {_secs(self._timeout)} s{during}")
        except _ChildDied as exc:
            self._failure = GenerationError(f"the generator crashed the sandbox{during}: {exc.reason}")
        else:
            if reply["ok"]:
                return reply
            self._failure = GenerationError(self._message(reply, during))
        await self._lease.release()  # the run is over; a child that survived serves the next job
        raise self._failure

    def _message(self, reply: dict[str, Any], during: str) -> str:
        kind, message = reply["kind"], reply.get("message", "")
        frames = "\n".join(reply.get("stack", "").splitlines()[1:])
        if frames:
            message += "\n" + frames
        index = reply.get("index")
        if kind == "timeout":
            return f"generator timed out after {_secs(self._timeout)} s{during}{_heap_note(reply, self._heap_mib)}"
        if kind == "evaluate":
            return f"the generator threw while being evaluated: {message}"
        if kind == "throw":
            return f"the generator threw{during or ' in main()'}: {message}"
        if kind == "serialise":
            return (
                f"dataset at index {index} cannot be serialised: {message} (datasets must be JSON-like: "
                "objects, arrays, strings, finite numbers, booleans and null)"
            )
        if kind == "size":
            what = "its JSON text is" if reply.get("json") else "it is"
            return (
                f"dataset at index {index} is too large: {what} {reply.get('size', 0):,} bytes, over the limit "
                f"of {self._max_dataset_bytes:,} bytes"
            )
        if kind == "count":
            return f"the generator produced more than {self._max_datasets:,} datasets (the limit)"
        return message or f"the generator failed ({kind})"

    async def _open(self, source: str) -> None:
        request = {
            "op": "gen",
            "source": source,
            "heap_mib": self._heap_mib,
            "timeout": self._timeout,
            "max_dataset_bytes": self._max_dataset_bytes,
            "max_datasets": self._max_datasets,
        }
        reply = await self._call(request, "")
        self.mode = reply["mode"]

    async def pull(self, n: int) -> tuple[list[bytes], bool]:
        """Up to n datasets (msgpack bytes each) and whether the generator is exhausted.

        May return fewer than n without being exhausted (slow items or big batches are cut short).
        """
        async with self._lock:
            if self._exhausted or n <= 0:
                return [], self._exhausted
            request = {"op": "pull", "n": n, "timeout": self._timeout, "produced": self._produced}
            reply = await self._call(request, " while producing datasets")
            items: list[bytes] = reply["items"]
            self._produced += len(items)
            self._exhausted = reply["done"]
            return items, self._exhausted

    async def skip(self, n: int) -> None:
        """Advance n datasets without returning them (resuming a generation); stops early if exhausted."""
        async with self._lock:
            remaining = n
            while remaining > 0 and not self._exhausted:
                request = {"op": "skip", "n": remaining, "timeout": self._timeout}
                reply = await self._call(request, " while skipping datasets")
                remaining -= reply["skipped"]
                self._produced += reply["skipped"]
                self._exhausted = reply["done"]

    async def aclose(self) -> None:
        await self._lease.release()


@asynccontextmanager
async def open_generator(
    source: str, *, timeout: float, heap_mib: int, max_dataset_bytes: int, max_datasets: int
) -> AsyncIterator[GeneratorRun]:
    """Evaluate a generator and call its main(); raises GenerationError with an owner-readable message.

    The wall clock `timeout` applies to evaluating the source plus main(), then to each pull/skip.
    Raises SandboxError (not GenerationError) only if no sandbox process can be started at all.
    """
    lease = _Lease(_pool())
    run = GeneratorRun(
        lease, timeout=timeout, heap_mib=heap_mib, max_dataset_bytes=max_dataset_bytes, max_datasets=max_datasets
    )
    try:
        await run._open(source)
        yield run
    finally:
        await run.aclose()
