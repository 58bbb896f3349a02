"""The dwell-time policy on its own, with explicit times: no server, no clock, no sleeping."""

from __future__ import annotations

import random

from distribute.work.dwell import MAX_KEYS, REJOIN_SECONDS, Dwell, Reservoir, Visits, seconds_text

BROWSER = {"kind": "browser", "host": "site.example", "workers": 2}
CAMPAIGN = 7


def visits(lengths: list[float], ended_by_visitor: bool = True, visits: Visits | None = None) -> Visits:
    out = visits or Visits(512, random.Random(1))
    for length in lengths:
        out.add(length, ended_by_visitor)
    return out


def observe_visits(dwell: Dwell, lengths: list[float], client: dict[str, object] = BROWSER, start: int = 1000) -> None:
    """Browser connections on CAMPAIGN that stayed `lengths` seconds each, ended by their visitors."""
    for n, length in enumerate(lengths):
        connection = start + n
        dwell.joined(connection, client, 0.0)
        dwell.slots(connection, CAMPAIGN, 8, 0.0)
        dwell.left(connection, length)


def observe_tasks(dwell: Dwell, seconds: list[float]) -> None:
    for s in seconds:
        dwell.task_done(CAMPAIGN, s, 0.0)


def test_a_reservoir_keeps_at_most_its_size_however_many_values_come() -> None:
    sample = Reservoir(16, random.Random(1))
    for value in range(10_000):
        sample.add(float(value))
    assert len(sample.values) == 16 and sample.seen == 10_000


def test_a_reservoir_quantile_is_exact_while_every_value_fits() -> None:
    sample = Reservoir(16, random.Random(1))
    for value in [5.0, 1.0, 4.0, 2.0, 3.0]:
        sample.add(value)
    assert sample.quantile(0.5) == 3.0 and sample.quantile(0.9) == 5.0 and sample.quantile(0.0) == 1.0


def test_the_median_visit_is_where_half_of_the_visits_have_ended() -> None:
    assert visits([10.0 * n for n in range(1, 11)]).remaining(0.0) == 50.0


def test_what_remains_of_a_visit_depends_on_how_long_it_has_lasted() -> None:
    observed = visits([10.0 * n for n in range(1, 11)])
    # 7 of 10 visits outlast 30 s; half of those (survival 0.35) have ended by 70 s.
    assert observed.remaining(30.0) == 40.0


def test_visits_the_server_ended_count_as_lasting_at_least_that_long() -> None:
    observed = visits([100.0] * 10)
    visits([5.0] * 10, ended_by_visitor=False, visits=observed)
    assert observed.remaining(0.0) == 100.0  # not 5 s, as if the server's byes were visitors leaving


def test_no_estimate_for_a_visit_longer_than_nearly_every_visit_seen() -> None:
    assert visits([10.0] * 20 + [500.0] * 4).remaining(100.0) is None


def test_a_browser_on_long_tasks_holds_fewer_tasks_than_its_slots() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_tasks(dwell, [60.0] * 10)
    dwell.joined(1, BROWSER, 100.0)
    assert dwell.slots(1, CAMPAIGN, 8, 100.0) == 1


def test_a_browser_holds_what_its_workers_can_finish_in_the_visit_it_likely_has_left() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [100.0] * 10)
    observe_tasks(dwell, [10.0] * 10)
    dwell.joined(1, BROWSER, 0.0)
    assert dwell.slots(1, CAMPAIGN, 64, 0.0) == 2 * 10  # 2 workers, 100 s left, 10 s tasks
    assert dwell.slots(1, CAMPAIGN, 8, 0.0) == 8  # never more than it was granted


def test_a_headless_worker_keeps_the_slots_it_was_granted() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_tasks(dwell, [60.0] * 10)
    dwell.joined(1, {"kind": "headless", "host": "site.example"}, 100.0)
    assert dwell.slots(1, CAMPAIGN, 8, 100.0) == 8


def test_with_too_few_visits_seen_a_browser_keeps_its_slots() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 4)
    observe_tasks(dwell, [60.0] * 10)
    dwell.joined(1, BROWSER, 100.0)
    assert dwell.slots(1, CAMPAIGN, 8, 100.0) == 8


def test_with_too_few_tasks_answered_a_browser_keeps_its_slots() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_tasks(dwell, [60.0] * 4)
    dwell.joined(1, BROWSER, 100.0)
    assert dwell.slots(1, CAMPAIGN, 8, 100.0) == 8


