"""Dataset generation: runs each campaign's generator in the sandbox and stores what it yields.

One task per generating campaign, all in the service's nursery. Generators that return an array
are stored in batches as soon as `main()` returns; generator functions are pulled lazily, a batch
at a time, and paused while more than `generator_low_water` datasets wait unleased, so a
campaign can be huge or open-ended. After a server restart a lazy generator is re-run and the
datasets it already produced are skipped (generators are expected to be deterministic).

Any failure is stored on the campaign as a clear message for its owner; the server keeps going.
"""

from __future__ import annotations

import logging

import trio

from .dispatcher import Dispatcher
from .errors import GenerationError, NotFound
from .models import Campaign, CampaignStatus
from .sandbox import open_generator
from .settings import Settings
from .storage import PonyStorage

__all__ = ["GenerationService"]

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(self, storage: PonyStorage, settings: Settings, dispatcher: Dispatcher) -> None:
        self.storage = storage
        self.settings = settings
        self.dispatcher = dispatcher
        self._nursery: trio.Nursery | None = None
        self._running: set[int] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume campaigns that were generating when the server stopped, then serve `start`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for campaign in await self.storage.list_campaigns(active_only=True):
                if campaign.status == CampaignStatus.GENERATING:
                    self.start(campaign)
            task_status.started()
            await trio.sleep_forever()

    def start(self, campaign: Campaign) -> None:
        assert self._nursery is not None, "GenerationService.run must be started first"
        if campaign.id not in self._running:
            self._running.add(campaign.id)
            self._nursery.start_soon(self._generate, campaign)

    async def _generate(self, campaign: Campaign) -> None:
        try:
            await self._pull_all(campaign)
        except NotFound:
            log.info("campaign %d was deleted (with its account) while generating", campaign.id)
        except GenerationError as exc:
            log.info("generator of campaign %d failed: %s", campaign.id, exc)
            await self.storage.set_status(campaign.id, CampaignStatus.FAILED, str(exc))
            await self.dispatcher.refresh_campaigns()
        except Exception as exc:  # a bug of ours must not take the server down either
            log.exception("generation of campaign %d crashed", campaign.id)
            await self.storage.set_status(campaign.id, CampaignStatus.FAILED, f"internal error: {exc!r}")
            await self.dispatcher.refresh_campaigns()
        finally:
            self._running.discard(campaign.id)

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
            while True:
                payloads, exhausted = await generator.pull(settings.generator_batch)
                await self.storage.add_datasets(campaign.id, payloads, exhausted=exhausted)
                await self.dispatcher.refresh_campaigns()
                self.dispatcher.notify_new_datasets(campaign.id)
                if exhausted:
                    return
                if generator.mode == "array":
                    continue  # main() already returned all of them: store the rest without pausing
                # Back-pressure: pause a lazy generator while plenty of datasets wait.
                low_water = settings.generator_low_water
                while await self.storage.pending_count(campaign.id, at_most=low_water + 1) > low_water:
                    await trio.sleep(0.5)
                    fresh = await self.storage.get_campaign(campaign.id)
                    if fresh is None or fresh.deleted:
                        return
