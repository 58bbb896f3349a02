"""Dataset generation: runs each campaign's generator in the sandbox and stores what it yields.

One task per generating campaign, all in the service's nursery. Generators that return an array
are stored in batches as soon as `main()` returns; generator functions are pulled lazily, a batch
at a time, and paused while more than `generator_low_water` datasets wait unleased, so a
campaign can be huge or open-ended. After a server restart a lazy generator is re-run and the
datasets it already produced are skipped (generators are expected to be deterministic). With
several server processes on one database, a generator lease in storage makes sure exactly one of
them runs each generator, and another takes over if that one dies.

Any failure is stored on the campaign as a clear message for its owner; the server keeps going.
"""

from __future__ import annotations

import logging

import trio

from ..errors import GenerationError, LeaseLost, NotFound
from ..models import Campaign, CampaignStatus
from ..sandbox.generators import open_generator
from ..settings import Settings
from ..storage import Storage
from .dispatcher import Dispatcher

__all__ = ["GenerationService"]

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(self, storage: Storage, settings: Settings, dispatcher: Dispatcher) -> None:
        self.storage = storage
        self.settings = settings
        self.dispatcher = dispatcher
        self.leases = storage.generator_leases
        self._nursery: trio.Nursery | None = None
        self._running: set[int] = set()
        self.backlog: dict[int, int] = {}  # campaign -> datasets waiting unleased, as its lazy generator last counted

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume campaigns that were generating when the server stopped, then serve `start`.

        Keeps looking for generating campaigns nobody runs: with several server processes, the
        one that held a generator may have crashed (its lease then expires and we take over).
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._adopt_orphans()
            task_status.started()
            while True:
                await trio.sleep(self.settings.lease_seconds / 2)
                await self._adopt_orphans()

    def start(self, campaign: Campaign) -> None:
        """Run the campaign's generator (an open campaign has none: nothing to run)."""
        assert self._nursery is not None, "GenerationService.run must be started first"
        if campaign.id not in self._running and not campaign.is_open:
            self._running.add(campaign.id)
            self._nursery.start_soon(self._generate, campaign.id)

    async def _adopt_orphans(self) -> None:
        for campaign in await self.storage.list_campaigns(active_only=True):
            if campaign.status == CampaignStatus.GENERATING and not campaign.is_open:  # open: its owner's datasets
                self.start(campaign)  # runs only if the lease is free: see _generate

    async def _generate(self, campaign_id: int) -> None:
        owner = self.dispatcher.owner
        try:
            claimed = await self.leases.claim(campaign_id, owner, self.settings.lease_seconds)
        except Exception:  # storage trouble: the next look for orphans tries again
            log.exception("campaign %d: could not claim its generator lease", campaign_id)
            claimed = False
        if not claimed:  # another server process runs this generator
            self._running.discard(campaign_id)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease, campaign_id, nursery.cancel_scope)
                await self._generate_held(campaign_id)
                nursery.cancel_scope.cancel()
        finally:
            self._running.discard(campaign_id)
            self.backlog.pop(campaign_id, None)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self.leases.release(campaign_id, owner)
                except Exception:  # it expires by itself; another process may wait lease_seconds
                    log.exception("campaign %d: could not release its generator lease", campaign_id)

    async def _generate_held(self, campaign_id: int) -> None:
        """Run the generator under a held lease; every failure ends up stored on the campaign."""
        try:
            campaign = await self.storage.get_campaign(campaign_id)  # fresh: `generated` is where to resume
            if campaign is not None and campaign.status == CampaignStatus.GENERATING and not campaign.deleted:
                await self._pull_all(campaign)
        except LeaseLost:
            log.warning("campaign %d: another process took over its generator", campaign_id)
        except NotFound:
            log.info("campaign %d was deleted (with its account) while generating", campaign_id)
        except GenerationError as exc:
            log.info("generator of campaign %d failed: %s", campaign_id, exc)
            await self.storage.set_status(campaign_id, CampaignStatus.FAILED, str(exc))
            await self.dispatcher.refresh_campaigns()
        except Exception as exc:  # a bug of ours must not take the server down either
            log.exception("generation of campaign %d crashed", campaign_id)
            await self.storage.set_status(campaign_id, CampaignStatus.FAILED, f"internal error: {exc!r}")
            await self.dispatcher.refresh_campaigns()

    async def _keep_lease(self, campaign_id: int, generation: trio.CancelScope) -> None:
        """Renew the generator lease; if another process took it (we stalled), stop generating."""
        while True:
            await trio.sleep(self.settings.lease_seconds / 3)
            try:
                renewed = await self.leases.claim(campaign_id, self.dispatcher.owner, self.settings.lease_seconds)
            except Exception:  # storage trouble: try again; add_datasets refuses if the lease is gone
                log.exception("campaign %d: could not renew its generator lease", campaign_id)
                continue
            if not renewed:
                log.warning("campaign %d: generator lease lost; stopping this process's generator", campaign_id)
                generation.cancel()
                return

    async def _check_dataset_quota(self, campaign: Campaign, adding: int) -> None:
        """Fail the campaign (GenerationError) if `adding` datasets would take its account over
        `quota_datasets`; one aggregate over the owner's campaigns per batch, whichever generates."""
        quota = self.settings.quota_datasets
        usage = await self.storage.account_usage(campaign.owner_id, result_bytes=False)
        if usage.datasets + adding > quota:
            raise GenerationError(
                f"dataset quota exceeded: this account's campaigns have generated {usage.datasets} datasets,"
                f" this generator would add {adding} more, and at most {quota} are allowed (setting quota_datasets)"
            )

    async def _pull_all(self, campaign: Campaign) -> None:
        settings = self.settings
        async with open_generator(
            campaign.generator,
            timeout=settings.generator_timeout,
            heap_mib=settings.generator_heap,
            max_dataset_bytes=settings.max_dataset_bytes,
            max_datasets=settings.max_datasets,
        ) as generator:
            if campaign.generated:
                await generator.skip(campaign.generated)
            low_water = settings.generator_low_water
            # At most this many of the campaign's datasets wait unleased: the last count plus what
            # was stored since (workers only ever take some away). So the count is needed only once
            # that bound passes the low water mark, not after every batch: counting up to
            # low_water + 1 rows cost more than storing a batch when the mark is high.
            pending_at_most = None if campaign.generated else 0
            while True:
                payloads, exhausted = await generator.pull(settings.generator_batch)
                if settings.quota_datasets and payloads:
                    await self._check_dataset_quota(campaign, len(payloads))
                await self.storage.add_datasets(
                    campaign.id, payloads, exhausted=exhausted, generator=self.dispatcher.owner
                )
                await self.dispatcher.refresh_campaigns()
                self.dispatcher.notify_new_datasets(campaign.id)
                if exhausted:
                    return
                if generator.mode == "array":
                    continue  # main() already returned all of them: store the rest without pausing
                if pending_at_most is not None:
                    pending_at_most += len(payloads)
                    self.backlog[campaign.id] = pending_at_most
                    if pending_at_most <= low_water:
                        continue
                # Back-pressure: pause a lazy generator while plenty of datasets wait.
                while (
                    pending_at_most := await self.storage.pending_count(campaign.id, at_most=low_water + 1)
                ) > low_water:
                    self.backlog[campaign.id] = pending_at_most
                    await trio.sleep(0.5)
                    fresh = await self.storage.get_campaign(campaign.id)
                    if fresh is None or fresh.deleted or fresh.status == CampaignStatus.CANCELLED:
                        return  # nobody will take its datasets: stop, and free the lease and the child
