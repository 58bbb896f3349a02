"""The JSON API: authentication, ownership, validation, downloads, reset and delete."""

from __future__ import annotations

import csv
import io
import json

import httpx
import msgpack
import pytest
import trio

from distribute.api import CampaignForm
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer, StartServer
from tests.support.protocol_client import work


async def test_requests_without_a_valid_token_are_401(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as anonymous:
        assert (await anonymous.get("/api/campaigns")).status_code == 401
        bad = await anonymous.get("/api/campaigns", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert "invalid" in bad.json()["error"]


async def test_another_users_campaign_is_404_on_every_route(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    storage = live_server.platform.storage
    other = await storage.create_user("intruder@example.org")
    token = await storage.create_token(other.id)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as intruder:
        for method, path in [
            ("GET", f"/api/campaigns/{campaign_id}"),
            ("GET", f"/api/campaigns/{campaign_id}/results"),
            ("POST", f"/api/campaigns/{campaign_id}/reset"),
            ("DELETE", f"/api/campaigns/{campaign_id}"),
            ("POST", f"/api/campaigns/{campaign_id}/restore"),
        ]:
            response = await intruder.request(method, path)
            assert response.status_code == 404, (method, path)
            assert "divisor" not in response.text
        assert (await intruder.get("/api/campaigns")).json() == {"campaigns": []}
    assert (await live_server.campaign(campaign_id))["deleted"] is False


async def test_schema_errors_are_400_with_details(live_server: LiveServer) -> None:
    response = await live_server.client.post("/api/campaigns", data={"name": "x", "priority": "high"})
    assert response.status_code == 400
    body = response.json()
    fields = {tuple(d["loc"]) for d in body["details"]}
    assert ("kernel",) in fields and ("generator",) in fields and ("priority",) in fields


async def test_binary_garbage_upload_is_refused_clearly(live_server: LiveServer) -> None:
    files = {"kernel": ("k.js", b"\xff\xfe\x00garbage"), "generator": ("g.js", b"({main(){return []}})")}
    response = await live_server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


async def test_a_kernel_that_does_not_parse_is_refused_and_nothing_is_created(live_server: LiveServer) -> None:
    files = {
        "kernel": ("k.js", b"({ main: function (d) { return d; }"),
        "generator": ("g.js", b"({main(){return []}})"),
    }
    response = await live_server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400
    assert response.json()["error"].startswith("the kernel does not parse: SyntaxError")
    assert (await live_server.client.get("/api/campaigns")).json() == {"campaigns": []}


async def test_a_kernel_is_only_parsed_at_upload_so_browser_apis_and_a_trailing_semicolon_are_fine(
    live_server: LiveServer,
) -> None:
    kernel = "// uses what browsers have\n({ main: function (d) { return performance.now() > 0 ? d : null; } }); // end"
    files = {"kernel": ("k.js", kernel.encode()), "generator": ("g.js", b"({main(){return []}})")}
    response = await live_server.client.post("/api/campaigns", files=files)
    assert response.status_code == 201, response.text


async def test_results_download_as_json_csv_and_msgpack_agree(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    as_json = await live_server.results(campaign_id)
    raw_csv = (await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"format": "csv"})).text
    as_csv = list(csv.DictReader(io.StringIO(raw_csv)))
    raw = (await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"format": "msgpack"})).content
    as_msgpack = list(msgpack.Unpacker(io.BytesIO(raw)))
    assert sorted(n for row in as_json for n in row["result"]) == SEED_ANSWER
    assert [json.loads(r["result"]) for r in as_csv] == [r["result"] for r in as_json]
    assert [int(r["dataset_id"]) for r in as_csv] == [r["dataset_id"] for r in as_json]
    assert [r["result"] for r in as_msgpack] == [r["result"] for r in as_json]
    assert all(set(r) >= {"dataset_id", "dataset", "result"} for r in as_json)


