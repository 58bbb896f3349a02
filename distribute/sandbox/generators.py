"""Generators in the JavaScript sandbox: evaluating one, then pulling or skipping its datasets.

`open_generator` evaluates an owner's generator in a sandbox child and calls its main(); the
resulting `GeneratorRun` pulls datasets (msgpack bytes, exactly as the child produced them) in
batches, or skips them when a generation resumes. Every failure, including a child that crashed or
was killed for its time, becomes a `GenerationError` with an owner-readable message; after one, the
run is over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..errors import GenerationError
from .messages import heap_note, seconds, too_large
from .pool import ChildDied, HardTimeout, Lease, SandboxPool, lease

__all__ = ["GeneratorRun", "open_generator"]


class GeneratorRun:
    """One generator evaluation; in iterator mode its iterator stays alive in the child."""

    mode: str  # "array" or "iterator"

    def __init__(
        self, held: Lease, *, timeout: float, heap_mib: int, max_dataset_bytes: int, max_datasets: int
    ) -> None:
        self.mode = ""
        self._lease = held
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
            reply = await self._lease.call(request, self._timeout)
        except HardTimeout:
            self._failure = GenerationError(f"generator timed out after {seconds(self._timeout)} s{during}")
        except ChildDied as exc:
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
            return f"generator timed out after {seconds(self._timeout)} s{during}{heap_note(reply, self._heap_mib)}"
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
            return too_large(f"dataset at index {index}", reply, self._max_dataset_bytes)
        if kind == "count":
            return f"the generator produced more than {self._max_datasets:,} datasets (the limit)"
        return str(message) or f"the generator failed ({kind})"

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


@asynccontextmanager
async def open_generator(
    source: str,
    *,
    timeout: float,
    heap_mib: int,
    max_dataset_bytes: int,
    max_datasets: int,
    pool: SandboxPool | None = None,
) -> AsyncIterator[GeneratorRun]:
    """Evaluate a generator and call its main(); raises GenerationError with an owner-readable message.

    The wall clock `timeout` applies to evaluating the source plus main(), then to each pull/skip.
    Raises SandboxError (not GenerationError) only if no sandbox process can be started at all.
    The child comes from `pool`, else from the current pool (see `distribute.sandbox.pool`).
    """
    async with lease(pool) as held:
        run = GeneratorRun(
            held, timeout=timeout, heap_mib=heap_mib, max_dataset_bytes=max_dataset_bytes, max_datasets=max_datasets
        )
        await run._open(source)
        yield run
