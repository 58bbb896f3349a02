"""POST /api/campaigns tries a campaign before it goes live: each refusal is a 400 naming the upload at fault."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer

COUNTING = "({main: function () { var a = []; for (var i = 0; i < 10; i++) a.push({i: i}); return a; }})"
ALWAYS_THROWS = "({\n  main: function (d) {\n    throw new RangeError('no ' + d.i);\n  }\n})"


async def refused(server: LiveServer, kernel: str, generator: str, static: str = "", **fields: Any) -> dict[str, Any]:
    response = await server.post_campaign(kernel, generator, static, **fields)
    assert response.status_code == 400, response.text
    assert await server.platform.storage.list_campaigns() == []  # nothing stored, no FAILED campaign
    body: dict[str, Any] = response.json()
    return body


async def test_a_kernel_without_main_is_refused_at_the_kernel(live_server: LiveServer) -> None:
    body = await refused(live_server, "({loadStaticDataset: function (t) {}})", COUNTING)
    assert body["field"] == "kernel" and "main is not a function" in body["error"]
    assert "skip_check" in body["error"]  # the way out for kernels that need a browser


async def test_a_static_dataset_that_is_not_json_is_refused_with_line_and_column(live_server: LiveServer) -> None:
    body = await refused(live_server, SEED_KERNEL, SEED_GENERATOR, '{"divisor":\n 123')
    assert body["field"] == "static_dataset"
    assert (body["line"], body["column"]) == (2, 5)
    assert "loadStaticDataset threw" in body["error"] and "(line 2, column 5)" in body["error"]


async def test_a_kernel_that_fails_every_trial_dataset_is_refused_with_the_line_that_threw(
    live_server: LiveServer,
) -> None:
    body = await refused(live_server, ALWAYS_THROWS, COUNTING)
    assert body["field"] == "kernel" and (body["line"], body["column"]) == (3, 11)
    assert body["error"].startswith("the kernel failed on all 3 datasets tried in the server's sandbox: RangeError")


async def test_a_kernel_that_fails_some_trial_datasets_is_accepted(live_server: LiveServer) -> None:
    kernel = "({main: function (d) { if (d.i < 2) throw new Error('not yet'); return d.i; }})"
    response = await live_server.post_campaign(kernel, COUNTING)
    assert response.status_code == 201, response.text


async def test_a_generator_that_throws_is_refused_instead_of_creating_a_failed_campaign(
    live_server: LiveServer,
) -> None:
    generator = "({\n  main: function () {\n    throw new Error('no datasets today');\n  }\n})"
    body = await refused(live_server, SEED_KERNEL, generator, SEED_STATIC)
    assert body["field"] == "generator" and (body["line"], body["column"]) == (3, 11)
    assert "the generator threw in main(): Error: no datasets today" in body["error"]


async def test_a_generator_syntax_error_is_refused_with_its_caret_lines_kept(live_server: LiveServer) -> None:
    body = await refused(live_server, SEED_KERNEL, "({main: function () {\n  return [1,;\n}})", SEED_STATIC)
    assert body["field"] == "generator" and (body["line"], body["column"]) == (2, 13)
    first, source, caret = body["error"].split("\n")
    assert first.startswith("syntax error in the generator, line 2: SyntaxError")
    assert caret.index("^") == source.index(";")


async def test_a_generator_syntax_error_is_refused_even_when_the_trial_is_skipped(live_server: LiveServer) -> None:
    body = await refused(live_server, SEED_KERNEL, "({main: function () {", SEED_STATIC, skip_check="true")
    assert body["field"] == "generator"


async def test_a_kernel_syntax_error_names_its_line_and_column(live_server: LiveServer) -> None:
    body = await refused(live_server, "({\n  main: function (d) { return d.i +; }\n})", COUNTING)
    assert body["field"] == "kernel" and body["line"] == 2 and body["column"] is not None
    assert body["error"].startswith("the kernel does not parse: SyntaxError")
    assert f"(line 2, column {body['column']})" in body["error"]


async def test_skip_check_accepts_a_kernel_the_sandbox_cannot_run(live_server: LiveServer) -> None:
    # Needs a browser API the server's sandbox lacks: the trial would refuse it.
    kernel = "({main: function (d) { return new TextDecoder().decode(new Uint8Array([104, 105])) + d.i; }})"
    body = await refused(live_server, kernel, COUNTING)
    assert body["field"] == "kernel" and "TextDecoder" in body["error"]
    response = await live_server.post_campaign(kernel, COUNTING, skip_check="true")
    assert response.status_code == 201, response.text


async def test_skip_check_is_in_the_openapi_document(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        document = (await client.get("/api/openapi.json")).json()
    assert "skip_check" in str(document)
