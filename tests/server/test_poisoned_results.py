"""Results that are not plain data never reach storage: the downloads and the console stay whole.

A worker may send any msgpack value as a result. Binary data, extension types (timestamps among
them), map keys that are not strings and deep nesting would break the JSON and CSV downloads
halfway, the console's results page or the canonical packing of replicas. The gateway refuses
such a result as a kernel error, its dataset goes back to the queue, and an honest worker answers
it later. Every test sends real frames through a real server and then reads every download whole.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from distribute import protocol as p
from distribute.auth import SESSION_COOKIE
from tests.conftest import SEED_ANSWER, LiveServer, StartServer
from tests.support.protocol_client import close_of, receive, receive_tasks, send, work

DATASETS = 100  # the seed generator's


def nested_array(levels: int) -> bytes:
    return b"\x91" * levels + b"\x01"


TOO_DEEP = "nested deeper than 100 levels at result" + "[0]" * 40 + "…"  # the path is cut after 40 steps
# Encoded results, each as a worker could send it (msgpack bytes spliced into the frame).
POISONS: dict[str, tuple[bytes, str]] = {
    "bin": (msgpack.packb(b"\x00\xff"), "binary data (msgpack bin) at result"),
    "bin inside a map": (msgpack.packb({"a": [1, b"x"]}), "binary data (msgpack bin) at result['a'][1]"),
    "ext": (msgpack.packb(msgpack.ExtType(7, b"abc")), "a msgpack extension (type 7) at result"),
    "timestamp": (msgpack.packb([msgpack.Timestamp(1_700_000_000)]), "a msgpack timestamp at result[0]"),
    "bytes keys": (msgpack.packb({b"k": 1}), "a map key of type bin (b'k') at result"),
    "int keys": (msgpack.packb({"a": {1: "x"}}), "a map key of type int at result['a']"),
    "float keys": (msgpack.packb({1.5: "x"}), "a map key of type float at result"),
    "nil keys": (msgpack.packb({None: "x"}), "a map key of type NoneType at result"),
    "101 levels deep": (nested_array(101), TOO_DEEP),
    "1,000 levels deep": (nested_array(1000), TOO_DEEP),
}


def result_frame(task: int, value: bytes) -> bytes:
    head = b"\x84" + b"".join(msgpack.packb(x) for x in ("t", "result", "id", task, "value"))
    return head + value + msgpack.packb("ms") + msgpack.packb(1.0)


def results_frame(items: list[tuple[int, bytes]]) -> bytes:
    head = b"\x82" + msgpack.packb("t") + msgpack.packb("results") + msgpack.packb("items")
    body = b"".join(b"\x93" + msgpack.packb(task) + value + msgpack.packb(1.0) for task, value in items)
    return head + bytes([0x90 | len(items)]) + body  # a fixarray: fewer than 16 items


async def pong(ws: WebSocketConnection, nonce: int) -> None:
    """The connection is still served: a ping is answered."""
    await send(ws, p.Ping(nonce))
    with trio.fail_after(5):
        while await receive(ws) != p.Pong(nonce):
            pass


async def kernel_errors(server: LiveServer, campaign_id: int, count: int = 1) -> list[str]:
    campaign = await server.wait_for(campaign_id, lambda c: len(c["kernel_errors"]) >= count, timeout=10)
    return [e["message"] for e in campaign["kernel_errors"]]


async def downloads_are_whole(server: LiveServer, campaign_id: int) -> list[dict[str, Any]]:
    """Every download format and the console's results page, each read to its end and parsed."""
    url = f"/api/campaigns/{campaign_id}/results"
    rows: dict[str, list[Any]] = {}
    for fmt in ("json", "csv", "msgpack"):
        response = await server.client.get(url, params={"format": fmt, "include_empty": "true"})
        assert response.status_code == 200, response.text
        if fmt == "json":
            rows[fmt] = json.loads(response.content)
        elif fmt == "csv":
            table = list(csv.reader(io.StringIO(response.text)))
            column = table[0].index("result")
            rows[fmt] = [json.loads(line[column]) for line in table[1:]]
        else:
            rows[fmt] = list(msgpack.Unpacker(io.BytesIO(response.content), raw=False))
        assert len(rows[fmt]) == DATASETS, fmt
    assert [r["result"] for r in rows["json"]] == rows["csv"] == [r["result"] for r in rows["msgpack"]]

    storage = server.platform.storage
    owner = await storage.user_by_email("owner0@example.org")
    assert owner is not None
    cookie, _ = await storage.accounts.create_session(owner.id, timedelta(hours=1))
    page = await server.client.get(
        f"/campaigns/{campaign_id}/results", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}
    )
    assert page.status_code == 200
    assert page.text.rstrip().endswith("</html>")
    return rows["json"]


