"""`GET /-/metrics` of a real server: Prometheus text that matches what the server did, and its guard.

Also `/-/plugins.json` as served: what each plugin provides. The collector itself (isolation of
registries, the bound on campaigns) is tested in tests/unit/test_metrics.py.
"""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import receive_tasks, send, work


async def scrape(server: LiveServer) -> dict[str, float]:
    """Every sample of the server's /-/metrics, by name and labels (`name{a="1",b="x"}`)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anonymous:
        response = await anonymous.get("/-/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_results_stored_counts_every_result_of_a_finished_campaign(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    stored = await live_server.results(campaign_id, include_empty=True)
    samples = await scrape(live_server)
    assert samples["distribute_results_stored_total"] == len(stored) == 100
    assert samples["distribute_kernel_errors_total"] == 0


async def test_group_commits_and_dispatches_are_timed(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    samples = await scrape(live_server)
    assert samples["distribute_group_commit_seconds_count"] >= 1
    assert samples["distribute_dispatch_seconds_count"] >= 1
    assert samples['distribute_dispatch_seconds_bucket{le="+Inf"}'] == samples["distribute_dispatch_seconds_count"]


async def test_kernel_errors_are_counted(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()

    def fails_on_the_first(dataset: dict[str, int]) -> None:
        if dataset["min"] == 0:
            raise ValueError("no")

    await work(live_server.ws_url, fails_on_the_first, campaign=campaign_id, max_tasks=8)
    with trio.fail_after(10):
        while (await scrape(live_server))["distribute_kernel_errors_total"] < 1:
            await trio.sleep(0.05)


async def test_a_connected_worker_and_the_tasks_it_holds_are_shown(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=3))
        held = await receive_tasks(ws)
        samples = await scrape(live_server)
        assert samples["distribute_workers_connected"] == 1
        assert samples["distribute_tasks_in_flight"] == len(held) == 3
    with trio.fail_after(10):
        while (await scrape(live_server))["distribute_workers_connected"] != 0:
            await trio.sleep(0.05)


async def test_a_running_campaigns_progress_is_read_from_storage(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await live_server.wait_for(campaign_id, lambda c: c["status"] == "running")
    await work(live_server.ws_url, campaign=campaign_id, max_tasks=20, slots=4)
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] == 20)  # committed
    samples = await scrape(live_server)
    assert samples[f'distribute_campaign_datasets{{campaign="{campaign_id}",state="total"}}'] == 100
    assert samples[f'distribute_campaign_datasets{{campaign="{campaign_id}",state="done"}}'] == 20
    assert samples[f'distribute_campaign_datasets{{campaign="{campaign_id}",state="failed"}}'] == 0


async def test_sandbox_children_and_generator_backlog_are_exported(live_server: LiveServer) -> None:
    await live_server.create_campaign()  # the upload check and the generator run in sandbox children
    samples = await scrape(live_server)
    assert samples["distribute_sandbox_children"] >= 1
    assert samples["distribute_generator_backlog"] == 0  # an array generator keeps no backlog


async def test_metrics_need_the_bearer_token_when_one_is_set(start_server: StartServer) -> None:
    server = await start_server(metrics_token="s3cret-scraper")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        assert (await client.get("/-/metrics")).status_code == 401
        wrong = await client.get("/-/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = await client.get("/-/metrics", headers={"Authorization": "Bearer s3cret-scraper"})
        assert right.status_code == 200 and "distribute_results_stored_total" in right.text


async def test_metrics_name_campaigns_by_id_only(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(name="Secret protein folding", description="private")
    await live_server.wait_for(campaign_id, lambda c: c["status"] == "running")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as anonymous:
        text = (await anonymous.get("/-/metrics")).text
    assert f'campaign="{campaign_id}"' in text
    assert "Secret" not in text and "private" not in text and "owner" not in text


async def test_plugins_json_says_what_each_plugin_provides(live_server: LiveServer) -> None:
    response = await live_server.client.get("/-/plugins.json")
    assert response.status_code == 200
    plugins = {plugin["name"]: plugin for plugin in response.json()}
    assert plugins["lottery"]["schedulers"] == ["lottery"]
    assert plugins["lottery"]["storage_schemes"] == []
    assert plugins["lottery"]["hooks"] == ["register_schedulers"]
    assert "sqlite" in plugins["builtin_storage"]["storage_schemes"]
    assert "round-robin" in plugins["builtin_schedulers"]["schedulers"]


async def test_a_paused_lazy_generators_backlog_is_shown(start_server: StartServer) -> None:
    server = await start_server(generator_batch=50, generator_low_water=100)
    lazy = "({ main: function* () { for (var i = 0; i < 1000; i++) yield {n: i}; } })"
    square = "({ loadStaticDataset: function () {}, main: function (d) { return d.n * d.n; } })"
    await server.create_campaign(kernel=square, generator=lazy, static="")
    with trio.fail_after(30):  # it stops pulling once more than 100 datasets wait unleased
        while (await scrape(server))["distribute_generator_backlog"] <= 100:
            await trio.sleep(0.05)
