"""Adaptive replication, re-checks of a flagged worker's trusted results, comparators, spot checks (live)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import trio

from distribute.models import Verdicts
from distribute.work.verification import trust_probability
from tests.conftest import LiveServer, StartServer
from tests.server.test_verification import TEN, all_results, lie, run_workers, stored_results
from tests.support.protocol_client import seed_kernel
from tests.support.verification_worker import work_from

MANY = "({ main: function () { var d = []; for (var i = 0; i < 400; i++) d.push({min: i * 10, max: i * 10 + 10}); return d; } })"


async def give_record(server: LiveServer, key: str, agreed: int) -> None:
    await server.platform.storage.apply_verdicts(Verdicts(agreed=(key,) * agreed))


async def test_a_trusted_identity_gets_unreplicated_tasks_at_the_rate_the_policy_says(
    start_server: StartServer,
) -> None:
    server = await start_server(trust_threshold=10, trust_ceiling=0.8)
    await give_record(server, "veteran", 40)
    p = trust_probability(40, threshold=10, ceiling=0.8)  # 0.6
    campaign_id = await server.create_campaign(generator=MANY, replication=2)
    await work_from(server.ws_url, "127.0.0.1", seed_kernel, campaign=campaign_id, identity="veteran", max_tasks=400)
    await server.wait_for(campaign_id, lambda c: c["verification"]["trusted"] + c["verification"]["pending"] == 400)
    rows = await stored_results(server, campaign_id)
    trusted = sum(1 for r in rows if r[3] == "trusted")
    assert len(rows) == 400
    sd = math.sqrt(400 * p * (1 - p))  # binomial: within 4 standard deviations
    assert abs(trusted - 400 * p) < 4 * sd, (trusted, 400 * p)
    # A newcomer (no record) gets every task replicated.
    newcomer_campaign = await server.create_campaign(generator=TEN, replication=2)
    await work_from(
        server.ws_url, "127.0.0.2", seed_kernel, campaign=newcomer_campaign, identity="newcomer", max_tasks=10
    )
    campaign = await server.wait_for(newcomer_campaign, lambda c: c["verification"]["pending"] == 10)
    assert campaign["verification"]["trusted"] == 0


async def test_a_flagged_workers_trusted_results_are_rechecked_and_the_lies_never_verified(
    start_server: StartServer,
) -> None:
    server = await start_server(trust_threshold=10, trust_ceiling=0.5)
    server.platform.dispatcher.verifier.rng = random.Random(3)  # the same draws every run
    await give_record(server, "sleeper", 10_000)  # trusted about half the time, then it lies
    campaign_id = await server.create_campaign(generator=TEN, replication=2)
    await work_from(server.ws_url, "127.0.0.1", lie, campaign=campaign_id, identity="sleeper", max_tasks=10)
    before = await server.wait_for(
        campaign_id, lambda c: c["verification"]["trusted"] + c["verification"]["pending"] == 10
    )
    # Some lies are accepted on trust, for now; the replicated ones will catch the liar.
    assert 1 <= before["verification"]["trusted"] <= 9
    await run_workers(server, campaign_id, ("127.0.0.2", "h1", seed_kernel), ("127.0.0.3", "h2", seed_kernel))
    campaign = await server.wait_complete(campaign_id)
    assert campaign["verification"]["verified"] == 10 and campaign["verification"]["trusted"] == 0
    rows = await stored_results(server, campaign_id)
    assert {r[3] for r in rows if r[2] == "sleeper"} == {"invalid"}  # every trusted lie was re-checked
    (record,) = await server.platform.storage.worker_records(["sleeper"])
    assert record.flagged and record.agreed == 0
    verified = await all_results(server, campaign_id, verified="true")
    assert len(verified) == 10 and not any(r["result"] and r["result"][0] == -1 for r in verified)


async def create_compared_campaign(server: LiveServer, comparator: str) -> int:
    """A replication-2 campaign of TEN datasets whose results are compared by `comparator`."""
    response = await server.client.post(
        "/api/campaigns",
        files={
            "kernel": ("k.js", b"({main: function (d) { return [d.min]; }})"),
            "generator": ("g.js", TEN.encode()),
            "comparator": ("c.js", comparator.encode()),
        },
        data={"replication": "2"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["comparator"] is True
    return response.json()["id"]


async def test_a_comparator_lets_results_with_float_noise_agree(live_server: LiveServer) -> None:
    campaign_id = await create_compared_campaign(
        live_server, "({ compare: function (a, b) { return Math.abs(a[0] - b[0]) < 1e-9; } })"
    )

    def noisy(d: dict[str, int]) -> list[float]:
        return [d["min"] / 10 * 0.1 * 3 + 1e-12]  # differs from the exact value in the last bits

    def exact(d: dict[str, int]) -> list[float]:
        return [d["min"] * 0.03]

    await run_workers(live_server, campaign_id, ("127.0.0.1", "a", noisy), ("127.0.0.2", "b", exact))
    campaign = await live_server.wait_complete(campaign_id, timeout=60)
    assert campaign["verification"]["verified"] == 10 and campaign["verification"]["conflict"] == 0
    rows = await stored_results(live_server, campaign_id)
    assert sorted(r[3] for r in rows) == ["agreed"] * 10 + ["canonical"] * 10


async def test_a_comparator_that_hangs_is_given_up_and_delays_no_other_campaign(live_server: LiveServer) -> None:
    """One loop decides every campaign's replicas: a comparator that runs out its time on every pair
    would hold all of them up by COMPARE_TIMEOUT (5 s) per pair. It is given up after the first."""
    hostile = await create_compared_campaign(live_server, "({ compare: function (a, b) { while (true) {} } })")
    with trio.move_on_after(3):  # 10 datasets whose two copies differ: each pair goes to the comparator
        await run_workers(live_server, hostile, ("127.0.0.1", "a", lambda d: [1]), ("127.0.0.2", "b", lambda d: [2]))
    other = await live_server.create_campaign(generator=TEN, replication=2)
    with trio.fail_after(15):  # 10 pairs x 5 s before the other campaign's turn without giving up
        await run_workers(live_server, other, ("127.0.0.3", "c", seed_kernel), ("127.0.0.4", "d", seed_kernel))
        campaign = await live_server.wait_for(other, lambda c: c["verification"]["verified"] == 10)
    assert campaign["status"] == "complete"


async def test_without_a_comparator_float_noise_disagrees(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign(generator=TEN, replication=2)
    with trio.move_on_after(4):  # two workers that never agree: the campaign waits for a third
        await run_workers(
            live_server,
            campaign_id,
            ("127.0.0.1", "a", lambda d: [d["min"] * 0.03 + 1e-12]),
            ("127.0.0.2", "b", lambda d: [d["min"] * 0.03]),
        )
    campaign = await live_server.campaign(campaign_id)
    assert campaign["verification"]["verified"] == 0 and campaign["verification"]["pending"] == 10
    assert campaign["status"] == "running"


async def test_a_spot_check_catches_a_liar_and_credits_an_honest_worker(start_server: StartServer) -> None:
    server = await start_server(spot_check_rate=1.0)
    checks = [{"dataset": {"min": 123 * k, "max": 123 * k + 1}, "result": [123 * k]} for k in range(1, 4)]
    response = await server.client.post(
        "/api/campaigns",
        files={
            "kernel": ("k.js", b"({main: function (d) { return null; }})"),
            "generator": ("g.js", TEN.encode()),
            "spot_checks": ("s.json", json.dumps(checks).encode()),
        },
    )
    assert response.status_code == 201, response.text
    campaign_id = response.json()["id"]
    await work_from(server.ws_url, "127.0.0.1", lie, campaign=campaign_id, identity="cheat", max_tasks=4)
    await work_from(server.ws_url, "127.0.0.2", seed_kernel, campaign=campaign_id, identity="fair")
    campaign = await server.wait_complete(campaign_id)
    assert campaign["datasets"]["total"] == 10 and campaign["datasets"]["done"] == 10  # spot checks not counted
    records: dict[str, Any] = {}
    with trio.fail_after(10):
        while set(records) != {"cheat", "fair"}:
            records = {r.key: r for r in await server.platform.storage.worker_records(["cheat", "fair"])}
            await trio.sleep(0.05)
    assert records["cheat"].flagged and records["cheat"].disagreed >= 1
    assert not records["fair"].flagged and records["fair"].agreed >= 1
    assert len(await all_results(server, campaign_id)) == 10  # spot-check answers are not results


async def test_spot_checks_must_be_a_list_of_dataset_and_result(live_server: LiveServer) -> None:
    response = await live_server.client.post(
        "/api/campaigns",
        files={
            "kernel": ("k.js", b"({main: function (d) { return 1; }})"),
            "generator": ("g.js", TEN.encode()),
            "spot_checks": ("s.json", b'[{"dataset": 1}]'),
        },
    )
    assert response.status_code == 400 and "spot_checks[0]" in response.json()["error"]


async def test_honest_workers_earn_trust_and_then_get_fewer_replicas(start_server: StartServer) -> None:
    server = await start_server(trust_threshold=5, trust_ceiling=0.9)
    campaign_id = await server.create_campaign(generator=MANY, replication=2)

    async def honest(address: str, identity: str) -> None:
        await work_from(
            server.ws_url, address, seed_kernel, campaign=campaign_id, identity=identity, slots=2, delay=0.01
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(honest, "127.0.0.1", "a")
        nursery.start_soon(honest, "127.0.0.2", "b")
    campaign = await server.wait_complete(campaign_id)
    verification = campaign["verification"]
    assert verification["verified"] == 400 and verification["conflict"] == 0
    # Both started with no record (every dataset replicated); past 5 agreements some datasets went alone.
    assert verification["trusted"] > 100
    rows = await stored_results(server, campaign_id)
    assert len(rows) == 2 * (400 - verification["trusted"]) + verification["trusted"] < 700