async def test_reset_makes_every_dataset_pending_again(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id)
    await live_server.wait_complete(campaign_id)
    response = await live_server.client.post(f"/api/campaigns/{campaign_id}/reset")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running" and body["datasets"]["pending"] == 100 and body["results"] == 0
    again = await work(live_server.ws_url, campaign=campaign_id)
    assert again.bye == "complete"
    rows = await live_server.results(campaign_id, include_empty=True)
    assert len(rows) == 100  # one result row per dataset, the old ones forgotten
    assert sorted(n for row in rows if row["result"] for n in row["result"]) == SEED_ANSWER


async def test_delete_hides_the_campaign_and_restore_brings_it_back(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    assert (await live_server.client.delete(f"/api/campaigns/{campaign_id}")).status_code == 200
    assert (await live_server.client.get("/api/campaigns")).json()["campaigns"] == []
    assert (await live_server.client.post(f"/api/campaigns/{campaign_id}/restore")).status_code == 200
    assert [c["id"] for c in (await live_server.client.get("/api/campaigns")).json()["campaigns"]] == [campaign_id]


async def test_openapi_document_lists_the_campaign_routes(live_server: LiveServer) -> None:
    document = (await live_server.client.get("/api/openapi.json")).json()
    assert "/api/campaigns" in document["paths"]
    assert "/api/campaigns/{campaign_id}/results" in document["paths"]
    assert "post" in document["paths"]["/api/campaigns"]


async def test_a_worker_on_a_deleted_campaign_is_told_goodbye(start_server: StartServer) -> None:
    server = await start_server()
    campaign_id = await server.create_campaign()
    await server.client.delete(f"/api/campaigns/{campaign_id}")
    outcome = await work(server.ws_url, campaign=campaign_id)
    assert outcome.bye is not None and not outcome.done


# --------------------------------------------------------------------------- upload limits


def padded(source: str, size: int) -> bytes:
    """JavaScript `source` behind a line comment that makes it exactly `size` bytes."""
    filler = size - len(source.encode()) - len("//\n")
    assert filler >= 0
    return ("//" + "x" * filler + "\n" + source).encode()


def upload_at_the_limit(limit: int) -> dict[str, tuple[str, bytes]]:
    """One file for every file field of the API's form, each exactly `limit` bytes and valid."""
    spot_checks = '[{"dataset": {"min": 0, "max": 100}, "result": [0, 123]}]'
    return {
        "kernel": ("kernel.js", padded(SEED_KERNEL, limit)),
        "generator": ("generator.js", padded(SEED_GENERATOR, limit)),
        "static_dataset": ("static.json", SEED_STATIC.ljust(limit).encode()),  # JSON allows trailing blanks
        "comparator": ("comparator.js", padded("function (a, b) { return a === b; }", limit)),
        "spot_checks": ("spot-checks.json", spot_checks.ljust(limit).encode()),
    }


def file_fields() -> set[str]:
    """The file fields of the API's form (a file is a FileStorage, optional or not)."""
    return {name for name, field in CampaignForm.model_fields.items() if "FileStorage" in str(field.annotation)}


async def test_a_file_at_the_limit_in_every_upload_field_is_accepted(start_server: StartServer) -> None:
    """The request body cap leaves room for all files (5) at max_source_bytes each."""
    limit = 100_000
    server = await start_server(max_source_bytes=limit)
    files = upload_at_the_limit(limit)
    assert set(files) == file_fields()
    assert all(len(data) == limit for _, data in files.values())
    response = await server.client.post("/api/campaigns", files=files)
    assert response.status_code == 201, response.text
    assert response.json()["comparator"] is True


@pytest.mark.parametrize("field", sorted(upload_at_the_limit(1000)))
async def test_a_file_one_byte_over_the_limit_is_refused_naming_it(start_server: StartServer, field: str) -> None:
    limit = 1000
    server = await start_server(max_source_bytes=limit)
    files = upload_at_the_limit(limit)
    name, data = files[field]
    files[field] = (name, data + b" ")
    response = await server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400
    error = f"{field} is {limit + 1} bytes; the limit is {limit}"
    assert response.json() == {"error": error, "field": field, "line": None, "column": None}
    assert await server.platform.storage.list_campaigns() == []


async def test_a_body_over_the_request_limit_is_413_json_naming_the_limit(start_server: StartServer) -> None:
    limit = 10_000
    server = await start_server(max_source_bytes=limit)
    files = {"kernel": ("big.js", b"//" + b"x" * (20 * limit)), "generator": ("g.js", b"({main(){return []}})")}
    response = await server.client.post("/api/campaigns", files=files)
    assert response.status_code == 413
    message = response.json()["error"]
    assert message.startswith("request body too large; the limit is ")
    assert int(message.split()[-2]) >= 5 * limit
    assert await server.platform.storage.list_campaigns() == []


async def test_a_413_closes_the_connection_so_the_next_request_is_answered(start_server: StartServer) -> None:
    """The rest of a refused body is still on the way: the connection cannot carry another request."""
    server = await start_server(max_source_bytes=10_000)
    files = {"kernel": ("big.js", b"//" + b"x" * 200_000), "generator": ("g.js", b"({main(){return []}})")}
    refused = await server.client.post("/api/campaigns", files=files)
    assert (refused.status_code, refused.headers["connection"]) == (413, "close")
    with trio.fail_after(10):
        assert (await server.client.get("/api/campaigns")).status_code == 200


# --------------------------------------------------------------------------- comparators


async def test_a_comparator_that_does_not_parse_is_refused_with_its_syntax_error(live_server: LiveServer) -> None:
    files = {
        "kernel": ("k.js", SEED_KERNEL.encode()),
        "generator": ("g.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.json", SEED_STATIC.encode()),
        "comparator": ("c.js", b"({ compare: function (a, b) { return a === b; }"),
    }
    response = await live_server.client.post("/api/campaigns", files=files)
    assert response.status_code == 400
    assert response.json()["error"].startswith("the comparator does not parse: SyntaxError")
    assert (await live_server.client.get("/api/campaigns")).json() == {"campaigns": []}


COMPARATORS = {
    "a function": "function (a, b) { return Math.abs(a - b) < 1e-9; }",
    "an object with compare": "({ compare: function (a, b) { return a === b; } })",
    "an object after a leading comment": "// tolerant\n({ compare: function (a, b) { return a === b; } })",
    "a function with a block comment after it": "function (a, b) { return a === b; } /* exact */",
}


@pytest.mark.parametrize("shape", COMPARATORS)
async def test_a_comparator_in_a_documented_shape_is_accepted(live_server: LiveServer, shape: str) -> None:
    files = {
        "kernel": ("k.js", SEED_KERNEL.encode()),
        "generator": ("g.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.json", SEED_STATIC.encode()),
        "comparator": ("c.js", COMPARATORS[shape].encode()),
    }
    response = await live_server.client.post("/api/campaigns", files=files, data={"replication": "2"})
    assert response.status_code == 201, response.text
    assert response.json()["comparator"] is True


@pytest.mark.parametrize("ending", [";", "; // the end", "\n// the end"])
async def test_a_comparator_with_a_trailing_semicolon_or_comment_is_accepted_as_a_kernel_is(
    live_server: LiveServer, ending: str
) -> None:
    comparator = "({ compare: function (a, b) { return a === b; } })" + ending
    files = {
        "kernel": ("k.js", SEED_KERNEL.encode()),
        "generator": ("g.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.json", SEED_STATIC.encode()),
        "comparator": ("c.js", comparator.encode()),
    }
    response = await live_server.client.post("/api/campaigns", files=files, data={"replication": "2"})
    assert response.status_code == 201, response.text
    assert response.json()["comparator"] is True


# --------------------------------------------------------------------------- results query


@pytest.mark.parametrize(("parameter", "value"), [("format", "xml"), ("include_empty", "maybe"), ("verified", "2")])
async def test_a_bad_results_query_is_400_naming_the_parameter(
    live_server: LiveServer, parameter: str, value: str
) -> None:
    campaign_id = await live_server.create_campaign()
    response = await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={parameter: value})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "request validation failed"
    assert [(tuple(d["loc"]), d["input"]) for d in body["details"]] == [((parameter,), value)]
