"""What the verifier decides and the dispatcher's queues carry out: frozen values, no behaviour.

The verifier owns the replicas and spot checks; the queues belong to the dispatcher alone. So the
verifier never touches a queue: it returns one of these and the dispatcher applies it in the same
synchronous step (no await in between, so the state it decided on is the state it changes).

- `CopyPick`: the copies of replicated datasets one connection gets, and what stays queued.
- `Answer` (`Refused`, `Judged` or `Store`): what becomes of a connection's answer for a copy or a
  spot check.
- `Round`: what a verification round asks of the queues once its verdicts are written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import FailedTask, FinishedTask, LeasedDataset

__all__ = ["JUDGED", "REFUSED", "Answer", "CopyPick", "Judged", "Refused", "Round", "Store"]


@dataclass(frozen=True, slots=True)
class CopyPick:
    """The copies for one connection, picked from the front of its campaign's queue.

    The queue owner drops the first `scanned` datasets and puts `kept` back at the front, in order.
    """

    scanned: int
    taken: tuple[LeasedDataset, ...]
    kept: tuple[LeasedDataset, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The connection holds no such copy (nor a late one): a forged or confused client."""


@dataclass(frozen=True, slots=True)
class Judged:
    """Accepted with nothing to store: a spot check (judged by the verifier) or a copy settled meanwhile."""


@dataclass(frozen=True, slots=True)
class Store:
    """Accepted: store `outcome` with the next group commit (a replica: status pending or trusted)."""

    outcome: FinishedTask | FailedTask
    offer: LeasedDataset | None = None  # a copy failed: hand this dataset to another connection


Answer = Refused | Judged | Store
REFUSED = Refused()
JUDGED = Judged()


@dataclass(frozen=True, slots=True)
class Round:
    """What one verification round asks of the queues."""

    offers: tuple[LeasedDataset, ...] = ()  # datasets wanting more copies: to the front of their queues
    reopened: bool = False  # storage re-opened a flagged worker's trusted results: look in storage again
    settled: bool = False  # verdicts were written: campaigns may be complete now
