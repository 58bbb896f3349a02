"""The dispatcher: this server process's share of the work, between storage and connections.

It owns three things:
- per campaign, a queue of datasets this process has leased from storage (refilled in batches,
  the storage lease renewed while the process lives, so a crashed process's datasets come back);
  the queues' state lives in one `Queues`, which only the dispatcher changes;
- the task leases held by connections (dataset, connection, deadline): a missed deadline or a
  disconnect puts the dataset back at the front of its queue;
- the results waiting for their group commit (one transaction every `flush_interval`).

Its `Verifier` owns replicas and spot checks; it returns decisions (`distribute.work.decisions`)
that the dispatcher applies to the queues.

Invariant: every dataset is either stored with its result, or leased in storage by a live process
that will hand it out again, or pending in storage. Nothing is lost; storage accepts only the first
answer for a dataset, so nothing is counted twice.

Decisions are synchronous (no awaits between reading and changing the queues); only storage and waits are async.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial

import trio

from ..models import Campaign, CampaignStatus, FailedTask, FinishedTask, LeasedDataset, Review
from ..scheduler.base import Scheduler
from ..settings import Settings
from ..storage import Storage
from .checkpoints import Checkpoints
from .commits import CommitSignals
from .decisions import Judged, Refused, Store
from .early import EarlyFailures
from .pacing import FlushPacing
from .placement import Admit, candidates_for_any
from .queues import CampaignQueue, Queues, TaskLease, has_work, overdue
from .replicas import WorkerKey
from .verifier import Verifier

__all__ = ["Dispatcher", "TaskLease"]

log = logging.getLogger(__name__)


REFRESH_SECONDS = 2.0  # how often campaigns are synced with storage and drained queues looked at again
SAFETY_WAKE_TICKS = 5  # every this many refreshes, every waiting session re-checks its state anyway
_NONE_MISSED: frozenset[int] = frozenset()
_ENDED = (CampaignStatus.COMPLETE, CampaignStatus.PAUSED, CampaignStatus.CANCELLED)  # workers hear why
_STOPPED = (CampaignStatus.FAILED, *_ENDED)  # statuses that hand out nothing


class Dispatcher:
    def __init__(self, storage: Storage, settings: Settings, scheduler: Scheduler) -> None:
        self.storage = storage
        self.settings = settings
        self.scheduler = scheduler
        self.owner = f"{uuid.uuid4().hex[:12]}"  # this process's name on storage leases
        self.queues = Queues()
        self.leases: dict[int, TaskLease] = {}  # dataset id -> lease
        self._finished: list[FinishedTask] = []
        self._failed: list[FailedTask] = []
        self._flush_now = trio.Event()
        self._listeners: dict[int, Callable[[], None]] = {}  # connection id -> wake-up callback
        self._expired: dict[int, set[int]] = {}  # connection id -> datasets whose deadline passed
        self._last_answer: dict[int, float] = {}  # connection id -> trio time of its latest answer
        self._campaign_of_expired: dict[int, int] = {}
        self._nursery: trio.Nursery | None = None
        self.tasks_completed = 0
        self.verifier = Verifier(storage, settings, self.queues)  # replicated campaigns and spot checks
        self.early = EarlyFailures(settings.pause_after_failures, settings.pause_failure_ratio)  # auto-pause
        self._unqueued: list[int] = []  # datasets of retired queues still leased here: released at the next flush
        self._pausing: set[int] = set()  # stopped here, not yet paused in storage: not to be learned again
        self.checkpoints = Checkpoints(storage, settings, self.owner)  # tasks' states and progress (ctx)
        self.commits = CommitSignals()  # result streams woken by each group commit of their campaign

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the dispatcher; cancel to stop (leases are released on the way out)."""
        await self.storage.expire_leases()
        await self.refresh_campaigns()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._flush_loop)
                nursery.start_soon(self._deadline_loop)
                nursery.start_soon(self._storage_lease_loop)
                nursery.start_soon(self._refresh_loop)
                nursery.start_soon(self._verification_loop)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._flush()
                held = sorted(self.queues.queued_ids() | set(self.leases) | set(self.verifier.held_ids()))
                with trio.move_on_after(5):
                    await self.storage.release(self.owner, held)

    async def refresh_campaigns(self) -> None:
        """Sync the set of active campaigns with storage (new, deleted, finished generating).

        A campaign new to this process gets its queue with its spot checks (stored with the
        campaign, so they exist from the moment it does).
        """
        campaigns = {c.id: c for c in await self.storage.list_campaigns(active_only=True) if c.id not in self._pausing}
        for queue in self.queues.snapshot():
            campaign_id = queue.campaign.id
            if campaign_id not in campaigns and not queue.complete:
                fresh = await self.storage.get_campaign(campaign_id)
                if fresh is None or fresh.deleted or fresh.status in _STOPPED or fresh.review == Review.REJECTED:
                    if fresh is not None:
                        queue.campaign = fresh  # so its workers hear why (paused or complete)
                    self._retire(queue)
        for campaign in campaigns.values():
            spots = None if self.queues.accepts_work(campaign.id) else await self.storage.spot_checks(campaign.id)
            if self.queues.learn(campaign):
                self.verifier.set_spot_checks(campaign.id, spots or ())
                self.early.open(campaign.id)
                self._wake_all()
            counts_needed = campaign.status == CampaignStatus.RUNNING
            known = self.queues.get(campaign.id)
            if counts_needed and known is not None and not known.ready and not self._held(campaign.id):
                await self._check_complete(known)

    async def look_up(self, campaign_id: int) -> None:
        """A worker asked for a campaign this process has no queue for: ask storage.

        An active campaign gets its queue now (another process created it moments ago); a complete
        one gets a retired queue, so its workers hear "complete" rather than "unavailable" (after a
        restart, a campaign finished by the previous run is not among the active ones).
        """
        await self.refresh_campaigns()
        if self.queues.get(campaign_id) is not None:
            return
        campaign = await self.storage.get_campaign(campaign_id)
        if campaign is not None and not campaign.deleted and campaign.status in _ENDED:
            self.queues.add_retired(campaign)

    def _retire(self, queue: CampaignQueue) -> None:
        self._unqueued += [d.id for d in queue.ready]  # a paused campaign's datasets go back to storage
        self.early.close(queue.campaign.id)
        self.queues.retire(queue)
        self.verifier.retire(queue.campaign.id)
        self._wake_all()

    # ------------------------------------------------------------------ what connections call

    def listen(self, connection_id: int, wake: Callable[[], None]) -> None:
        self._listeners[connection_id] = wake

    def unlisten(self, connection_id: int) -> None:
        self._listeners.pop(connection_id, None)

    def expired(self, holder: int) -> frozenset[int]:
        """Datasets whose deadline passed while this connection held them (and it has not answered)."""
        return frozenset(self._expired.get(holder, ()))

    def queue(self, campaign_id: int) -> CampaignQueue | None:
        return self.queues.get(campaign_id)

    def choose_campaign(
        self, exclude: Iterable[int] = (), serving: Mapping[int, int] | None = None, admit: Admit | None = None
    ) -> Campaign | None:
        """For a worker that serves any campaign: ask the scheduler (`serving`: campaign -> its other workers; `admit`: its site's policy)."""
        horizon = self.settings.reschedule_seconds
        candidates = candidates_for_any(self.queues, set(exclude), serving or {}, horizon, admit)
        chosen = self.scheduler.choose(candidates)
        return self.queues.campaign(chosen.campaign_id) if chosen else None

    has_work = staticmethod(has_work)

    async def take(
        self, campaign_id: int, n: int, holder: int, timeout: float, max_bytes: int, worker: WorkerKey | None = None
    ) -> list[LeasedDataset]:
        """Lease up to n datasets (at most `max_bytes` of them) to a connection; [] if none now.

        `worker` (identity key, address) is needed for replicated campaigns and spot checks: no
        worker gets two copies of one dataset.
        """
        queue = self.queues.get(campaign_id)
        if queue is None or queue.complete:
            return []
        queue.asked = trio.current_time()
        if queue.campaign.replication > 1:
            return await self._take_copies(queue, n, holder, timeout, max_bytes, worker)
        if not queue.drained:
            if not queue.ready:
                await self._refill(queue)
            elif len(queue.ready) < max(n, (queue.batch or self.settings.refill_batch) // 2):
                # Refill in the background before the queue runs dry, so no take waits for storage.
                self._start_refill(queue)
        # A dataset this connection let expire goes to somebody else.
        taken = self.queues.take(queue, n, max_bytes, self._expired.get(holder, _NONE_MISSED))
        deadline = trio.current_time() + timeout
        leases = self.leases
        for dataset in taken:
            leases[dataset.id] = TaskLease(dataset, holder, deadline, timeout)
        if worker is not None and self.verifier.has_spot_checks(campaign_id):
            taken += self.verifier.mix_spot_checks(campaign_id, len(taken), holder, worker, deadline, timeout)
        return taken

    async def _take_copies(
        self, queue: CampaignQueue, n: int, holder: int, timeout: float, max_bytes: int, worker: WorkerKey | None
    ) -> list[LeasedDataset]:
        """A replicated campaign: copies of datasets this connection (identity, address) has not had."""
        if worker is None:
            worker = (f"connection:{holder}", f"connection:{holder}")
        else:
            await self.verifier.load_trust(worker)
            if queue.complete:
                return []
        if not queue.drained and not queue.ready:
            await self._refill(queue)
        deadline = trio.current_time() + timeout
        pick = self.verifier.pick(queue.ready, n, holder, worker, deadline, timeout, max_bytes)
        self.queues.apply_pick(queue, pick)
        taken = list(pick.taken)
        if not queue.drained and len(taken) < n and len(queue.ready) < 4 * self.settings.refill_batch:
            # Short: what is queued is with this connection already (it is ahead of the others), or
            # the queue runs low. Lease more (bounded); the refill wakes the waiting connections.
            self._start_refill(queue)
        if self.verifier.has_spot_checks(queue.campaign.id):
            taken += self.verifier.mix_spot_checks(queue.campaign.id, len(taken), holder, worker, deadline, timeout)
        return taken

    def finish(self, holder: int, outcome: FinishedTask | FailedTask) -> bool:
        """Accept a worker's answer for a dataset it holds (or held until its deadline passed).

        Returns False for a dataset this connection never held: a forged or confused client.
        """
        lease = self.leases.get(outcome.dataset_id)
        if lease is not None and lease.holder == holder:
            del self.leases[outcome.dataset_id]
        elif not self._forget_expired(holder, outcome.dataset_id):
            match self.verifier.answer(holder, outcome):
                case Refused():
                    return False
                case Store(outcome=outcome, offer=offer):  # a replica
                    if offer is not None:
                        self._offer((offer,))
                case Judged():  # a spot check (judged by the verifier) or a settled copy: nothing to store
                    self._last_answer[holder] = trio.current_time()
                    return True
        self._last_answer[holder] = trio.current_time()
        if isinstance(outcome, FinishedTask):
            self._finished.append(outcome)
        else:
            self._failed.append(outcome)
        self.scheduler.task_finished(outcome.campaign_id, outcome.compute_ms / 1000.0)
        if (reason := self.early.record(outcome)) is not None and self._nursery is not None:
            self._stop_here(outcome.campaign_id, reason)  # at once: not one more task of it leaves
            self._flush_now.set()  # and its errors are on its page when its owner comes to see why
            self._nursery.start_soon(self.pause, outcome.campaign_id, reason)
        if len(self._finished) + len(self._failed) >= self.settings.flush_batch:
            self._flush_now.set()
        return True

    def drop_connection(self, holder: int, held: Iterable[int]) -> None:
        """A connection went away: its unanswered datasets go back to the front of their queues."""
        self._expired.pop(holder, None)
        self._last_answer.pop(holder, None)
        self.release(holder, held, passed_over=False)

    def release(self, holder: int, datasets: Iterable[int], *, passed_over: bool = True) -> None:
        """Datasets a connection hands back unfinished go to the front of their queues at once, with no
        error counted (and, `passed_over`, to other connections); one it does not hold is ignored."""
        requeued, expired = False, self._expired.get(holder, set())
        for dataset_id in datasets:
            lease = self.leases.get(dataset_id)
            if lease is not None and lease.holder == holder:
                del self.leases[dataset_id]
                requeued |= self._requeue(lease.dataset)
                if passed_over:  # kept like an expired lease: `take` skips it for this connection
                    self._expired.setdefault(holder, set()).add(dataset_id)
                    self._campaign_of_expired[dataset_id] = lease.dataset.campaign_id
            elif dataset_id in expired:  # requeued at its deadline already: no late answer is coming
                expired.discard(dataset_id)
                self._campaign_of_expired.pop(dataset_id, None)
            elif (offer := self.verifier.drop(holder, dataset_id, late=False)) is not None:
                requeued |= self.queues.requeue(offer)
        if requeued:
            self._wake_all()  # once, not once per dataset: a 256-slot worker leaving is one event

    # ------------------------------------------------------------------ internals

    def _forget_expired(self, holder: int, dataset_id: int) -> bool:
        """A late answer for a lease that expired: accept it if it was this connection's."""
        expired = self._expired.get(holder)
        if not expired or dataset_id not in expired:
            return False
        expired.discard(dataset_id)
        self.queues.discard(self._campaign_of_expired.pop(dataset_id, -1), dataset_id)
        return True

    def _requeue(self, dataset: LeasedDataset) -> bool:
        """Back to the front of its queue; a retired (paused, deleted) campaign's goes back to storage."""
        if self.queues.requeue(dataset):
            return True
        self._unqueued.append(dataset.id)
        return False

    def _offer(self, datasets: Iterable[LeasedDataset]) -> None:
        """Datasets the verifier wants copied again: to the front of their queues, and wake the waiting."""
        requeued = False
        for dataset in datasets:
            requeued |= self.queues.requeue(dataset)
        if requeued:
            self._wake_all()

    def _held(self, campaign_id: int) -> bool:
        return any(lease.dataset.campaign_id == campaign_id for lease in self.leases.values()) or self.verifier.held(
            campaign_id
        )

    def _wake_all(self) -> None:
        for wake in list(self._listeners.values()):
            wake()

    async def maybe_complete(self, queue: CampaignQueue) -> None:
        """Retire the campaign if storage has nothing open left and nothing is held here."""
        if not queue.complete and queue.drained and not queue.ready and not self._held(queue.campaign.id):
            await self._check_complete(queue)

    def _start_refill(self, queue: CampaignQueue) -> None:
        if not queue.refilling and self._nursery is not None:
            self._nursery.start_soon(self._refill, queue)

    async def _refill(self, queue: CampaignQueue) -> None:
        settings = self.settings
        batch = self.queues.begin_refill(queue, settings.refill_batch, settings.refill_growth, trio.current_time())
        if batch is None:
            await queue.refilled.wait()
            return
        try:
            replicated = queue.campaign.replication > 1
            leased = await self.storage.lease(
                queue.campaign.id, batch, self.owner, settings.lease_seconds, replicated=replicated
            )
            self.checkpoints.leased(leased)
            if queue.complete:
                return await self.storage.release(self.owner, [d.id for d in leased])
            if replicated:
                leased = self.verifier.add_leased(queue.campaign.replication, leased)
            # Sessions waiting for work on this campaign are woken when it had none (or, replicated,
            # when there are new copies: what was queued may all be with the waiting connections).
            if self.queues.add_leased(queue, leased, batch, self.leases, wake_any=replicated):
                self._wake_all()
        finally:
            self.queues.end_refill(queue)
        await self.maybe_complete(queue)

    def notify_new_datasets(self, campaign_id: int) -> None:
        """The generator stored more datasets (or finished): look in storage again."""
        queue = self.queues.get(campaign_id)
        if queue is not None:
            self.queues.undrain(queue)
            self._wake_all()

    async def _check_complete(self, queue: CampaignQueue) -> None:
        if await self.storage.complete_if_done(queue.campaign.id):
            self._retire(queue)

    async def _flush(self) -> None:
        await self.checkpoints.flush()  # first: a dataset released below keeps its latest state
        if self._unqueued:
            unqueued, self._unqueued = self._unqueued, []
            await self.storage.release(self.owner, unqueued)
        finished, self._finished = self._finished, []
        failed, self._failed = self._failed, []
        if not finished and not failed:
            return
        try:
            await self.storage.store_outcomes(finished, failed, self.settings.max_task_errors)
        except Exception:
            # Nothing was committed and the datasets are still leased to this process: keep the
            # outcomes and try again on the next round rather than lose them.
            log.exception("group commit of %d outcomes failed; will retry", len(finished) + len(failed))
            self._finished[:0], self._failed[:0] = finished, failed
            await trio.sleep(0.5)
            return
        self.tasks_completed += len(finished)
        self.verifier.stored(finished)
        touched = {o.campaign_id for o in finished} | {o.campaign_id for o in failed}
        self.commits.landed(touched)
        for campaign_id in touched:
            queue = self.queues.get(campaign_id)
            if queue is None:
                continue
            if failed:
                self.queues.undrain(queue)  # failed datasets went back to the pool
            if queue.drained and not queue.ready and not self._held(campaign_id):
                await self._check_complete(queue)
        if failed:
            self._wake_all()  # workers waiting for work: the retries are theirs now, not in 10 s

    def _stop_here(self, campaign_id: int, reason: str, status: str = CampaignStatus.PAUSED) -> None:
        """Retire the campaign's queue in this process before storage hears of the pause."""
        self._pausing.add(campaign_id)
        queue = self.queues.get(campaign_id)
        if queue is not None and not queue.complete:
            queue.campaign = replace(queue.campaign, status=status, generation_error=reason)
            self._retire(queue)

    async def pause(self, campaign_id: int, reason: str, status: str = CampaignStatus.PAUSED) -> bool:
        """Pause (or, `status` cancelled, stop for good) an active campaign: no new task of it leaves this
        process, its queued datasets go back to storage, and its workers hear why (the other processes
        follow at their next refresh, and storage leases them nothing more). False if it was not active."""
        self._stop_here(campaign_id, reason, status)
        try:
            active = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)
            if changed := await self.storage.change_status(campaign_id, active, status, reason) is not None:
                log.warning("campaign %d %s: %s", campaign_id, status, reason)
        finally:
            self._pausing.discard(campaign_id)
        await self.refresh_campaigns()  # (if it completed or was deleted meanwhile, storage decided)
        return changed

    async def _flush_loop(self) -> None:
        """Group commits: at once when `flush_batch` outcomes wait, else after a wait set by the rate (`pacing`)."""
        pacing = FlushPacing.from_settings(self.settings)
        interval = pacing.shortest
        while True:
            started = trio.current_time()
            with trio.move_on_after(interval):
                await self._flush_now.wait()
            self._flush_now = trio.Event()
            arrived = len(self._finished) + len(self._failed)
            elapsed = trio.current_time() - started
            await self._flush()
            interval = pacing.next_wait(arrived, elapsed, self.commits.followed)

    async def _verification_loop(self) -> None:
        """Apply each verification round to the queues: copies offered again, re-opened work, completion."""
        while True:
            decided = await self.verifier.next_round()
            self._offer(decided.offers)
            if decided.reopened:
                self.queues.undrain_all()
                self._wake_all()
            if decided.settled:
                for queue in self.queues.snapshot():
                    await self.maybe_complete(queue)

    async def _deadline_loop(self) -> None:
        while True:
            await trio.sleep(0.25)
            now = trio.current_time()
            requeued = False
            for dataset_id, lease in list(self.leases.items()):
                if self._overdue(lease, now):
                    del self.leases[dataset_id]
                    self._expired.setdefault(lease.holder, set()).add(dataset_id)
                    self._campaign_of_expired[dataset_id] = lease.dataset.campaign_id
                    log.info("task %d missed its deadline on connection %d", dataset_id, lease.holder)
                    requeued |= self._requeue(lease.dataset)
            if requeued:
                self._wake_all()
            if self.verifier.busy():
                self._offer(self.verifier.overdue(partial(self._late, now=now)))

    def _overdue(self, lease: TaskLease, now: float) -> bool:
        return self._late(lease.holder, lease.deadline, lease.timeout, now=now)

    def _late(self, holder: int, deadline: float, timeout: float, *, now: float) -> bool:
        return overdue(deadline, timeout, self._last_answer.get(holder, -math.inf), now)

    async def _storage_lease_loop(self) -> None:
        period = self.settings.lease_seconds / 3
        while True:
            await trio.sleep(period)
            if idle := self.queues.give_back_idle(trio.current_time(), self.settings.lease_seconds):
                await self.storage.release(self.owner, idle)  # before renewing: unwanted here
            await self.storage.renew_leases(self.owner, self.settings.lease_seconds)
            if await self.storage.expire_leases():
                self.queues.undrain_all()
                self._wake_all()

    async def _refresh_loop(self) -> None:
        for tick in itertools.count(1):
            await trio.sleep(REFRESH_SECONDS)
            await self.refresh_campaigns()
            for queue in self.queues:
                if queue.drained and not queue.complete and not queue.ready:
                    self.queues.undrain(queue)  # other processes may have released work:
                    self._start_refill(queue)  # look now; the refill wakes the workers if it finds some
            # Waiting sessions are woken by events (new work, a retired campaign); waking every
            # one of them on each tick cost idle connections CPU. This is only a safety net.
            if tick % SAFETY_WAKE_TICKS == 0:
                self._wake_all()
