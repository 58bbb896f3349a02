"""The headless worker (`distribute worker`): computes tasks with the JavaScript sandbox.

It speaks worker protocol v1 (`distribute.protocol`) over one WebSocket, like the browser harness
(of v1.1: `release`; `progress` and `checkpoint` frames from the kernel's ctx.progress and
ctx.checkpoint while it runs, which the sandbox child paces and this worker paces again; and a
reissued task's resume state as the kernel's ctx.resume):
`hello`, then `campaign` frames (the kernel is loaded with `open_kernel` into a child of the worker's
own sandbox pool, kept while its content hash is unchanged) and `tasks` frames. Three tasks run per connection: the receive loop queues tasks as they
arrive (several are in flight, so the next dataset is already here when one finishes), the compute
loop runs them one at a time in the sandbox and answers each with `result` or `error`, and the ping
loop sends `ping` every `ping_interval` so the server's heartbeat hears from a worker busy with a
long task. The worker ends on `bye`, after `max_tasks` answers, when the server closes the
connection, or when `stop` is set: it then hands back the tasks it has not answered (`release`, if the
server supports it) so that another worker gets them at once, and closes normally.

`distribute.daemon` runs several of these sessions and shows their `WorkerView`s.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import platform
import time
from collections import OrderedDict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import msgpack
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from . import __version__
from . import protocol as p
from .errors import DistributeError, KernelError, ProtocolError, ValidationError
from .sandbox.kernels import KernelRun, open_kernel
from .sandbox.pool import SandboxPool, open_sandbox_pool
from .sandbox.process import NoteHandler

__all__ = [
    "KERNEL_HEAP_MIB",
    "MAX_MESSAGE_BYTES",
    "PING_SECONDS",
    "TaskBudget",
    "WorkerConnectionError",
    "WorkerSummary",
    "WorkerView",
    "run_worker",
    "ws_url",
]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # trio-websocket's default (1 MiB) is below the server's frame limit
KERNEL_HEAP_MIB = 512  # V8 heap of the kernel sandbox
DEFAULT_TASK_TIMEOUT = 60.0
MAX_CACHED_KERNELS = 16  # the protocol's limit on `have`
PING_SECONDS = 20.0  # well inside the server's heartbeat_timeout (120 s by default)
GOODBYE_NONCE = 0  # the ping loop's nonces start at 1
STOP_SECONDS = 5.0  # the longest a stopping worker spends handing back its tasks and closing
# Notes closer together than these are dropped: the child already paces them (progress every 0.25 s,
# checkpoints every checkpoint_interval), so only a child that broke its pacing loses any.
PROGRESS_GAP = 0.2
CHECKPOINT_GAP = 0.5  # of the campaign's checkpoint_interval


class WorkerConnectionError(DistributeError):
    """The worker could not reach the server, or the server dropped the connection abnormally."""


@dataclass(frozen=True)
class WorkerSummary:
    tasks_done: int  # tasks answered (results and errors)
    errors: int  # answered with an error
    campaigns: tuple[int, ...]  # campaigns served, in order
    reason: str  # why the worker stopped


def ws_url(server: str) -> str:
    """http(s)://HOST:PORT[/prefix] or ws(s)://… to the worker endpoint ws(s)://HOST:PORT[/prefix]/ws."""
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValidationError(f"the server must be an http(s):// or ws(s):// URL, not {server!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


@dataclass
class WorkerView:
    """What a worker is doing, for a display: kept across the connections of one daemon process."""

    status: str = "starting"
    campaign: str = ""  # "12 Multiples of 123"
    done: int = 0  # tasks answered
    errors: int = 0


class TaskBudget:
    """At most `total` tasks computed, shared by the sessions of one worker (`--tasks`)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def claim(self) -> bool:
        """One more task may be computed (and is counted now); False once the budget is spent."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class _State:
    campaign: int | None
    budget: TaskBudget | None
    view: WorkerView
    done: int = 0
    errors: int = 0
    campaigns: list[int] = field(default_factory=list)
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.budget is not None and self.budget.left <= 0

    def show(self, status: str | None = None) -> None:
        if status is not None:
            self.view.status = status


def _decode(frame: bytes | str) -> p.ServerMessage | list[p.Task]:
    """`decode_server` plus the checks it leaves out; anything malformed becomes a ProtocolError."""
    try:
        # A text frame (str) is rejected inside, with CLOSE_UNSUPPORTED_DATA.
        message = p.decode_server(frame)  # type: ignore[arg-type]
    except ProtocolError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:  # a task that is not [id, dataset]
        raise ProtocolError(p.CLOSE_PROTOCOL_ERROR, f"malformed frame ({type(exc).__name__})") from None
    if isinstance(message, p.CampaignInfo) and not all(
        isinstance(text, str | None) for text in (message.kernel, message.static)
    ):
        raise ProtocolError(p.CLOSE_PROTOCOL_ERROR, "'kernel' and 'static' must be strings or null")
    return message


class _Session:
    """One connection: the receive loop feeds `queue`, the compute loop drains it."""

    def __init__(self, ws: WebSocketConnection, state: _State, sandbox: SandboxPool) -> None:
        self.ws = ws
        self.sandbox = sandbox
        self.state = state
        # The server bounds what it sends (slots, in-flight bytes), so the local queue may be unbounded:
        # the receive loop must never wait for a computation.
        self.send_queue, self.queue = trio.open_memory_channel[p.CampaignInfo | p.Task | p.Bye](math.inf)
        self.kernels: OrderedDict[str, tuple[str, str]] = OrderedDict()  # hash -> (kernel, static)
        self.kernel: KernelRun | None = None
        self.kernel_hash = ""
        self.kernel_error: KernelError | None = None
        self.info: p.CampaignInfo | None = None
        self.pending: set[int] = set()  # task ids queued or computing
        self.released: set[int] = set()  # of them, handed back
        self.receiving = True  # the receive loop runs (until `bye` or the end of the connection)
        self.goodbye_pong = trio.Event()  # the pong of the ping that follows the final `release`

    async def receive_loop(self) -> None:
        try:
            await self._receive_loop()
        finally:
            self.receiving = False
            self.goodbye_pong.set()  # nothing more will come: a goodbye must not wait for it

    async def _receive_loop(self) -> None:
        # A synchronous close: an async one is a checkpoint where the woken compute loop could cancel
        # us and so swallow the ConnectionClosed that explains why the connection ended.
        with self.send_queue:
            while True:
                try:
                    message = _decode(await self.ws.get_message())
                except ProtocolError as exc:
                    await self.ws.aclose(exc.code, exc.reason[:120])
                    raise WorkerConnectionError(f"the server sent an invalid frame: {exc.reason}") from None
                if isinstance(message, list):
                    for task in message:
                        # A task whose deadline passed while it waited here may be handed to us again;
                        # the server holds it once, so it gets one answer.
                        if task.id not in self.pending:
                            self.pending.add(task.id)
                            self.send_queue.send_nowait(task)
                elif isinstance(message, p.CampaignInfo | p.Bye):
                    self.send_queue.send_nowait(message)
                    if isinstance(message, p.Bye):
                        return
                elif isinstance(message, p.Idle):
                    self.state.show(message.reason or "waiting for work")
                elif isinstance(message, p.Pong) and message.nonce == GOODBYE_NONCE:
                    self.goodbye_pong.set()

    async def ping_loop(self, interval: float) -> None:
        """A `ping` every `interval` seconds: the server closes a silent connection that holds tasks."""
        try:
            for nonce in itertools.count(1):
                await trio.sleep(interval)
                await self.ws.send_message(p.encode(p.Ping(nonce % 2**31)))
        except ConnectionClosed:
            return  # the receive loop reports why

    async def compute_loop(self, stack: AsyncExitStack) -> None:
        async for item in self.queue:
            if isinstance(item, p.Bye):
                self.state.reason = f"server said bye: {item.reason}" if item.reason else "server said bye"
                return
            if isinstance(item, p.CampaignInfo):
                await self._switch(item, stack)
                continue
            budget = self.state.budget
            if budget is not None and not budget.claim():  # another session of this worker spent it
                self.state.reason = f"reached {budget.total} tasks"
                return
            await self._compute(item)
            if budget is not None and self.state.finished:
                self.state.reason = f"reached {budget.total} tasks"
                return

    async def hand_back(self) -> None:
        """Leaving: hand the server the tasks not yet answered (if it takes them back), then close."""
        with trio.move_on_after(STOP_SECONDS) as scope:
            scope.shield = True  # a stop is often a cancellation: the goodbye must still go out
            with contextlib.suppress(ConnectionClosed):
                if self.receiving and self.info is not None and p.FEATURE_RELEASE in self.info.features:
                    await self._release_pending()  # final: the server sends no more tasks after reading it
                    # Tasks it sent before reading it are still on their way; the pong comes after them.
                    await self.ws.send_message(p.encode(p.Ping(GOODBYE_NONCE)))
                    await self.goodbye_pong.wait()
                    await self._release_pending()
                await self.ws.aclose(p.CLOSE_NORMAL, "worker stopping" if self.state.reason == "stopped" else "done")

    async def _release_pending(self) -> None:
        """A final `release` of the tasks not answered (nor released) yet: sent even when there are none."""
        pending = sorted(self.pending - self.released)
        self.released.update(pending)
        for start in range(0, max(len(pending), 1), p.MAX_SLOTS):
            await self.ws.send_message(p.encode(p.Release(tuple(pending[start : start + p.MAX_SLOTS]), final=True)))

    async def _switch(self, info: p.CampaignInfo, stack: AsyncExitStack) -> None:
        self.info = info
        if info.id not in self.state.campaigns:
            self.state.campaigns.append(info.id)
        self.state.view.campaign = f"{info.id} {info.name}".strip()
        self.state.show("computing")
        if info.kernel is not None:
            self.kernels[info.hash] = (info.kernel, info.static or "")
        if info.hash in self.kernels:
            self.kernels.move_to_end(info.hash)
        while len(self.kernels) > MAX_CACHED_KERNELS:
            self.kernels.popitem(last=False)
        if info.hash == self.kernel_hash and (self.kernel is not None or self.kernel_error is not None):
            return  # same kernel and static dataset: keep the loaded one
        await stack.aclose()
        self.kernel, self.kernel_error, self.kernel_hash = None, None, info.hash
        source = self.kernels.get(info.hash)
        if source is None:  # the server trusted a `have` we no longer hold: cannot happen with our hello
            self.kernel_error = KernelError("the server sent no kernel for this campaign")
            return
        try:
            kernel, static = source
            checkpoints = info.checkpoint_max_bytes if p.FEATURE_CHECKPOINT in info.features else 0
            self.kernel = await stack.enter_async_context(
                open_kernel(
                    kernel,
                    static,
                    heap_mib=KERNEL_HEAP_MIB,
                    max_result_bytes=info.max_result_bytes,
                    pool=self.sandbox,
                    checkpoint_max_bytes=checkpoints,
                    checkpoint_interval=info.checkpoint_interval,
                    progress=p.FEATURE_PROGRESS in info.features,
                )
            )
        except KernelError as exc:
            self.kernel_error = exc  # every task of this campaign is answered with this error

    async def _compute(self, task: p.Task) -> None:
        self.state.view.status = "computing"  # (after an `idle`, tasks came)
        started = time.perf_counter()
        timeout = self.info.task_timeout if self.info and self.info.task_timeout > 0 else DEFAULT_TASK_TIMEOUT
        try:
            if self.kernel is None:
                raise self.kernel_error or KernelError("a task arrived before its campaign")
            value, compute_ms = await self.kernel.run(task.dataset, timeout, task.resume, self._notes(task.id))
        except KernelError as exc:
            ms = (time.perf_counter() - started) * 1000.0
            await self.ws.send_message(p.encode(p.TaskError(task.id, exc.message, exc.stack, ms)))
            self.state.errors += 1
            self.state.view.errors += 1
        else:
            result = None if value is None else msgpack.unpackb(value)
            await self.ws.send_message(p.encode(p.Result(task.id, result, compute_ms)))
        self.pending.discard(task.id)
        self.state.done += 1
        self.state.view.done += 1

    def _notes(self, task: int) -> NoteHandler | None:
        """Sends a task's progress and checkpoints as they come, if the server takes either."""
        info = self.info
        if info is None or not {p.FEATURE_PROGRESS, p.FEATURE_CHECKPOINT} & set(info.features):
            return None
        sent = {"progress": -math.inf, "checkpoint": -math.inf}
        gaps = {"progress": PROGRESS_GAP, "checkpoint": CHECKPOINT_GAP * info.checkpoint_interval}
        features = set(info.features)  # the notes' kinds are the features' names

        async def send(kind: str, value: float | bytes) -> None:
            now = time.monotonic()
            if kind not in features or now - sent[kind] < gaps[kind]:
                return
            sent[kind] = now
            frame = p.Progress(task, value) if isinstance(value, float) else p.Checkpoint(task, value)
            with contextlib.suppress(ConnectionClosed):  # the receive loop reports why
                await self.ws.send_message(p.encode(frame))

        return send

    def hello(self, slots: int, host: str) -> p.Hello:
        client = {"kind": "headless", "id": _IDENTITY, "version": __version__, "python": platform.python_version()}
        if host:
            client["host"] = host
        return p.Hello(campaign=self.state.campaign, slots=slots, client=client, have=tuple(self.kernels))


async def run_worker(
    server: str,
    *,
    campaign: int | None = None,
    max_tasks: int | None = None,
    slots: int = 2,
    host: str = "",
    ping_interval: float = PING_SECONDS,
    view: WorkerView | None = None,
    budget: TaskBudget | None = None,
    stop: trio.Event | None = None,
    sandbox: SandboxPool | None = None,
) -> WorkerSummary:
    """Compute tasks from `server` until it says bye (or after `max_tasks` answers); `campaign` None = any.

    `view` is kept up to date for a display; `budget` (instead of `max_tasks`) is shared with other
    sessions; once `stop` is set the worker hands back its unanswered tasks and returns ("stopped");
    `sandbox` is the pool the kernels run in (one of its own otherwise).

    Raises ValidationError for a malformed URL and WorkerConnectionError when the server cannot be
    reached or drops the connection abnormally.
    """
    url = ws_url(server)
    if not 1 <= slots <= p.MAX_SLOTS:
        raise ValidationError(f"slots must be between 1 and {p.MAX_SLOTS}")
    if max_tasks is not None:
        if max_tasks <= 0:
            return WorkerSummary(0, 0, (), "no tasks requested")
        budget = TaskBudget(max_tasks)
    state = _State(campaign=campaign, budget=budget, view=view or WorkerView())
    state.show("connecting")
    connected = False
    try:
        async with AsyncExitStack() as resources:
            pool = sandbox if sandbox is not None else await resources.enter_async_context(open_sandbox_pool())
            ws = await resources.enter_async_context(open_websocket_url(url, max_message_size=MAX_MESSAGE_BYTES))
            connected = True
            session = _Session(ws, state, pool)
            await ws.send_message(p.encode(session.hello(slots, host)))
            state.show("connected")
            try:
                async with AsyncExitStack() as kernels, trio.open_nursery() as nursery:
                    nursery.start_soon(session.receive_loop)
                    nursery.start_soon(session.ping_loop, ping_interval)
                    with trio.CancelScope() as work:
                        if stop is not None:
                            nursery.start_soon(_stop_when, stop, state, work)
                        await session.compute_loop(kernels)
                    await session.hand_back()
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise _single(group) from None  # so callers can catch ConnectionClosed, DistributeError
    except (HandshakeError, OSError) as exc:
        if connected:
            raise
        raise WorkerConnectionError(f"cannot connect to {url}: {str(exc) or type(exc).__name__}") from None
    except ConnectionClosed as exc:
        reason = exc.reason
        if reason is None or reason.code not in (p.CLOSE_NORMAL, 1001):
            detail = f"{reason.code} {reason.reason or reason.name}" if reason else "no close frame"
            raise WorkerConnectionError(f"the server closed the connection ({detail})") from None
        state.reason = state.reason or f"server closed the connection: {reason.reason or reason.name}"
    return WorkerSummary(state.done, state.errors, tuple(state.campaigns), state.reason or "connection closed")


async def _stop_when(stop: trio.Event, state: _State, work: trio.CancelScope) -> None:
    await stop.wait()
    state.reason = "stopped"
    state.show("stopping")
    work.cancel()  # the task being computed is handed back with the others


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one real error in a nursery's group (the rest are cancellations), or the group itself."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else group


# This worker process's identity for result verification (a hint; the server also compares addresses):
# every connection of one `distribute worker` run sends the same one.
_IDENTITY = __import__("secrets").token_hex(16)
