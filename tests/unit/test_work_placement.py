"""Placements: workers that accept any campaign are placed again periodically, even while holding tasks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from distribute.models import Campaign
from distribute.work.placement import Admit, Placements
from distribute.work.queues import CampaignQueue
from distribute.work.sites import SiteGrant
from tests.unit.test_work_queues import campaign

INTERVAL = 10.0


class Work:
    """The dispatcher's side: queues with work, and a scheduler that answers from a script."""

    def __init__(self, *ids: int) -> None:
        self.queues = {cid: CampaignQueue(campaign(cid)) for cid in ids}  # not drained: storage may have work
        self.answers: list[int] = []  # campaign ids the next choices return, in order
        self.asked: list[dict[int, int]] = []  # the `serving` counts of every choice
        self.admitted: list[Admit | None] = []  # the `admit` of every choice

    def queue(self, campaign_id: int) -> CampaignQueue | None:
        return self.queues.get(campaign_id)

    def choose_campaign(
        self, exclude: Iterable[int] = (), serving: Mapping[int, int] | None = None, admit: Admit | None = None
    ) -> Campaign | None:
        self.asked.append(dict(serving or {}))
        self.admitted.append(admit)
        return self.queues[self.answers.pop(0)].campaign if self.answers else None


def test_a_worker_holding_tasks_is_asked_again_once_its_period_passed_and_stays_when_chosen_again() -> None:
    work = Work(1, 2)
    placements = Placements(work, INTERVAL)
    work.answers = [1, 1]
    first, _ = placements.place(5, None, False, 0.0)
    assert first is not None and first.id == 1
    due = placements.period(5)
    assert placements.place(5, first, True, due - 0.01) == (first, False) and len(work.asked) == 1
    again, no_work = placements.place(5, first, True, due)
    assert again is not None and again.id == 1 and not no_work and len(work.asked) == 2


def test_a_worker_moved_elsewhere_drains_its_tasks_then_serves_the_chosen_campaign_without_asking_again() -> None:
    work = Work(1, 2)
    placements = Placements(work, INTERVAL)
    work.answers = [1, 2]
    first, _ = placements.place(5, None, False, 0.0)
    due = placements.period(5)
    assert placements.place(5, first, True, due) == (None, False)  # no more tasks of campaign 1
    assert placements.place(5, first, True, due + 1) == (None, False)  # still draining
    assert (placements.serving(1), placements.serving(2)) == (0, 1)  # counted where it goes
    after, _ = placements.place(5, first, False, due + 2)
    assert after is not None and after.id == 2 and len(work.asked) == 2


def test_the_scheduler_is_told_the_other_workers_of_each_campaign() -> None:
    work = Work(1, 2)
    placements = Placements(work, INTERVAL)
    work.answers = [1, 2, 2, 1]
    sent = [placements.place(connection, None, False, 0.0)[0] for connection in (1, 2, 3)]
    assert work.asked == [{}, {1: 1}, {1: 1, 2: 1}]
    placements.place(3, sent[2], True, placements.period(3))  # being placed again: not counted itself
    assert work.asked[-1] == {1: 1, 2: 1}
    placements.leave(1)
    assert placements.serving(1) == 1  # connection 3 moves there


def test_workers_that_arrived_together_are_placed_again_at_staggered_times() -> None:
    periods = [Placements(Work(), INTERVAL).period(connection) for connection in range(1, 8)]
    assert all(0.5 * INTERVAL <= p < 1.5 * INTERVAL for p in periods)
    assert min(b - a for a, b in zip(sorted(periods), sorted(periods)[1:], strict=False)) > 0.05 * INTERVAL


def test_a_worker_whose_campaign_ran_dry_drains_then_is_placed_again() -> None:
    work = Work(1, 2)
    placements = Placements(work, INTERVAL)
    work.answers = [1, 2]
    first, _ = placements.place(5, None, False, 0.0)
    work.queues[1].complete = True
    assert placements.place(5, first, True, 1.0) == (None, False)
    after, _ = placements.place(5, first, False, 2.0)
    assert after is not None and after.id == 2


def test_a_worker_holding_nothing_hears_when_no_campaign_has_work() -> None:
    placements = Placements(Work(), INTERVAL)
    assert placements.place(5, None, False, 0.0) == (None, True)


def test_a_worker_on_a_verified_site_is_placed_by_its_sites_policy() -> None:
    work = Work(1, 2)
    placements = Placements(work, INTERVAL)
    site = SiteGrant(5, "campaigns", frozenset({2}), "high", "https://blog.example")
    work.answers = [2, 1]
    placements.place(1, None, False, 0.0, site)
    placements.place(2, None, False, 0.0)
    assert work.admitted[0] == site.admits and work.admitted[1] is None
