"""`distribute serve --database memory://`: the second storage backend runs the seed campaign end to end.

A memory database lives inside the server process, so `distribute user create` (another process)
cannot reach it: the owner signs up in the console and makes an API token there, as a person would.
Then the campaign goes in through the API and protocol workers compute it.

And the backends cannot be told apart: one random sequence of storage calls (leases, group commits
with replicas and errors, verdicts, resets, generator leases, the console's reads) made on SQLite and
on memory:// gets the same answer from both, call for call.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio

from distribute.models import FailedTask, FinishedTask, Verdicts
from distribute.plugins import open_storage
from distribute.storage import Storage
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_KERNEL, SEED_STATIC
from tests.support.protocol_client import work

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_STAMP = re.compile(r'name="stamp" value="([^"]*)"')
_TOKEN = re.compile(r"dst_[A-Za-z0-9_-]{40,}")


@pytest.fixture
def memory_server(tmp_path: Path) -> Iterator[str]:
    """`distribute serve --port 0 --database memory://` as a child process; yields its URL."""
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISTRIBUTE_SIGNUP_MIN_SECONDS": "0"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute", "serve", "--port", "0", "--database", "memory://"],
            stdout=subprocess.PIPE,
            stderr=sink,
            env=env,
        )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().decode()
        assert first_line.startswith("distribute serving on "), f"{first_line!r}\n{log.read_text()}"
        assert "(database memory://)" in first_line
        yield first_line.split()[3].rstrip(",")
        process.terminate()
        assert process.wait(timeout=20) == 0
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _field(pattern: re.Pattern[str], html: str) -> str:
    match = pattern.search(html)
    assert match, f"no {pattern.pattern!r} on the page"
    return match.group(1)


async def sign_up_for_a_token(url: str, email: str) -> str:
    """Sign up in the console, then make an API token on the account page: returns the token."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as browser:
        form = (await browser.get("/signup")).text
        signed_up = await browser.post(
            "/signup",
            data={
                "csrf": _field(_CSRF, form),
                "stamp": _field(_STAMP, form),
                "email": email,
                "password": PASSWORD,
                "password2": PASSWORD,
                "website": "",
            },
        )
        assert signed_up.status_code == 303, signed_up.text
        account = (await browser.get("/account")).text
        made = await browser.post("/account/tokens", data={"csrf": _field(_CSRF, account), "name": "memory test"})
        assert made.status_code == 201, made.text
        match = _TOKEN.search(made.text)
        assert match, "the account page shows no new token"
        return match.group(0)


async def test_serve_on_memory_runs_the_seed_campaign_end_to_end(memory_server: str) -> None:
    token = await sign_up_for_a_token(memory_server, "owner@example.org")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=memory_server, headers=headers, timeout=30) as api:
        files = {
            "kernel": ("kernel.js", SEED_KERNEL.encode()),
            "generator": ("generator.js", SEED_GENERATOR.encode()),
            "static_dataset": ("static.json", SEED_STATIC.encode()),
        }
        created = await api.post("/api/campaigns", files=files)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        ws_url = memory_server.replace("http://", "ws://") + "/ws"
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: work(ws_url, campaign=campaign_id))
        with trio.fail_after(30):
            while (campaign := (await api.get(f"/api/campaigns/{campaign_id}")).json())["status"] != "complete":
                await trio.sleep(0.05)
        assert campaign["datasets"]["done"] == campaign["datasets"]["total"] == 100
        rows = (await api.get(f"/api/campaigns/{campaign_id}/results", params={"format": "json"})).json()
        assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER
        assert (await api.get("/api/campaigns", headers={"Authorization": "Bearer dst_wrong"})).status_code == 401


# --------------------------------------------------------------------------- the same answers as SQLite


def _comparable(value: Any) -> Any:
    """A storage answer without what legitimately differs between backends: creation times."""
    if isinstance(value, list | tuple):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {k: _comparable(v) for k, v in fields.items() if k not in ("created", "last_seen", "expires")}
    return value


