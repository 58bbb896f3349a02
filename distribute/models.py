"""Plain data that crosses module boundaries: frozen dataclasses, never ORM entities.

Storage returns these from its worker threads, so nothing that touches a Pony `db_session`
ever crosses an `await`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Campaign",
    "CampaignCounts",
    "CampaignStatus",
    "DatasetState",
    "FailedTask",
    "FinishedTask",
    "KernelErrorSummary",
    "LeasedDataset",
    "StoredResult",
    "User",
]


class CampaignStatus:
    GENERATING = "generating"  # the generator is still producing datasets (workers may already compute)
    RUNNING = "running"  # every dataset is generated; work remains
    COMPLETE = "complete"  # every dataset has its result (or failed for good)
    FAILED = "failed"  # the generator failed; see generation_error


class DatasetState:
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"  # the kernel failed on it too often


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    owner_id: int
    name: str
    description: str
    kernel: str
    static_dataset: str
    generator: str
    priority: int
    weight: float
    replication: int
    task_timeout: float
    status: str
    generation_error: str | None
    deleted: bool
    created: datetime
    content_hash: str  # of kernel + static dataset: lets a worker skip a re-send
    generated: int  # datasets produced so far by the generator
    compute_seconds: float  # compute time workers reported for it (all server processes)


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    total: int
    pending: int
    leased: int
    done: int
    failed: int
    results: int
    errors: int
    compute_seconds: float


@dataclass(frozen=True, slots=True)
class LeasedDataset:
    """A dataset this server process has leased from storage and may hand to a worker."""

    id: int
    campaign_id: int
    payload: bytes  # msgpack, exactly as the generator sandbox produced it


@dataclass(frozen=True, slots=True)
class FinishedTask:
    """A worker's answer for one dataset, waiting for the next group commit."""

    dataset_id: int
    campaign_id: int
    value: bytes | None  # msgpack of the kernel's return value; None = no result
    compute_ms: float
    worker: str  # connection id
    host: str  # the embedding site, when the browser harness reports it


@dataclass(frozen=True, slots=True)
class FailedTask:
    """The kernel threw on one dataset."""

    dataset_id: int
    campaign_id: int
    message: str
    stack: str
    compute_ms: float
    worker: str


@dataclass(frozen=True, slots=True)
class StoredResult:
    id: int
    dataset_id: int
    dataset: bytes
    value: bytes | None
    compute_ms: float
    worker: str
    host: str
    created: datetime


@dataclass(frozen=True, slots=True)
class KernelErrorSummary:
    dataset_id: int
    message: str
    stack: str
    count: int
    last_seen: datetime