def test_a_browser_that_outstayed_the_visits_seen_keeps_its_slots() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_tasks(dwell, [60.0] * 10)
    dwell.joined(1, BROWSER, 100.0)
    assert dwell.slots(1, CAMPAIGN, 8, 200.0) == 8


def test_a_site_with_enough_visits_of_its_own_is_judged_by_them() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_visits(dwell, [10_000.0] * 10, {**BROWSER, "host": "long.example"}, start=2000)
    observe_tasks(dwell, [60.0] * 10)
    dwell.joined(1, BROWSER, 0.0)
    dwell.joined(2, {**BROWSER, "host": "long.example"}, 0.0)
    assert dwell.slots(1, CAMPAIGN, 8, 0.0) == 1
    assert dwell.slots(2, CAMPAIGN, 8, 0.0) == 8


def test_a_client_back_within_the_rejoin_time_continues_its_visit() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    client = {**BROWSER, "id": "abc"}
    dwell.joined(1, client, 0.0)
    dwell.left(1, 50.0)
    dwell.joined(2, client, 50.0 + REJOIN_SECONDS / 2)
    dwell.left(2, 100.0)
    dwell.joined(3, BROWSER, 100.0 + REJOIN_SECONDS)  # any later call settles the visit
    assert dwell.visits.sample.values == [(100.0, True)]


def test_a_visit_that_ended_with_a_final_release_is_over_at_once() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    dwell.joined(1, {**BROWSER, "id": "abc"}, 0.0)
    dwell.left(1, 50.0, "leaving")
    assert dwell.visits.sample.values == [(50.0, True)]


def test_a_visit_the_server_ended_is_recorded_as_censored() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    dwell.joined(1, BROWSER, 0.0)
    dwell.left(1, 50.0, "server")
    assert dwell.visits.sample.values == [(50.0, False)] and dwell.visits.ended == 0


def test_a_visit_counts_for_the_campaign_its_tasks_were_sized_for() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [30.0] * 10)
    observe_tasks(dwell, [60.0] * 10)
    for _ in range(10):
        dwell.task_done(CAMPAIGN + 1, 60.0, 0.0)
    assert dwell.advice(CAMPAIGN) is not None
    assert dwell.advice(CAMPAIGN + 1) is None  # its tasks are as long, but no browser visit was on it


def test_the_advice_compares_the_median_task_with_the_median_visit() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [40.0] * 10)
    observe_tasks(dwell, [90.0] * 10)
    assert (
        dwell.advice(CAMPAIGN) == "median task 90 s; half of the visits end within 40 s: split datasets or checkpoint"
    )


def test_the_advice_names_a_long_tail_of_tasks() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [40.0] * 10)
    observe_tasks(dwell, [5.0] * 8 + [300.0] * 2)
    advice = dwell.advice(CAMPAIGN)
    assert advice is not None and "1 in 10 tasks takes over 5 min" in advice and "split the longest" in advice


def test_no_advice_when_tasks_fit_in_visits() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_visits(dwell, [40.0] * 10)
    observe_tasks(dwell, [2.0] * 10)
    assert dwell.advice(CAMPAIGN) is None


def test_no_advice_with_too_few_observations() -> None:
    dwell = Dwell(min_samples=20, seed=1)
    observe_visits(dwell, [40.0] * 10)
    observe_tasks(dwell, [90.0] * 10)
    assert dwell.advice(CAMPAIGN) is None


def test_zero_compute_times_are_not_durations() -> None:
    dwell = Dwell(min_samples=5, seed=1)
    observe_tasks(dwell, [0.0] * 10)
    assert dwell.task_seconds(CAMPAIGN) is None


def test_campaigns_beyond_the_memory_bound_are_forgotten_oldest_first() -> None:
    dwell = Dwell(min_samples=1, seed=1)
    for campaign in range(MAX_KEYS + 1):
        dwell.task_done(campaign, 1.0, 0.0)
    assert dwell.task_seconds(0) is None and dwell.task_seconds(MAX_KEYS) == 1.0


def test_durations_read_as_an_owner_reads_them() -> None:
    assert [seconds_text(s) for s in (0.42, 40.0, 180.0, 9000.0)] == ["0.4 s", "40 s", "3 min", "2.5 h"]
