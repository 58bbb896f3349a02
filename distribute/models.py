"""Plain data that crosses module boundaries: frozen dataclasses, never ORM entities.

Storage returns these from its worker threads, so nothing that touches a Pony `db_session`
ever crosses an `await`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "DESCRIPTION_MAX_CHARS",
    "DISPLAY_NAME_MAX_CHARS",
    "FINISHED_WITH_FAILURES",
    "WAITING_FOR_DATASETS",
    "ApiTokenInfo",
    "Campaign",
    "CampaignCounts",
    "CampaignState",
    "CampaignStatus",
    "DatasetState",
    "FailedTask",
    "FinishedTask",
    "HostShare",
    "KernelErrorGroup",
    "KernelErrorSummary",
    "LeasedDataset",
    "ResultStatus",
    "Review",
    "Site",
    "SiteDay",
    "SitePolicy",
    "StoredResult",
    "User",
    "Verdicts",
    "Vote",
    "WebSessionInfo",
    "WorkerRecord",
    "campaign_state",
    "servable_to_any",
    "servable_when_named",
]

# Limits every adapter shares: the API, the console's forms and the embed card read the same numbers.
DESCRIPTION_MAX_CHARS = 5000  # a campaign's description; the card shows it whole (behind "More" when long)
DISPLAY_NAME_MAX_CHARS = 60  # an account's display name, as the card names the campaign's owner


class CampaignStatus:
    GENERATING = "generating"  # the generator (or an open campaign's owner) may still add datasets
    RUNNING = "running"  # every dataset is generated; work remains
    COMPLETE = "complete"  # every dataset has its result (or failed for good)
    FAILED = "failed"  # the generator failed; see generation_error
    PAUSED = "paused"  # hands out no task until resumed; generation_error says why (any reason, not only errors)
    CANCELLED = "cancelled"  # stopped for good by its owner: keeps its results, never served or resumed again


class Review:
    """A campaign's review by an admin (setting campaign_review): who may be served it."""

    APPROVED = "approved"  # served to every worker, those that ask for any campaign too
    PENDING = "pending"  # served only to workers and embeds that name it, until an admin approves it
    REJECTED = "rejected"  # served to nobody; review_reason tells its owner why


class DatasetState:
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"  # the kernel failed on it too often
    CONFLICT = "conflict"  # replicated, and no quorum within verify_max_copies results
    SPOT = "spot"  # a known-answer spot-check dataset (never leased, never counted)


class ResultStatus:
    ACCEPTED = "accepted"  # replication 1: the first answer is the answer
    PENDING = "pending"  # a replica waiting for its quorum
    CANONICAL = "canonical"  # the answer chosen by the quorum (one per verified dataset)
    AGREED = "agreed"  # agreed with the canonical answer
    INVALID = "invalid"  # disagreed with the quorum
    TRUSTED = "trusted"  # accepted alone from a trusted worker (adaptive replication)
    CONFLICT = "conflict"  # no quorum after verify_max_copies results


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    created: datetime
    verified: bool = True  # False: a console sign-up whose e-mail address is not verified yet
    display_name: str = ""  # how the embed card names the owner ("": it names nobody, never the e-mail)
    admin: bool = False  # an operator: reviews campaigns, sees the admin pages; their own campaigns need no review


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
    generation_error: str | None  # why it stopped: the generator's error (failed) or the pause's reason (paused)
    deleted: bool
    created: datetime
    content_hash: str  # of kernel + static dataset: lets a worker skip a re-send
    generated: int  # datasets produced so far by the generator
    compute_seconds: float  # compute time workers reported for it (all server processes)
    comparator: str = ""  # owner's JS compare(a, b) for results (empty: byte equality)
    is_open: bool = False  # an open campaign (no generator) its owner may still add datasets to, until closed
    kernel_version: int = 1  # 1 at creation, N+1 after each kernel update (its content_hash changes with it)
    review: str = Review.APPROVED  # see Review
    review_reason: str = ""  # why it was rejected ("" unless rejected)


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
    verified: int = 0  # datasets whose answer a quorum (or a trusted worker) settled
    trusted: int = 0  # of those, accepted alone from a trusted worker
    pending_verification: int = 0  # datasets with results but no verdict yet
    conflict: int = 0  # datasets without a quorum after the maximum number of copies
    flagged_workers: int = 0  # workers whose results on this campaign disagreed with a quorum


