"""Fixtures of the storage contract suite: every contract test runs against every backend.

`storage_url` is parametrized: "sql" is the suite's database (SQLite, or PostgreSQL under
DISTRIBUTE_TEST_DATABASE=postgres), "memory" the in-memory backend (one named database per test,
so that several storages opened in one test share it, as server processes share a SQL database).
Tests about Pony and SQL themselves (migrations, WAL, SKIP LOCKED, connections) use their own URLs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from distribute.models import FinishedTask, ResultStatus
from distribute.plugins import open_storage
from distribute.storage import Storage
from tests.conftest import database_url
from tests.support.pg import stop_cluster


@pytest.fixture(scope="session", autouse=True)
def _remove_postgres_cluster_at_session_end() -> Iterator[None]:
    yield
    stop_cluster()  # atexit would too, but a session hook keeps /tmp tidy between sessions in one process


@pytest.fixture(params=["sql", "memory"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend."""
    return database_url(tmp_path) if request.param == "sql" else f"memory://{tmp_path}"


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    store = await open_storage(storage_url)
    yield store
    await store.aclose()


async def make_campaign(storage: Storage, n: int = 10, **fields: Any) -> int:
    """A running campaign of n datasets (msgpack 0 .. n-1) owned by a new user."""
    user = await storage.create_user(f"u{time.time_ns()}@example.org")
    campaign = await storage.create_campaign(
        user.id, **{"name": "c", "kernel": "k", "generator": "g", "static_dataset": "", "task_timeout": 5.0, **fields}
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    return campaign.id


def finished(
    dataset_id: int,
    campaign_id: int,
    value: object = 1,
    worker: str = "w",
    status: str = ResultStatus.ACCEPTED,
    identity: str = "",
) -> FinishedTask:
    return FinishedTask(dataset_id, campaign_id, msgpack.packb(value), 1.0, worker, "", status, identity)
