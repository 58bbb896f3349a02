"""The `distribute` command line against a real server: every command a user types in the README."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgpack
import trio

from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer
from tests.support.protocol_client import work


async def distribute(
    *args: str, stdin: bytes = b"", check: bool = True, env: dict[str, str] | None = None
) -> trio.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "distribute", *args]
    with trio.fail_after(120):
        result = await trio.run_process(
            command,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def campaign_files(tmp_path: Path) -> list[str]:
    (tmp_path / "kernel.js").write_text(SEED_KERNEL)
    (tmp_path / "generator.js").write_text(SEED_GENERATOR)
    (tmp_path / "static.json").write_text(SEED_STATIC)
    return [
        "--kernel",
        str(tmp_path / "kernel.js"),
        "--generator",
        str(tmp_path / "generator.js"),
        "--static",
        str(tmp_path / "static.json"),
    ]


async def test_user_create_prints_a_working_token_as_the_last_word(live_server: LiveServer) -> None:
    result = await distribute("user", "create", "cli@example.org", "--database", live_server.settings.database)
    token = result.stdout.decode().split()[-1]
    assert await live_server.platform.storage.user_for_token(token) is not None


async def test_user_create_refuses_a_duplicate_email(live_server: LiveServer) -> None:
    await distribute("user", "create", "twice@example.org", "--database", live_server.settings.database)
    again = await distribute(
        "user", "create", "twice@example.org", "--database", live_server.settings.database, check=False
    )
    assert again.returncode == 2
    assert b"exists already" in again.stderr


async def test_campaign_create_worker_and_results_from_the_command_line(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client = ["--server", live_server.url, "--token", live_server.token]
    created = await distribute("campaign", "create", *campaign_files(tmp_path), "--name", "cli seed", *client)
    campaign_id = int(created.stdout.decode().split()[-1])

    async with trio.open_nursery() as nursery:
        for _ in range(2):  # two headless workers, as in the README
            nursery.start_soon(
                distribute, "worker", "--server", live_server.url, "--campaign", str(campaign_id), "--quiet"
            )
    shown = json.loads((await distribute("campaign", "show", str(campaign_id), "--json", *client)).stdout)
    assert shown["status"] == "complete" and shown["name"] == "cli seed"
    assert shown["datasets"]["done"] == 100

    output = tmp_path / "results.json"
    await distribute("results", str(campaign_id), "--format", "json", "-o", str(output), *client)
    rows = json.loads(output.read_text())
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER
    # Two workers, yet one result row per dataset (empty results included): nothing computed twice.
    dataset_ids = [row["dataset_id"] for row in await live_server.results(campaign_id, include_empty=True)]
    assert len(dataset_ids) == 100 and len(set(dataset_ids)) == 100

    listed = json.loads((await distribute("campaign", "list", "--json", *client)).stdout)
    assert [c["id"] for c in listed] == [campaign_id]


def client_options(live_server: LiveServer) -> list[str]:
    return ["--server", live_server.url, "--token", live_server.token]


async def completed_campaign(live_server: LiveServer) -> int:
    """A seed campaign computed to the end by a protocol-level worker (quicker than a JS one)."""
    campaign_id = await live_server.create_campaign(name="computed")
    outcome = await work(live_server.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete"
    assert (await live_server.wait_complete(campaign_id))["status"] == "complete"
    return campaign_id


async def test_campaign_reset_forgets_the_results_and_reopens_the_campaign(live_server: LiveServer) -> None:
    campaign_id = await completed_campaign(live_server)
    result = await distribute("campaign", "reset", str(campaign_id), *client_options(live_server))
    assert result.stdout.decode().split()[-1] == str(campaign_id)
    campaign = await live_server.campaign(campaign_id)
    assert campaign["status"] == "running" and campaign["results"] == 0
    assert campaign["datasets"]["done"] == 0 and campaign["datasets"]["total"] == 100
    assert await live_server.results(campaign_id, include_empty=True) == []


async def test_campaign_delete_takes_the_campaign_off_the_list(live_server: LiveServer) -> None:
    doomed = await live_server.create_campaign(name="doomed")
    kept = await live_server.create_campaign(name="kept")
    result = await distribute("campaign", "delete", str(doomed), *client_options(live_server))
    assert result.stdout.decode().split()[-1] == str(doomed)
    assert (await live_server.campaign(doomed))["deleted"] is True
    listed = json.loads((await distribute("campaign", "list", "--json", *client_options(live_server))).stdout)
    assert [c["id"] for c in listed] == [kept]


async def results_as(live_server: LiveServer, campaign_id: int, fmt: str) -> bytes:
    return (await distribute("results", str(campaign_id), "--format", fmt, *client_options(live_server))).stdout


async def test_results_as_csv_hold_the_rows_of_the_json_download(live_server: LiveServer) -> None:
    campaign_id = await completed_campaign(live_server)
    as_json = json.loads(await results_as(live_server, campaign_id, "json"))
    as_csv = (await results_as(live_server, campaign_id, "csv")).decode()
    lines = as_csv.splitlines()
    assert (
        lines[0]
        == "dataset_id,dataset_number,dataset,result,compute_ms,worker,host,created,verification,kernel_version"
    )
    decode: dict[str, Any] = {
        "dataset_id": int,
        "dataset_number": int,
        "dataset": json.loads,
        "result": json.loads,
        "compute_ms": float,
        "kernel_version": int,
    }
    rows = [{k: decode.get(k, str)(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(as_csv))]
    assert len(as_json) == 82  # the datasets that hold a multiple of 123
    assert rows == [{**row, "compute_ms": round(row["compute_ms"], 1)} for row in as_json]  # CSV: to 0.1 ms


async def test_results_as_msgpack_hold_the_rows_of_the_json_download(live_server: LiveServer) -> None:
    campaign_id = await completed_campaign(live_server)
    as_json = json.loads(await results_as(live_server, campaign_id, "json"))
    as_msgpack = list(msgpack.Unpacker(io.BytesIO(await results_as(live_server, campaign_id, "msgpack"))))
    assert len(as_json) == 82  # the datasets that hold a multiple of 123
    assert as_msgpack == as_json


async def test_worker_with_tasks_stops_after_that_many_and_exits_0(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    result = await distribute(
        "worker", "--server", live_server.url, "--campaign", str(campaign_id), "--tasks", "7", "--quiet", check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "worker done: 7 tasks, 0 errors (reached 7 tasks)" in result.stdout.decode()
    campaign = await live_server.wait_for(campaign_id, lambda c: c["datasets"]["done"] >= 7)
    assert campaign["datasets"]["done"] == 7 and campaign["status"] == "running"


async def test_campaign_show_of_a_failed_generator_prints_its_error(live_server: LiveServer) -> None:
    generator = "(function () { return { main: function () { throw new Error('no datasets today'); } }; })()"
    campaign_id = await live_server.create_campaign(generator=generator, name="broken", skip_check="true")
    await live_server.wait_for(campaign_id, lambda c: c["status"] == "failed")
    result = await distribute("campaign", "show", str(campaign_id), *client_options(live_server))
    text = result.stdout.decode()
    assert f"campaign {campaign_id}: broken (failed)" in text
    assert "generator failed:" in text and "no datasets today" in text


async def test_campaign_show_prints_counts_and_the_embed_snippet(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(name="shown")
    result = await distribute(
        "campaign", "show", str(campaign_id), "--server", live_server.url, "--token", live_server.token
    )
    text = result.stdout.decode()
    assert f"campaign {campaign_id}: shown" in text
    assert "<iframe" in text and f"/embed/{campaign_id}" in text


async def test_a_bad_token_gives_a_clear_error(live_server: LiveServer) -> None:
    result = await distribute("campaign", "list", "--server", live_server.url, "--token", "wrong", check=False)
    assert result.returncode == 2
    assert b"401" in result.stderr and b"invalid" in result.stderr


async def test_a_missing_token_is_explained(live_server: LiveServer) -> None:
    env = {"DISTRIBUTE_TOKEN": ""}
    result = await distribute("campaign", "list", "--server", live_server.url, check=False, env=env)
    assert result.returncode == 2
    assert b"API token" in result.stderr


async def test_an_unknown_scheduler_fails_at_startup_listing_the_known_ones(tmp_path: Path) -> None:
    result = await distribute(
        "serve", "--port", "0", "--database", f"sqlite:///{tmp_path}/x.db", "--scheduler", "nope", check=False
    )
    assert result.returncode == 2
    assert b"round-robin" in result.stderr and b"nope" in result.stderr


async def test_an_absurd_setting_fails_at_startup(tmp_path: Path) -> None:
    result = await distribute(
        "serve",
        "--port",
        "0",
        "--database",
        f"sqlite:///{tmp_path}/x.db",
        check=False,
        env={"DISTRIBUTE_FLUSH_INTERVAL": "-1"},
    )
    assert result.returncode == 2
    assert b"flush_interval" in result.stderr


async def test_python_dash_m_and_the_settings_table(tmp_path: Path) -> None:
    result = await distribute("settings")
    assert b"generator_timeout" in result.stdout and b"| name |" in result.stdout


def test_docs_settings_lists_every_setting() -> None:
    from distribute.settings import settings_table

    assert settings_table() in (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()


async def test_campaign_create_refused_by_the_trial_names_the_source_and_exits_non_zero(
    live_server: LiveServer, tmp_path: Path
) -> None:
    files = campaign_files(tmp_path)
    (tmp_path / "static.json").write_text('{"divisor":\n 123')
    client = ["--server", live_server.url, "--token", live_server.token]
    result = await distribute("campaign", "create", *files, *client, check=False)
    assert result.returncode == 2
    error = result.stderr.decode()
    assert "server said 400: static_dataset: the kernel's loadStaticDataset threw" in error
    assert "(line 2, column 5)" in error
    assert await live_server.platform.storage.list_campaigns() == []


async def test_campaign_create_with_skip_check_accepts_a_kernel_the_sandbox_cannot_run(
    live_server: LiveServer, tmp_path: Path
) -> None:
    files = campaign_files(tmp_path)
    (tmp_path / "kernel.js").write_text(
        "({main: function (d) { return new TextDecoder().decode(new Uint8Array([1])); }})"
    )
    client = ["--server", live_server.url, "--token", live_server.token]
    refused = await distribute("campaign", "create", *files, *client, check=False)
    assert refused.returncode == 2 and b"server said 400: kernel: " in refused.stderr
    created = await distribute("campaign", "create", *files, "--skip-check", *client)
    assert created.stdout.decode().startswith("created campaign ")
