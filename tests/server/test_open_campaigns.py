"""Open campaigns through a real server: the owner sends the datasets (JSON or msgpack batches) while
real protocol workers compute them, closes the campaign, and it completes; every refused batch is a
clear 4xx and stores nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import trio

from tests.conftest import SEED_KERNEL, SEED_STATIC, LiveServer, StartServer
from tests.process.test_cli import client_options, distribute
from tests.support.protocol_client import seed_kernel, work


async def create_open(server: LiveServer, **fields: Any) -> int:
    files = {"kernel": ("kernel.js", SEED_KERNEL.encode()), "static_dataset": ("static.txt", SEED_STATIC.encode())}
    data = {"open": "true", "name": "open", **{k: str(v) for k, v in fields.items()}}
    response = await server.client.post("/api/campaigns", files=files, data=data)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def ranges(first: int, count: int) -> list[dict[str, int]]:
    return [{"min": i * 100, "max": i * 100 + 100} for i in range(first, first + count)]


async def add_json(server: LiveServer, campaign_id: int, datasets: list[Any]) -> Any:
    return await server.client.post(f"/api/campaigns/{campaign_id}/datasets", json={"datasets": datasets})


async def add_msgpack(server: LiveServer, campaign_id: int, body: bytes) -> Any:
    headers = {"Content-Type": "application/msgpack"}
    return await server.client.post(f"/api/campaigns/{campaign_id}/datasets", content=body, headers=headers)


async def total(server: LiveServer, campaign_id: int) -> int:
    return int((await server.campaign(campaign_id))["datasets"]["total"])


async def test_an_open_campaign_is_created_without_a_generator_and_waits_for_datasets(live_server: LiveServer) -> None:
    campaign = await live_server.campaign(await create_open(live_server))
    assert campaign["open"] is True and campaign["status"] == "generating"
    assert campaign["state"]["label"] == "waiting for datasets" and campaign["datasets"]["total"] == 0


async def test_an_open_campaign_with_a_generator_is_refused(live_server: LiveServer) -> None:
    files = {"kernel": ("k.js", SEED_KERNEL.encode()), "generator": ("g.js", b"({main: function () { return [1]; }})")}
    response = await live_server.client.post("/api/campaigns", files=files, data={"open": "true"})
    assert response.status_code == 400 and response.json()["field"] == "generator"


async def test_an_open_campaign_whose_kernel_cannot_load_is_refused(live_server: LiveServer) -> None:
    files = {"kernel": ("k.js", b"({main: function (d) { return d; }, loadStaticDataset: function (s) { JSON.parse(s); }})"),
             "static_dataset": ("s.txt", b"{not json")}  # fmt: skip
    response = await live_server.client.post("/api/campaigns", files=files, data={"open": "true"})
    assert response.status_code == 400 and response.json()["field"] == "static_dataset"


async def test_datasets_added_while_workers_run_are_computed_and_the_closed_campaign_completes(
    live_server: LiveServer,
) -> None:
    server = live_server
    campaign_id = await create_open(server)
    async with trio.open_nursery() as nursery:
        outcomes: list[Any] = []

        async def worker() -> None:
            outcomes.append(await work(server.ws_url, campaign=campaign_id, slots=4))

        nursery.start_soon(worker)
        first = await add_json(server, campaign_id, ranges(0, 50))
        assert first.status_code == 201 and first.json() == {"added": 50, "first": 1, "last": 50, "total": 50}
        answered = await server.wait_for(campaign_id, lambda c: c["datasets"]["done"] == 50)
        # Everything sent is answered, but the campaign is open: it waits for more, it is not complete.
        assert answered["status"] == "generating" and answered["state"]["label"] == "waiting for datasets"
        second = await add_msgpack(server, campaign_id, msgpack.packb(ranges(50, 50)))
        assert second.status_code == 201 and second.json() == {"added": 50, "first": 51, "last": 100, "total": 100}
        closed = await server.client.post(f"/api/campaigns/{campaign_id}/close")
        assert closed.status_code == 200 and closed.json()["open"] is False
    assert outcomes[0].bye == "complete" and len(outcomes[0].done) == 100
    campaign = await server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["datasets"]["done"] == 100
    results = await server.results(campaign_id, include_empty=True)
    by_number = {r["dataset_number"]: r for r in results}
    assert sorted(by_number) == list(range(1, 101))
    assert all(by_number[n]["result"] == seed_kernel(ranges(n - 1, 1)[0]) for n in by_number)


async def test_closing_an_open_campaign_whose_datasets_are_all_answered_completes_it(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    assert (await add_json(live_server, campaign_id, ranges(0, 10))).status_code == 201
    assert (await work(live_server.ws_url, campaign=campaign_id, max_tasks=10)).done
    await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] == 10)
    await live_server.client.post(f"/api/campaigns/{campaign_id}/close")
    assert (await live_server.wait_complete(campaign_id))["status"] == "complete"


async def test_closing_twice_is_fine(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    assert (await add_json(live_server, campaign_id, ranges(0, 3))).status_code == 201
    first = await live_server.client.post(f"/api/campaigns/{campaign_id}/close")
    again = await live_server.client.post(f"/api/campaigns/{campaign_id}/close")
    assert first.status_code == again.status_code == 200 and again.json()["status"] == "running"


async def test_a_closed_campaign_takes_no_more_datasets(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    await live_server.client.post(f"/api/campaigns/{campaign_id}/close")
    response = await add_json(live_server, campaign_id, ranges(0, 3))
    assert response.status_code == 409 and "not open" in response.json()["error"]
    assert await total(live_server, campaign_id) == 0


async def test_a_campaign_with_a_generator_takes_no_datasets_and_cannot_be_closed(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    assert (await add_json(live_server, campaign_id, ranges(0, 3))).status_code == 409
    assert (await live_server.client.post(f"/api/campaigns/{campaign_id}/close")).status_code == 409


async def test_malformed_json_is_refused_and_stores_nothing(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await live_server.client.post(
        f"/api/campaigns/{campaign_id}/datasets",
        content=b'{"datasets": [1, 2',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert await total(live_server, campaign_id) == 0


async def test_json_that_is_not_a_datasets_object_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await live_server.client.post(f"/api/campaigns/{campaign_id}/datasets", json=[1, 2, 3])
    assert response.status_code == 400 and '{"datasets"' in response.json()["error"]


async def test_nan_in_json_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    body = b'{"datasets": [1, NaN]}'
    response = await live_server.client.post(
        f"/api/campaigns/{campaign_id}/datasets", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "NaN" in response.json()["error"]
    assert await total(live_server, campaign_id) == 0


async def test_msgpack_with_binary_data_is_refused_and_stores_nothing(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await add_msgpack(live_server, campaign_id, msgpack.packb([{"a": 1}, {"a": b"\x00\x01"}]))
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == "dataset 1 of the batch is not plain data: binary data (msgpack bin) at dataset['a']"
    )
    assert await total(live_server, campaign_id) == 0


async def test_msgpack_with_an_extension_type_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await add_msgpack(live_server, campaign_id, msgpack.packb([msgpack.ExtType(5, b"x")]))
    assert response.status_code == 400 and "msgpack extension" in response.json()["error"]


async def test_msgpack_with_an_integer_map_key_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await add_msgpack(live_server, campaign_id, msgpack.packb([{1: 2}]))
    assert response.status_code == 400 and "not valid msgpack" in response.json()["error"]
    assert await total(live_server, campaign_id) == 0


async def test_msgpack_that_is_not_an_array_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await add_msgpack(live_server, campaign_id, msgpack.packb({"datasets": [1]}))
    assert response.status_code == 400 and "an array" in response.json()["error"]


async def test_a_body_of_another_type_is_refused(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    response = await live_server.client.post(
        f"/api/campaigns/{campaign_id}/datasets", content=b"1\n2\n", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]


async def test_an_oversized_body_is_refused_before_it_is_parsed(start_server: StartServer) -> None:
    server = await start_server(max_upload_batch_bytes=1000)
    campaign_id = await create_open(server)
    # Not even JSON: refused for its size (413), which is decided before any parsing (else a 400).
    response = await server.client.post(
        f"/api/campaigns/{campaign_id}/datasets", content=b"[" * 2000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "max_upload_batch_bytes" in response.json()["error"]
    assert await total(server, campaign_id) == 0


async def test_an_oversized_streamed_body_without_a_length_is_refused(start_server: StartServer) -> None:
    server = await start_server(max_upload_batch_bytes=1000)
    campaign_id = await create_open(server)

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 500

    response = await server.client.post(
        f"/api/campaigns/{campaign_id}/datasets", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and await total(server, campaign_id) == 0


async def test_too_many_datasets_in_one_batch_are_refused(start_server: StartServer) -> None:
    server = await start_server(max_upload_batch=3)
    campaign_id = await create_open(server)
    response = await add_json(server, campaign_id, ranges(0, 4))
    assert response.status_code == 400 and "max_upload_batch" in response.json()["error"]
    assert await total(server, campaign_id) == 0


async def test_a_dataset_over_the_size_limit_is_refused(start_server: StartServer) -> None:
    server = await start_server(max_dataset_bytes=100)
    campaign_id = await create_open(server)
    response = await add_json(server, campaign_id, [{"a": 1}, "x" * 200])
    assert response.status_code == 400 and "dataset 1 of the batch" in response.json()["error"]
    assert await total(server, campaign_id) == 0


async def test_a_full_backlog_answers_429_with_retry_after(start_server: StartServer) -> None:
    server = await start_server(open_backlog=10)
    campaign_id = await create_open(server)
    assert (await add_json(server, campaign_id, ranges(0, 11))).status_code == 201
    refused = await add_json(server, campaign_id, ranges(11, 1))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "open_backlog" in refused.json()["error"] and await total(server, campaign_id) == 11


async def test_the_backlog_drains_as_workers_compute_and_then_takes_more(start_server: StartServer) -> None:
    server = await start_server(open_backlog=10)
    campaign_id = await create_open(server)
    assert (await add_json(server, campaign_id, ranges(0, 11))).status_code == 201
    await work(server.ws_url, campaign=campaign_id, max_tasks=11)
    assert (await add_json(server, campaign_id, ranges(11, 1))).status_code == 201


async def test_the_dataset_quota_applies_to_open_campaigns(start_server: StartServer) -> None:
    server = await start_server(quota_datasets=5)
    campaign_id = await create_open(server)
    refused = await add_json(server, campaign_id, ranges(0, 6))
    assert refused.status_code == 403 and "quota_datasets" in refused.json()["error"]
    assert (await add_json(server, campaign_id, ranges(0, 5))).status_code == 201
    assert await total(server, campaign_id) == 5


async def test_another_users_open_campaign_is_not_found(live_server: LiveServer) -> None:
    campaign_id = await create_open(live_server)
    storage = live_server.platform.storage
    intruder = await storage.create_token((await storage.create_user("intruder@example.org")).id, "t")
    headers = {"Authorization": f"Bearer {intruder}"}
    response = await live_server.client.post(
        f"/api/campaigns/{campaign_id}/datasets", content=json.dumps({"datasets": [1]}), headers=headers
    )
    assert response.status_code == 404 and await total(live_server, campaign_id) == 0


async def test_the_cli_creates_an_open_campaign_adds_json_lines_and_closes_it(
    live_server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "kernel.js").write_text(SEED_KERNEL)
    (tmp_path / "static.json").write_text(SEED_STATIC)
    (tmp_path / "datasets.jsonl").write_text("".join(json.dumps(d) + "\n" for d in ranges(0, 25)))
    options = client_options(live_server)
    created = await distribute(
        "campaign", "create", "--open", "--kernel", str(tmp_path / "kernel.js"),
        "--static", str(tmp_path / "static.json"), *options,
    )  # fmt: skip
    campaign_id = int(created.stdout.split()[-1])
    added = await distribute("datasets", "add", str(campaign_id), str(tmp_path / "datasets.jsonl"), "--batch", "10",
                             *options)  # fmt: skip
    assert added.stdout.split()[-1] == b"25"
    piped = await distribute("datasets", "add", str(campaign_id), "-", *options, stdin=b'{"min": 0, "max": 1}\n')
    assert piped.stdout.split()[-1] == b"1"
    closed = await distribute("campaign", "close", str(campaign_id), *options)
    assert closed.stdout.decode().strip() == f"closed campaign {campaign_id}"
    assert (await work(live_server.ws_url, campaign=campaign_id)).bye == "complete"
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["datasets"]["done"] == 26


async def test_the_cli_refuses_an_open_campaign_with_a_generator(live_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "kernel.js").write_text(SEED_KERNEL)
    refused = await distribute("campaign", "create", "--open", "--kernel", str(tmp_path / "kernel.js"),
                               "--generator", str(tmp_path / "kernel.js"), *client_options(live_server),
                               check=False)  # fmt: skip
    assert refused.returncode == 2 and "--open" in refused.stderr.decode()


async def test_the_cli_names_the_line_that_is_not_json(live_server: LiveServer, tmp_path: Path) -> None:
    campaign_id = await create_open(live_server)
    (tmp_path / "bad.jsonl").write_text('{"min": 0, "max": 1}\n{oops\n')
    refused = await distribute("datasets", "add", str(campaign_id), str(tmp_path / "bad.jsonl"),
                               *client_options(live_server), check=False)  # fmt: skip
    assert refused.returncode == 2 and "line 2 is not JSON" in refused.stderr.decode()


async def test_the_cli_waits_out_back_pressure_while_workers_drain_the_backlog(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(open_backlog=5)
    campaign_id = await create_open(server)
    (tmp_path / "many.jsonl").write_text("".join(json.dumps(d) + "\n" for d in ranges(0, 30)))
    added: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def feed() -> None:
            added.append(await distribute("datasets", "add", str(campaign_id), str(tmp_path / "many.jsonl"),
                                          "--batch", "6", *client_options(server)))  # fmt: skip

        nursery.start_soon(feed)
        outcome = await work(server.ws_url, campaign=campaign_id, max_tasks=30)
    assert added[0].stdout.split()[-1] == b"30" and len(outcome.done) == 30
    assert (await server.campaign(campaign_id))["datasets"]["total"] == 30
