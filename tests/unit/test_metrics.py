"""The metrics of one process (`distribute.metrics`) on the memory backend, and the example Grafana dashboard.

A real server's /-/metrics after a campaign is tested in tests/server/test_metrics.py.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from distribute import metrics as metrics_module
from distribute.metrics import MeteredStorage, Metrics
from distribute.models import CampaignStatus, FinishedTask
from distribute.plugins import open_storage
from distribute.storage import Storage

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"


async def memory_storage() -> Storage:
    return await open_storage(f"memory://metrics-{time.time_ns()}")


async def campaign_of(storage: Storage, n: int, status: str = CampaignStatus.RUNNING) -> int:
    user = await storage.create_user(f"u{time.time_ns()}@example.org")
    campaign = await storage.create_campaign(
        user.id, name="c", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    if status != CampaignStatus.RUNNING:
        await storage.set_status(campaign.id, status)
    return campaign.id


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_two_platforms_in_one_process_keep_their_own_counters() -> None:
    one, two = Metrics(), Metrics()  # the global registry would refuse the second set of names
    one.results_stored.inc(3)
    first, _ = await one.scrape(await memory_storage())
    second, _ = await two.scrape(await memory_storage())
    assert samples(first.decode())[("distribute_results_stored_total", ())] == 3
    assert samples(second.decode())[("distribute_results_stored_total", ())] == 0


async def test_the_progress_of_running_campaigns_is_read_at_scrape_time() -> None:
    storage = await memory_storage()
    campaign_id = await campaign_of(storage, 4)
    metrics = Metrics()
    before, _ = await metrics.scrape(storage)
    leased = await storage.lease(campaign_id, 1, "p", 30)
    await storage.store_outcomes([FinishedTask(leased[0].id, campaign_id, b"\x01", 1.0, "w", "")], [], 3)
    after, _ = await metrics.scrape(storage)
    key = ("distribute_campaign_datasets", (("campaign", str(campaign_id)), ("state", "done")))
    assert samples(before.decode())[key] == 0
    assert samples(after.decode())[key] == 1
    total = ("distribute_campaign_datasets", (("campaign", str(campaign_id)), ("state", "total")))
    assert samples(after.decode())[total] == 4


async def test_finished_campaigns_are_left_out_of_the_progress() -> None:
    storage = await memory_storage()
    complete = await campaign_of(storage, 2, CampaignStatus.COMPLETE)
    text = (await Metrics().scrape(storage))[0].decode()
    assert f'campaign="{complete}"' not in text


async def test_the_progress_covers_at_most_the_newest_campaigns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_CAMPAIGNS", 3)
    storage = await memory_storage()
    ids = [await campaign_of(storage, 1) for _ in range(5)]
    text = (await Metrics().scrape(storage))[0].decode()
    shown = {int(found) for found in re.findall(r'campaign="(\d+)"', text)}
    assert shown == set(ids[-3:])


async def test_a_metered_group_commit_counts_accepted_results_not_duplicates() -> None:
    storage = await memory_storage()
    campaign_id = await campaign_of(storage, 2)
    metrics = Metrics()
    metered = MeteredStorage.wrap(storage, metrics)
    leased = await metered.lease(campaign_id, 2, "p", 30)
    answer = FinishedTask(leased[0].id, campaign_id, b"\x01", 1.0, "w", "")
    await metered.store_outcomes([answer, answer], [], 3)
    await metered.store_outcomes([answer], [], 3)  # late: the dataset is done already
    text = (await metrics.scrape(storage))[0].decode()
    assert samples(text)[("distribute_results_stored_total", ())] == 1
    assert samples(text)[("distribute_group_commit_seconds_count", ())] == 2


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    body, content_type = await Metrics().scrape(await memory_storage(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in expressions for name in re.findall(r"\bdistribute_[a-z_]+", expr)}


async def test_every_metric_the_grafana_dashboard_queries_is_exported() -> None:
    storage = await memory_storage()
    await campaign_of(storage, 2)  # so the per-campaign family has samples
    metrics = Metrics()
    metrics.dispatch_seconds.observe(0.01)
    text = (await metrics.scrape(storage))[0].decode()
    exported = {name for name, _ in samples(text)}
    queried = dashboard_metric_names()
    assert len(queried) >= 10  # the dashboard queries histograms' buckets, sums and counts too
    assert queried <= exported, queried - exported


async def test_the_metrics_documented_in_scale_out_are_the_metrics_exported() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scale-out.md").read_text()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(distribute_[a-z_]+)", section, re.MULTILINE))
    storage = await memory_storage()
    await campaign_of(storage, 1)
    text = (await Metrics().scrape(storage))[0].decode()
    # (the library adds a `_created` timestamp beside each counter and histogram: not ours to document)
    exported = {f.name for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    exported = {f"{name}_total" if f"{name}_total" in text else name for name in exported}
    assert documented == exported
