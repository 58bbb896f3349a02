"""Placements: which campaign each connection that accepts "any" campaign serves, and when to ask again.

A worker is placed on a campaign by the scheduler when it arrives (or its campaign runs dry), and
placed again every period while it works, even while it holds tasks: a worker with several slots,
topped up at half, always holds some, so waiting for it to run empty would never move it. The
scheduler sees what placements commit (`Candidate.workers`: the other connections serving each
campaign, counted here). When it picks the campaign the worker serves, nothing changes; when it
picks another, the worker gets no more tasks of its campaign, drains the ones it holds, and then
serves the chosen one (without asking again, unless that one ran dry meanwhile).

Each connection's period is `interval` scaled by a factor in [0.5, 1.5) drawn deterministically from
its id (golden-ratio spacing), so workers that arrived together are not all placed again at once,
and the mean period stays `interval`.

Connections that asked for one campaign are counted too (`pin`): they serve it as surely.
Synchronous and without I/O: the gateway calls it with the time, the dispatcher's scheduler decides.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..models import Campaign, servable_to_any
from ..scheduler.base import Candidate
from .queues import CampaignQueue, has_work

__all__ = ["Admit", "Admits", "Placements", "Work", "candidates_for_any"]

_GOLDEN = (math.sqrt(5) - 1) / 2

Admit = Callable[[Campaign], bool]  # which campaigns a worker may be placed on (its site's policy)


class Work(Protocol):
    """What placements need from the dispatcher."""

    def queue(self, campaign_id: int) -> CampaignQueue | None: ...

    def choose_campaign(
        self,
        exclude: Iterable[int] = (),
        serving: Mapping[int, int] | None = None,
        admit: Admit | None = None,
    ) -> Campaign | None: ...


class Admits(Protocol):
    """A site's policy (work/sites.py `SiteGrant`): which campaigns its visitors may be placed on."""

    def admits(self, campaign: Campaign) -> bool: ...


@dataclass(slots=True)
class _Placement:
    campaign: Campaign | None = None  # what the connection serves, or drains its tasks to serve next
    due: float = -math.inf  # when to ask the scheduler again
    site: Admits | None = None  # the site the connection is embedded on: only campaigns it admits


class Placements:
    """The placements of this process's connections; see the module docstring."""

    def __init__(self, work: Work, interval: float) -> None:
        self._work = work
        self._interval = interval
        self._by_connection: dict[int, _Placement] = {}
        self._serving: Counter[int] = Counter()  # campaign id -> connections placed on it

    def serving(self, campaign_id: int) -> int:
        """How many connections are placed on (or draining their tasks towards) the campaign."""
        return self._serving[campaign_id]

    def period(self, connection: int) -> float:
        """The connection's own re-placement period: `interval` x a factor in [0.5, 1.5) from its id."""
        return self._interval * (0.5 + (connection * _GOLDEN) % 1.0)

    def place(
        self, connection: int, sent: Campaign | None, held: bool, now: float, site: Admits | None = None
    ) -> tuple[Campaign | None, bool]:
        """The campaign whose tasks the connection gets now (None: none for now), and whether no campaign has work.

        `sent` is the campaign the connection was last sent; `held` whether it holds tasks (all of
        that campaign: it is never switched under tasks in flight). `site`: the policy of the verified
        site the connection is embedded on, which every campaign it is placed on must satisfy.
        """
        placement = self._by_connection.get(connection)
        if placement is None:
            placement = self._by_connection[connection] = _Placement(site=site)
        current = self._usable(sent)
        target = placement.campaign
        if target is not None and current is not None and target.id == current.id:
            if now < placement.due:
                return current, False
        elif target is not None:  # moving to another campaign, or its campaign ran dry
            if held:
                return None, False  # the held tasks drain first
            if (next_one := self._usable(target)) is not None:
                return next_one, False  # chosen when the move was decided: not asked again
        elif held:
            return None, False
        admit = placement.site.admits if placement.site is not None else None
        chosen = self._work.choose_campaign(serving=self._others(placement), admit=admit)
        if chosen is None:
            # Nothing anywhere: a headless worker leaves, the browser harness retries later.
            return current, current is None and not held
        self._move(placement, chosen)
        placement.due = now + self.period(connection)
        if held and (current is None or current.id != chosen.id):
            return None, False  # stop topping up the campaign it leaves; its tasks drain first
        return chosen, False

    def pin(self, connection: int, campaign: Campaign) -> None:
        """The connection serves `campaign` now (it asked for it, or was sent its campaign frame)."""
        placement = self._by_connection.get(connection)
        if placement is None:
            placement = self._by_connection[connection] = _Placement()
        if placement.campaign is None or placement.campaign.id != campaign.id:
            self._move(placement, campaign)

    def leave(self, connection: int) -> None:
        """The connection ended."""
        placement = self._by_connection.pop(connection, None)
        if placement is not None:
            self._move(placement, None)

    def _usable(self, campaign: Campaign | None) -> Campaign | None:
        """The campaign as the dispatcher knows it now, if it still has work."""
        queue = self._work.queue(campaign.id) if campaign is not None else None
        return queue.campaign if queue is not None and not queue.complete and has_work(queue) else None

    def _others(self, placement: _Placement) -> Mapping[int, int]:
        """Connections per campaign, the one being placed not counted."""
        if placement.campaign is None:
            return self._serving
        others = Counter(self._serving)
        others[placement.campaign.id] -= 1
        return others

    def _move(self, placement: _Placement, campaign: Campaign | None) -> None:
        if placement.campaign is not None:
            self._serving[placement.campaign.id] -= 1
            if self._serving[placement.campaign.id] <= 0:
                del self._serving[placement.campaign.id]
        placement.campaign = campaign
        if campaign is not None:
            self._serving[campaign.id] += 1


def candidates_for_any(
    queues: Iterable[CampaignQueue], exclude: set[int], serving: Mapping[int, int], horizon: float, admit: Admit | None
) -> list[Candidate]:
    """What the scheduler chooses among for a worker that serves any campaign: the campaigns with work
    now that are approved (`models.servable_to_any`) and admitted by the worker's site, each with the other
    connections serving it (`serving`) and the placement horizon."""
    return [
        Candidate(c.id, c.priority, c.weight, c.compute_seconds, serving.get(c.id, 0), horizon)
        for q in queues
        if not q.complete
        and (c := q.campaign).id not in exclude
        and has_work(q)
        and servable_to_any(c)
        and (admit is None or admit(c))
    ]