@dataclass(frozen=True, slots=True)
class LeasedDataset:
    """A dataset this server process has leased from storage and may hand to a worker."""

    id: int
    campaign_id: int
    payload: bytes  # msgpack, exactly as the generator sandbox produced it
    votes: tuple[tuple[str, str], ...] = ()  # replicated: (worker key, address) of stored pending results
    expected: bytes | None = None  # spot checks: the known answer (canonical msgpack)
    checkpoint: bytes | None = None  # the latest checkpointed state (msgpack) a reissued task resumes from


@dataclass(frozen=True, slots=True)
class FinishedTask:
    """A worker's answer for one dataset, waiting for the next group commit."""

    dataset_id: int
    campaign_id: int
    value: bytes | None  # msgpack of the kernel's return value; None = no result
    compute_ms: float
    worker: str  # connection id
    host: str  # the embedding site, when the browser harness reports it
    status: str = ResultStatus.ACCEPTED  # pending for a replica, trusted for an unreplicated trusted answer
    identity: str = ""  # worker key (verification.worker_key), stored with replicas
    kernel_version: int = 1  # the campaign's kernel version the connection was running (its campaign frame's)
    site: int | None = None  # the registered site the broker verified the worker is embedded on


@dataclass(frozen=True, slots=True)
class FailedTask:
    """The kernel threw on one dataset."""

    dataset_id: int
    campaign_id: int
    message: str
    stack: str
    compute_ms: float
    worker: str
    replica: bool = False  # of a replicated dataset: other copies may still be out
    kernel_version: int = 1  # as FinishedTask's: the kernel version the connection was running


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
    status: str = ResultStatus.ACCEPTED
    dataset_number: int = 0  # the dataset's place in its campaign's generation order, 1..N (0: unknown)
    kernel_version: int = 1  # the campaign's kernel version it was computed with


@dataclass(frozen=True, slots=True)
class KernelErrorSummary:
    dataset_id: int
    message: str
    stack: str
    count: int
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class KernelErrorGroup:
    """A campaign's kernel errors with one message: how often, when, and on which datasets."""

    message: str
    count: int  # every repetition on every dataset
    datasets: int  # distinct datasets that failed with it
    first_seen: datetime
    last_seen: datetime
    examples: tuple[int, ...]  # a few of those dataset ids, lowest first
    stack: str  # the latest non-empty stack reported with it; "" when none had one
    example_numbers: tuple[int, ...] = ()  # the examples' numbers in their campaign (1..N; 0: a spot check)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's verification record (keyed by verification.worker_key)."""

    key: str
    agreed: int  # agreeing results since the last disagreement
    disagreed: int  # disagreements ever
    flagged: bool


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Verification outcomes to write in one transaction."""

    statuses: tuple[tuple[int, str], ...] = ()  # (result id, ResultStatus)
    done: tuple[int, ...] = ()  # datasets settled by a quorum
    conflicts: tuple[int, ...] = ()  # datasets given up as conflicts
    agreed: tuple[str, ...] = ()  # worker keys credited one agreeing result each (repeat to credit more)
    liars: tuple[str, ...] = ()  # worker keys caught disagreeing: flagged, record reset, trusted results re-checked


@dataclass(frozen=True, slots=True)
class Vote:
    """One stored result of a replicated dataset."""

    result_id: int
    payload: bytes | None
    worker: str  # worker_key
    address: str


@dataclass(frozen=True, slots=True)
class WebSessionInfo:
    """A live console session: its user and the CSRF token its forms must carry."""

    user: User
    csrf_token: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    """An API token as the console lists it (the token itself is never stored)."""

    id: int
    name: str
    created: datetime
    revoked: bool


@dataclass(frozen=True, slots=True)
class HostShare:
    """One host site's contribution to a campaign."""

    host: str
    results: int
    compute_seconds: float


