"""Per-account quotas on a real server: campaigns, generated datasets, result bytes, generators at once.

Each quota refuses with a clear message naming the quota and its setting, and only the account
that is over it: another account on the same server keeps working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from tests.conftest import SEED_GENERATOR, LiveServer, StartServer
from tests.process.test_cli import campaign_files, distribute
from tests.support.protocol_client import work

LAZY_FOREVER = """({ main: function* () { for (var i = 0; ; i++) yield {n: i}; } })"""
ARRAY_OF = """({ main: function () { var d = []; for (var i = 0; i < %d; i++) d.push({n: i}); return d; } })"""
ECHO_KERNEL = """({ main: function (d) { return d.n; } })"""


@asynccontextmanager
async def another_account(server: LiveServer, email: str) -> AsyncIterator[httpx.AsyncClient]:
    storage = server.platform.storage
    user = await storage.create_user(email)
    token = await storage.create_token(user.id, "tests")
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


async def post_campaign(client: httpx.AsyncClient, kernel: str, generator: str) -> httpx.Response:
    files = {"kernel": ("kernel.js", kernel.encode()), "generator": ("generator.js", generator.encode())}
    return await client.post("/api/campaigns", files=files)


async def test_one_campaign_over_the_campaign_quota_is_refused_with_a_403_naming_the_setting(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(quota_campaigns=2)
    first = await server.create_campaign()
    await server.create_campaign()
    assert (await server.client.delete(f"/api/campaigns/{first}")).status_code < 300  # deleted ones count too

    refused = await server.post_campaign(ECHO_KERNEL, ARRAY_OF % 3)
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]
    assert "campaign quota" in message and "quota_campaigns" in message and "2" in message

    client = ["--server", server.url, "--token", server.token]
    cli = await distribute("campaign", "create", *campaign_files(tmp_path), *client, check=False)
    assert cli.returncode != 0 and b"quota_campaigns" in cli.stderr, cli.stderr

    async with another_account(server, "other@example.org") as other:  # a quota is per account
        assert (await post_campaign(other, ECHO_KERNEL, ARRAY_OF % 3)).status_code == 201


async def test_a_generator_over_the_accounts_dataset_quota_fails_its_campaign_and_others_keep_going(
    start_server: StartServer,
) -> None:
    server = await start_server(quota_datasets=100, generator_batch=20)
    within = await server.create_campaign(ECHO_KERNEL, ARRAY_OF % 60, "")
    assert (await server.wait_for(within, lambda c: c["status"] != "generating"))["status"] == "running"

    over = await server.create_campaign(ECHO_KERNEL, ARRAY_OF % 60, "")  # 60 + 60 > 100
    failed = await server.wait_for(over, lambda c: c["status"] != "generating")
    assert failed["status"] == "failed", failed
    assert "dataset quota" in failed["generation_error"] and "quota_datasets" in failed["generation_error"]
    assert failed["datasets"]["total"] <= 40  # stopped before the batch that would go over

    async with another_account(server, "other@example.org") as other:  # 60 of its own 100: fine
        created = await post_campaign(other, ECHO_KERNEL, ARRAY_OF % 60)
        assert created.status_code == 201, created.text
        theirs = f"/api/campaigns/{created.json()['id']}"
        with trio.fail_after(30):
            while (answer := (await other.get(theirs)).json())["status"] == "generating":
                await trio.sleep(0.05)
        assert answer["status"] == "running" and answer["datasets"]["total"] == 60


async def test_once_the_result_bytes_quota_is_exceeded_no_new_campaign_is_accepted(
    start_server: StartServer,
) -> None:
    server = await start_server(quota_result_bytes=200)
    campaign = await server.create_campaign()  # the seed: 100 datasets, results of a few hundred bytes
    await work(server.ws_url, campaign=campaign)
    assert (await server.wait_complete(campaign))["status"] == "complete"

    refused = await server.post_campaign(ECHO_KERNEL, ARRAY_OF % 3)
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]
    assert "result storage quota" in message and "quota_result_bytes" in message

    assert (await server.client.post(f"/api/campaigns/{campaign}/reset")).status_code == 200
    assert (await server.post_campaign(ECHO_KERNEL, ARRAY_OF % 3)).status_code == 201  # reset freed it


async def test_more_generators_at_once_than_the_quota_get_a_429(start_server: StartServer) -> None:
    server = await start_server(quota_generators=1, generator_batch=10, generator_low_water=10)
    endless = await server.create_campaign(ECHO_KERNEL, LAZY_FOREVER, "")  # generating until deleted
    assert (await server.campaign(endless))["status"] == "generating"

    refused = await server.post_campaign(ECHO_KERNEL, ARRAY_OF % 3)
    assert refused.status_code == 429, refused.text
    message = refused.json()["error"]
    assert "generator quota" in message and "quota_generators" in message

    async with another_account(server, "other@example.org") as other:
        assert (await post_campaign(other, ECHO_KERNEL, SEED_GENERATOR)).status_code == 201


NO_MAIN = "({ mein: function (d) { return d.n; } })"


async def test_trial_runs_past_the_hourly_quota_get_a_429_and_skipping_the_trial_is_not_counted(
    start_server: StartServer,
) -> None:
    server = await start_server(quota_checks_per_hour=2)
    for _ in range(2):  # refused by their trial, and counted all the same: they cost the sandbox
        refused = await server.post_campaign(NO_MAIN, ARRAY_OF % 3)
        assert refused.status_code == 400, refused.text
    third = await server.post_campaign(ECHO_KERNEL, ARRAY_OF % 3)
    assert third.status_code == 429, third.text
    assert "quota_checks_per_hour" in third.json()["error"]
    files = {"kernel": ("kernel.js", ECHO_KERNEL.encode()), "generator": ("generator.js", (ARRAY_OF % 3).encode())}
    skipped = await server.client.post("/api/campaigns", files=files, data={"skip_check": "true"})
    assert skipped.status_code == 201, skipped.text
    async with another_account(server, "other@example.org") as other:  # counted per account
        assert (await post_campaign(other, ECHO_KERNEL, ARRAY_OF % 3)).status_code == 201
