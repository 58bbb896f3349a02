"""This process's metrics in the Prometheus text format (`GET /-/metrics`), with the `prometheus-client` library.

One `Metrics` per platform, on a `CollectorRegistry` of its own rather than the library's global one,
so several servers in one process (the tests) never share a counter: every server process exports
its own counters, and a scraper adds them up. What each metric means is listed in docs/scale-out.md
("Metrics"). Three kinds of source:

- counters and histograms updated where the work happens: the group commit goes through
  `MeteredStorage` (results stored, kernel errors, its latency), the gateway reports how long each
  top-up of a connection's tasks took (`dispatch_seconds`);
- gauges read when scraped, from callbacks the platform sets (`Gauge.set_function`): connected
  workers, tasks in flight, live sandbox children, the generators' backlog;
- the progress of the active campaigns, read from storage at each scrape (`CampaignProgress`), so it
  is the same in every process (take the `max` across processes, not the sum).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .models import FailedTask, FinishedTask
from .storage import Storage

__all__ = ["MAX_CAMPAIGNS", "CampaignProgress", "MeteredStorage", "Metrics"]

# Campaigns whose progress one scrape reads (the newest active ones): a scrape costs a bounded
# number of queries however many campaigns a server has.
MAX_CAMPAIGNS = 50
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CampaignProgress(Collector):
    """Datasets per state of the active campaigns, as storage counted them just before the scrape."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, int]] = []  # (campaign id, total, done, failed)

    async def read(self, storage: Storage) -> None:
        """Count the datasets of the newest `MAX_CAMPAIGNS` generating or running campaigns."""
        campaigns = (await storage.list_campaigns(active_only=True))[:MAX_CAMPAIGNS]
        rows = []
        for campaign in campaigns:
            counts = await storage.counts(campaign.id)
            rows.append((campaign.id, counts.total, counts.done, counts.failed))
        self.rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "distribute_campaign_datasets",
            "Datasets of each generating or running campaign (newest first, at most 50) by state: total, done, failed",
            labels=["campaign", "state"],
        )
        for campaign_id, total, done, failed in self.rows:
            for state, value in (("total", total), ("done", done), ("failed", failed)):
                family.add_metric([str(campaign_id), state], value)
        yield family


class Metrics:
    """The metrics of one server process, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.results_stored = Counter(
            "distribute_results_stored", "Results this process's group commits stored (late duplicates not)", registry=r
        )
        self.kernel_errors = Counter(
            "distribute_kernel_errors", "Kernel errors workers reported that this process stored", registry=r
        )
        self.group_commit_seconds = Histogram(
            "distribute_group_commit_seconds",
            "Duration of one group commit of results and kernel errors (one transaction)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "distribute_dispatch_seconds",
            "Time from asking the dispatcher for a connection's tasks to having them (refills from storage included)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.workers = Gauge("distribute_workers_connected", "Workers connected to this process", registry=r)
        self.tasks_in_flight = Gauge(
            "distribute_tasks_in_flight", "Tasks held by the workers connected to this process", registry=r
        )
        self.sandbox_children = Gauge(
            "distribute_sandbox_children", "Sandbox child processes alive or starting in this process", registry=r
        )
        self.generator_backlog = Gauge(
            "distribute_generator_backlog",
            "Datasets waiting unleased for the lazy generators this process runs (as they last counted)",
            registry=r,
        )
        self.progress = CampaignProgress()
        r.register(self.progress)

    async def scrape(self, storage: Storage, accept: str = "") -> tuple[bytes, str]:
        """The metrics, encoded for the scraper's Accept header (Prometheus text or OpenMetrics),
        and their content type; the campaigns' progress is read from `storage` first."""
        await self.progress.read(storage)
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class MeteredStorage:
    """A storage whose group commits are counted and timed; every other call goes straight through.

    The dispatcher is handed this instead of the storage itself, so the hot path needs no hooks of
    its own: `store_outcomes` is the group commit.
    """

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self._storage = storage
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._storage, name)
        setattr(self, name, value)  # looked up once: later calls find it on the instance
        return value

    async def store_outcomes(
        self, finished: Sequence[FinishedTask], failed: Sequence[FailedTask], max_task_errors: int
    ) -> list[int]:
        started = time.perf_counter()
        accepted = await self._storage.store_outcomes(finished, failed, max_task_errors)
        metrics = self._metrics
        metrics.group_commit_seconds.observe(time.perf_counter() - started)
        metrics.results_stored.inc(len(accepted))
        metrics.kernel_errors.inc(len(failed))
        return accepted

    @classmethod
    def wrap(cls, storage: Storage, metrics: Metrics) -> Storage:
        """`storage` with its group commits metered, typed as the storage it stands for."""
        return cast(Storage, cls(storage, metrics))
