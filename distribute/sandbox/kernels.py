"""Kernels in the JavaScript sandbox: loading one, running tasks through it, and syntax checks.

`open_kernel` loads an owner's kernel into a sandbox child and calls its loadStaticDataset once; the
resulting `KernelRun` runs main(dataset) per task (the headless worker's computation, and the
verifier's comparators), reloading itself after a timeout or crash. `kernel_syntax_error` parses a
kernel without running it, for the API's upload checks. The children, their pool and the wall-clock
limits are `distribute.sandbox.pool`'s; failures here surface as `KernelError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..errors import GenerationError, KernelError
from .pool import GRACE, _ChildDied, _HardTimeout, _heap_note, _Lease, _pool, _secs, open_generator

__all__ = [
    "KernelRun",
    "kernel_syntax_error",
    "open_kernel",
]


async def kernel_syntax_error(kernel: str, *, timeout: float, heap_mib: int) -> str | None:
    """Parse (never run) a kernel in the sandbox: its SyntaxError, or None if it parses.

    Only parsing: a kernel may use browser APIs (performance, TextDecoder, WebAssembly) that the
    sandbox lacks, so evaluating it here could refuse a kernel that works in every browser. The
    kernel is wrapped exactly as the browser harness wraps it (embed/src/blob.js), and the
    `Function` constructor compiles that text without calling it.
    """
    wrapped = json.dumps("var kernel =\n" + kernel + "\n;\nreturn kernel;\n")
    probe = f"({{ main: function () {{ new Function({wrapped}); return []; }} }})"
    try:
        async with open_generator(probe, timeout=timeout, heap_mib=heap_mib, max_dataset_bytes=1, max_datasets=1):
            return None
    except GenerationError as exc:
        first_line = str(exc).split("\n", 1)[0]
        return first_line.split("main(): ", 1)[-1]


class KernelRun:
    """A kernel loaded in a child (loadStaticDataset done); reloads itself after a timeout or crash."""

    def __init__(
        self, lease: _Lease, kernel: str, static: str, *, heap_mib: int, max_result_bytes: int, load_timeout: float
    ) -> None:
        self._lease = lease
        self._request = {
            "op": "kernel",
            "kernel": kernel,
            "static": static,
            "heap_mib": heap_mib,
            "max_result_bytes": max_result_bytes,
            "timeout": load_timeout,
        }
        self._load_timeout = load_timeout
        self._heap_mib = heap_mib
        self._max_result_bytes = max_result_bytes
        self._loaded = False
        self._lock = trio.Lock()

    async def _load(self) -> None:
        try:
            child = await self._lease.get()
            reply = await child.call(self._request, wall=self._load_timeout + GRACE)
        except _HardTimeout:
            await self._lease.drop()
            raise KernelError(f"loading the kernel timed out after {_secs(self._load_timeout)} s") from None
        except _ChildDied as exc:
            await self._lease.drop()
            raise KernelError(f"the kernel crashed the sandbox while loading: {exc.reason}") from None
        if not reply["ok"]:
            kind, message, stack = reply["kind"], reply.get("message", ""), reply.get("stack", "")
            if kind == "timeout":
                message = f"loading the kernel timed out after {_secs(self._load_timeout)} s"
            elif kind == "evaluate":
                message = f"the kernel threw while being evaluated: {message}"
            elif kind == "static":
                message = f"the kernel's loadStaticDataset threw: {message}"
            raise KernelError(message, stack)
        self._loaded = True

    async def run(self, dataset: bytes, timeout: float) -> tuple[bytes | None, float]:
        """Run main(dataset): (msgpack of the result or None for null/undefined, compute ms).

        Raises KernelError(message, stack); after a timeout or crash the next call reloads the kernel.
        """
        async with self._lock:
            if not self._loaded:
                await self._load()
            try:
                child = await self._lease.get()
                reply = await child.call({"op": "run", "dataset": dataset, "timeout": timeout}, wall=timeout + GRACE)
            except _HardTimeout:
                self._loaded = False
                raise KernelError(f"task exceeded the time limit of {_secs(timeout)} s") from None
            except _ChildDied as exc:
                self._loaded = False
                await self._lease.drop()
                raise KernelError(f"the sandbox crashed while running the task: {exc.reason}") from None
            if reply["ok"]:
                return reply["value"], reply["ms"]
            if reply.get("reset"):
                self._loaded = False  # the child dropped the isolate: load afresh for the next task
            kind, message = reply["kind"], reply.get("message", "")
            if kind == "timeout":
                message = f"task exceeded the time limit of {_secs(timeout)} s{_heap_note(reply, self._heap_mib)}"
            elif kind == "serialise":
                message = f"the result cannot be serialised: {message}"
            elif kind == "size":
                what = "its JSON text is" if reply.get("json") else "it is"
                message = (
                    f"the result is too large: {what} {reply.get('size', 0):,} bytes, over the limit "
                    f"of {self._max_result_bytes:,} bytes"
                )
            raise KernelError(message, reply.get("stack", ""))

    async def aclose(self) -> None:
        await self._lease.release()


@asynccontextmanager
async def open_kernel(
    kernel: str, static: str, *, heap_mib: int, max_result_bytes: int, load_timeout: float = 30.0
) -> AsyncIterator[KernelRun]:
    """Load a kernel and call loadStaticDataset(static) once; raises KernelError if either fails."""
    run = KernelRun(
        _Lease(_pool()), kernel, static, heap_mib=heap_mib, max_result_bytes=max_result_bytes, load_timeout=load_timeout
    )
    try:
        await run._load()
        yield run
    finally:
        await run.aclose()
