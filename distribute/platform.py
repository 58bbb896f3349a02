"""The running platform: storage, dispatcher, generator service, gateway, scheduler and the use cases.

`Platform.running(settings)` opens storage and starts every background service in one nursery
that it owns. The web adapters (the JSON API, the console, the embed pages) reach the running
platform through `webstate.current_platform()` and change campaigns only through `platform.campaigns`
(`CampaignService`), so HTTP handlers never need to know which services must hear about a change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .campaigns import CampaignService
from .gateway import Gateway
from .plugins import make_scheduler, open_storage
from .sandbox.pool import PoolLimits, open_sandbox_pool
from .settings import Settings
from .storage import Storage
from .work.dispatcher import Dispatcher
from .work.generation import GenerationService

__all__ = ["Platform"]


class Platform:
    """The services of one server process, wired together (start them with `Platform.running`)."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.scheduler = make_scheduler(settings.scheduler)
        self.dispatcher = Dispatcher(storage, settings, self.scheduler)
        self.generation = GenerationService(storage, settings, self.dispatcher)
        self.gateway = Gateway(self.dispatcher, settings)
        self.campaigns = CampaignService(storage, settings, self.dispatcher, self.generation, self._workers_on)

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Platform]:
        """Open storage and run the background services until the block exits."""
        make_scheduler(settings.scheduler)  # fail on an unknown name before touching storage
        storage = await open_storage(settings.database, settings.db_threads)
        try:
            # The sandbox pool is current for everything started below (services, web server, handlers)
            # and closes only after the nursery has stopped every service that could still hold a child.
            limits = PoolLimits(max_children=settings.sandbox_max_children, jitless=bool(settings.sandbox_jitless))
            async with open_sandbox_pool(limits), trio.open_nursery() as nursery:
                platform = cls(settings, storage)
                await nursery.start(platform.dispatcher.run)
                await nursery.start(platform.generation.run)
                await nursery.start(platform.gateway.run)  # the heartbeat sweep
                yield platform
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()

    def _workers_on(self, campaign_id: int) -> int:
        """Connected workers serving this campaign (in this server process)."""
        return sum(1 for s in self.gateway.sessions.values() if s.campaign and s.campaign.id == campaign_id)
