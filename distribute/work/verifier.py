"""Result verification in the running server: replicas, quorum verdicts, trust, spot checks.

The dispatcher owns one `Verifier`, and the verifier owns the copies of replicated datasets this
process has out, the campaigns' spot checks and the workers' trust. It never touches a queue: it
sees the campaigns through the `Campaigns` view it declares here, and returns what the queues
should do (`distribute.work.decisions`), which the dispatcher applies.

For campaigns with replication > 1 it picks the copies each connection gets (`pick`) and judges
the answers (`answer`: replicas are stored by the dispatcher's group commit as pending results).
Once the results a dataset needs are stored, a round (`next_round`) reads the votes back from
storage, decides (`verification.decide`, with the owner's comparator in the sandbox if there is
one) and writes the verdicts in one transaction per batch. Disagreeing workers are flagged; their
trusted results come back as pending replicas (storage re-opens them).

Spot checks (known-answer datasets, stored with their campaign and handed over by the dispatcher
when it learns of the campaign) are mixed into any campaign that has them, at `spot_check_rate`
per task; a wrong answer flags the worker.

Decisions are synchronous; only storage and sandbox calls are awaited.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from ..models import Campaign, FailedTask, FinishedTask, LeasedDataset, ResultStatus, Verdicts
from ..settings import Settings
from ..storage import Storage
from .comparators import ComparatorRound, Comparators, canonical_answer
from .decisions import JUDGED, REFUSED, Answer, CopyPick, Round, Store
from .replicas import Copy, Replicas, WorkerKey
from .verification import Conflict, More, Quorum, decide, trust_probability

__all__ = ["Campaigns", "Verifier"]

log = logging.getLogger(__name__)


class Campaigns(Protocol):
    """What the verifier may know of the dispatcher's campaigns (read only)."""

    def campaign(self, campaign_id: int) -> Campaign | None:
        """The campaign, if this process knows it."""
        ...

    def accepts_work(self, campaign_id: int) -> bool:
        """Whether a dataset offered again would be handed out (its queue is open)."""
        ...


@dataclass(frozen=True, slots=True)
class SpotAnswer:
    worker: str  # worker key
    campaign_id: int
    expected: bytes
    value: bytes | None


@dataclass(slots=True)
class _Tally:
    """The verdicts of one round, gathered before they are written in one transaction."""

    statuses: list[tuple[int, str]]
    done: list[int]
    conflicts: list[int]
    agreed: list[str]
    liars: list[str]
    more: list[tuple[Replicas, int]]

    def to_write(self) -> bool:
        return bool(self.statuses or self.done or self.conflicts or self.agreed or self.liars)


