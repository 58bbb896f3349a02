"""The per-campaign queues of datasets this server process has leased: the one owner of their state.

Also the task lease a connection holds (`TaskLease`) and when it is overdue (`overdue`).

The dispatcher holds one `Queues` and does the storage calls and the waiting; every change to a
queue (what is ready, whether storage looked drained, the refill bookkeeping, retirement) happens
here, and so do the verifier's decisions about queues (`CopyPick`, datasets offered again). The
verifier reads the campaigns through `campaign` and `accepts_work` only.

Pure: synchronous, no I/O; times are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container, Iterator
from dataclasses import dataclass, field

import trio

from ..models import Campaign, LeasedDataset
from .decisions import CopyPick

__all__ = ["PROGRESS_GRACE", "CampaignQueue", "Queues", "TaskLease", "has_work", "overdue"]

# A connection that keeps answering is working through its prefetched tasks (a browser on a low
# throttle rests between tasks), so its queued tasks get more time: up to this many extra timeouts.
PROGRESS_GRACE = 4


@dataclass(slots=True)
class TaskLease:
    """A dataset handed to a connection, until it answers, hands it back or misses the deadline."""

    dataset: LeasedDataset
    holder: int  # connection id
    deadline: float  # trio clock
    timeout: float  # the campaign's per-task limit, seconds


def overdue(deadline: float, timeout: float, last_answer: float, now: float) -> bool:
    """Whether a lease's deadline has passed, with grace for a connection still answering (`last_answer`)."""
    if now < deadline:
        return False
    progressing = last_answer + timeout > now
    return not progressing or now >= deadline + PROGRESS_GRACE * timeout


@dataclass(eq=False)
class CampaignQueue:
    campaign: Campaign
    ready: deque[LeasedDataset] = field(default_factory=deque)
    drained: bool = False  # the last refill found nothing pending in storage
    complete: bool = False
    refilling: bool = False
    refilled: trio.Event = field(default_factory=trio.Event)
    batch: int = 0  # datasets the next refill leases: grows with demand (see Queues.begin_refill)
    taken: int = 0  # datasets handed out since the last refill started
    refill_started: float = -math.inf  # trio clock
    asked: float = -math.inf  # when a connection of this process last asked it for work (trio clock)


def has_work(queue: CampaignQueue) -> bool:
    """Datasets are queued, or storage may still have some."""
    return bool(queue.ready) or not queue.drained


