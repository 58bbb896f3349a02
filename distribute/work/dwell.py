"""Dwell-time-aware hand-out: how many tasks to keep at a browser worker, and the owner's advice.

A visitor's browser computes only while its visitor stays on the page; whatever it holds when the
tab closes is stranded until it is handed back or its deadline passes. This module learns, in this
server process only (nothing is stored), two things:

- each campaign's task durations, from answered tasks (the compute time the worker reported,
  already capped by the gateway at the time the task was out), in a fixed-size reservoir sample;
- how long browser visits last (a connection whose `hello` says `kind: "browser"`, as the harness
  sends it), per site (`hello`'s `host`) and overall, and per campaign for the advice. A connection
  the server ended (`bye`, a protocol error) is a visit that lasted at least that long: a censored
  observation, which the Kaplan-Meier estimate counts as such. The same client id connecting again
  within REJOIN_SECONDS continues its visit (the harness reconnects when its throttle changes),
  unless the visit ended with a final `release` (the harness leaving the page, or Stop).

From these, `slots` caps a browser connection's tasks at what it can expect to finish before its
visit is likely to end, given how long it has already stayed: its parallel workers times the median
remaining visit (conditional on its age) divided by the campaign's median task, at least 1 and never
more than it was granted. Headless workers, and every worker while there are fewer than
`min_samples` observations, keep the slots they were granted. `advice` compares the two for the
owner. Pure policy: no I/O and no clock; the calls that depend on time take it. Memory is bounded
(samples of fixed size, at most MAX_KEYS campaigns and MAX_SITES sites). Any client may say it is a
browser: the most a liar can do is shrink browsers' prefetch, never below one task.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["REJOIN_SECONDS", "Dwell", "EndedBy", "Reservoir", "Visits", "seconds_text"]

TASK_SAMPLES = 256  # task durations kept per campaign
VISIT_SAMPLES = 256  # visit lengths kept per site and per campaign
ALL_VISIT_SAMPLES = 2048  # visit lengths kept over all sites
MAX_KEYS = 1000  # campaigns remembered (least recently used forgotten first)
MAX_SITES = 256  # sites remembered: `host` is whatever a client says, so fewer
MAX_ENDING = 10_000  # visits waiting REJOIN_SECONDS for their client to come back
REJOIN_SECONDS = 10.0  # the same client id back within this long continues its visit
MIN_AT_RISK = 5  # fewer visits lasted as long as this one: too few to estimate what remains of it
TAIL = 0.9  # the high quantile of task durations the advice also looks at

EndedBy = Literal["visitor", "leaving", "server"]
K = TypeVar("K")
V = TypeVar("V")


class Reservoir:
    """A uniform sample of at most `size` values out of every value added (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.seen = 0
        self.values: list[Any] = []
        self._rng = rng
        self._sorted: list[Any] | None = None

    def add(self, value: Any) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot >= self.size:
                return
            self.values[slot] = value
        self._sorted = None

    def ordered(self) -> list[Any]:
        if self._sorted is None:
            self._sorted = sorted(self.values)
        return self._sorted

    def quantile(self, q: float) -> float:
        """The q-quantile of the sample (nearest rank); the sample must not be empty."""
        values = self.ordered()
        return float(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))])


