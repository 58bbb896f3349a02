"""The live view of a campaign: server-sent events, one snapshot per interval, until the page closes.

Each event is the campaign as the API shows it (`CampaignService.describe`: counts, workers, compute
time, generation and kernel errors) plus the contributions per host site, the tasks in progress at
this server process's workers with their kernels' progress (`in_progress`), and the server's clock;
the first event also carries the throughput history: results per bucket of `BUCKET_SECONDS` over the
live window (the last `WINDOW_SECONDS` up to now), empty buckets as 0, so that a reloaded page draws
a pause as a pause. The page then extends the chart from the counts it receives. Server-sent events
rather than a WebSocket: one direction is all the page needs, they reconnect by themselves, and
they carry the session cookie like any same-origin request, so the owner check is the same as every
other console route's.

A stream outlives the request that opened it, so it checks the session again every
`SESSION_CHECK_EVERY` snapshots: after sign-out, a password change (which ends every session) or
the account's deletion, it sends a `signedout` event and ends, and the browser's reconnection is
refused like any signed-out request.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response, g, stream_with_context

from ..storage.base import ConsoleQueries
from ..webstate import current_platform
from .web import ConsoleBlueprint, console, login_required, session_token

__all__ = ["BUCKET_SECONDS", "INTERVAL", "SESSION_CHECK_EVERY", "WINDOW_SECONDS", "blueprint", "history"]

blueprint = ConsoleBlueprint("live", __name__)

INTERVAL = 1.0  # seconds between snapshots
MAX_SECONDS = 3600.0  # then the stream ends and the browser reconnects
SESSION_CHECK_EVERY = 5  # snapshots: a session that ended stops its streams within about 5 s
WINDOW_SECONDS = 600.0  # the chart shows the last 10 minutes
BUCKET_SECONDS = 10.0


async def history(queries: ConsoleQueries, campaign_id: int, now: float) -> dict[str, Any]:
    """Results per bucket over the live window up to `now`; buckets sit on multiples of their width,
    so two reloads draw the same bars, and the last one (still filling) holds `now`."""
    buckets = int(WINDOW_SECONDS / BUCKET_SECONDS)
    start = (math.floor(now / BUCKET_SECONDS) + 1 - buckets) * BUCKET_SECONDS
    counts = await queries.throughput(campaign_id, start, BUCKET_SECONDS, buckets)
    return {"start": start, "width": BUCKET_SECONDS, "window": WINDOW_SECONDS, "counts": counts}


@blueprint.get("/campaigns/<int:campaign_id>/live")
@login_required
async def events(campaign_id: int) -> Response:
    service = current_platform().campaigns
    campaign = await service.owned(campaign_id, g.user)
    state = console()
    queries = state.queries
    token = session_token()
    user_id = g.user.id

    async def signed_in() -> bool:
        session = await state.accounts.session(token)
        return session is not None and session.user.id == user_id

    @stream_with_context
    async def stream() -> AsyncIterator[bytes]:
        first = True
        deadline = trio.current_time() + MAX_SECONDS
        # The browser reconnects after this many ms when the stream ends or breaks.
        yield b"retry: 2000\n\n"
        snapshots = 0
        while trio.current_time() < deadline:
            if snapshots and snapshots % SESSION_CHECK_EVERY == 0 and not await signed_in():
                yield b"event: signedout\ndata: {}\n\n"
                return
            snapshots += 1
            fresh = await service.get(campaign.id)
            if fresh is None:
                yield b"event: gone\ndata: {}\n\n"
                return
            data = await service.describe(fresh)
            data["hosts"] = [
                {"host": h.host, "results": h.results, "compute_seconds": round(h.compute_seconds, 3)}
                for h in await queries.hosts(campaign.id)
            ]
            # Tasks held by workers of this server process, with their kernels' ctx.progress (other
            # processes' workers report to those processes; the workers count above covers them all).
            data["in_progress"] = current_platform().tasks_in_progress(campaign.id)
            data["t"] = time.time()
            if first:
                data["history"] = await history(queries, campaign.id, data["t"])
                first = False
            yield f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
            await trio.sleep(INTERVAL)

    response = Response(stream(), mimetype="text/event-stream")
    response.timeout = None  # Quart would cut a response body off after RESPONSE_TIMEOUT (60 s)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must pass events on at once
    return response