class Queues:
    """Every campaign queue of this process, by campaign id."""

    def __init__(self) -> None:
        self._by_id: dict[int, CampaignQueue] = {}

    def get(self, campaign_id: int) -> CampaignQueue | None:
        return self._by_id.get(campaign_id)

    def __iter__(self) -> Iterator[CampaignQueue]:
        """The queues now; for loops without awaits (see `snapshot`)."""
        return iter(self._by_id.values())

    def snapshot(self) -> list[CampaignQueue]:
        """The queues now, as a list: for loops that await."""
        return list(self._by_id.values())

    # ------------------------------------------------------------------ the verifier's view

    def campaign(self, campaign_id: int) -> Campaign | None:
        """The campaign as last synced with storage, if this process knows it."""
        queue = self._by_id.get(campaign_id)
        return queue.campaign if queue is not None else None

    def accepts_work(self, campaign_id: int) -> bool:
        """The campaign has an open queue: datasets put back are handed out again."""
        queue = self._by_id.get(campaign_id)
        return queue is not None and not queue.complete

    # ------------------------------------------------------------------ which campaigns

    def learn(self, campaign: Campaign) -> bool:
        """An active campaign, fresh from storage: True if it got a new queue."""
        queue = self._by_id.get(campaign.id)
        if queue is None or queue.complete:
            self._by_id[campaign.id] = CampaignQueue(campaign)
            return True
        if queue.campaign.status != campaign.status:
            queue.drained = False  # generation finished or new datasets: look again
        queue.campaign = campaign
        return False

    def add_retired(self, campaign: Campaign) -> None:
        """A campaign finished before this process started: its workers hear "complete"."""
        self._by_id[campaign.id] = CampaignQueue(campaign, complete=True)

    @staticmethod
    def retire(queue: CampaignQueue) -> None:
        queue.complete = True
        queue.ready.clear()

    @staticmethod
    def undrain(queue: CampaignQueue) -> None:
        """Storage may have datasets for it again: the next take or refill looks."""
        queue.drained = False

    def undrain_all(self) -> None:
        for queue in self._by_id.values():
            queue.drained = False

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def take(queue: CampaignQueue, n: int, max_bytes: int, passed_over: Container[int]) -> list[LeasedDataset]:
        """Up to n datasets from the front (at most `max_bytes`, one always), skipping `passed_over`.

        Skipped datasets (the taking connection let them expire) stay at the front for others.
        """
        ready = queue.ready
        taken: list[LeasedDataset] = []
        skipped: list[LeasedDataset] = []
        size = 0
        while ready and len(taken) < n and (not taken or size + len(ready[0].payload) <= max_bytes):
            dataset = ready.popleft()
            if dataset.id in passed_over:
                skipped.append(dataset)
                continue
            size += len(dataset.payload)
            taken.append(dataset)
        if skipped:
            ready.extendleft(reversed(skipped))
        queue.taken += len(taken)
        return taken

    @staticmethod
    def apply_pick(queue: CampaignQueue, pick: CopyPick) -> None:
        """Carry out the verifier's pick of copies (see `CopyPick`)."""
        ready = queue.ready
        for _ in range(pick.scanned):
            ready.popleft()
        ready.extendleft(reversed(pick.kept))
        queue.taken += len(pick.taken)

    def requeue(self, dataset: LeasedDataset) -> bool:
        """Put a dataset back at the front of its open queue; False if the campaign has none."""
        queue = self._by_id.get(dataset.campaign_id)
        if queue is None or queue.complete:
            return False
        queue.ready.appendleft(dataset)
        return True

    def discard(self, campaign_id: int, dataset_id: int) -> None:
        """A dataset answered late after all: it must not be handed out again."""
        queue = self._by_id.get(campaign_id)
        if queue is not None:
            queue.ready = deque(d for d in queue.ready if d.id != dataset_id)

    def give_back_idle(self, now: float, idle_for: float) -> list[int]:
        """Take the queued datasets out of every queue nobody here asked for work within `idle_for`.

        A process leases ahead of demand; datasets it queues for a campaign that no connection of
        its own serves must go back to storage, where another process's workers can lease them,
        rather than wait here under leases renewed for ever. Replicated queues keep their copies:
        the verifier tracks who holds which.
        """
        ids: list[int] = []
        for queue in self._by_id.values():
            if queue.ready and not queue.refilling and queue.campaign.replication <= 1 and now - queue.asked > idle_for:
                ids += (d.id for d in queue.ready)
                queue.ready.clear()
                queue.drained = False
        return ids

    def queued_ids(self) -> set[int]:
        return {d.id for q in self._by_id.values() for d in q.ready}

    # ------------------------------------------------------------------ refills

    @staticmethod
    def begin_refill(queue: CampaignQueue, base: int, growth: int, now: float) -> int | None:
        """How many datasets to lease now; None if a refill of this queue is already running.

        At least `base`, and twice what was handed out since the last refill if that was recent
        (up to `growth` x): at high rates one storage round trip must cover all the tasks handed
        out while the next one is on its way.
        """
        if queue.refilling:
            return None
        queue.refilling = True
        demand = queue.taken if now - queue.refill_started < 1.0 else 0
        batch = queue.batch = min(max(base, 2 * demand), growth * base)
        queue.taken = 0
        queue.refill_started = now
        return batch

    @staticmethod
    def add_leased(
        queue: CampaignQueue, leased: list[LeasedDataset], batch: int, held: Container[int], *, wake_any: bool
    ) -> bool:
        """Queue what a refill leased (not what is queued or `held` already); True: wake the waiting.

        Those waiting for work are woken when the queue had none, or for any arrival if `wake_any`.
        """
        known = {d.id for d in queue.ready}
        was_empty = not queue.ready
        queue.ready.extend(d for d in leased if d.id not in known and d.id not in held)
        if len(leased) < batch:
            queue.drained = True
        return (was_empty or wake_any) and bool(queue.ready)

    @staticmethod
    def end_refill(queue: CampaignQueue) -> None:
        queue.refilling = False
        queue.refilled.set()
        queue.refilled = trio.Event()