class _Twins:
    """One random sequence of storage calls, made on SQLite and on memory: every answer must match."""

    def __init__(self, sqlite: Storage, memory: Storage, seed: int) -> None:
        self.stores = (sqlite, memory)
        self.random = random.Random(seed)
        self.campaigns: list[int] = []
        self.datasets: dict[int, list[int]] = {}
        self.results = 0
        self.calls = 0

    async def same(self, call: Callable[[Storage], Awaitable[Any]], normal: Callable[[Any], Any] = _comparable) -> Any:
        answers = [normal(await call(store)) for store in self.stores]
        self.calls += 1
        assert answers[0] == answers[1], f"call {self.calls}: sqlite {answers[0]!r} != memory {answers[1]!r}"
        return answers[0]

    async def step(self) -> None:
        r = self.random
        choice = r.random()
        if not self.campaigns or (choice < 0.02 and len(self.campaigns) < 4):
            await self.new_campaign()
            return
        campaign = r.choice(self.campaigns)
        if choice < 0.15:
            n = r.randrange(0, 30)
            exhausted = r.random() < 0.3
            payloads = [msgpack.packb({"i": r.randrange(1000)}) for _ in range(n)]
            await self.same(lambda s: s.add_datasets(campaign, payloads, exhausted=exhausted))
        elif choice < 0.3:
            n, owner, seconds = r.randrange(0, 12), r.choice("ab"), r.choice([30.0, -1.0])
            replicated = r.random() < 0.5
            await self.same(lambda s: s.lease(campaign, n, owner, seconds, replicated=replicated))
        elif choice < 0.5:
            await self.outcomes(campaign)
        elif choice < 0.6:
            await self.verdicts(campaign)
        elif choice < 0.65:
            owner, ids = r.choice("ab"), r.sample(range(1, 200), 10)
            await self.same(lambda s: s.release(owner, ids))
        elif choice < 0.7:
            await self.same(lambda s: s.expire_leases())
            owner = r.choice("ab")
            await self.same(lambda s: s.renew_leases(owner, 30.0))
        elif choice < 0.72:
            await self.same(lambda s: s.reset_campaign(campaign))
        elif choice < 0.73:
            await self.generator_lease(campaign)
        elif choice < 0.76:
            status = r.choice(["running", "generating", "complete"])
            await self.same(lambda s: s.set_status(campaign, status))
        else:
            await self.reads(campaign)

    async def new_campaign(self) -> None:
        r = self.random
        user = await self.same(lambda s: s.create_user(f"u{len(self.campaigns)}@example.org"))
        checks = [(msgpack.packb(i), msgpack.packb(i * i)) for i in range(r.randrange(3))]
        fields = {"name": "c", "kernel": "k", "generator": "g", "task_timeout": 5.0, "replication": r.choice([1, 2])}
        made = await self.same(lambda s: s.create_campaign(user["id"], spot_checks=checks, **fields))
        self.campaigns.append(made["id"])

    async def outcomes(self, campaign: int) -> None:
        r = self.random
        finished, failed = [], []
        ids = await self.dataset_ids(campaign)
        for _ in range(r.randrange(1, 8)):
            dataset = r.choice(ids)
            worker = f"w{r.randrange(4)}@10.0.0.{r.randrange(3)}"
            if r.random() < 0.75:
                status = r.choice(["accepted", "pending", "pending", "trusted"])
                value = None if r.random() < 0.2 else msgpack.packb(r.randrange(3))
                identity = r.choice(["", "key:1", "key:2"])
                finished.append(
                    FinishedTask(dataset, campaign, value, 2.0, worker, r.choice(["", "h1", "h2"]), status, identity)
                )
            else:
                failed.append(
                    FailedTask(dataset, campaign, r.choice(["boom", "bang"]), "stack", 1.0, worker, r.random() < 0.5)
                )
        limit = r.choice([1, 2, 3])
        await self.same(lambda s: s.store_outcomes(finished, failed, limit))

    async def dataset_ids(self, campaign: int) -> list[int]:
        """The campaign's datasets (as the dispatcher's tasks always are), and one that does not exist."""
        return [row[0] for row in await self.stores[1].queries.sample_datasets(campaign, 10**6)] + [10**6]

    async def verdicts(self, campaign: int) -> None:
        r = self.random
        ids = await self.dataset_ids(campaign)
        votes = await self.same(lambda s: s.replica_votes(ids))
        statuses: list[tuple[int, str]] = []
        done: list[int] = []
        conflicts: list[int] = []
        for dataset, ballot in list(votes.items())[:5]:
            for vote in ballot:
                statuses.append((vote["result_id"], r.choice(["canonical", "agreed", "invalid", "conflict"])))
            (done if r.random() < 0.7 else conflicts).append(dataset)
        keys = ["key:1", "key:2", "ip:10.0.0.1"]
        verdict = Verdicts(
            tuple(statuses),
            tuple(done),
            tuple(conflicts),
            tuple(r.choices(keys, k=3)),
            tuple(r.sample(keys, r.randrange(2))),
        )
        await self.same(lambda s: s.apply_verdicts(verdict))
        await self.same(lambda s: s.worker_records(keys), lambda records: sorted(map(repr, _comparable(records))))

    async def generator_lease(self, campaign: int) -> None:
        r = self.random
        owner, seconds = r.choice("xy"), r.choice([30.0, -1.0])
        if r.random() < 0.3:
            await self.same(lambda s: s.generator_leases.release(campaign, owner))
        else:
            await self.same(lambda s: s.generator_leases.claim(campaign, owner, seconds))
        payloads = [msgpack.packb(0)]
        outcome = [await _outcome(store.add_datasets(campaign, payloads, generator=owner)) for store in self.stores]
        assert outcome[0] == outcome[1], outcome

    async def reads(self, campaign: int) -> None:
        r = self.random
        await self.same(lambda s: s.counts(campaign))
        await self.same(lambda s: s.complete_if_done(campaign))
        await self.same(lambda s: s.get_campaign(campaign))
        active_only, offset = r.random() < 0.5, r.randrange(10)
        await self.same(lambda s: s.list_campaigns(active_only=active_only))
        at_most = r.randrange(0, 40)
        await self.same(lambda s: s.pending_count(campaign, at_most=at_most))
        verified = r.random() < 0.3
        page = await self.same(lambda s: s.results(campaign, limit=7, verified=verified))
        if page:
            after = (page[-1]["dataset_id"], page[-1]["id"])
            await self.same(lambda s: s.results(campaign, after=after, limit=7, verified=verified))
        by_key = lambda rows: sorted(map(repr, _comparable(rows)))  # noqa: E731  (ties may come in any order)
        await self.same(lambda s: s.kernel_errors(campaign), by_key)
        await self.same(lambda s: s.spot_checks(campaign))
        await self.same(lambda s: s.queries.result_count(campaign))
        await self.same(lambda s: s.queries.results_page(campaign, offset, 5))
        await self.same(lambda s: s.queries.hosts(campaign), by_key)
        await self.same(lambda s: s.queries.sample_datasets(campaign, 4))
        since = time.time() - 3600  # the last hour, in 10 s buckets
        await self.same(lambda s: s.queries.throughput(campaign, since, 10.0, 361), sum)


async def _outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except Exception as exc:  # both backends must raise the same error
        return type(exc).__name__


@pytest.mark.parametrize("seed", range(6))
async def test_memory_answers_every_storage_call_as_sqlite_does(tmp_path: Path, seed: int) -> None:
    sqlite = await open_storage(f"sqlite:///{tmp_path / 'twin.db'}")
    memory = await open_storage("memory://")
    try:
        twins = _Twins(sqlite, memory, seed)
        for _ in range(400):
            await twins.step()
        for campaign in twins.campaigns:
            await twins.reads(campaign)
    finally:
        await sqlite.aclose()
        await memory.aclose()