@dataclass(frozen=True, slots=True)
class CampaignState:
    """What a campaign's status means to a person: the one state every surface shows (API, CLI, console, card).

    `key` is the stored status, except that a complete campaign with failed datasets is
    "finished_with_failures". `tone` is how it is coloured: "ok" (only a complete campaign whose
    every dataset has its result), "active", "warning" (paused, finished with failures) or "error".
    """

    key: str
    label: str  # e.g. "finished with 3 failed"
    tone: str
    failed: int  # datasets given up after max_task_errors kernel errors
    reason: str | None  # why a paused or failed campaign stopped


FINISHED_WITH_FAILURES = "finished_with_failures"
_TONES = {
    CampaignStatus.GENERATING: "active",
    CampaignStatus.RUNNING: "active",
    CampaignStatus.COMPLETE: "ok",
    CampaignStatus.PAUSED: "warning",
    CampaignStatus.FAILED: "error",
    CampaignStatus.CANCELLED: "warning",
}
WAITING_FOR_DATASETS = "waiting for datasets"  # the label of an open campaign with nothing to hand out


def campaign_state(campaign: Campaign, counts: CampaignCounts) -> CampaignState:
    """The displayed state of a campaign from what storage holds: its status and its counts.

    The stored status stays "complete" when datasets failed (dispatching only needs to know that
    nothing is left to hand out); whether that is a success is decided here, once, for every surface.
    """
    status = campaign.status
    stopped = (CampaignStatus.PAUSED, CampaignStatus.FAILED, CampaignStatus.CANCELLED)
    reason = campaign.generation_error if status in stopped else None
    if status == CampaignStatus.COMPLETE and counts.failed:
        return CampaignState(
            FINISHED_WITH_FAILURES, f"finished with {counts.failed} failed", "warning", counts.failed, None
        )
    if status == CampaignStatus.GENERATING and campaign.is_open:  # its owner sends the datasets: no generator
        label = WAITING_FOR_DATASETS if not counts.pending and not counts.leased else "open"
        return CampaignState(status, label, "active", counts.failed, None)
    return CampaignState(status, status, _TONES.get(status, "active"), counts.failed, reason)


class SitePolicy:
    ANY = "any"  # any campaign the server serves to "any" workers
    CAMPAIGNS = "campaigns"  # only the campaigns on the allowlist
    OWNERS = "owners"  # only campaigns of the owners on the allowlist


@dataclass(frozen=True, slots=True)
class Site:
    """A website registered by its owner: where `/embed/any?site=key` may run, and what it admits there."""

    id: int
    owner_id: int
    origin: str  # scheme://host[:port], lower case, no path
    key: str  # the site key the snippet carries (public: it names the site, it proves nothing)
    token: str  # the proof-of-control token the site serves
    verified: bool  # the server found the token on the origin
    policy: str = SitePolicy.ANY
    allowlist: tuple[int, ...] = ()  # campaign ids (policy "campaigns") or owner ids (policy "owners")
    max_throttle: str = "high"  # the highest throttle level the site's visitors are offered


@dataclass(frozen=True, slots=True)
class SiteDay:
    """What a site's visitors gave one campaign on one UTC day."""

    day: str  # YYYY-MM-DD
    campaign_id: int
    tasks: int  # results stored, whatever their verdict
    verified: int  # of those, accepted ones (accepted, canonical, agreed or trusted)
    compute_seconds: float


def servable_to_any(campaign: Campaign) -> bool:
    """The one rule for workers that ask for any campaign (`/embed/any`, hello without a campaign):
    only an approved campaign that is not deleted. What a stranger uploaded a minute ago never runs
    on a site that did not choose it."""
    return campaign.review == Review.APPROVED and not campaign.deleted


def servable_when_named(campaign: Campaign) -> bool:
    """Workers that name a campaign (`/embed/{id}`, hello with its id) get it approved or pending, never rejected."""
    return campaign.review != Review.REJECTED and not campaign.deleted
