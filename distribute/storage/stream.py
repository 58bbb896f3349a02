"""The result stream's part of the storage protocol: every answer of a campaign once, in order of storage."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..models import StoredResult

__all__ = ["START", "ResultStreamStore", "StreamPage", "StreamedResult"]

START = (0, 0)  # the position before every result


class StreamedResult(NamedTuple):
    """A result with its place in the campaign's result stream."""

    position: tuple[int, int]
    result: StoredResult


class StreamPage(NamedTuple):
    """A page of the stream; `held_back`: answers after it are stored but not yet in order to hand out."""

    results: list[StreamedResult]
    held_back: bool


class ResultStreamStore(Protocol):
    """The answers of a campaign as a resumable stream."""

    async def result_stream(self, campaign_id: int, *, after: tuple[int, int] = START, limit: int = 1000) -> StreamPage:
        """The campaign's answers in order of storage after the position `after`; at most `limit`.

        A result enters the stream when it becomes an answer: stored as accepted or trusted, or made
        canonical by a quorum (then at that later transaction's place). Pending replicas, conflicts,
        agreed and invalid results never appear, so a settled dataset appears once (a trusted result
        re-checked after its worker was flagged appears again when a quorum settles it).

        A position is (seq, result id), ordered as a pair; (0, 0) is the start. Paging from the last
        position handed out yields every answer exactly once, also while other processes commit and
        across restarts: an answer stored later never gets a position before one already handed out.
        How each backend keeps that promise:
        - PostgreSQL: seq is the id of the transaction that wrote the row (`pg_current_xact_id()`). Ids
          are assigned in start order, not commit order, so a page holds only rows whose transaction is
          older than the page's snapshot's xmin (every transaction below xmin has ended, and every later
          one gets a larger id). A long transaction anywhere in the cluster therefore delays the stream
          (never reorders it); `held_back` says that answers after the page wait for it.
        - SQLite: writers are serialised, so a counter bumped by each writing transaction is commit order.
        - memory: the same counter, under the tables' lock.
        Results stored before the stream existed have seq 0: they come first, in id order.
        Keyset paging on an index of (campaign, seq, id): page k costs what page 1 costs.
        """
        ...
