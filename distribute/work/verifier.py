"""Result verification in the running server: replicas, quorum verdicts, trust, spot checks.

The dispatcher owns one `Verifier`. For campaigns with replication > 1 it hands each dataset to
several workers (`take`), collects their answers (`answer`, stored by the dispatcher's group
commit as pending results), and once the results a dataset needs are stored, its loop (`run`)
reads the votes back from storage, decides (`verification.decide`, with the owner's comparator in
the sandbox if there is one) and writes the verdicts in one transaction per batch. Disagreeing
workers are flagged; their trusted results come back as pending replicas (storage re-opens them).

Spot checks (known-answer datasets) are mixed into any campaign that has them, at
`spot_check_rate` per task; a wrong answer flags the worker.

Decisions are synchronous; only storage and sandbox calls are awaited.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from ..errors import KernelError
from ..models import FailedTask, FinishedTask, LeasedDataset, ResultStatus, Verdicts
from ..sandbox.kernels import KernelRun, open_kernel
from .replicas import Copy, Replicas, WorkerKey
from .verification import (
    Conflict,
    More,
    Quorum,
    Vote,
    canonical,
    comparator_input,
    comparator_kernel,
    decide,
    trust_probability,
)

if TYPE_CHECKING:
    from .dispatcher import CampaignQueue, Dispatcher

__all__ = ["Verifier"]

log = logging.getLogger(__name__)
COMPARE_TIMEOUT = 5.0  # seconds for one compare(a, b) in the sandbox
SPOT_RELOAD = 2.0  # seconds between looks for the spot checks of a campaign that has none (yet)


class Verifier:
    def __init__(self, dispatcher: Dispatcher, rng: random.Random | None = None) -> None:
        self.d = dispatcher
        self.settings = dispatcher.settings
        self.storage = dispatcher.storage
        self.rng = rng or random.Random()
        self.replicas: dict[int, Replicas] = {}  # dataset id -> its copies
        self.spots: dict[int, list[LeasedDataset]] = {}  # campaign id -> its spot-check datasets
        self.spots_out: dict[tuple[int, int], tuple[Copy, LeasedDataset]] = {}  # (dataset, holder)
        self._decide: set[int] = set()
        # Copies still with a connection after their dataset was settled (or given up): a late answer
        # is welcome, and dropped. Cleared when the answer comes or the connection leaves.
        self._orphans: set[tuple[int, int]] = set()  # (dataset, holder)
        self._spot_answers: list[tuple[str, int, bytes, bytes | None]] = []  # (worker, campaign, expected, value)
        self._wake = trio.Event()
        self._spots_read: dict[int, float] = {}  # campaign id -> trio time spot checks were last read
        self._trust: dict[str, float] = {}  # worker key -> probability of an unreplicated task
        # campaign id -> why its comparator was given up: one that hangs would cost every campaign's
        # verification COMPARE_TIMEOUT per pair, since one loop decides for all of them.
        self._broken_comparators: dict[int, str] = {}
        self.unreplicated = 0  # tasks handed out without replicas (adaptive replication)
        self.replicated = 0  # copies handed out for replication

    # ------------------------------------------------------------------ handing out

    def add_leased(self, queue: CampaignQueue, leased: list[LeasedDataset]) -> list[LeasedDataset]:
        """Datasets a refill leased for a replicated campaign: track them; returns those to queue."""
        fresh: list[LeasedDataset] = []
        for dataset in leased:
            if dataset.id in self.replicas:
                continue
            rep = Replicas(dataset, wanted=queue.campaign.replication, answered=list(dataset.votes))
            self.replicas[dataset.id] = rep
            if rep.complete():
                self._start_decision(rep)  # results stored before a restart: decide now
            else:
                rep.queued = True
                fresh.append(dataset)
        return fresh

    async def prepare(self, queue: CampaignQueue, worker: WorkerKey | None) -> None:
        """Storage reads a take needs first: the campaign's spot checks, the worker's trust."""
        cid = queue.campaign.id
        now = trio.current_time()
        if cid not in self.spots or (not self.spots[cid] and now - self._spots_read.get(cid, 0.0) > SPOT_RELOAD):
            # Spot checks are stored just after their campaign: look again while there are none.
            self._spots_read[cid] = now
            self.spots[cid] = await self.storage.spot_checks(cid)
        if worker is not None and queue.campaign.replication > 1 and worker[0] not in self._trust:
            records = await self.storage.worker_records([worker[0]])
            agreed = records[0].agreed if records else 0
            self._trust[worker[0]] = trust_probability(
                agreed, threshold=self.settings.trust_threshold, ceiling=self.settings.trust_ceiling
            )

    def take(
        self,
        queue: CampaignQueue,
        n: int,
        holder: int,
        worker: WorkerKey,
        deadline: float,
        timeout: float,
        max_bytes: int,
    ) -> list[LeasedDataset]:
        """Copies of replicated datasets for one connection (synchronous; `prepare` first)."""
        distinct = bool(self.settings.verify_distinct_addresses)
        trust = self._trust.get(worker[0], 0.0)
        taken: list[LeasedDataset] = []
        kept: list[LeasedDataset] = []
        size = 0
        # The whole queue may be scanned: copies this connection already has wait at its front for
        # other workers. The queue is bounded (see Dispatcher._take_copies).
        while queue.ready and len(taken) < n:
            dataset = queue.ready.popleft()
            rep = self.replicas.get(dataset.id)
            if rep is None or not rep.needs_copies():
                if rep is not None:
                    rep.queued = False
                continue
            if not rep.eligible(holder, worker, distinct) or (taken and size + len(dataset.payload) > max_bytes):
                kept.append(dataset)
                continue
            alone = not rep.answered and not rep.out and trust > 0 and self.rng.random() < trust
            rep.hand_out(Copy(holder, worker, deadline, timeout), trusted=alone)
            self.unreplicated += alone
            self.replicated += not alone
            size += len(dataset.payload)
            taken.append(dataset)
            if rep.needs_copies():
                kept.append(dataset)  # more copies wanted: the next eligible connection gets one
            else:
                rep.queued = False
        queue.ready.extendleft(reversed(kept))
        return taken

    def add_spot_checks(
        self, campaign_id: int, count: int, holder: int, worker: WorkerKey, deadline: float, timeout: float
    ) -> list[LeasedDataset]:
        """Known-answer datasets to mix in with `count` tasks, at `spot_check_rate` each."""
        spots = self.spots.get(campaign_id)
        rate = self.settings.spot_check_rate
        if not spots or rate <= 0:
            return []
        mixed: list[LeasedDataset] = []
        for _ in range(count):
            if self.rng.random() >= rate:
                continue
            spot = self.rng.choice(spots)
            if (spot.id, holder) in self.spots_out or spot in mixed:
                continue
            self.spots_out[(spot.id, holder)] = (Copy(holder, worker, deadline, timeout), spot)
            mixed.append(spot)
        return mixed

    # ------------------------------------------------------------------ answers

    def answer(self, holder: int, outcome: FinishedTask | FailedTask) -> FinishedTask | FailedTask | bool | None:
        """A connection's answer for a copy or spot check.

        Returns False when the connection holds no such copy, None when the answer needs no group
        commit (a spot check), else the outcome to store (a replica: status pending or trusted).
        """
        spot = self.spots_out.pop((outcome.dataset_id, holder), None)
        if spot is not None:
            copy, dataset = spot
            if isinstance(outcome, FinishedTask):
                assert dataset.expected is not None
                self._spot_answers.append((copy.worker[0], dataset.campaign_id, dataset.expected, outcome.value))
                self._wake.set()
            return None
        rep = self.replicas.get(outcome.dataset_id)
        if rep is None:
            if (outcome.dataset_id, holder) in self._orphans:
                self._orphans.discard((outcome.dataset_id, holder))
                return None
            return False
        if isinstance(outcome, FailedTask):
            if not rep.fail(holder):
                return False
            if rep.errors >= self.settings.max_task_errors:
                self._forget(rep)  # storage marks it failed with this commit
            else:
                self._offer(rep)
            return replace(outcome, replica=True)
        trusted = rep.trusted == holder
        worker = rep.answer(holder)
        if worker is None:
            return False
        status = ResultStatus.PENDING
        if trusted:
            status = ResultStatus.TRUSTED
            self._forget(rep)
        return replace(outcome, status=status, identity=worker[0])

    def stored(self, outcomes: list[FinishedTask]) -> None:
        """A group commit stored these results: datasets with all their results are decided next."""
        for outcome in outcomes:
            if outcome.status != ResultStatus.PENDING:
                continue
            rep = self.replicas.get(outcome.dataset_id)
            if rep is not None and rep.complete() and not rep.deciding:
                self._start_decision(rep)

    def drop(self, holder: int, dataset_id: int, *, late: bool) -> bool:
        """A copy's connection left (or its deadline passed): offer the copy to somebody else."""
        self.spots_out.pop((dataset_id, holder), None)
        self._orphans.discard((dataset_id, holder))
        rep = self.replicas.get(dataset_id)
        if rep is None or not rep.take_back(holder, late=late):
            return False
        self._offer(rep)
        return True

    def overdue(self, now: float, is_overdue: Callable[[int, float, float], bool]) -> bool:
        """Move copies past their deadline to `late`; returns whether any was offered again."""
        offered = False
        for rep in list(self.replicas.values()):
            for holder, copy in list(rep.out.items()):
                if is_overdue(holder, copy.deadline, copy.timeout):
                    offered |= self.drop(holder, rep.dataset.id, late=True)
        return offered

    def held(self, campaign_id: int) -> bool:
        return any(rep.dataset.campaign_id == campaign_id for rep in self.replicas.values())

    def held_ids(self) -> list[int]:
        return list(self.replicas)

    def retire(self, campaign_id: int) -> None:
        for rep in [r for r in self.replicas.values() if r.dataset.campaign_id == campaign_id]:
            self._forget(rep)

    def _forget(self, rep: Replicas) -> None:
        self.replicas.pop(rep.dataset.id, None)
        self._orphans.update((rep.dataset.id, holder) for holder in (*rep.out, *rep.late))

    def _offer(self, rep: Replicas) -> None:
        if rep.queued or not rep.needs_copies():
            return
        queue = self.d.queues.get(rep.dataset.campaign_id)
        if queue is not None and not queue.complete:
            rep.queued = True
            queue.ready.appendleft(rep.dataset)
            self.d.wake_all()

    def _start_decision(self, rep: Replicas) -> None:
        rep.deciding = True
        self._decide.add(rep.dataset.id)
        self._wake.set()

    # ------------------------------------------------------------------ deciding

    async def run(self) -> None:
        """Decide datasets whose results are stored, and judge spot-check answers; cancel to stop."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            ids, self._decide = sorted(self._decide), set()
            spot_answers, self._spot_answers = self._spot_answers, []
            try:
                # Comparators are loaded per round (a warm sandbox child makes that cheap), so no
                # child stays tied to a campaign that has finished.
                async with AsyncExitStack() as stack:
                    await self._round(ids, spot_answers, {}, stack)
            except Exception:
                log.exception("verification of %d datasets failed; will retry", len(ids))
                self._decide.update(ids)
                self._spot_answers[:0] = spot_answers
                await trio.sleep(1.0)
                self._wake.set()

    async def _round(
        self,
        ids: list[int],
        spot_answers: list[tuple[str, int, bytes, bytes | None]],
        comparators: dict[int, KernelRun | None],
        stack: AsyncExitStack,
    ) -> None:
        votes = await self.storage.replica_votes(ids) if ids else {}
        statuses: list[tuple[int, str]] = []
        done: list[int] = []
        conflicts: list[int] = []
        agreed: list[str] = []
        liars: list[str] = []
        more: list[tuple[Replicas, int]] = []
        for dataset_id in ids:
            rep = self.replicas.get(dataset_id)
            queue = self.d.queues.get(rep.dataset.campaign_id) if rep else None
            if rep is None or queue is None:
                continue
            campaign = queue.campaign
            found = votes.get(dataset_id, [])
            await self._comparator(campaign.id, campaign, comparators, stack)
            same = await self._sameness(found, campaign.id, comparators)
            verdict = decide(
                found,
                campaign.replication,
                max(self.settings.verify_max_copies, campaign.replication),
                same,
                distinct_addresses=bool(self.settings.verify_distinct_addresses),
            )
            if isinstance(verdict, Quorum):
                statuses.append((verdict.canonical, ResultStatus.CANONICAL))
                statuses += [(r, ResultStatus.AGREED) for r in verdict.agreeing if r != verdict.canonical]
                statuses += [(r, ResultStatus.INVALID) for r in verdict.disagreeing]
                by_id = {v.result_id: v.worker for v in found}
                agreed += [by_id[r] for r in verdict.agreeing]
                liars += verdict.liars
                done.append(dataset_id)
            elif isinstance(verdict, Conflict):
                statuses += [(r, ResultStatus.CONFLICT) for r in verdict.results]
                conflicts.append(dataset_id)
            else:
                assert isinstance(verdict, More)
                more.append((rep, verdict.wanted))
        for worker, campaign_id, expected, value in spot_answers:
            queue = self.d.queues.get(campaign_id)
            await self._comparator(campaign_id, queue.campaign if queue else None, comparators, stack)
            if await self._agree(_canonical(expected), _canonical(value), campaign_id, comparators):
                agreed.append(worker)
            else:
                log.warning("worker %s answered a spot check of campaign %d wrongly", worker, campaign_id)
                liars.append(worker)
        if not (statuses or done or conflicts or agreed or liars):
            for rep, wanted in more:
                self._ask_more(rep, wanted)
            return
        reopened = await self.storage.apply_verdicts(
            Verdicts(tuple(statuses), tuple(done), tuple(conflicts), tuple(agreed), tuple(sorted(set(liars))))
        )
        for dataset_id in (*done, *conflicts):
            rep = self.replicas.get(dataset_id)
            if rep is not None:
                self._forget(rep)
        for rep, wanted in more:
            self._ask_more(rep, wanted)
        for key in {*agreed, *liars}:
            self._trust.pop(key, None)  # read the record again on the worker's next take
        if liars:
            log.warning("flagged workers %s; %d trusted results re-opened", sorted(set(liars)), len(reopened))
        if reopened:
            for queue in self.d.queues.values():
                queue.drained = False
            self.d.wake_all()
        for queue in list(self.d.queues.values()):
            await self.d.maybe_complete(queue)

    def _ask_more(self, rep: Replicas, wanted: int) -> None:
        rep.wanted = wanted
        rep.deciding = False
        if rep.complete():  # cannot happen with decide's arithmetic, but never leave one stuck
            self._start_decision(rep)
        else:
            self._offer(rep)

    async def _comparator(
        self, campaign_id: int, campaign: Any, comparators: dict[int, KernelRun | None], stack: AsyncExitStack
    ) -> None:
        """Load the campaign's comparator into `comparators` for this round (None: compare bytes)."""
        if campaign_id in comparators:
            return
        run: KernelRun | None = None
        if campaign is not None and campaign.comparator and campaign_id not in self._broken_comparators:
            try:
                run = await stack.enter_async_context(
                    open_kernel(
                        comparator_kernel(campaign.comparator),
                        "",
                        heap_mib=self.settings.generator_heap,
                        max_result_bytes=1024,
                        load_timeout=COMPARE_TIMEOUT,
                    )
                )
            except KernelError as exc:
                self._give_up_comparator(campaign_id, comparators, f"it does not load ({exc})")
                return
        comparators[campaign_id] = run

    def _give_up_comparator(self, campaign_id: int, comparators: dict[int, KernelRun | None], why: str) -> None:
        self._broken_comparators[campaign_id] = why
        comparators[campaign_id] = None
        log.warning("comparator of campaign %d given up, %s: its results are compared byte for byte", campaign_id, why)

    async def _agree(
        self, a: bytes | None, b: bytes | None, campaign_id: int, comparators: dict[int, KernelRun | None]
    ) -> bool:
        if a == b:
            return True
        comparator = comparators.get(campaign_id)
        if comparator is None or a is None or b is None:
            return False
        started = trio.current_time()
        try:
            value, _ = await comparator.run(comparator_input(a, b), COMPARE_TIMEOUT)
        except KernelError as exc:
            # An exception (say, on a liar's malformed result) is a cheap "no". A comparison that
            # ran out its time, or crashed the sandbox, would cost as much on every later pair.
            if trio.current_time() - started >= COMPARE_TIMEOUT / 2 or not exc.stack:
                self._give_up_comparator(campaign_id, comparators, f"a comparison failed: {exc}")
            else:
                log.info("comparator of campaign %d threw: %s", campaign_id, exc)
            return False
        return value is not None and bool(msgpack.unpackb(value))

    async def _sameness(
        self, votes: list[Vote], campaign_id: int, comparators: dict[int, KernelRun | None]
    ) -> Callable[[bytes | None, bytes | None], bool]:
        """Agreement between every pair of distinct payloads, computed up front (the comparator is async)."""
        if comparators.get(campaign_id) is None:
            return lambda a, b: a == b
        payloads = list(dict.fromkeys(v.payload for v in votes))
        table: dict[tuple[bytes | None, bytes | None], bool] = {}
        for i, a in enumerate(payloads):
            for b in payloads[i + 1 :]:
                table[(a, b)] = table[(b, a)] = await self._agree(a, b, campaign_id, comparators)
        return lambda a, b: a == b or table.get((a, b), False)


def _canonical(value: bytes | None) -> bytes | None:
    return None if value is None else canonical(msgpack.unpackb(value))