def answered(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(n for row in rows if row["result"] is not None for n in row["result"])


@pytest.mark.parametrize("name", POISONS)
async def test_a_result_that_is_not_plain_data_is_a_kernel_error_and_an_honest_worker_answers_it(
    start_server: StartServer, name: str
) -> None:
    value, where = POISONS[name]
    server = await start_server()
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1))
        (task,) = await receive_tasks(ws)
        await ws.send_message(result_frame(task.id, value))
        assert await kernel_errors(server, campaign_id) == [f"result is not plain data: {where}"]
        await pong(ws, 1)  # a kernel error, not a broken connection
    honest = await work(server.ws_url, campaign=campaign_id)
    assert honest.bye == "complete"
    assert task.id in honest.done  # the refused dataset went back to the queue
    rows = await downloads_are_whole(server, campaign_id)
    assert answered(rows) == SEED_ANSWER


async def test_a_poisoned_item_of_a_results_frame_is_refused_alone(start_server: StartServer) -> None:
    server = await start_server()
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=3))
        first, second, third = await receive_tasks(ws)
        frame = results_frame(
            [(first.id, msgpack.packb([1])), (second.id, POISONS["ext"][0]), (third.id, POISONS["int keys"][0])]
        )
        await ws.send_message(frame)
        assert sorted(await kernel_errors(server, campaign_id, 2)) == [
            "result is not plain data: a map key of type int at result['a']",
            "result is not plain data: a msgpack extension (type 7) at result",
        ]
        await pong(ws, 1)
    honest = await work(server.ws_url, campaign=campaign_id)
    assert {second.id, third.id} <= set(honest.done) and first.id not in honest.done
    await downloads_are_whole(server, campaign_id)


async def test_a_result_nested_too_deep_to_decode_closes_the_connection_and_its_task_goes_to_another(
    start_server: StartServer,
) -> None:
    """3,000 levels is past what msgpack decodes at all (1,024): the frame is refused whole."""
    server = await start_server()
    campaign_id = await server.create_campaign()
    async with open_websocket_url(server.ws_url) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=1))
        (task,) = await receive_tasks(ws)
        await ws.send_message(result_frame(task.id, nested_array(3000)))
        with trio.fail_after(10):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as exc:
                code, reason = close_of(exc)
    assert (code, reason) == (p.CLOSE_PROTOCOL_ERROR, "undecodable frame: StackError")
    honest = await work(server.ws_url, campaign=campaign_id)
    assert honest.bye == "complete" and task.id in honest.done
    assert answered(await downloads_are_whole(server, campaign_id)) == SEED_ANSWER


async def test_the_largest_and_smallest_msgpack_integers_are_plain_and_download_exactly(
    start_server: StartServer,
) -> None:
    server = await start_server()
    campaign_id = await server.create_campaign()
    extremes = [2**64 - 1, -(2**63), 2**53 + 1]
    outcome = await work(server.ws_url, lambda d: extremes if d["min"] == 0 else None, campaign=campaign_id)
    assert outcome.bye == "complete"
    assert (await server.campaign(campaign_id))["kernel_errors"] == []
    rows = await downloads_are_whole(server, campaign_id)
    assert [row["result"] for row in rows if row["result"] is not None] == [extremes]
