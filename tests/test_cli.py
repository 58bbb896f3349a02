"""The `distribute` command line against a real server: every command a user types in the README."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer


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

    listed = json.loads((await distribute("campaign", "list", "--json", *client)).stdout)
    assert [c["id"] for c in listed] == [campaign_id]


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

    assert settings_table() in (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
