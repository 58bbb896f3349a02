"""Kernels in the JavaScript sandbox: loading one, running tasks through it, and syntax checks.

`open_kernel` loads an owner's kernel into a sandbox child and calls its loadStaticDataset once; the
resulting `KernelRun` runs main(dataset, ctx) per task (the headless worker's computation, and the
verifier's comparators), reloading itself after a timeout or crash; when opened with a checkpoint
limit or progress, the kernel's ctx.progress and ctx.checkpoint reach the caller's `on_note` while a
task runs. `check_kernel` compiles a kernel
without running it, for the upload checks, and `kernel_syntax_error` words its result. The children,
their pool and the wall-clock limits are `distribute.sandbox.pool`'s; failures here surface as
`KernelError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..errors import KernelError
from .messages import heap_note, seconds, too_large
from .pool import ChildDied, HardTimeout, Lease, SandboxPool, lease
from .process import REPLY_BYTES, NoteHandler

__all__ = [
    "KernelRun",
    "SyntaxProblem",
    "check_kernel",
    "kernel_syntax_error",
    "open_kernel",
]


@dataclass(frozen=True)
class SyntaxProblem:
    """Why a kernel does not compile: V8's text ("SyntaxError: ...") and where, in kernel lines (1-based)."""

    message: str
    line: int | None = None
    column: int | None = None


async def check_kernel(
    kernel: str, *, timeout: float, heap_mib: int, pool: SandboxPool | None = None
) -> SyntaxProblem | None:
    """Compile (never run) a kernel in the sandbox: the problem, or None if it compiles.

    Only compiling: a kernel may use browser APIs (performance, TextDecoder, WebAssembly) that the
    sandbox lacks, so evaluating it here could refuse a kernel that works in every browser. The
    child wraps the kernel exactly as the browser harness wraps it (embed/src/blob.js).
    """
    request = {"op": "check", "source": kernel, "heap_mib": heap_mib, "timeout": timeout}
    async with lease(pool) as held:
        try:
            reply = await held.call(request, timeout)
        except HardTimeout:
            return SyntaxProblem(f"checking it timed out after {seconds(timeout)} s")
        except ChildDied as exc:
            return SyntaxProblem(f"checking it crashed the sandbox: {exc.reason}")
    if not reply["ok"]:
        if reply["kind"] == "timeout":
            return SyntaxProblem(f"checking it timed out after {seconds(timeout)} s")
        return SyntaxProblem(str(reply.get("message", "")) or f"it cannot be checked ({reply['kind']})")
    error = reply["error"]
    if error is None:
        return None
    return SyntaxProblem(str(error["message"]), error.get("line"), error.get("column"))


async def kernel_syntax_error(
    kernel: str, *, timeout: float, heap_mib: int, pool: SandboxPool | None = None
) -> str | None:
    """`check_kernel` as the one line the API's 400 answer quotes ("SyntaxError: ..."), or None."""
    problem = await check_kernel(kernel, timeout=timeout, heap_mib=heap_mib, pool=pool)
    return None if problem is None else problem.message


