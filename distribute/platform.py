"""The running platform: storage, dispatcher, generator service, gateway, scheduler and the use cases.

`Platform.running(settings)` opens storage and starts every background service in one nursery
that it owns. The web adapters (the JSON API, the console, the embed pages) reach the running
platform through `webstate.current_platform()` and change campaigns only through `platform.campaigns`
(`CampaignService`), so HTTP handlers never need to know which services must hear about a change.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .campaigns import CampaignService
from .gateway import Gateway
from .metrics import MeteredStorage, Metrics
from .plugins import make_scheduler, open_storage
from .sandbox.pool import PoolLimits, open_sandbox_pool
from .settings import Settings
from .sites import SiteService
from .storage import Storage
from .work.dispatcher import Dispatcher
from .work.generation import GenerationService

__all__ = ["PRESENCE_INTERVAL", "PRESENCE_MAX_AGE", "Platform"]

log = logging.getLogger(__name__)

PRESENCE_INTERVAL = 5.0  # seconds between two heartbeats of this process's presence row
PRESENCE_MAX_AGE = 3 * PRESENCE_INTERVAL  # a row not renewed for this long is a process that is gone


class Platform:
    """The services of one server process, wired together (start them with `Platform.running`)."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.scheduler = make_scheduler(settings.scheduler)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(MeteredStorage.wrap(storage, self.metrics), settings, self.scheduler)
        self.generation = GenerationService(storage, settings, self.dispatcher)
        self.gateway = Gateway(self.dispatcher, settings)
        self.campaigns = CampaignService(
            storage, settings, self.dispatcher, self.generation, self._workers_on, advice=self.gateway.dwell.advice
        )
        self.sites = SiteService(storage, settings)  # site owners' use cases
        self.elsewhere: dict[int, int] = {}  # workers per campaign of the other server processes (presence rows)
        self.gateway.on_dispatch = self.metrics.dispatch_seconds.observe
        self.metrics.workers.set_function(lambda: len(self.gateway.sessions))
        self.metrics.tasks_in_flight.set_function(lambda: sum(len(s.held) for s in self.gateway.sessions.values()))
        self.metrics.generator_backlog.set_function(lambda: sum(self.generation.backlog.values()))

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
            async with open_sandbox_pool(limits) as pool, trio.open_nursery() as nursery:
                platform = cls(settings, storage)
                platform.metrics.sandbox_children.set_function(lambda: pool.live)
                # Site tickets are checked by every server process on this database: one secret for all.
                platform.gateway.tickets.secret = await storage.accounts.secret()
                await nursery.start(platform.dispatcher.run)
                await nursery.start(platform.generation.run)
                await nursery.start(platform.gateway.run)  # the heartbeat sweep
                await nursery.start(platform._presence)
                yield platform
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await storage.aclose()

    def _own_workers(self) -> Counter[int]:
        """Workers connected to this process, per campaign id (0: not on a campaign yet)."""
        return Counter(s.campaign.id if s.campaign else 0 for s in self.gateway.sessions.values())

    def _workers_on(self, campaign_id: int) -> int:
        """Connected workers serving this campaign, in every server process (the others' as of their
        last heartbeat)."""
        here = sum(1 for s in self.gateway.sessions.values() if s.campaign and s.campaign.id == campaign_id)
        return here + self.elsewhere.get(campaign_id, 0)

    def tasks_in_progress(self, campaign_id: int) -> dict[str, Any]:
        """This process's tasks of the campaign held by workers, with the progress they reported
        (`work.checkpoints`); other server processes' workers are not counted here."""
        held = (t for s in self.gateway.sessions.values() for t, (c, _, _) in s.held.items() if c == campaign_id)
        return self.dispatcher.checkpoints.in_progress(held)

    def workers_connected(self) -> int:
        """Workers connected to every server process (the others' as of their last heartbeat)."""
        return len(self.gateway.sessions) + sum(self.elsewhere.values())

    async def _presence(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew this process's presence row and read the others' until cancelled; then delete the row."""
        presence, me = self.storage.presence, self.dispatcher.owner
        task_status.started()
        try:
            while True:
                try:
                    await presence.beat(me, self._own_workers())
                    self.elsewhere = await presence.workers(PRESENCE_MAX_AGE, exclude=me)
                except Exception:  # storage trouble: the count is stale for a while, the server goes on
                    log.exception("could not renew this process's presence row")
                await trio.sleep(PRESENCE_INTERVAL)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await presence.leave(me)
