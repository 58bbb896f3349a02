"""A `distribute worker` process SIGKILLed mid-task: another worker recomputes what it held.

No close frame, no goodbye: the killed worker's connection just ends with tasks in hand. The
server must hand those datasets to the next worker, keep the results the killed one delivered,
and end with exactly one result row per dataset and the seed's exact answer.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import (
    SEED_ANSWER,
    SEED_GENERATOR,
    SEED_STATIC,
    database_url,
    launch_server_process,
    slow_seed_kernel,
)

# The seed's kernel, slowed down to ~30 ms a dataset (3 s for the campaign), so that the worker is
# always in the middle of a task when it is killed.
SLOW_SEED_KERNEL = slow_seed_kernel(30)


def worker_command(url: str, campaign_id: int) -> list[str]:
    # One session (`--processes 1`): the test follows one connection from its start to its kill.
    options = ["--campaign", str(campaign_id), "--processes", "1", "--quiet"]
    return [sys.executable, "-m", "distribute", "worker", "--server", url, *options]


async def campaign(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_killed_workers_datasets_are_recomputed_by_another_and_counted_once(tmp_path: Path) -> None:
    launched = await trio.to_thread.run_sync(launch_server_process, tmp_path, database_url(tmp_path))
    server, url, token, log = launched.process, launched.url, launched.token, launched.log
    first: subprocess.Popen[bytes] | None = None
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            files = {
                "kernel": ("k.js", SLOW_SEED_KERNEL),
                "generator": ("g.js", SEED_GENERATOR),
                "static_dataset": ("s.json", SEED_STATIC),
            }
            # A short deadline: should a held task not come back when its connection ends, it still would.
            response = await client.post("/api/campaigns", files=files, data={"task_timeout": "5"})
            assert response.status_code == 201, response.text
            campaign_id = response.json()["id"]

            first = subprocess.Popen(worker_command(url, campaign_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            with trio.fail_after(30):
                while True:  # some results stored, the worker connected with tasks still to do
                    before = await campaign(client, campaign_id)
                    if before["datasets"]["done"] >= 5 and before["workers"] == 1:
                        break
                    assert first.poll() is None, first.communicate()
                    await trio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(first.wait)
            with trio.fail_after(10):  # the server noticed the connection end
                while (await campaign(client, campaign_id))["workers"] != 0:
                    await trio.sleep(0.02)

            with trio.fail_after(60):
                second = await trio.run_process(
                    worker_command(url, campaign_id), capture_stdout=True, capture_stderr=True, check=False
                )
            assert second.returncode == 0, second.stderr.decode()
            finished = await campaign(client, campaign_id)
            response = await client.get(f"/api/campaigns/{campaign_id}/results", params={"include_empty": "true"})
            rows = response.json()
    finally:
        for process in (first, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert first is not None and first.returncode == -signal.SIGKILL
    assert 5 <= before["datasets"]["done"] < 100  # the kill landed mid-campaign
    assert finished["status"] == "complete" and finished["datasets"]["done"] == 100
    assert sorted(n for row in rows if row["result"] for n in row["result"]) == SEED_ANSWER
    per_dataset = Counter(row["dataset_id"] for row in rows)
    assert len(per_dataset) == 100 and set(per_dataset.values()) == {1}
    # Two connections delivered results: the killed worker's first, then the second worker's, which
    # computed exactly what was missing (what the first held when it died included).
    by_connection = Counter(int(row["worker"].split("@")[0]) for row in rows)
    assert len(by_connection) == 2
    killed, recomputing = sorted(by_connection)
    assert by_connection[killed] >= before["datasets"]["done"]
    assert f"worker done: {by_connection[recomputing]} tasks, 0 errors" in second.stdout.decode()
    assert "Traceback" not in log.read_text()
