"""Kernel versions in storage: the part of the `Storage` protocol that updates a campaign's kernel.

A campaign starts at kernel version 1; each update makes version N+1. Every stored result keeps the
version it was computed with (`FinishedTask.kernel_version`, `StoredResult.kernel_version`), and the
reads show each dataset's newest version: `results()` (unless `every_version`), `counts().results` and
the console's `result_count` / `results_page` leave out a result when its dataset has a shown result
(any status but agreed and invalid) of a newer version.
"""

from __future__ import annotations

from typing import Protocol

from ..models import Campaign

__all__ = ["KernelVersionStore"]


class KernelVersionStore(Protocol):
    """Updating a campaign's kernel (and static dataset)."""

    async def update_kernel(
        self, campaign_id: int, kernel: str, static_dataset: str, *, recompute: bool = False
    ) -> Campaign:
        """Make the campaign's kernel (and static dataset) version N+1; returns the updated campaign.

        Its `content_hash` becomes `content_hash(kernel, static_dataset)` and `kernel_version` goes up
        by one; stored results keep their version. `recompute`: every done or failed (non-spot) dataset
        goes back to pending with no error counted and no lease, a complete campaign becomes running, and
        from then on `store_outcomes` stores a result of an older version (tagged with it) without
        accepting it: its dataset goes back to pending (lease cleared), to be computed with the new kernel;
        a failure of an older version (`FailedTask.kernel_version`, not a replica) only sends its dataset
        back to pending, with no kernel error recorded or counted.
        Without `recompute` only the campaign row changes. Raises `NotFound` for an unknown campaign.
        """
        ...
