"""Result verification against a live server: replicas, quorum, liars, conflicts, downloads, counts.

Workers connect from different loopback addresses (127.0.0.1, 127.0.0.2, …): the server sends
copies of one dataset only to different addresses and identities.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import trio

from distribute import protocol as p
from tests.conftest import SEED_ANSWER, LiveServer, StartServer
from tests.support.protocol_client import receive, receive_tasks, seed_kernel, send
from tests.support.verification_worker import connect_from, work_from

TEN = "({ main: function () { var d = []; for (var i = 0; i < 1000; i += 100) d.push({min: i, max: i + 100}); return d; } })"


def lie(dataset: dict[str, int]) -> list[int]:
    return [-1, dataset["min"]]


async def all_results(server: LiveServer, campaign_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/api/campaigns/{campaign_id}/results", params={"format": "json", "include_empty": "true", **params}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def run_workers(server: LiveServer, campaign_id: int, *workers: tuple[str, str, Any]) -> None:
    async with trio.open_nursery() as nursery:
        for address, identity, compute in workers:
            nursery.start_soon(
                lambda a=address, i=identity, c=compute: work_from(
                    server.ws_url, a, c, campaign=campaign_id, identity=i
                )
            )


async def stored_results(server: LiveServer, campaign_id: int) -> list[tuple[int, str, str, str]]:
    """Every stored result row (dataset, worker, identity, status), straight from storage."""
    storage = server.platform.storage

    def read() -> list[tuple[int, str, str, str]]:
        from pony.orm import db_session

        with db_session:
            rows = storage.sql.query(
                "SELECT dataset, worker, identity, status FROM result WHERE campaign = ? ORDER BY id", (campaign_id,)
            )
        return [tuple(r) for r in rows]

    return await storage._run(read)


async def test_replication_2_gives_every_dataset_two_agreeing_results_from_different_workers(
    start_server: StartServer,
) -> None:
    # Adaptive replication off: 100 agreeing results would earn both workers some trust meanwhile.
    live_server = await start_server(trust_threshold=0)
    campaign_id = await live_server.create_campaign(replication=2)
    await run_workers(live_server, campaign_id, ("127.0.0.1", "alice", seed_kernel), ("127.0.0.2", "bob", seed_kernel))
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete"
    assert campaign["verification"]["verified"] == 100
    assert campaign["verification"]["pending"] == 0 and campaign["verification"]["conflict"] == 0
    rows = await stored_results(live_server, campaign_id)
    by_dataset: dict[int, list[tuple[int, str, str, str]]] = {}
    for row in rows:
        by_dataset.setdefault(row[0], []).append(row)
    assert len(by_dataset) == 100
    for copies in by_dataset.values():
        assert sorted(r[3] for r in copies) == ["agreed", "canonical"]
        assert {r[2] for r in copies} == {"alice", "bob"}
        assert {r[1].partition("@")[2] for r in copies} == {"127.0.0.1", "127.0.0.2"}
        assert len({r[1].partition("@")[0] for r in copies}) == 2  # two connections
    results = await all_results(live_server, campaign_id)
    assert len(results) == 100  # one row per dataset: the canonical result
    assert sorted(n for r in results if r["result"] for n in r["result"]) == SEED_ANSWER


async def test_the_same_address_never_gets_two_copies_of_a_dataset(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=2)
    seen_a: list[int] = []
    seen_b: list[int] = []
    with trio.move_on_after(3):  # two identities on one address: only one copy each dataset
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: work_from(
                    live_server.ws_url, "127.0.0.3", seed_kernel, campaign=campaign_id, identity="a", seen=seen_a
                )
            )
            nursery.start_soon(
                lambda: work_from(
                    live_server.ws_url, "127.0.0.3", seed_kernel, campaign=campaign_id, identity="b", seen=seen_b
                )
            )
    assert len(seen_a) + len(seen_b) == 10 and not set(seen_a) & set(seen_b)
    campaign = await live_server.campaign(campaign_id)
    assert campaign["status"] == "running" and campaign["verification"]["pending"] == 10
    assert campaign["verification"]["verified"] == 0


async def test_the_same_connection_never_gets_two_copies_of_a_dataset(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=3)
    async with connect_from(live_server.ws_url, "127.0.0.4") as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=20, client={"id": "solo"}))
        tasks = await receive_tasks(ws)
        assert len(tasks) == 10 and len({t.id for t in tasks}) == 10
        await send(ws, p.Results(tuple(p.Result(t.id, [1], 0.1) for t in tasks)))
        with trio.move_on_after(1.5):
            extra = await receive_tasks(ws)
            raise AssertionError(f"got a second copy: {extra}")


async def test_a_liar_is_outvoted_by_a_third_copy_and_flagged(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=2)
    await run_workers(
        live_server,
        campaign_id,
        ("127.0.0.1", "honest-1", seed_kernel),
        ("127.0.0.2", "liar", lie),
        ("127.0.0.3", "honest-2", seed_kernel),
    )
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["verification"]["verified"] == 10 and campaign["verification"]["conflict"] == 0
    rows = await stored_results(live_server, campaign_id)
    liar_rows = [r for r in rows if r[2] == "liar"]
    assert liar_rows and all(r[3] == "invalid" for r in liar_rows)
    assert campaign["verification"]["flagged_workers"] == 1
    (record,) = await live_server.platform.storage.worker_records(["liar"])
    assert record.flagged and record.agreed == 0
    results = await all_results(live_server, campaign_id, verified="true")
    assert len(results) == 10 and all(r["result"] is None or r["result"][0] != -1 for r in results)
    assert sorted(n for r in results if r["result"] for n in r["result"]) == [n for n in SEED_ANSWER if n < 1000]


async def test_no_quorum_within_the_maximum_copies_is_a_conflict(start_server: StartServer) -> None:
    server = await start_server(verify_max_copies=3)
    campaign_id = await server.create_campaign(generator=TEN, replication=2)
    await run_workers(
        server,
        campaign_id,
        *[(f"127.0.0.{i}", f"w{i}", lambda d, i=i: [i, d["min"]]) for i in range(1, 4)],  # all disagree
    )
    campaign = await server.wait_complete(campaign_id)
    assert campaign["status"] == "complete"
    assert campaign["verification"]["conflict"] == 10 and campaign["verification"]["verified"] == 0
    assert campaign["datasets"]["done"] == 0
    rows = await stored_results(server, campaign_id)
    assert len(rows) == 30 and {r[3] for r in rows} == {"conflict"}
    assert await all_results(server, campaign_id, verified="true") == []


async def test_verified_download_leaves_out_unverified_results_in_every_format(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=2)
    async with connect_from(live_server.ws_url, "127.0.0.1") as one:
        await send(one, p.Hello(campaign=campaign_id, slots=10, client={"id": "one"}))
        tasks = await receive_tasks(one)
        await send(one, p.Results(tuple(p.Result(t.id, [t.id], 0.1) for t in tasks)))
        async with connect_from(live_server.ws_url, "127.0.0.2") as two:
            await send(two, p.Hello(campaign=campaign_id, slots=3, client={"id": "two"}))
            some = await receive_tasks(two)
            await send(two, p.Results(tuple(p.Result(t.id, [t.id], 0.1) for t in some)))
            campaign = await live_server.wait_for(campaign_id, lambda c: c["verification"]["verified"] == len(some))
    assert campaign["verification"]["pending"] == 10 - len(some)
    verified = await all_results(live_server, campaign_id, verified="true")
    assert sorted(r["dataset_id"] for r in verified) == sorted(t.id for t in some)
    assert {r["verification"] for r in verified} == {"canonical"}
    everything = await all_results(live_server, campaign_id)
    assert len(everything) == 10
    csv = await live_server.client.get(
        f"/api/campaigns/{campaign_id}/results", params={"format": "csv", "verified": "true"}
    )
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 1 + len(some)
    import msgpack

    packed = await live_server.client.get(
        f"/api/campaigns/{campaign_id}/results", params={"format": "msgpack", "verified": "true"}
    )
    assert len(list(msgpack.Unpacker(__import__("io").BytesIO(packed.content)))) == len(some)


async def test_cli_shows_verification_counts_and_downloads_verified_only(
    live_server: LiveServer, tmp_path: Any
) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=2)
    await run_workers(live_server, campaign_id, ("127.0.0.1", "a", seed_kernel), ("127.0.0.2", "b", seed_kernel))
    await live_server.wait_complete(campaign_id)
    env = {"DISTRIBUTE_SERVER": live_server.url, "DISTRIBUTE_TOKEN": live_server.token, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "distribute", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = await trio.to_thread.run_sync(cli, "campaign", "show", str(campaign_id))
    assert "verified  10 (0 trusted)   pending verification 0   conflict 0   flagged workers 0" in shown
    out = tmp_path / "verified.json"
    await trio.to_thread.run_sync(cli, "results", str(campaign_id), "--verified", "-o", str(out))
    import json

    rows = json.loads(out.read_text())
    assert len(rows) == 9 and {r["verification"] for r in rows} == {"canonical"}  # 500..599 has no multiple of 123


async def test_replicas_survive_a_server_restart(tmp_path: Any) -> None:
    from distribute.app import serve
    from distribute.settings import load_settings
    from tests.conftest import database_url

    settings = load_settings(
        overrides={"database": database_url(tmp_path), "port": 0, "lease_seconds": 5.0}, environ={}
    )
    async with trio.open_nursery() as first:
        running = await first.start(serve, settings)
        storage = running.platform.storage
        user = await storage.create_user("owner@example.org")
        campaign = await running.platform.campaigns.store(
            user,
            name="r",
            kernel="({main: function (d) { return [0]; }})",
            generator=TEN,
            static_dataset="",
            replication=2,
            task_timeout=60.0,
        )
        ws_url = running.urls[0].replace("http://", "ws://") + "/ws"
        async with connect_from(ws_url, "127.0.0.1") as one:
            await send(one, p.Hello(campaign=campaign.id, slots=10, client={"id": "before"}))
            tasks = await receive_tasks(one)
            await send(one, p.Results(tuple(p.Result(t.id, [0], 0.1) for t in tasks)))
            with trio.fail_after(10):
                while (await storage.counts(campaign.id)).pending_verification < 10:
                    await trio.sleep(0.05)
        first.cancel_scope.cancel()  # the server stops; the replicas' results are in storage
    async with trio.open_nursery() as second:
        running = await second.start(serve, settings)
        storage = running.platform.storage
        ws_url = running.urls[0].replace("http://", "ws://") + "/ws"
        seen: list[int] = []
        with trio.move_on_after(3):
            await work_from(ws_url, "127.0.0.1", lambda d: [0], campaign=campaign.id, identity="before", seen=seen)
        assert seen == []  # same identity and address as the stored replicas: no copy for it
        await work_from(ws_url, "127.0.0.2", lambda d: [0], campaign=campaign.id, identity="after", max_tasks=10)
        with trio.fail_after(10):
            while (counts := await storage.counts(campaign.id)).verified < 10:
                await trio.sleep(0.05)
        assert counts.pending_verification == 0 and counts.total == 10
        second.cancel_scope.cancel()


async def test_a_late_copy_answered_after_its_dataset_was_settled_is_no_protocol_error(
    start_server: StartServer,
) -> None:
    server = await start_server(trust_threshold=0)
    one = "({ main: function () { return [{min: 0, max: 100}]; } })"
    campaign_id = await server.create_campaign(generator=one, replication=2, task_timeout=0.5)
    async with connect_from(server.ws_url, "127.0.0.1") as slow:
        await send(slow, p.Hello(campaign=campaign_id, slots=1, client={"id": "slow"}))
        (task,) = await receive_tasks(slow)
        await trio.sleep(1.5)  # past the deadline: the copy goes to others, who settle the dataset
        await run_workers(server, campaign_id, ("127.0.0.2", "b", seed_kernel), ("127.0.0.3", "c", seed_kernel))
        campaign = await server.wait_complete(campaign_id)
        assert campaign["verification"]["verified"] == 1
        await send(slow, p.Result(task.id, [0], 0.1))  # late, and wrong: dropped, not a violation
        with trio.fail_after(5):
            message = await receive(slow)
            while not isinstance(message, p.Bye):
                message = await receive(slow)
        assert message.reason == "complete"
    rows = await stored_results(server, campaign_id)
    assert sorted(r[3] for r in rows) == ["agreed", "canonical"]


async def test_cli_creates_a_campaign_with_a_comparator_and_spot_checks(live_server: LiveServer, tmp_path: Any) -> None:
    import json

    (tmp_path / "k.js").write_text("({main: function (d) { return d; }})")
    (tmp_path / "g.js").write_text(TEN)
    (tmp_path / "c.js").write_text("({compare: function (a, b) { return true; }})")
    (tmp_path / "s.json").write_text(json.dumps([{"dataset": {"min": 1, "max": 2}, "result": {"min": 1, "max": 2}}]))
    env = {"DISTRIBUTE_SERVER": live_server.url, "DISTRIBUTE_TOKEN": live_server.token, "PATH": "/usr/bin:/bin"}
    args = ["campaign", "create", "--kernel", "k.js", "--generator", "g.js", "--replication", "2"]
    args += ["--comparator", "c.js", "--spot-checks", "s.json", "--json"]

    def cli() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distribute", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = await trio.to_thread.run_sync(cli)
    assert done.returncode == 0, done.stderr
    campaign = json.loads(done.stdout)
    assert campaign["comparator"] is True and campaign["replication"] == 2
    (spot,) = await live_server.platform.storage.spot_checks(campaign["id"])
    assert spot.expected is not None
