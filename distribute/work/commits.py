"""Wake-ups for the readers of a campaign's results when this process's group commit stores some.

A follower of a campaign (the event stream) would otherwise poll storage on a timer: a result was
sent up to a poll interval after it was durable. The dispatcher calls `landed` after each group
commit with the campaigns it touched; a reader takes the campaign's current event *before* it reads
storage and waits on it afterwards, so a commit that lands during the read is not missed. One
`trio.Event` per campaign with readers waiting, never a task per reader; an event is dropped when it
fires, or when its last waiter gives up, so memory follows the waiting readers. While readers wait
(`followed`), the dispatcher commits at its shortest interval rather than its low-rate one. Other
processes' commits are not seen here: readers still poll for those, backing off while idle.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

__all__ = ["CommitSignals"]


class CommitSignals:
    """Per campaign, the event the next group commit of this process that stores its results sets."""

    def __init__(self) -> None:
        self._events: dict[int, trio.Event] = {}
        self._woke = False  # the last commit woke a reader (who takes a new event only after it)

    def next_commit(self, campaign_id: int) -> trio.Event:
        """The event set by the next commit touching the campaign (take it before reading storage)."""
        event = self._events.get(campaign_id)
        if event is None:
            event = self._events[campaign_id] = trio.Event()
        return event

    @property
    def followed(self) -> bool:
        """Whether any reader waits for a commit here (the group commit then runs at its shortest wait)."""
        return self._woke or bool(self._events)

    def landed(self, campaign_ids: Iterable[int]) -> None:
        """A group commit of these campaigns' outcomes is durable: wake their readers."""
        self._woke = False
        for campaign_id in campaign_ids:
            event = self._events.pop(campaign_id, None)
            if event is not None:
                event.set()
                self._woke = True

    async def wait(self, campaign_id: int, event: trio.Event, timeout: float) -> bool:
        """Wait up to `timeout` s for `event` (from `next_commit`); True if a commit landed."""
        try:
            with trio.move_on_after(timeout):
                await event.wait()
                return True
            return False
        finally:
            # Timed out or cancelled (the stream closed) with nobody else waiting: drop it, so that an
            # idle campaign keeps no event and the group commit stops hurrying for it.
            if not event.is_set() and not event.statistics().tasks_waiting and self._events.get(campaign_id) is event:
                del self._events[campaign_id]
