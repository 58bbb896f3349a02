"""Progress and checkpoints of the tasks this server process hands out (kernels' `ctx.progress` and
`ctx.checkpoint`, protocol v1.1).

A checkpoint is the kernel's state for one dataset, msgpack bytes checked by `protocol.checkpoint_state`
(plain data, under the hard cap) and here against `checkpoint_max_bytes`. The latest one per dataset
is kept in memory, handed out with the dataset when it is reissued in this process (deadline, disconnect,
release), and written to storage by the dispatcher's group commit loop (`flush`, only the datasets
whose state changed since the last write), so a dataset leased again by another process, or by this
one after a restart, resumes too. Storage clears it when the dataset is done.

Progress is only kept in memory: the fraction each held task last reported, shown by the console as
this process's tasks in progress (other server processes' workers are not seen there).

A state belongs to the kernel version that wrote it: after a kernel update (`campaigns.versions`) the
new kernel may not understand an older kernel's state, so a task resumes only from a state of the
version it is handed out under. Storage keeps the version with the state (4 bytes, big-endian, before
it: `tagged`/`untagged`), and treats the whole as opaque bytes.

Replicated campaigns take no checkpoints: their copies must be computed independently, so one copy's
state never seeds another.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Any

from ..errors import ProtocolError
from ..models import Campaign, LeasedDataset
from ..settings import Settings
from ..storage import Storage

__all__ = ["CLOSE_TOO_BIG", "Checkpoints", "features", "tagged", "untagged"]

log = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009  # the WebSocket close code of a frame over a size limit (as protocol.CLOSE_TOO_BIG)
MAX_SHOWN = 100  # most tasks whose progress the console lists one by one


_VERSION = struct.Struct(">I")


def tagged(version: int, state: bytes) -> bytes:
    """A state as storage keeps it: the kernel version that wrote it, then the state."""
    return _VERSION.pack(version) + state


def untagged(stored: bytes) -> tuple[int, bytes] | None:
    """(kernel version, state) of a stored state; None for bytes too short to hold a version."""
    if len(stored) < _VERSION.size:
        return None
    return _VERSION.unpack_from(stored)[0], stored[_VERSION.size :]


def features(campaign: Campaign, every: tuple[str, ...]) -> tuple[str, ...]:
    """The v1.1 features announced to the workers of `campaign`: no checkpoints for replicated ones."""
    return every if campaign.replication <= 1 else tuple(f for f in every if f != "checkpoint")


class Checkpoints:
    """The latest state and progress of each dataset held in this process, and their batched writes."""

    def __init__(self, storage: Storage, settings: Settings, owner: str) -> None:
        self.storage = storage
        self.max_bytes = settings.checkpoint_max_bytes
        self.owner = owner
        self.latest: dict[int, bytes] = {}  # dataset id -> the newest state this process received
        self.versions: dict[int, int] = {}  # dataset id -> the kernel version that wrote its latest state
        self.unsaved: dict[int, bytes] = {}  # the states not yet written to storage
        self.fractions: dict[int, float] = {}  # dataset id -> the progress its worker reported last
        self.received = 0  # checkpoints accepted (tests and logs)

    def checkpoint(self, dataset_id: int, state: bytes, campaign: Campaign | None) -> None:
        """A worker's checkpoint for a task it holds (the caller checked that): the new latest state.

        Over `checkpoint_max_bytes` is a ProtocolError (1009): the harnesses refuse such a state before
        it leaves the kernel, so only a broken or hostile worker sends one; its tasks go back to the queue.
        """
        if len(state) > self.max_bytes:
            raise ProtocolError(
                CLOSE_TOO_BIG, f"checkpoint of {len(state)} bytes is over the limit of {self.max_bytes} bytes"
            )
        if campaign is not None and campaign.replication > 1:
            return  # copies are computed independently (not announced to their workers)
        version = campaign.kernel_version if campaign is not None else 1  # the version the worker runs
        self.latest[dataset_id], self.versions[dataset_id] = state, version
        self.unsaved[dataset_id] = tagged(version, state)
        self.received += 1

    def progress(self, dataset_id: int, fraction: float) -> None:
        self.fractions[dataset_id] = fraction

    def handed_out(self, dataset: LeasedDataset, campaign: Campaign) -> bytes | None:
        """The state a task of `campaign` resumes from as it goes to a worker (None: from the start): only
        one written by the kernel version the worker will run. Progress restarts."""
        self.fractions[dataset.id] = 0.0
        if dataset.expected is not None:
            return None  # a spot check: whatever a worker checkpointed must not seed the next one's answer
        if dataset.id in self.latest:
            version, state = self.versions[dataset.id], self.latest[dataset.id]
        elif dataset.checkpoint is not None and (stored := untagged(dataset.checkpoint)) is not None:
            version, state = stored
        else:
            return None
        return state if version == campaign.kernel_version else None

    def leased(self, datasets: Iterable[LeasedDataset]) -> None:
        """Datasets just leased from storage: their stored state is the newest (another process may have
        computed them since this one last did)."""
        for dataset in datasets:
            self.latest.pop(dataset.id, None)
            self.versions.pop(dataset.id, None)
            self.unsaved.pop(dataset.id, None)

    def answered(self, dataset_id: int, *, finished: bool) -> None:
        """The task's answer arrived. A result leaves nothing to resume (storage clears its copy when the
        dataset is done); after a kernel error the retry resumes from the latest state."""
        self.fractions.pop(dataset_id, None)
        if finished:
            self.latest.pop(dataset_id, None)
            self.versions.pop(dataset_id, None)
            self.unsaved.pop(dataset_id, None)

    def left(self, dataset_ids: Iterable[int]) -> None:
        """Tasks a connection handed back or dropped: no worker is making progress on them now."""
        for dataset_id in dataset_ids:
            self.fractions.pop(dataset_id, None)

    async def flush(self) -> None:
        """Write the states received since the last flush (those of datasets still leased here)."""
        if not self.unsaved:
            return
        unsaved, self.unsaved = self.unsaved, {}
        try:
            await self.storage.save_checkpoints(self.owner, unsaved)
        except Exception:
            log.exception("storing %d checkpoints failed; will retry", len(unsaved))
            self.unsaved = {**unsaved, **self.unsaved}

    def in_progress(self, held: Iterable[int]) -> dict[str, Any]:
        """The progress of these held tasks: how many, their mean, and each (at most MAX_SHOWN, furthest first)."""
        fractions = [self.fractions.get(task, 0.0) for task in held]
        return {
            "tasks": len(fractions),
            "mean": round(sum(fractions) / len(fractions), 4) if fractions else 0.0,
            "each": sorted((round(f, 4) for f in fractions), reverse=True)[:MAX_SHOWN],
        }