class Verifier:
    def __init__(
        self, storage: Storage, settings: Settings, campaigns: Campaigns, rng: random.Random | None = None
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.campaigns = campaigns
        self.rng = rng or random.Random()
        self._replicas: dict[int, Replicas] = {}  # dataset id -> its copies
        self._spots: dict[int, list[LeasedDataset]] = {}  # campaign id -> its spot-check datasets
        self._spots_out: dict[tuple[int, int], tuple[Copy, LeasedDataset]] = {}  # (dataset, holder)
        self._decide: set[int] = set()
        # Copies still with a connection after their dataset was settled (or given up): a late answer
        # is welcome, and dropped. Cleared when the answer comes or the connection leaves.
        self._orphans: set[tuple[int, int]] = set()  # (dataset, holder)
        self._spot_answers: list[SpotAnswer] = []
        self._wake = trio.Event()
        self._trust: dict[str, float] = {}  # worker key -> probability of an unreplicated task
        self._comparators = Comparators(settings.generator_heap)
        self.unreplicated = 0  # tasks handed out without replicas (adaptive replication)
        self.replicated = 0  # copies handed out for replication

    # ------------------------------------------------------------------ what the dispatcher asks

    def set_spot_checks(self, campaign_id: int, spots: Sequence[LeasedDataset]) -> None:
        """The campaign's known-answer datasets (read from storage when the dispatcher learned of it)."""
        if spots:
            self._spots[campaign_id] = list(spots)
        else:
            self._spots.pop(campaign_id, None)

    def has_spot_checks(self, campaign_id: int) -> bool:
        return campaign_id in self._spots

    def busy(self) -> bool:
        """Copies or spot checks are out: the deadline loop has something to look at."""
        return bool(self._replicas or self._spots_out)

    def held(self, campaign_id: int) -> bool:
        return any(rep.dataset.campaign_id == campaign_id for rep in self._replicas.values())

    def held_ids(self) -> list[int]:
        return list(self._replicas)

    def retire(self, campaign_id: int) -> None:
        for rep in [r for r in self._replicas.values() if r.dataset.campaign_id == campaign_id]:
            self._forget(rep)
        self._spots.pop(campaign_id, None)

    # ------------------------------------------------------------------ handing out

    def add_leased(self, replication: int, leased: list[LeasedDataset]) -> list[LeasedDataset]:
        """Datasets a refill leased for a replicated campaign: track them; returns those to queue."""
        fresh: list[LeasedDataset] = []
        for dataset in leased:
            if dataset.id in self._replicas:
                continue
            rep = Replicas(dataset, wanted=replication, answered=list(dataset.votes))
            self._replicas[dataset.id] = rep
            if rep.complete():
                self._start_decision(rep)  # results stored before a restart: decide now
            else:
                rep.queued = True
                fresh.append(dataset)
        return fresh

    async def load_trust(self, worker: WorkerKey) -> None:
        """Read the worker's record once (again after a verdict on it), before its replicated takes."""
        key = worker[0]
        if key not in self._trust:
            records = await self.storage.worker_records([key])
            agreed = records[0].agreed if records else 0
            self._trust[key] = trust_probability(
                agreed, threshold=self.settings.trust_threshold, ceiling=self.settings.trust_ceiling
            )

    def pick(
        self,
        ready: Iterable[LeasedDataset],
        n: int,
        holder: int,
        worker: WorkerKey,
        deadline: float,
        timeout: float,
        max_bytes: int,
    ) -> CopyPick:
        """Copies of replicated datasets for one connection, from the front of its campaign's queue.

        The whole queue may be scanned: copies this connection already has wait at its front for
        other workers. The queue is bounded (see Dispatcher._take_copies).
        """
        distinct = bool(self.settings.verify_distinct_addresses)
        trust = self._trust.get(worker[0], 0.0)
        taken: list[LeasedDataset] = []
        kept: list[LeasedDataset] = []
        size = 0
        scanned = 0
        for dataset in ready:
            if len(taken) >= n:
                break
            scanned += 1
            rep = self._replicas.get(dataset.id)
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
        return CopyPick(scanned, tuple(taken), tuple(kept))

    def mix_spot_checks(
        self, campaign_id: int, count: int, holder: int, worker: WorkerKey, deadline: float, timeout: float
    ) -> list[LeasedDataset]:
        """Known-answer datasets to mix in with `count` tasks, at `spot_check_rate` each."""
        spots = self._spots.get(campaign_id)
        rate = self.settings.spot_check_rate
        if not spots or rate <= 0:
            return []
        mixed: list[LeasedDataset] = []
        for _ in range(count):
            if self.rng.random() >= rate:
                continue
            spot = self.rng.choice(spots)
            if (spot.id, holder) in self._spots_out or spot in mixed:
                continue
            self._spots_out[(spot.id, holder)] = (Copy(holder, worker, deadline, timeout), spot)
            mixed.append(spot)
        return mixed

    # ------------------------------------------------------------------ answers

    def answer(self, holder: int, outcome: FinishedTask | FailedTask) -> Answer:
        """A connection's answer for a copy or spot check (one it holds no lease for)."""
        spot = self._spots_out.pop((outcome.dataset_id, holder), None)
        if spot is not None:
            copy, dataset = spot
            if isinstance(outcome, FinishedTask):
                assert dataset.expected is not None
                self._spot_answers.append(
                    SpotAnswer(copy.worker[0], dataset.campaign_id, dataset.expected, outcome.value)
                )
                self._wake.set()
            return JUDGED
        rep = self._replicas.get(outcome.dataset_id)
        if rep is None:
            if (outcome.dataset_id, holder) in self._orphans:
                self._orphans.discard((outcome.dataset_id, holder))
                return JUDGED
            return REFUSED
        if isinstance(outcome, FailedTask):
            if not rep.fail(holder):
                return REFUSED
            offer = None
            if rep.errors >= self.settings.max_task_errors:
                self._forget(rep)  # storage marks it failed with this commit
            else:
                offer = self._offer(rep)
            return Store(replace(outcome, replica=True), offer)
        trusted = rep.trusted == holder
        worker = rep.answer(holder)
        if worker is None:
            return REFUSED
        status = ResultStatus.PENDING
        if trusted:
            status = ResultStatus.TRUSTED
            self._forget(rep)
        return Store(replace(outcome, status=status, identity=worker[0]))

    def stored(self, outcomes: list[FinishedTask]) -> None:
        """A group commit stored these results: datasets with all their results are decided next."""
        for outcome in outcomes:
            if outcome.status != ResultStatus.PENDING:
                continue
            rep = self._replicas.get(outcome.dataset_id)
            if rep is not None and rep.complete() and not rep.deciding:
                self._start_decision(rep)

    def drop(self, holder: int, dataset_id: int, *, late: bool) -> LeasedDataset | None:
        """A copy's connection left (or its deadline passed); returns the dataset to offer again."""
        self._spots_out.pop((dataset_id, holder), None)
        self._orphans.discard((dataset_id, holder))
        rep = self._replicas.get(dataset_id)
        if rep is None or not rep.take_back(holder, late=late):
            return None
        return self._offer(rep)

    def overdue(self, is_overdue: Callable[[int, float, float], bool]) -> list[LeasedDataset]:
        """Move copies past their deadline to `late`; returns the datasets to offer again."""
        offers: list[LeasedDataset] = []
        for rep in list(self._replicas.values()):
            for holder, copy in list(rep.out.items()):
                late = is_overdue(holder, copy.deadline, copy.timeout)
                if late and (offer := self.drop(holder, rep.dataset.id, late=True)) is not None:
                    offers.append(offer)
        return offers

    def _forget(self, rep: Replicas) -> None:
        self._replicas.pop(rep.dataset.id, None)
        self._orphans.update((rep.dataset.id, holder) for holder in (*rep.out, *rep.late))

    def _offer(self, rep: Replicas) -> LeasedDataset | None:
        """The dataset wants another copy: it goes back to its queue (unless already there, or closed)."""
        if rep.queued or not rep.needs_copies() or not self.campaigns.accepts_work(rep.dataset.campaign_id):
            return None
        rep.queued = True
        return rep.dataset

    def _start_decision(self, rep: Replicas) -> None:
        rep.deciding = True
        self._decide.add(rep.dataset.id)
        self._wake.set()

    # ------------------------------------------------------------------ deciding

    async def next_round(self) -> Round:
        """Wait for stored results or spot-check answers, decide them, write the verdicts.

        A round that fails (storage or sandbox trouble) is retried a second later; the returned
        `Round` is for the dispatcher to apply to its queues.
        """
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            ids, self._decide = sorted(self._decide), set()
            spot_answers, self._spot_answers = self._spot_answers, []
            try:
                async with self._comparators.round() as comparators:
                    return await self._round(ids, spot_answers, comparators)
            except Exception:
                log.exception("verification of %d datasets failed; will retry", len(ids))
                self._decide.update(ids)
                self._spot_answers[:0] = spot_answers
                await trio.sleep(1.0)
                self._wake.set()

    async def _round(self, ids: list[int], spot_answers: list[SpotAnswer], comparators: ComparatorRound) -> Round:
        tally = _Tally([], [], [], [], [], [])
        await self._judge_replicas(ids, tally, comparators)
        for answer in spot_answers:
            await comparators.load(answer.campaign_id, self.campaigns.campaign(answer.campaign_id))
            expected, value = canonical_answer(answer.expected), canonical_answer(answer.value)
            if await comparators.agree(expected, value, answer.campaign_id):
                tally.agreed.append(answer.worker)
            else:
                log.warning("worker %s answered a spot check of campaign %d wrongly", answer.worker, answer.campaign_id)
                tally.liars.append(answer.worker)
        if not tally.to_write():
            return Round(offers=self._ask_more(tally.more))
        liars = tuple(sorted(set(tally.liars)))
        verdicts = Verdicts(
            tuple(tally.statuses), tuple(tally.done), tuple(tally.conflicts), tuple(tally.agreed), liars
        )
        reopened = await self.storage.apply_verdicts(verdicts)
        for dataset_id in (*tally.done, *tally.conflicts):
            rep = self._replicas.get(dataset_id)
            if rep is not None:
                self._forget(rep)
        offers = self._ask_more(tally.more)
        for key in {*tally.agreed, *liars}:
            self._trust.pop(key, None)  # read the record again on the worker's next take
        if liars:
            log.warning("flagged workers %s; %d trusted results re-opened", list(liars), len(reopened))
        return Round(offers=offers, reopened=bool(reopened), settled=True)

    async def _judge_replicas(self, ids: list[int], tally: _Tally, comparators: ComparatorRound) -> None:
        votes = await self.storage.replica_votes(ids) if ids else {}
        for dataset_id in ids:
            rep = self._replicas.get(dataset_id)
            campaign = self.campaigns.campaign(rep.dataset.campaign_id) if rep else None
            if rep is None or campaign is None:
                continue
            found = votes.get(dataset_id, [])
            await comparators.load(campaign.id, campaign)
            same = await comparators.sameness(found, campaign.id)
            verdict = decide(
                found,
                campaign.replication,
                max(self.settings.verify_max_copies, campaign.replication),
                same,
                distinct_addresses=bool(self.settings.verify_distinct_addresses),
            )
            if isinstance(verdict, Quorum):
                tally.statuses.append((verdict.canonical, ResultStatus.CANONICAL))
                tally.statuses += [(r, ResultStatus.AGREED) for r in verdict.agreeing if r != verdict.canonical]
                tally.statuses += [(r, ResultStatus.INVALID) for r in verdict.disagreeing]
                by_id = {v.result_id: v.worker for v in found}
                tally.agreed += [by_id[r] for r in verdict.agreeing]
                tally.liars += verdict.liars
                tally.done.append(dataset_id)
            elif isinstance(verdict, Conflict):
                tally.statuses += [(r, ResultStatus.CONFLICT) for r in verdict.results]
                tally.conflicts.append(dataset_id)
            else:
                assert isinstance(verdict, More)
                tally.more.append((rep, verdict.wanted))

    def _ask_more(self, more: list[tuple[Replicas, int]]) -> tuple[LeasedDataset, ...]:
        offers: list[LeasedDataset] = []
        for rep, wanted in more:
            rep.wanted = wanted
            rep.deciding = False
            if rep.complete():  # cannot happen with decide's arithmetic, but never leave one stuck
                self._start_decision(rep)
            elif (offer := self._offer(rep)) is not None:
                offers.append(offer)
        return tuple(offers)
