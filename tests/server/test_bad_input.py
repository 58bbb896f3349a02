"""Bad input of every kind gets a clear error, and nothing already stored changes.

Each test starts a server, stores a campaign and computes it (so it has results), snapshots that
campaign as the API shows it and its results downloads (bytes), sends one kind of bad input, checks
the error it gets, and then checks that the snapshot is unchanged. The whole campaign JSON is
compared: once its workers have left (the fixture waits for that), no field of it is volatile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from distribute import protocol as p
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, LiveServer, StartServer
from tests.support.protocol_client import closed_with, work

MAX_SOURCE = 20_000  # max_source_bytes of these servers: small, so oversized uploads stay small
GOOD_GENERATOR = SEED_GENERATOR.encode()
GOOD_KERNEL = SEED_KERNEL.encode()
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 20 + b"generator.js"


@dataclass
class Snapshot:
    campaign: dict[str, Any]
    downloads: dict[str, bytes]


@dataclass
class Stored:
    server: LiveServer
    campaign_id: int
    dataset_ids: list[int]
    before: Snapshot

    async def now(self) -> Snapshot:
        return await snapshot(self.server, self.campaign_id)

    async def campaign_ids(self) -> list[int]:
        return [c["id"] for c in (await self.server.client.get("/api/campaigns")).json()["campaigns"]]


async def snapshot(server: LiveServer, campaign_id: int) -> Snapshot:
    downloads: dict[str, bytes] = {}
    for fmt in ("json", "msgpack", "csv"):
        response = await server.client.get(
            f"/api/campaigns/{campaign_id}/results", params={"format": fmt, "include_empty": "true"}
        )
        assert response.status_code == 200, response.text
        downloads[fmt] = response.content
    return Snapshot(await server.campaign(campaign_id), downloads)


@pytest.fixture
async def stored(start_server: StartServer) -> Stored:
    """A server holding one computed campaign (100 results), and its snapshot."""
    server = await start_server(max_source_bytes=MAX_SOURCE, generator_timeout=2.0, generator_heap=64)
    campaign_id = await server.create_campaign()
    await work(server.ws_url, campaign=campaign_id)
    await server.wait_for(campaign_id, lambda c: c["status"] == "complete" and c["workers"] == 0)
    before = await snapshot(server, campaign_id)
    assert before.campaign["results"] > 0 and before.campaign["datasets"]["done"] == 100
    dataset_ids = [row["dataset_id"] for row in json.loads(before.downloads["json"])]
    return Stored(server, campaign_id, dataset_ids, before)


def upload(**files: bytes) -> dict[str, tuple[str, bytes]]:
    """A multipart upload: a working kernel and generator unless replaced, plus any other file."""
    sources = {"kernel": GOOD_KERNEL, "generator": GOOD_GENERATOR, **files}
    return {name: (f"{name}.js", data) for name, data in sources.items()}


# --------------------------------------------------------------------------- uploads

BAD_UPLOADS: dict[str, tuple[dict[str, tuple[str, bytes]], str]] = {
    "binary garbage as the kernel": (upload(kernel=bytes(range(256)) * 8), "kernel is not valid UTF-8 text (byte 128)"),
    "Latin-1 text as the generator": (
        upload(generator="({ main: function () { return ['caf\xe9']; } })".encode("latin-1")),
        "generator is not valid UTF-8 text",
    ),
    "UTF-16 text as the kernel": (upload(kernel=b"\xff\xfe" + SEED_KERNEL.encode("utf-16-le")), "UTF-16"),
    "NUL bytes in the kernel": (upload(kernel=GOOD_KERNEL + b"\x00\x00"), "kernel contains NUL bytes"),
    "NUL bytes in the static dataset": (upload(static_dataset=b'{"divisor": 123}\x00'), "static_dataset contains NUL"),
    "a PNG image as the kernel": (upload(kernel=PNG), "kernel is a PNG image, not text"),
    "a ZIP archive as the generator": (upload(generator=ZIP), "generator is a ZIP archive, not text"),
    "an empty kernel": (upload(kernel=b"  \n"), "kernel and generator must not be empty"),
    "a kernel over the per-file limit": (
        upload(kernel=b"//" + b"x" * (MAX_SOURCE - 1)),
        f"kernel is {MAX_SOURCE + 1} bytes; the limit is {MAX_SOURCE}",
    ),
    "a kernel that does not parse": (
        upload(kernel=b"({ main: function (d) { return d; }"),
        "the kernel does not parse: SyntaxError",
    ),
    "a comparator that does not parse": (
        upload(comparator=b"function (a, b) { return a ==== b; }"),
        "the comparator does not parse: SyntaxError",
    ),
    "spot checks that are not JSON": (upload(spot_checks=b"[{dataset: 1}]"), "spot_checks is not valid JSON"),
    "a spot check without a result": (upload(spot_checks=b'[{"dataset": 1}]'), "spot_checks[0] must be"),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
async def test_a_bad_upload_is_refused_with_a_clear_error_and_changes_nothing(stored: Stored, name: str) -> None:
    files, message = BAD_UPLOADS[name]
    response = await stored.server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert await stored.campaign_ids() == [stored.campaign_id]
    assert await stored.now() == stored.before


async def test_a_body_over_the_request_limit_is_refused_with_413_and_changes_nothing(stored: Stored) -> None:
    response = await stored.server.client.post("/api/campaigns", files=upload(kernel=b"x" * (10 * MAX_SOURCE)))
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body too large; the limit is")
    assert await stored.campaign_ids() == [stored.campaign_id]
    assert await stored.now() == stored.before


# --------------------------------------------------------------------------- API schema errors

SCHEMA_ERRORS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "a priority that is not a number": ({"priority": "high"}, ("priority",)),
    "a replication of zero": ({"replication": "0"}, ("replication",)),
    "a negative weight": ({"weight": "-1"}, ("weight",)),
    "a task timeout over a day": ({"task_timeout": "86401"}, ("task_timeout",)),
    "a name over 200 characters": ({"name": "n" * 201}, ("name",)),
}


@pytest.mark.parametrize("name", SCHEMA_ERRORS)
async def test_a_schema_error_is_400_naming_the_field_and_changes_nothing(stored: Stored, name: str) -> None:
    fields, loc = SCHEMA_ERRORS[name]
    response = await stored.server.client.post("/api/campaigns", files=upload(), data=fields)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "request validation failed"
    assert [tuple(d["loc"]) for d in body["details"]] == [loc]
    assert await stored.campaign_ids() == [stored.campaign_id]
    assert await stored.now() == stored.before


async def test_a_missing_kernel_file_is_400_naming_it_and_changes_nothing(stored: Stored) -> None:
    files = {"generator": ("generator.js", GOOD_GENERATOR)}
    response = await stored.server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400  # not 500: the error's input holds the uploaded file
    assert [tuple(d["loc"]) for d in response.json()["details"]] == [("kernel",)]
    assert await stored.campaign_ids() == [stored.campaign_id]
    assert await stored.now() == stored.before


async def test_an_unknown_results_format_is_400_naming_it_and_changes_nothing(stored: Stored) -> None:
    path = f"/api/campaigns/{stored.campaign_id}/results"
    response = await stored.server.client.get(path, params={"format": "xml"})
    assert response.status_code == 400
    assert [tuple(d["loc"]) for d in response.json()["details"]] == [("format",)]
    assert await stored.now() == stored.before


# --------------------------------------------------------------------------- generator bombs

GENERATOR_BOMBS = {
    "endless loop": ("({ main: function () { while (true) {} } })", "timed out"),
    "heap blow-up": (
        "({ main: function () { var a = []; while (true) a.push(new Array(1e6).fill(a.length)); } })",
        "memory",
    ),
}


@pytest.mark.parametrize("name", GENERATOR_BOMBS)
async def test_a_generator_bomb_fails_on_its_own_with_a_stored_error_and_changes_nothing_else(
    stored: Stored, name: str
) -> None:
    source, expected = GENERATOR_BOMBS[name]
    bomb = await stored.server.create_campaign(generator=source, skip_check="true")  # past the form's trial
    failed = await stored.server.wait_complete(bomb, timeout=60)
    assert failed["status"] == "failed"
    assert expected in failed["generation_error"].lower()
    assert await stored.now() == stored.before


# --------------------------------------------------------------------------- protocol frames


def bad_frames(dataset_id: int) -> dict[str, tuple[bytes | str, int, str]]:
    """Malformed or forged frames sent after a valid hello: (frame, close code, part of the reason).

    The forged ones name a dataset of the stored campaign, which already has its result.
    """
    return {
        "a text frame": ('{"t": "result"}', p.CLOSE_UNSUPPORTED_DATA, "not text"),
        "garbage bytes": (b"\xc1\xc1\xc1", p.CLOSE_PROTOCOL_ERROR, "undecodable frame"),
        "a map without a type": (msgpack.packb({"id": dataset_id}), p.CLOSE_PROTOCOL_ERROR, "string key 't'"),
        "an unknown message type": (msgpack.packb({"t": "overwrite"}), p.CLOSE_PROTOCOL_ERROR, "unknown message"),
        "a result with a negative id": (
            msgpack.packb({"t": "result", "id": -1, "value": 1, "ms": 1}),
            p.CLOSE_PROTOCOL_ERROR,
            "'id' must be an integer",
        ),
        "a results frame with a malformed item": (
            msgpack.packb({"t": "results", "items": [[dataset_id, 1]]}),
            p.CLOSE_PROTOCOL_ERROR,
            "[id, value, ms]",
        ),
        "a forged result for a computed dataset": (
            p.encode(p.Result(dataset_id, ["forged"], 1.0)),
            p.CLOSE_POLICY_VIOLATION,
            f"task {dataset_id} is not held",
        ),
        "a forged error for a computed dataset": (
            p.encode(p.TaskError(dataset_id, "forged")),
            p.CLOSE_POLICY_VIOLATION,
            f"task {dataset_id} is not held",
        ),
    }


FRAME_NAMES = list(bad_frames(1))


@pytest.mark.parametrize("name", FRAME_NAMES)
async def test_a_malformed_frame_closes_the_socket_with_its_reason_and_changes_nothing(
    stored: Stored, name: str
) -> None:
    frame, code, reason = bad_frames(stored.dataset_ids[0])[name]
    running = await stored.server.create_campaign()  # a campaign with work keeps the socket open
    closed_code, closed_reason = await closed_with(stored.server.ws_url, frame, campaign=running)
    assert (closed_code, reason in closed_reason) == (code, True), closed_reason
    assert await stored.now() == stored.before


async def test_a_hello_of_an_unknown_protocol_version_is_refused_and_changes_nothing(stored: Stored) -> None:
    hello = msgpack.packb({"t": "hello", "v": 99, "slots": 1, "campaign": stored.campaign_id})
    code, reason = await closed_with(stored.server.ws_url, hello, hello=False)
    assert (code, reason) == (p.CLOSE_PROTOCOL_ERROR, "unsupported protocol version 99")
    assert await stored.now() == stored.before
