"""Kernel versions: what a new kernel (and static dataset) for a running campaign must pass before it is stored.

The new sources are checked exactly as at creation (`sources`): bounded UTF-8 text, the kernel parsed in
the sandbox, then, unless the owner skips it, a trial that loads the kernel with its static dataset and
runs it on a few datasets the campaign has stored already (its first `check_datasets`; while it has none
yet, the generator's first ones, as at creation), so a kernel that cannot start or fails on all of them is
refused with a `SourceError` naming the upload at fault. A replicated campaign is refused (its quorums
compare results byte for byte, and results of two kernel versions must not be compared with each other),
and so is one with spot checks (their known answers are the current kernel's).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SourceError, ValidationError
from ..models import Campaign
from ..sandbox.kernels import check_kernel
from ..sandbox.trial import TrialProblem, trial_kernel, trial_run
from ..settings import Settings
from ..storage import Storage
from .sources import SKIP_HINT, _refused, decode_source, trial_limits

__all__ = ["KernelUpdate", "checked_update"]


@dataclass(frozen=True)
class KernelUpdate:
    """A new kernel version as uploaded: the kernel, and the static dataset (None: keep the current one)."""

    kernel: bytes
    static_dataset: bytes | None = None
    recompute: bool = False
    skip_check: bool = False


async def checked_update(
    storage: Storage, settings: Settings, campaign: Campaign, update: KernelUpdate
) -> tuple[str, str]:
    """The new (kernel, static dataset) texts, checked; `ValidationError` (`SourceError`) if refused."""
    if campaign.replication > 1:
        raise ValidationError(
            f"campaign {campaign.id} is replicated ({campaign.replication} copies of each dataset): its kernel cannot"
            " be updated, since the votes of two kernel versions would be compared with each other in its quorums;"
            " create a new campaign with the new kernel instead"
        )
    if await storage.spot_checks(campaign.id):
        raise ValidationError(
            f"campaign {campaign.id} has spot checks: their known answers belong to its current kernel, and workers"
            " whose results under a new kernel disagree with them would be flagged; create a new campaign instead"
        )
    limit = settings.max_source_bytes
    kernel = decode_source("kernel", update.kernel, limit)
    if not kernel.strip():
        raise SourceError("kernel", "the kernel must not be empty")
    static = campaign.static_dataset
    if update.static_dataset is not None:
        static = decode_source("static_dataset", update.static_dataset, limit)
    timeout, heap = settings.generator_timeout, settings.generator_heap
    syntax = await check_kernel(kernel, timeout=timeout, heap_mib=heap)
    if syntax is not None:
        problem = TrialProblem("kernel", f"the kernel does not parse: {syntax.message}", syntax.line, syntax.column)
        raise _refused(problem)
    if not update.skip_check and settings.check_datasets > 0:
        stored = await storage.queries.sample_datasets(campaign.id, settings.check_datasets)
        limits = trial_limits(settings, timeout, heap, campaign.task_timeout)
        if stored or not campaign.generator.strip():  # (a campaign without a generator: loaded, at least)
            tried = await trial_kernel(kernel, static, [payload for _, payload in stored], limits)
        else:  # none stored yet (its generator has only just started): its first datasets, as at creation
            tried = await trial_run(kernel, static, campaign.generator, limits)
        if tried is not None and tried.field != "generator":  # the generator was judged at creation
            raise _refused(tried, SKIP_HINT)
    return kernel, static