class Visits:
    """Visit lengths, some censored (the server ended them), and the Kaplan-Meier estimate over them."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.sample = Reservoir(size, rng)  # (length, ended by the visitor)
        # Computed once per change, since every top-up of a browser reads them: the event times,
        # the survival just after each, and how many visits in the sample their visitor ended.
        self._times: list[float] = []
        self._survival: list[float] = []
        self._ended = 0
        self._stale = False

    def add(self, length: float, ended_by_visitor: bool) -> None:
        self.sample.add((max(0.0, length), ended_by_visitor))
        self._stale = True

    @property
    def ended(self) -> int:
        """Visits in the sample that the visitor ended (uncensored observations)."""
        self._refresh()
        return self._ended

    def _refresh(self) -> None:
        """The Kaplan-Meier curve: at each time a visitor left, survival *= 1 - left / still there."""
        if not self._stale:
            return
        samples = self.sample.ordered()
        self._times, self._survival, self._ended = [], [], 0
        survival, index = 1.0, 0
        while index < len(samples):
            length, at_risk, events = samples[index][0], len(samples) - index, 0
            while index < len(samples) and samples[index][0] == length:
                events += samples[index][1]
                index += 1
            if events:
                survival *= 1.0 - events / at_risk
                self._times.append(length)
                self._survival.append(survival)
                self._ended += events
        self._stale = False

    def survival(self, age: float) -> float:
        """The estimated share of visits that last longer than `age` seconds."""
        self._refresh()
        index = bisect.bisect_right(self._times, age)
        return self._survival[index - 1] if index else 1.0

    def remaining(self, age: float) -> float | None:
        """The median time left of a visit that has lasted `age` seconds; None when the data cannot say
        (too few visits lasted that long, or more than half of those were ended by the server)."""
        samples = self.sample.ordered()
        if len(samples) - bisect.bisect_right(samples, age, key=lambda sample: sample[0]) < MIN_AT_RISK:
            return None
        target = self.survival(age) / 2
        for index in range(bisect.bisect_right(self._times, age), len(self._times)):
            if self._survival[index] <= target:
                return self._times[index] - age
        return None


@dataclass(slots=True)
class _Visit:
    started: float
    site: str
    parallel: int
    client_id: str
    campaign: int | None = None
    ended: float = 0.0
    by_visitor: bool = True


class Dwell:
    """This process's figures of task durations and visit lengths, and the decisions made from them."""

    def __init__(self, min_samples: int, seed: int | None = None) -> None:
        self.min_samples = min_samples
        self._rng = random.Random(seed)
        self._tasks: OrderedDict[int, Reservoir] = OrderedDict()  # campaign id -> task seconds
        self._sites: OrderedDict[str, Visits] = OrderedDict()
        self._campaign_visits: OrderedDict[int, Visits] = OrderedDict()
        self.visits = Visits(ALL_VISIT_SAMPLES, self._rng)  # every browser visit seen, all sites
        self._open: dict[int, _Visit] = {}  # browser connections now
        self._ending: OrderedDict[str, _Visit] = OrderedDict()  # client id -> its visit, may still rejoin

    # ----------------------------------------------------------------- what the gateway reports

    def joined(self, connection: int, client: Mapping[str, Any], now: float) -> None:
        """A connection said hello; only browser connections are remembered."""
        self._settle(now)
        if client.get("kind") != "browser":
            return
        client_id = str(client.get("id", ""))[:64]
        workers = client.get("workers")
        parallel = int(workers) if isinstance(workers, (int, float)) and 1 <= workers <= 256 else 1
        earlier = self._ending.pop(client_id, None) if client_id else None
        started = earlier.started if earlier is not None else now
        self._open[connection] = _Visit(started, str(client.get("host", ""))[:200], parallel, client_id)

    def left(self, connection: int, now: float, ended_by: EndedBy = "visitor") -> None:
        """A connection ended: its visitor left ("visitor"), said so first with a final `release`
        ("leaving": the visit is over, no rejoin awaited), or the server ended it ("server": a `bye` or
        a protocol error, so the visit lasted at least this long). The visit counts for the campaign
        its tasks were last sized for (`slots`)."""
        self._settle(now)
        visit = self._open.pop(connection, None)
        if visit is None:
            return
        visit.ended, visit.by_visitor = now, ended_by != "server"
        if (before := self._ending.pop(visit.client_id, None)) is not None:
            self._record(before)  # an earlier visit under that id that did not continue here
        if not visit.client_id or ended_by == "leaving":
            self._record(visit)
            return
        self._ending[visit.client_id] = visit
        if len(self._ending) > MAX_ENDING:
            self._record(self._ending.popitem(last=False)[1])

    def task_done(self, campaign: int, seconds: float, now: float) -> None:
        """An answered task and the compute time it took (zero, as some clients report, is not a duration)."""
        self._settle(now)
        if seconds > 0:
            _touch(self._tasks, campaign, lambda: Reservoir(TASK_SAMPLES, self._rng)).add(seconds)

    # ----------------------------------------------------------------- decisions

    def slots(self, connection: int, campaign: int, granted: int, now: float) -> int:
        """How many tasks the connection may hold on `campaign`, out of the `granted` it would get today."""
        visit = self._open.get(connection)
        if visit is None:
            return granted
        visit.campaign = campaign
        task = self.task_seconds(campaign)
        if task is None or granted <= 1:
            return granted
        site = self._sites.get(visit.site) if visit.site else None
        visits = site if site is not None and site.ended >= self.min_samples else self.visits
        if visits.ended < self.min_samples:
            return granted
        remaining = visits.remaining(now - visit.started)
        if remaining is None:  # it outstayed nearly every visit seen: nothing says it is about to go
            return granted
        return max(1, min(granted, math.floor(min(visit.parallel, granted) * remaining / task)))

    def task_seconds(self, campaign: int, q: float = 0.5) -> float | None:
        """The q-quantile of the campaign's task durations, None with fewer than `min_samples`."""
        tasks = self._tasks.get(campaign)
        if tasks is None or len(tasks.values) < self.min_samples:
            return None
        return tasks.quantile(q)

    def advice(self, campaign: int) -> str | None:
        """What the owner should know when the campaign's tasks outlast its browser visits; else None."""
        median = self.task_seconds(campaign)
        visits = self._campaign_visits.get(campaign)
        if median is None or visits is None or visits.ended < self.min_samples:
            return None
        visit = visits.remaining(0.0)
        if visit is None:
            return None
        half = f"half of the visits end within {seconds_text(visit)}"
        if median > visit:
            return f"median task {seconds_text(median)}; {half}: split datasets or checkpoint"
        tail = self.task_seconds(campaign, TAIL) or 0.0
        if tail > visit:
            return (
                f"median task {seconds_text(median)}, but 1 in 10 tasks takes over {seconds_text(tail)}; "
                f"{half}: split the longest datasets or checkpoint"
            )
        return None

    # ----------------------------------------------------------------- bookkeeping

    def _settle(self, now: float) -> None:
        """Visits whose client did not come back within REJOIN_SECONDS are over: record them."""
        while self._ending:
            visit = next(iter(self._ending.values()))
            if now - visit.ended < REJOIN_SECONDS:
                break
            self._record(self._ending.popitem(last=False)[1])

    def _record(self, visit: _Visit) -> None:
        length = visit.ended - visit.started
        self.visits.add(length, visit.by_visitor)
        if visit.site:
            site = _touch(self._sites, visit.site, lambda: Visits(VISIT_SAMPLES, self._rng), MAX_SITES)
            site.add(length, visit.by_visitor)
        if visit.campaign is not None:
            visits = _touch(self._campaign_visits, visit.campaign, lambda: Visits(VISIT_SAMPLES, self._rng))
            visits.add(length, visit.by_visitor)


def _touch(table: OrderedDict[K, V], key: K, make: Callable[[], V], limit: int = MAX_KEYS) -> V:
    """The entry for `key` (made if missing), now the most recently used; the least recently used
    entry is forgotten beyond `limit`."""
    value = table.get(key)
    if value is None:
        value = table[key] = make()
        if len(table) > limit:
            table.popitem(last=False)
    table.move_to_end(key)
    return value


def seconds_text(seconds: float) -> str:
    """A duration as an owner reads it: "0.4 s", "40 s", "3 min", "2.5 h"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
