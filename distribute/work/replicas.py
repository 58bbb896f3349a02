"""The copies of replicated datasets that this server process has out, and who may get the next one.

A dataset of a campaign with replication r is handed to r different workers (never twice to one
connection, one worker identity or one address); when the wanted number of results has arrived and
is stored, the dispatcher's verification loop decides (see `distribute.work.verification.decide`) and
either settles it or asks for more copies. Spot-check copies (known answers) are tracked here too.

Pure bookkeeping: synchronous, no I/O, no clocks (deadlines are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import LeasedDataset

__all__ = ["Copy", "Replicas", "WorkerKey"]

WorkerKey = tuple[str, str]  # (verification.worker_key, address)


@dataclass(eq=False, slots=True)
class Copy:
    """One copy of a dataset with one connection."""

    holder: int
    worker: WorkerKey
    deadline: float
    timeout: float


@dataclass(eq=False, slots=True)
class Replicas:
    """One replicated dataset held by this process: its copies out and the results it has."""

    dataset: LeasedDataset
    wanted: int  # results wanted in all before the next decision
    answered: list[WorkerKey] = field(default_factory=list)  # stored or waiting for the group commit
    holders: set[int] = field(default_factory=set)  # connections that had a copy (answered, expired, failed)
    out: dict[int, Copy] = field(default_factory=dict)  # connection id -> its copy, not answered yet
    late: dict[int, WorkerKey] = field(default_factory=dict)  # copies past their deadline: answers still count
    queued: bool = False  # in its campaign's ready queue
    deciding: bool = False  # results complete; the verification loop has it
    trusted: int | None = None  # connection whose single answer settles it (adaptive replication)
    errors: int = 0

    def eligible(self, holder: int, worker: WorkerKey, distinct_addresses: bool) -> bool:
        """May this connection (worker identity, address) get a copy?"""
        if holder in self.holders or holder in self.out:
            return False
        key, address = worker
        others = [*self.answered, *(c.worker for c in self.out.values()), *self.late.values()]
        return all(k != key and (not distinct_addresses or a != address) for k, a in others)

    def needs_copies(self) -> bool:
        return not self.deciding and self.trusted is None and len(self.answered) + len(self.out) < self.wanted

    def complete(self) -> bool:
        """Every wanted result has arrived (and none is a trusted single answer)."""
        return self.trusted is None and len(self.answered) >= self.wanted

    def hand_out(self, copy: Copy, trusted: bool) -> None:
        self.out[copy.holder] = copy
        self.holders.add(copy.holder)
        if trusted:
            self.trusted = copy.holder

    def take_back(self, holder: int, *, late: bool) -> bool:
        """A copy's connection went away (late=False) or missed its deadline (late=True)."""
        copy = self.out.pop(holder, None)
        if copy is None:
            return False
        if late:
            self.late[holder] = copy.worker
        if self.trusted == holder:
            self.trusted = None  # the trusted worker did not answer: replicate as usual
        return True

    def fail(self, holder: int) -> bool:
        """The connection's kernel threw on its copy: no vote; another worker gets a copy."""
        if self.out.pop(holder, None) is None and self.late.pop(holder, None) is None:
            return False
        self.errors += 1
        if self.trusted == holder:
            self.trusted = None
        return True

    def answer(self, holder: int) -> WorkerKey | None:
        """The connection answered; None if it holds no copy (nor a late one)."""
        copy = self.out.pop(holder, None)
        worker = copy.worker if copy is not None else self.late.pop(holder, None)
        if worker is not None:
            self.answered.append(worker)
        return worker
