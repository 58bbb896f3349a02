"""The worker gateway: one WebSocket session per connected worker, speaking protocol v1.

Each connection runs two tasks in its own nursery: the receive loop (results, errors, pings) and
the send loop (campaign frames, task batches, idle/bye). The send loop keeps up to `slots`
tasks and at most `max_inflight_bytes` of datasets with the worker, so a worker that stops
reading cannot make the server buffer without bound. A protocol violation closes that one
socket with a WebSocket close code; nothing else is affected.

Limits (policies in limits.py): a connection over its address's connection cap, or over the
server's, is closed at once (1008); a `hello` over `max_hello_bytes` is closed (1009); every
received frame is metered per connection and per address (1008 when over); a connection that
sends pings without reading its pongs is closed once MAX_PENDING_PONGS wait (1008); the
heartbeat sweep (`Gateway.run`, one task for all connections) closes a connection that holds
tasks and has been silent for `heartbeat_timeout`; and the slots granted shrink for an address or
client id whose tasks expired or were dropped unanswered, and grow back as it answers. A browser
holds no more than it can expect to finish before its visit likely ends (`work.dwell`).

A worker may hand tasks back unfinished (`release`, v1.1): they go back to the queue at once, count
neither as answered nor as missed, and ids it does not hold are ignored; with `final` it gets no more.
`progress` and `checkpoint` (v1.1) go to `work.checkpoints` for tasks the connection holds (others are ignored).

Results are checked before anything else touches them (`protocol.not_plain`): a value that is not
plain data (binary, extension types, non-string map keys, nesting deeper than protocol.MAX_DEPTH)
is stored as a kernel error, so its dataset goes back to the queue like any other kernel error.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack
import trio

from . import protocol as p
from .errors import ProtocolError
from .limits import (
    Addresses,
    ConnectionLimits,
    SlotAllowance,
    connection_cap,
    identity_keys,
)
from .logs import CONNECTION_ID
from .models import Campaign, CampaignStatus, FailedTask, FinishedTask
from .sessions import PEER_GONE, Session, WebSocketLike, limits_of
from .settings import Settings
from .work.checkpoints import features
from .work.dispatcher import Dispatcher
from .work.dwell import Dwell, EndedBy
from .work.placement import Placements
from .work.sites import SiteTickets
from .work.verification import canonical
from .work.versions import needs_frame, version_run

__all__ = ["Gateway", "WebSocketLike"]

log = logging.getLogger(__name__)
_connection_ids = itertools.count(1)
# Pongs owed to a connection that sends pings faster than it reads: past this many it is closed
# (an honest worker pings every 20-25 s and reads all the time).
MAX_PENDING_PONGS = 16


class Gateway:
    def __init__(self, dispatcher: Dispatcher, settings: Settings) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self.sessions: dict[int, Session] = {}
        self.placements = Placements(dispatcher, settings.reschedule_seconds)  # workers that accept any campaign
        self.tickets = SiteTickets(lifetime=settings.site_ticket_seconds)  # the platform sets the shared secret
        self.frames_received = 0  # every frame read from a worker, well-formed or not (/-/health)
        self.on_dispatch: Callable[[float], None] = lambda seconds: None  # the platform's dispatch-latency metric
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = connection_cap(settings.max_connections, open_files)
        if 0 < cap < settings.max_connections:
            log.warning(
                "max_connections %d is more than the open-files limit (%d) leaves room for; using %d",
                settings.max_connections,
                open_files,
                cap,
            )
        self.addresses = Addresses(settings, cap)
        self.allowance = SlotAllowance(settings.max_tasks_per_connection, settings.missed_task_memory)
        self.dwell = Dwell(settings.dwell_min_samples)  # task durations and visit lengths, this process's
        # connection id -> what the heartbeat sweep needs; one sweep task costs less than a
        # watchdog task per connection (that cost ~4 KiB of RSS per idle connection)
        self._watched: dict[int, tuple[Session, ConnectionLimits, trio.CancelScope]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat sweep: close connections that hold tasks and have been silent too long."""
        timeout = self.settings.heartbeat_timeout
        period = min(timeout / 4, 5.0)  # a silent connection is closed within a quarter of the timeout late
        task_status.started()
        while True:
            await trio.sleep(period)
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        timeout = self.settings.heartbeat_timeout
        for session, limits, scope in list(self._watched.values()):
            if session.held and now - limits.heard >= timeout and session.close is None:
                log.info("closing connection %d: silent for %.1f s holding tasks", session.id, now - limits.heard)
                reason = f"heartbeat timeout: no frame for {timeout:g} s while holding tasks"
                session.close = ProtocolError(p.CLOSE_POLICY_VIOLATION, reason)
                session.wake()
                scope.cancel()

    async def serve(self, ws: WebSocketLike, remote: str) -> None:
        """Run one worker connection to its end; close it with a code if it breaks the protocol or a limit."""
        connection = next(_connection_ids)
        # Every log line of the connection, in this task and those it starts, names it.
        token = CONNECTION_ID.set(str(connection))
        try:
            address = self.addresses.admit(remote, trio.current_time())
            if isinstance(address, str):
                log.info("refused a connection from %s: %s", remote, address)
                with contextlib.suppress(*PEER_GONE):
                    await ws.accept()
                    await ws.close(p.CLOSE_POLICY_VIOLATION, address)
                return
            try:
                await self._serve(ws, remote, limits_of(self.settings, address), connection)
            finally:
                self.addresses.leave(address)
        finally:
            CONNECTION_ID.reset(token)

    async def _serve(self, ws: WebSocketLike, remote: str, limits: ConnectionLimits, connection: int) -> None:
        try:
            frame: str | bytes = b""
            with trio.move_on_after(self.settings.heartbeat_timeout) as waiting:
                frame = await ws.receive()
                self.frames_received += 1
            if waiting.cancelled_caught:
                raise ProtocolError(p.CLOSE_POLICY_VIOLATION, "no 'hello' before the heartbeat timeout")
            # Metered like every later frame: new connections must not be a way around the rates.
            if reason := limits.over(len(frame) if frame else 0, trio.current_time()):
                raise ProtocolError(p.CLOSE_POLICY_VIOLATION, reason)
            if frame and len(frame) > self.settings.max_hello_bytes:
                limit = self.settings.max_hello_bytes
                raise ProtocolError(p.CLOSE_TOO_BIG, f"'hello' of {len(frame)} bytes is over the limit of {limit}")
            hello = p.decode_client(frame)
            if not isinstance(hello, p.Hello):
                raise ProtocolError(p.CLOSE_PROTOCOL_ERROR, "the first frame must be 'hello'")
        except ProtocolError as exc:
            with contextlib.suppress(*PEER_GONE):
                await ws.close(exc.code, exc.reason)
            return
        site, slots = self.tickets.admit(hello.site, hello.slots, hello.client, time.time())  # a bad ticket: anonymous
        session = Session(connection, remote, replace(hello, slots=slots), set(hello.have), site=site)
        log.debug("worker connected from %s: campaign %s, %d slots", remote, hello.campaign or "any", hello.slots)
        limits.keys = identity_keys(remote, hello.client)
        self.sessions[session.id] = session
        limits.address.wakers[session.id] = session.wake
        self.dispatcher.listen(session.id, session.wake)
        self.dwell.joined(session.id, hello.client, trio.current_time())
        reason = ""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, ws, session, limits, nursery.cancel_scope)
                self._watched[session.id] = (session, limits, nursery.cancel_scope)
                reason = await self._send_loop(ws, session, limits)
                nursery.cancel_scope.cancel()
            if session.close is not None:
                await ws.close(session.close.code, session.close.reason)
            else:
                await ws.send(p.encode(p.Bye(reason)))
                await ws.close(p.CLOSE_NORMAL, reason)
        except* PEER_GONE:
            log.debug("connection %d: the worker went away while we were sending", session.id)
        finally:
            log.debug("worker left after %d tasks", session.tasks_done)
            self._watched.pop(session.id, None)
            self._left(session, limits)
            ended_by: EndedBy = "server" if reason or session.close else "leaving" if session.leaving else "visitor"
            self.dwell.left(session.id, trio.current_time(), ended_by)
            self.dispatcher.unlisten(session.id)
            self.placements.leave(session.id)
            self.dispatcher.drop_connection(session.id, list(session.held))
            self.dispatcher.checkpoints.left(session.held)
            del self.sessions[session.id]

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(
        self, ws: WebSocketLike, session: Session, limits: ConnectionLimits, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                frame = await ws.receive()
                self.frames_received += 1
                now = trio.current_time()
                # Quart gives None for an empty frame; decode_client rejects it after the metering.
                if reason := limits.over(len(frame) if frame else 0, now):
                    raise ProtocolError(p.CLOSE_POLICY_VIOLATION, reason)
                held = len(session.held)
                message = p.decode_client(frame)
                if isinstance(message, p.Release):  # not an answer: it earns no slots back
                    self._hand_back(session, limits, message)
                    continue
                try:
                    self._handle(session, message)
                finally:
                    if (answered := held - len(session.held)) > 0:
                        self._answered(session, limits, answered, now)
        except ProtocolError as exc:
            log.info("closing connection %d: %s", session.id, exc)
            session.close = exc
            session.wake()  # the send loop notices and returns
            scope.cancel()

    def _handle(self, session: Session, message: p.ClientMessage) -> None:
        now = trio.current_time()  # one clock read per frame, not per result
        match message:
            case p.Result():
                self._accept(session, message.task, message.value, message.compute_ms, now)
            case p.Results():
                for result in message.items:
                    self._accept(session, result.task, result.value, result.compute_ms, now)
            case p.TaskError():
                self._fail(session, message.task, message.message, message.stack, message.compute_ms, now)
            case p.Ping():
                if len(session.pongs) >= MAX_PENDING_PONGS:
                    raise ProtocolError(
                        p.CLOSE_POLICY_VIOLATION, f"{MAX_PENDING_PONGS} pongs waiting: pings must wait for their pongs"
                    )
                session.pongs.append(message.nonce)
                session.wake()
            case p.Progress() if message.task in session.held:
                self.dispatcher.checkpoints.progress(message.task, message.fraction)
            case p.Checkpoint() if message.task in session.held:
                self.dispatcher.checkpoints.checkpoint(message.task, message.state, session.campaign)
            case p.Hello():
                raise ProtocolError(p.CLOSE_PROTOCOL_ERROR, "'hello' may only be the first frame")

    def _hand_back(self, session: Session, limits: ConnectionLimits, message: p.Release) -> None:
        """Tasks the worker will not compute: to another worker at once, no error counted, not missed."""
        tasks = [task for task in dict.fromkeys(message.tasks) if task in session.held]  # forged ids: ignored
        for task in tasks:
            session.inflight_bytes -= session.held.pop(task)[1]
            limits.missed.discard(task)
        if tasks:
            self.dispatcher.release(session.id, tasks)
            self.dispatcher.checkpoints.left(tasks)
            self._freed(limits, len(tasks))
            log.info("connection %d handed back %d task(s)", session.id, len(tasks))
        session.leaving |= message.final
        session.wake()

    def _release(self, session: Session, task: int, compute_ms: float, now: float) -> tuple[int, float]:
        """Free the task's slot; returns its campaign and the compute time, capped at the elapsed time.

        Workers report their own compute time; a liar could otherwise claim hours for a campaign
        and skew the compute-time scheduler.
        """
        held = session.held.pop(task, None)
        if held is None:
            raise ProtocolError(p.CLOSE_POLICY_VIOLATION, f"task {task} is not held by this connection")
        campaign_id, size, sent_at = held
        session.inflight_bytes -= size
        session.tasks_done += 1
        session.wake()
        compute_ms = min(compute_ms, (now - sent_at) * 1000.0)
        self.dwell.task_done(campaign_id, compute_ms / 1000.0, now)
        return campaign_id, compute_ms

    def _accept(self, session: Session, task: int, value: Any, compute_ms: float, now: float) -> None:
        campaign_id, compute_ms = self._release(session, task, compute_ms, now)
        # Before anything else touches the value: anything but plain data would break the
        # downloads halfway, the console's pages or the canonical packing of replicas.
        if problem := p.not_plain(value):
            message = f"result is not plain data: {problem}"
            self._record(session, FailedTask(task, campaign_id, message, "", compute_ms, session.worker))
            return
        # Replicas are compared byte for byte: pack them canonically (sorted map keys). Replication 1
        # keeps the plain packing of the hot path.
        replicated = session.campaign is not None and session.campaign.replication > 1
        payload = None if value is None else canonical(value) if replicated else msgpack.packb(value)
        if payload is not None and len(payload) > self.settings.max_result_bytes:
            limit = self.settings.max_result_bytes
            self._record(
                session,
                FailedTask(
                    task,
                    campaign_id,
                    f"result of {len(payload)} bytes exceeds the limit of {limit}",
                    "",
                    compute_ms,
                    session.worker,
                ),
            )
            return
        # Tagged with the version this connection runs (its last campaign frame), not the newest one; the
        # identity goes with every result: volunteers' credit is summed by it (storage.credit); `site` is
        # the verified host, apart from the claimed one.
        answer = FinishedTask(
            task, campaign_id, payload, compute_ms, session.worker, session.host,
            identity=session.key[0], kernel_version=version_run(session.campaign),
            site=session.site.site_id if session.site else None,
        )  # fmt: skip
        self._record(session, answer)

    def _fail(self, session: Session, task: int, message: str, stack: str, compute_ms: float, now: float) -> None:
        campaign_id, compute_ms = self._release(session, task, compute_ms, now)
        self._record(
            session, FailedTask(task, campaign_id, message or "kernel error", stack, compute_ms, session.worker)
        )

    def _record(self, session: Session, outcome: FinishedTask | FailedTask) -> None:
        if isinstance(outcome, FailedTask):  # made on three paths; tagged like results (`_accept`)
            outcome = replace(outcome, kernel_version=version_run(session.campaign))
        if not self.dispatcher.finish(session.id, outcome):
            raise ProtocolError(p.CLOSE_POLICY_VIOLATION, f"task {outcome.dataset_id} is not held by this connection")
        self.dispatcher.checkpoints.answered(outcome.dataset_id, finished=isinstance(outcome, FinishedTask))

    # ------------------------------------------------------------------ limits

    def _scan_expired(self, session: Session, limits: ConnectionLimits, now: float) -> None:
        """Count held tasks whose deadline passed (the dispatcher took the lease back) as missed, once.

        The dispatcher's record of this connection's expired leases is usually empty, so this is
        cheap on every top-up.
        """
        expired = self.dispatcher.expired(session.id)
        if not expired:
            return
        new = [d for d in expired if d in session.held and d not in limits.missed]
        if new:
            limits.missed.update(new)
            self._missed(session, limits, len(new), now)

    def _missed(self, session: Session, limits: ConnectionLimits, count: int, now: float) -> None:
        granted = self.allowance.granted(session.hello.slots, limits.keys, now)
        for key in limits.keys:
            self.allowance.missed(key, count, now, granted)
        after = self.allowance.granted(session.hello.slots, limits.keys, now)
        log.info(
            "connection %d missed %d task(s): slots %d -> %d for %s", session.id, count, granted, after, limits.keys
        )

    def _answered(self, session: Session, limits: ConnectionLimits, count: int, now: float) -> None:
        for key in limits.keys:
            self.allowance.answered(key, count, now)
        self._freed(limits, count)

    def _freed(self, limits: ConnectionLimits, count: int) -> None:
        """Tasks of this address left their connection: wake its others if that made room."""
        address = limits.address
        was_full = self.addresses.room(address) <= 0
        address.held -= count
        if was_full and self.addresses.room(address) > 0:
            for wake in list(address.wakers.values()):
                wake()

    def _left(self, session: Session, limits: ConnectionLimits) -> None:
        """The connection ended: what it still held counts as missed (unless counted) and is freed."""
        limits.address.wakers.pop(session.id, None)
        if session.held:
            if unanswered := len(session.held.keys() - limits.missed):
                self._missed(session, limits, unanswered, trio.current_time())
            self._freed(limits, len(session.held))

    # ------------------------------------------------------------------ sending

    async def _send_loop(self, ws: WebSocketLike, session: Session, limits: ConnectionLimits) -> str:
        """Keep the worker supplied; returns the reason for `bye` when the session should end."""
        while session.close is None:
            session.event = trio.Event()
            while session.pongs:
                await ws.send(p.encode(p.Pong(session.pongs.pop(0))))
            wanted = session.hello.campaign
            if wanted is not None and self.dispatcher.queue(wanted) is None and not session.looked_up:
                # A campaign this process has not picked up yet (created through another server
                # process moments ago, or finished before a restart): look in storage once.
                session.looked_up = True
                await self.dispatcher.look_up(wanted)
            campaign, reason = self._assign(session)
            if reason:
                return reason
            if campaign is not None and needs_frame(session.campaign, campaign):
                if session.held:  # a new kernel version: the tasks of the one the worker runs finish first
                    campaign = None
                else:
                    await self._send_campaign(ws, session, campaign)
            if campaign is not None:
                now = trio.current_time()
                if session.held:
                    self._scan_expired(session, limits, now)
                slots = self.allowance.granted(session.hello.slots, limits.keys, now)
                slots = self.dwell.slots(session.id, campaign.id, slots, now)  # a browser: what its visit allows
                free = slots - len(session.held)
                room = self.addresses.room(limits.address)
                budget = self.settings.max_inflight_bytes - session.inflight_bytes
                # Top up once half the slots are free: the worker still holds the other half (no
                # stall), and tiny tasks travel many to a frame instead of one frame per result.
                if free >= max(1, slots // 2) and room > 0 and budget > 0 and not session.leaving:
                    tasks = await self.dispatcher.take(
                        campaign.id, min(free, room), session.id, campaign.task_timeout, budget, worker=session.key
                    )
                    if tasks:
                        self.on_dispatch(trio.current_time() - now)
                        now = trio.current_time()
                        if not session.held:
                            limits.heard = now  # the heartbeat counts from when it holds tasks
                        limits.address.held += len(tasks)
                        for dataset in tasks:
                            session.held[dataset.id] = (campaign.id, len(dataset.payload), now)
                            session.inflight_bytes += len(dataset.payload)
                        session.idle_sent = False
                        resume = self.dispatcher.checkpoints.handed_out
                        await ws.send(p.encode_tasks([p.Task(d.id, d.payload, resume(d, campaign)) for d in tasks]))
                        continue
            if not session.held and not session.idle_sent:
                session.idle_sent = True
                await ws.send(p.encode(p.Idle("waiting for work")))
            # No timeout: the dispatcher wakes the session on every event that concerns it (results,
            # new work, a retired campaign) and, as a safety net, every SAFETY_WAKE_TICKS refreshes.
            # A deadline per wait cost each frame a cancel scope on Trio's deadline heap.
            await session.event.wait()
        return "protocol error"

    def _assign(self, session: Session) -> tuple[Campaign | None, str]:
        """Which campaign the session should take tasks from now (None: wait), or a reason to end."""
        wanted = session.hello.campaign
        if wanted is not None:
            queue = self.dispatcher.queue(wanted)
            if queue is None:
                return None, "" if session.held else "unavailable"
            if queue.complete:  # finished, or stopped: paused (by its owner or by auto-pause)
                return None, "" if session.held else (
                    queue.campaign.status
                    if queue.campaign.status in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED)
                    else "complete"
                )
            return queue.campaign, ""
        # Placed again periodically even while it holds tasks; never switched under tasks in flight.
        held, now = bool(session.held), trio.current_time()
        campaign, no_work = self.placements.place(session.id, session.campaign, held, now, session.site)
        return campaign, "no work" if no_work else ""

    async def _send_campaign(self, ws: WebSocketLike, session: Session, campaign: Campaign) -> None:
        known = campaign.content_hash in session.have
        await ws.send(
            p.encode(
                p.CampaignInfo(
                    id=campaign.id,
                    name=campaign.name,
                    hash=campaign.content_hash,
                    kernel=None if known else campaign.kernel,
                    static=None if known else campaign.static_dataset,
                    task_timeout=campaign.task_timeout,
                    max_result_bytes=self.settings.max_result_bytes,
                    features=features(campaign, p.FEATURES),
                    checkpoint_max_bytes=self.settings.checkpoint_max_bytes,
                    checkpoint_interval=self.settings.checkpoint_interval,
                )
            )
        )
        session.have.add(campaign.content_hash)
        session.campaign = campaign
        self.placements.pin(session.id, campaign)  # counted on it (a no-op when it was placed there)
