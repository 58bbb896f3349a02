"""Generators in the JavaScript sandbox: evaluating one, then pulling or skipping its datasets.

`open_generator` evaluates an owner's generator in a sandbox child and calls its main(); the
resulting `GeneratorRun` pulls datasets (msgpack bytes, exactly as the child produced them) in
batches, or skips them when a generation resumes. Every failure, including a child that crashed or
was killed for its time, becomes a `GenerationError` with an owner-readable message; after one, the
run is over.

The child's answers are not trusted (owner code runs beside the harness in V8, and a V8 bug would
hand the child to the owner): every batch is checked here, on what arrived, against the count asked
for, `max_datasets`, `max_dataset_bytes` and the batch size, and its frame is capped before it is read.
A child that breaks one of them is killed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..errors import GenerationError
from .messages import heap_note, seconds, too_large
from .pool import ChildDied, HardTimeout, Lease, SandboxPool, lease
from .process import REPLY_BYTES

__all__ = ["BATCH_JSON_BYTES", "GeneratorRun", "batch_bytes", "open_generator"]

BATCH_JSON_BYTES = 8 << 20  # a pull stops early once this much JSON is gathered (bounds memory and frames)
# One character of a dataset's JSON text (a UTF-16 unit) is at most 3 bytes of its msgpack: a BMP
# character in UTF-8, or "0.5" (3 characters) as a 9-byte float.
MSGPACK_PER_JSON_CHAR = 3


def batch_bytes(max_dataset_bytes: int) -> int:
    """The most msgpack bytes one pull may bring: the batch's JSON budget, plus the item that crossed it."""
    return MSGPACK_PER_JSON_CHAR * BATCH_JSON_BYTES + max_dataset_bytes


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

    async def _call(self, request: dict[str, Any], during: str, max_reply: int = REPLY_BYTES) -> dict[str, Any]:
        if self._failure is not None:
            raise GenerationError(f"the generator already failed: {self._failure}")
        try:
            reply = await self._lease.call(request, self._timeout, max_reply)
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

    async def _refuse(self, message: str) -> GenerationError:
        """The child broke a limit: it is killed (never reused) and the run is over."""
        self._failure = GenerationError(message)
        await self._lease.drop()
        await self._lease.release()
        return self._failure

    def _over_count(self) -> str:
        return f"the generator produced more than {self._max_datasets:,} datasets (the limit)"

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
            return self._over_count()
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
            request = {
                "op": "pull",
                "n": n,
                "timeout": self._timeout,
                "produced": self._produced,
                "batch_json": BATCH_JSON_BYTES,
            }
            limit = batch_bytes(self._max_dataset_bytes)
            reply = await self._call(request, " while producing datasets", limit + REPLY_BYTES)
            items, done = reply.get("items"), reply.get("done")
            if not isinstance(items, list) or not isinstance(done, bool):
                raise await self._refuse("the sandbox sent a malformed batch; the generator was stopped")
            if len(items) > n:
                raise await self._refuse(f"the sandbox sent {len(items):,} datasets for {n:,} asked; it was stopped")
            if self._produced + len(items) > self._max_datasets:
                raise await self._refuse(self._over_count())
            total = 0
            for offset, item in enumerate(items):
                if not isinstance(item, bytes):
                    raise await self._refuse("the sandbox sent a malformed batch; the generator was stopped")
                if len(item) > self._max_dataset_bytes:
                    reply = {"size": len(item)}
                    raise await self._refuse(
                        too_large(f"dataset at index {self._produced + offset}", reply, self._max_dataset_bytes)
                    )
                total += len(item)
            if total > limit:
                raise await self._refuse(f"the sandbox sent a batch of {total:,} bytes, over {limit:,}; it was stopped")
            self._produced += len(items)
            self._exhausted = done
            return items, self._exhausted

    async def skip(self, n: int) -> None:
        """Advance n datasets without returning them (resuming a generation); stops early if exhausted."""
        async with self._lock:
            remaining = n
            while remaining > 0 and not self._exhausted:
                request = {"op": "skip", "n": remaining, "timeout": self._timeout}
                reply = await self._call(request, " while skipping datasets")
                skipped, done = reply.get("skipped"), reply.get("done")
                if type(skipped) is not int or not isinstance(done, bool) or not 0 <= skipped <= remaining:
                    raise await self._refuse("the sandbox sent a malformed skip; the generator was stopped")
                if self._produced + skipped > self._max_datasets:
                    raise await self._refuse(self._over_count())
                remaining -= skipped
                self._produced += skipped
                self._exhausted = done


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
    async with lease(pool, long=True) as held:
        run = GeneratorRun(
            held, timeout=timeout, heap_mib=heap_mib, max_dataset_bytes=max_dataset_bytes, max_datasets=max_datasets
        )
        await run._open(source)
        yield run
