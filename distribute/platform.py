"""The running platform: storage, dispatcher, generator service, gateway and scheduler together.

`Platform.running(settings)` opens storage and starts every background service in one nursery
that it owns; the web app (app.py) only calls the few coordinating methods below, so HTTP
handlers never need to know which services must hear about a change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .gateway import Gateway
from .models import Campaign, User
from .plugins.manager import make_scheduler
from .settings import Settings
from .storage import PonyStorage, open_storage
from .work.dispatcher import Dispatcher
from .work.generation import GenerationService

__all__ = ["Platform"]


class Platform:
    def __init__(self, settings: Settings, storage: PonyStorage) -> None:
        self.settings = settings
        self.storage = storage
        self.scheduler = make_scheduler(settings.scheduler)
        self.dispatcher = Dispatcher(storage, settings, self.scheduler)
        self.generation = GenerationService(storage, settings, self.dispatcher)
        self.gateway = Gateway(self.dispatcher, settings)

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Platform]:
        """Open storage and run the background services until the block exits."""
        make_scheduler(settings.scheduler)  # fail on an unknown name before touching storage
        storage = await open_storage(settings.database, settings.db_threads)
        try:
            async with trio.open_nursery() as nursery:
                platform = cls(settings, storage)
                await nursery.start(platform.dispatcher.run)
                await nursery.start(platform.generation.run)
                await nursery.start(platform.gateway.run)  # the heartbeat sweep
                yield platform
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()

    async def create_campaign(self, owner: User, **fields: Any) -> Campaign:
        campaign = await self.storage.create_campaign(owner.id, **fields)
        await self.dispatcher.refresh_campaigns()
        self.generation.start(campaign)
        return campaign

    async def reset_campaign(self, campaign: Campaign) -> None:
        await self.storage.reset_campaign(campaign.id)
        await self.dispatcher.refresh_campaigns()
        self.dispatcher.notify_new_datasets(campaign.id)

    async def set_deleted(self, campaign: Campaign, deleted: bool) -> None:
        await self.storage.set_deleted(campaign.id, deleted)
        await self.dispatcher.refresh_campaigns()

    def workers_on(self, campaign_id: int) -> int:
        """Connected workers serving this campaign (in this server process)."""
        return sum(1 for s in self.gateway.sessions.values() if s.campaign and s.campaign.id == campaign_id)
