"""Kernel versions through a real server and real protocol clients: `POST /api/campaigns/ID/kernel`, the
campaign frame a worker gets before its next task, results tagged with the version that computed them,
recompute or not, refusals, another server process, and `distribute campaign update`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from distribute import protocol as p
from distribute.campaigns.versions import KernelUpdate, checked_update
from distribute.errors import SourceError
from distribute.worker import run_worker
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer, StartServer, slow_seed_kernel
from tests.process.test_cli import client_options, distribute
from tests.support.protocol_client import receive, receive_tasks, seed_kernel, send, work

# Version 2 answers every dataset (version 1 answers null where no multiple of 123 is in range).
KERNEL_2 = SEED_KERNEL.replace("return results.length > 0 ? results : null;", "return results;")
BROKEN_SYNTAX = "(function() { function main(dataset) { return dataset; }"  # the closing of the IIFE is missing
THROWS_ALWAYS = (
    "(function() { function main(dataset) { throw new Error('version 2 is broken'); } return { main: main }; })()"
)


async def update(
    server: LiveServer, campaign_id: int, kernel: str = KERNEL_2, client: httpx.AsyncClient | None = None, **form: Any
) -> httpx.Response:
    files = {"kernel": ("kernel2.js", kernel.encode())}
    data = {key: str(value).lower() for key, value in form.items()}
    return await (client or server.client).post(f"/api/campaigns/{campaign_id}/kernel", files=files, data=data)


async def results(server: LiveServer, campaign_id: int, **params: str) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/api/campaigns/{campaign_id}/results", params={"format": "json", "include_empty": "true", **params}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def completed(server: LiveServer) -> int:
    campaign_id = await server.create_campaign(name="versions")
    assert (await work(server.ws_url, campaign=campaign_id)).bye == "complete"
    await server.wait_complete(campaign_id)
    return campaign_id


async def answer(ws: WebSocketConnection, tasks: list[p.Task]) -> None:
    values = [p.Result(t.id, seed_kernel(msgpack.unpackb(t.dataset)), 0.1) for t in tasks]
    await send(ws, p.Results(tuple(values)))


async def test_a_new_campaign_is_kernel_version_1(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    assert (await live_server.campaign(campaign_id))["kernel_version"] == 1


async def test_an_update_answers_the_campaign_at_version_2(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    response = await update(live_server, campaign_id)
    assert response.status_code == 200, response.text
    assert response.json()["kernel_version"] == 2 and response.json()["id"] == campaign_id


async def test_an_update_tags_later_results_with_version_2_and_earlier_ones_with_1(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    first = await work(live_server.ws_url, campaign=campaign_id, max_tasks=20)
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] == len(first.done))
    assert (await update(live_server, campaign_id)).status_code == 200
    assert (await work(live_server.ws_url, campaign=campaign_id)).bye == "complete"
    await live_server.wait_complete(campaign_id)
    versions = {row["dataset_id"]: row["kernel_version"] for row in await results(live_server, campaign_id)}
    assert len(versions) == 100
    assert {d for d, v in versions.items() if v == 1} == set(first.done)
    assert {v for d, v in versions.items() if d not in first.done} == {2}


async def test_a_worker_mid_campaign_gets_the_new_campaign_frame_before_its_next_task(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    async with open_websocket_url(live_server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=2))
        first_frame = await receive(ws)
        assert isinstance(first_frame, p.CampaignInfo)
        held = await receive_tasks(ws)
        assert (await update(live_server, campaign_id)).status_code == 200
        await answer(ws, held)  # computed with version 1, answered after the update
        with trio.fail_after(10):
            while isinstance(message := await receive(ws), p.Idle):
                pass
        assert isinstance(message, p.CampaignInfo), message
        assert message.id == campaign_id and message.hash != first_frame.hash and message.kernel == KERNEL_2
        assert isinstance(await receive(ws), list)  # and only then its next tasks
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] == len(held))
    rows = await results(live_server, campaign_id)
    assert {row["kernel_version"] for row in rows if row["dataset_id"] in {t.id for t in held}} == {1}


async def test_a_recompute_puts_done_datasets_back_and_the_final_results_are_all_version_2(
    live_server: LiveServer,
) -> None:
    campaign_id = await completed(live_server)
    response = await update(live_server, campaign_id, recompute=True)
    assert response.status_code == 200, response.text
    assert response.json()["datasets"]["done"] == 0 and response.json()["status"] == "running"
    assert (await work(live_server.ws_url, campaign=campaign_id)).bye == "complete"
    await live_server.wait_complete(campaign_id)
    rows = await results(live_server, campaign_id)
    assert len(rows) == 100 and {row["kernel_version"] for row in rows} == {2}


async def test_after_a_recompute_the_old_results_stay_available_with_every_version(live_server: LiveServer) -> None:
    campaign_id = await completed(live_server)
    assert (await update(live_server, campaign_id, recompute=True)).status_code == 200
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    rows = await results(live_server, campaign_id, every_version="true")
    assert sorted(row["kernel_version"] for row in rows) == [1] * 100 + [2] * 100


async def test_without_recompute_done_datasets_keep_their_version_1_results(live_server: LiveServer) -> None:
    campaign_id = await completed(live_server)
    response = await update(live_server, campaign_id)
    assert response.status_code == 200 and response.json()["status"] == "complete"
    assert response.json()["datasets"]["done"] == 100
    rows = await results(live_server, campaign_id)
    assert len(rows) == 100 and {row["kernel_version"] for row in rows} == {1}


async def test_a_new_kernel_that_does_not_parse_is_a_400_and_the_campaign_keeps_version_1(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign()
    response = await update(live_server, campaign_id, BROKEN_SYNTAX)
    assert response.status_code == 400 and response.json()["field"] == "kernel"
    campaign = await live_server.campaign(campaign_id)
    assert campaign["kernel_version"] == 1


async def test_a_new_kernel_failing_on_the_campaigns_stored_datasets_is_a_400(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["total"] == 100)  # its datasets are stored
    response = await update(live_server, campaign_id, THROWS_ALWAYS)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "kernel" and "version 2 is broken" in response.json()["error"]
    assert (await live_server.campaign(campaign_id))["kernel_version"] == 1


async def test_without_stored_datasets_the_new_kernel_is_tried_on_the_generators_first_ones(
    live_server: LiveServer,
) -> None:
    storage = live_server.platform.storage
    owner = await storage.create_user("early@example.org")
    fields = {"kernel": SEED_KERNEL, "generator": SEED_GENERATOR, "static_dataset": SEED_STATIC}
    campaign = await storage.create_campaign(owner.id, name="early", task_timeout=5.0, **fields)  # nothing generated
    with pytest.raises(SourceError, match="version 2 is broken") as refused:
        await checked_update(storage, live_server.settings, campaign, KernelUpdate(THROWS_ALWAYS.encode()))
    assert refused.value.field == "kernel"


async def test_an_update_without_a_kernel_is_a_400_naming_the_field(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    response = await live_server.client.post(f"/api/campaigns/{campaign_id}/kernel", data={"recompute": "true"})
    assert response.status_code == 400
    assert [detail["loc"] for detail in response.json()["details"]] == [["kernel"]]


async def test_the_update_route_and_its_form_are_in_the_openapi_document(live_server: LiveServer) -> None:
    document = (await live_server.client.get("/api/openapi.json")).json()
    body = document["paths"]["/api/campaigns/{campaign_id}/kernel"]["post"]["requestBody"]["content"]
    assert {"kernel", "static", "recompute"} <= set(body["multipart/form-data"]["schema"]["properties"])


async def test_another_users_campaign_is_404(start_server: StartServer) -> None:
    owner = await start_server()
    campaign_id = await owner.create_campaign()
    stranger = await owner.platform.storage.create_user("stranger@example.org")
    token = await owner.platform.storage.create_token(stranger.id)
    async with httpx.AsyncClient(base_url=owner.url, headers={"Authorization": f"Bearer {token}"}) as client:
        response = await update(owner, campaign_id, client=client)
    assert response.status_code == 404
    assert (await owner.campaign(campaign_id))["kernel_version"] == 1


async def test_a_replicated_campaign_refuses_an_update_with_a_400_saying_why(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(replication=2)
    response = await update(live_server, campaign_id)
    assert response.status_code == 400 and "replicated" in response.json()["error"]
    assert (await live_server.campaign(campaign_id))["kernel_version"] == 1


async def test_a_campaign_with_spot_checks_refuses_an_update_with_a_400_saying_why(live_server: LiveServer) -> None:
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.json", SEED_STATIC.encode()),
        "spot_checks": ("spots.json", b'[{"dataset": {"min": 0, "max": 100}, "result": [0]}]'),
    }
    created = await live_server.client.post("/api/campaigns", files=files)
    assert created.status_code == 201, created.text
    response = await update(live_server, created.json()["id"])
    assert response.status_code == 400 and "spot checks" in response.json()["error"]
    assert (await live_server.campaign(created.json()["id"]))["kernel_version"] == 1


async def test_a_worker_on_another_server_process_gets_the_new_kernel_after_its_refresh(
    start_server: StartServer,
) -> None:
    here = await start_server()
    there = await start_server()  # the same database: another server process
    campaign_id = await here.create_campaign()
    async with open_websocket_url(there.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=2))
        assert isinstance(await receive(ws), p.CampaignInfo)
        held = await receive_tasks(ws)
        assert (await update(here, campaign_id)).status_code == 200
        with trio.fail_after(10):  # the other process learns it at its next refresh from storage
            while (queue := there.platform.dispatcher.queue(campaign_id)) is None or (
                queue.campaign.kernel_version != 2
            ):
                await trio.sleep(0.05)
        await answer(ws, held)
        with trio.fail_after(10):
            while isinstance(message := await receive(ws), p.Idle):
                pass
        assert isinstance(message, p.CampaignInfo) and message.kernel == KERNEL_2


async def test_a_headless_worker_computes_with_the_new_kernel_after_an_update_mid_run(
    live_server: LiveServer, nursery: trio.Nursery
) -> None:
    slow = slow_seed_kernel(20)
    campaign_id = await live_server.create_campaign(kernel=slow)
    finished = trio.Event()

    async def worker() -> None:
        await run_worker(live_server.url, campaign=campaign_id)
        finished.set()

    nursery.start_soon(worker)
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] >= 10)
    new = slow.replace("return results.length > 0 ? results : null;", "return results;")
    assert (await update(live_server, campaign_id, new, recompute=True)).status_code == 200
    with trio.fail_after(120):
        await finished.wait()
    await live_server.wait_complete(campaign_id)
    rows = await results(live_server, campaign_id)
    assert len(rows) == 100 and {row["kernel_version"] for row in rows} == {2}
    assert all(isinstance(row["result"], list) for row in rows)  # version 1 answered null where none was found


async def test_the_cli_updates_the_kernel_and_prints_the_new_version(live_server: LiveServer, tmp_path: Path) -> None:
    campaign_id = await completed(live_server)
    kernel = tmp_path / "kernel2.js"
    kernel.write_text(KERNEL_2)
    done = await distribute(
        "campaign", "update", str(campaign_id), "--kernel", str(kernel), "--recompute", *client_options(live_server)
    )
    assert done.stdout.decode().strip() == f"campaign {campaign_id} runs kernel version 2"
    campaign = await live_server.campaign(campaign_id)
    assert campaign["kernel_version"] == 2 and campaign["datasets"]["pending"] == 100