class KernelRun:
    """A kernel loaded in a child (loadStaticDataset done); reloads itself after a timeout or crash."""

    def __init__(
        self,
        held: Lease,
        kernel: str,
        static: str,
        *,
        heap_mib: int,
        max_result_bytes: int,
        load_timeout: float,
        checkpoint_max_bytes: int = 0,
        checkpoint_interval: float = 0.0,
        progress: bool = False,
    ) -> None:
        self._lease = held
        self._request = {
            "op": "kernel",
            "kernel": kernel,
            "static": static,
            "heap_mib": heap_mib,
            "max_result_bytes": max_result_bytes,
            "timeout": load_timeout,
            "checkpoint_max_bytes": checkpoint_max_bytes,
            "checkpoint_interval": checkpoint_interval,
            "progress": progress,
        }
        self._checkpoint_max_bytes = checkpoint_max_bytes
        self._load_timeout = load_timeout
        self._heap_mib = heap_mib
        self._max_result_bytes = max_result_bytes
        self._loaded = False
        self._lock = trio.Lock()

    async def _load(self) -> None:
        try:
            reply = await self._lease.call(self._request, self._load_timeout)
        except HardTimeout:
            await self._lease.drop()
            raise KernelError(f"loading the kernel timed out after {seconds(self._load_timeout)} s") from None
        except ChildDied as exc:
            await self._lease.drop()
            raise KernelError(f"the kernel crashed the sandbox while loading: {exc.reason}") from None
        if not reply["ok"]:
            kind, message, stack = reply["kind"], str(reply.get("message", "")), str(reply.get("stack", ""))
            if kind == "timeout":
                message = f"loading the kernel timed out after {seconds(self._load_timeout)} s"
            elif kind == "evaluate":
                message = f"the kernel threw while being evaluated: {message}"
            elif kind == "static":
                message = f"the kernel's loadStaticDataset threw: {message}"
            raise KernelError(message, stack, kind)
        self._loaded = True

    async def run(
        self, dataset: bytes, timeout: float, resume: bytes | None = None, on_note: NoteHandler | None = None
    ) -> tuple[bytes | None, float]:
        """Run main(dataset, ctx): (msgpack of the result or None for null/undefined, compute ms).

        `resume`: the msgpack state of the task's last checkpoint, the kernel's ctx.resume. `on_note`
        gets ("progress", fraction) and ("checkpoint", msgpack state) while the task runs, paced by the
        child and checked by `distribute.sandbox.process.check_note`; without it the child sends none.

        Raises KernelError(message, stack); after a timeout or crash the next call reloads the kernel.
        """
        async with self._lock:
            if not self._loaded:
                await self._load()
            try:
                request = {"op": "run", "dataset": dataset, "timeout": timeout, "notes": on_note is not None}
                if resume is not None:
                    request["resume"] = resume
                max_reply = max(self._max_result_bytes, self._checkpoint_max_bytes) + REPLY_BYTES
                reply = await self._lease.call(request, timeout, max_reply, on_note, self._checkpoint_max_bytes)
            except HardTimeout:
                self._loaded = False
                raise KernelError(f"task exceeded the time limit of {seconds(timeout)} s") from None
            except ChildDied as exc:
                self._loaded = False
                await self._lease.drop()
                raise KernelError(f"the sandbox crashed while running the task: {exc.reason}") from None
            if reply["ok"]:
                value = reply.get("value")
                if value is not None and (not isinstance(value, bytes) or len(value) > self._max_result_bytes):
                    self._loaded = False
                    await self._lease.drop()  # the child broke the protocol: never reuse it
                    size = len(value) if isinstance(value, bytes) else 0
                    raise KernelError(too_large("the result", {"size": size}, self._max_result_bytes))
                return value, float(reply["ms"])
            if reply.get("reset"):
                self._loaded = False  # the child dropped the isolate: load afresh for the next task
            kind, message = reply["kind"], str(reply.get("message", ""))
            if kind == "timeout":
                message = f"task exceeded the time limit of {seconds(timeout)} s{heap_note(reply, self._heap_mib)}"
            elif kind == "serialise":
                message = f"the result cannot be serialised: {message}"
            elif kind == "size":
                message = too_large("the result", reply, self._max_result_bytes)
            raise KernelError(message, str(reply.get("stack", "")), kind)


@asynccontextmanager
async def open_kernel(
    kernel: str,
    static: str,
    *,
    heap_mib: int,
    max_result_bytes: int,
    load_timeout: float = 30.0,
    pool: SandboxPool | None = None,
    checkpoint_max_bytes: int = 0,
    checkpoint_interval: float = 0.0,
    progress: bool = False,
) -> AsyncIterator[KernelRun]:
    """Load a kernel and call loadStaticDataset(static) once; raises KernelError if either fails.

    The child comes from `pool`, else from the current pool (see `distribute.sandbox.pool`).
    `checkpoint_max_bytes` (0: ctx.checkpoint keeps nothing) and `checkpoint_interval` (seconds between
    two checkpoints of one task), and `progress`, decide which notes `KernelRun.run` may pass on.
    """
    async with lease(pool) as held:
        run = KernelRun(
            held,
            kernel,
            static,
            heap_mib=heap_mib,
            max_result_bytes=max_result_bytes,
            load_timeout=load_timeout,
            checkpoint_max_bytes=checkpoint_max_bytes,
            checkpoint_interval=checkpoint_interval,
            progress=progress,
        )
        await run._load()
        yield run
