"""A campaign's results as the owner follows them: cursor pages, and the event stream the API serves.

Both read `Storage.result_stream`: every answer once, in order of storage. A cursor is an opaque
string naming a position in that stream ("c" + seq + "." + result id); clients pass it back as it is.

The event stream (`events`) is one loop per stream, in the response body itself, so no task outlives
it: it reads the next page of results (at once again while pages come back full, so a busy campaign is
sent in pages of `EVENT_PAGE` results), then, at most every `PROGRESS_SECONDS` (`IDLE_PROGRESS_SECONDS`
while nothing comes), the campaign's counts and status, and waits. The wait ends when this process's
group commit stores results of the campaign (`work.commits`: the stream reads them at once, and while
a stream waits the group commit runs every `flush_interval`), or after a sleep that each empty round
doubles, from `POLL_SECONDS` up to `IDLE_POLL_SECONDS`, for results other processes store: an idle
stream costs two cheap reads a second and one count every 2 s. How many streams one account may hold
open in this process is capped (`StreamSlots`, the `event_streams_per_user` setting).
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import trio
from pydantic_core import to_json

from ..errors import ValidationError
from ..models import Campaign, CampaignStatus, campaign_state
from ..storage import Storage
from ..storage.stream import START, StreamedResult
from .export import result_row
from .service import CampaignService

__all__ = [
    "FINISHED",
    "IDLE_POLL_SECONDS",
    "IDLE_PROGRESS_SECONDS",
    "KEEPALIVE_SECONDS",
    "MAX_PAGE",
    "POLL_SECONDS",
    "PROGRESS_SECONDS",
    "EventPages",
    "StreamSlots",
    "decode_cursor",
    "encode_cursor",
    "events",
    "pages_for",
    "result_page",
    "slots_for",
    "stream_row",
]

MAX_PAGE = 10_000  # results per cursor page at most
POLL_SECONDS = 0.05  # a stream's sleep after a round that found results
IDLE_POLL_SECONDS = 0.5  # ... growing to this while nothing comes (a cheap indexed read that finds nothing)
PROGRESS_SECONDS = 0.5  # at most two progress reads (and events) a second while results come
IDLE_PROGRESS_SECONDS = 2.0  # ... and one every 2 s while none come (counting a campaign's datasets costs more)
KEEPALIVE_SECONDS = 15.0  # a comment line at least this often, so proxies keep the connection
EVENT_PAGE = 500  # results read per round of the event stream
PAGE_SECONDS = 1.0  # how long an encoded page is shared between streams
PAGES = 256  # encoded pages kept at most (about 100 KB each for small results)
CANCELLED = CampaignStatus.CANCELLED  # the owner stopped the campaign for good
FINISHED = (CampaignStatus.COMPLETE, CANCELLED)  # no result comes after these

_CURSOR = re.compile(r"c(\d{1,19})\.(\d{1,19})")


def encode_cursor(position: tuple[int, int]) -> str:
    return f"c{position[0]}.{position[1]}"


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """The position a cursor names; None or "" is the start. Raises ValidationError for anything else."""
    if not cursor:
        return START
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise ValidationError(f"malformed cursor {cursor[:40]!r}: pass back a cursor this server returned")
    return int(match[1]), int(match[2])


def stream_row(item: StreamedResult) -> dict[str, Any]:
    """One result as the JSON download shows it, plus its `cursor`."""
    return {**result_row(item.result), "cursor": encode_cursor(item.position)}


async def result_page(service: CampaignService, campaign: Campaign, after: str | None, limit: int) -> dict[str, Any]:
    """A page of the contract's `GET .../results?after=&limit=`: rows, the cursor after them, `complete`."""
    position = decode_cursor(after)
    # The status is read before the page: a campaign seen finished has every result stored already.
    fresh = await service.get(campaign.id)
    finished = fresh is not None and fresh.status in FINISHED
    page = await service.storage.result_stream(campaign.id, after=position, limit=limit)
    last = page.results[-1].position if page.results else position
    return {
        "results": [stream_row(item) for item in page.results],
        "cursor": encode_cursor(last),
        "complete": finished and len(page.results) < limit and not page.held_back,
    }


class StreamSlots:
    """Open event streams per account in this process, at most `cap` each (0: no limit)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[int, int] = {}

    def full(self, user_id: int) -> bool:
        return self.cap > 0 and self.open.get(user_id, 0) >= self.cap

    @contextmanager
    def hold(self, user_id: int) -> Iterator[bool]:
        """Take a slot for the body of the `with` (yields False, and takes none, when the account has none left)."""
        if self.full(user_id):
            yield False
            return
        self.open[user_id] = self.open.get(user_id, 0) + 1
        try:
            yield True
        finally:
            self.open[user_id] -= 1
            if not self.open[user_id]:
                del self.open[user_id]


class EventPages:
    """Result events recently encoded, shared by this process's streams: N followers of one campaign
    cost about what one costs (reading and encoding a row is most of a stream's work).

    A page is keyed by (campaign, position). Only full pages are kept: the first `EVENT_PAGE` answers
    after a position never change once read (a later answer always sorts after every answer visible
    before it), whereas a short page may still grow. Pages live `PAGE_SECONDS` (also the bound on how
    stale a result's status may be) and at most `PAGES` are kept.
    """

    def __init__(self) -> None:
        self.pages: OrderedDict[tuple[int, tuple[int, int]], tuple[float, EncodedPage]] = OrderedDict()

    async def read(self, storage: Storage, campaign_id: int, after: tuple[int, int]) -> EncodedPage:
        now = trio.current_time()
        key = (campaign_id, after)
        cached = self.pages.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        page = await storage.result_stream(campaign_id, after=after, limit=EVENT_PAGE)
        chunk = b"".join(_event("result", stream_row(item), encode_cursor(item.position)) for item in page.results)
        last = page.results[-1].position if page.results else after
        encoded = EncodedPage(chunk, len(page.results), last, page.held_back)
        if encoded.size < EVENT_PAGE:
            return encoded  # a short page may grow: a stream that saw its campaign finish must read it afresh
        self.pages[key] = (trio.current_time() + PAGE_SECONDS, encoded)
        self.pages.move_to_end(key)
        while len(self.pages) > PAGES or (self.pages and next(iter(self.pages.values()))[0] <= now):
            self.pages.popitem(last=False)
        return encoded


class EncodedPage(NamedTuple):
    chunk: bytes  # the `result` events, ready to send
    size: int  # results in it
    last: tuple[int, int]  # the position after it
    held_back: bool


_SLOTS: weakref.WeakKeyDictionary[CampaignService, StreamSlots] = weakref.WeakKeyDictionary()
_PAGES: weakref.WeakKeyDictionary[CampaignService, EventPages] = weakref.WeakKeyDictionary()


def slots_for(service: CampaignService) -> StreamSlots:
    """The stream slots of this process's campaign service (one per running platform)."""
    slots = _SLOTS.get(service)
    if slots is None:
        slots = _SLOTS[service] = StreamSlots(service.settings.event_streams_per_user)
    return slots


def pages_for(service: CampaignService) -> EventPages:
    """The shared event pages of this process's campaign service."""
    pages = _PAGES.get(service)
    if pages is None:
        pages = _PAGES[service] = EventPages()
    return pages


def _event(name: str, data: Any, event_id: str | None = None) -> bytes:
    # pydantic-core's encoder (Rust) takes a third of the time of json.dumps: encoding is much of a stream's work.
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: ".encode() + to_json(data) + b"\n\n"


async def events(service: CampaignService, campaign: Campaign, user_id: int, after: str | None) -> AsyncIterator[bytes]:
    """The server-sent events of one campaign from the cursor `after` (see the module docstring)."""
    position = decode_cursor(after)
    storage = service.storage
    pages = pages_for(service)
    commits = service.dispatcher.commits
    with slots_for(service).hold(user_id) as held:
        if not held:
            yield _event("error", {"error": "too many open event streams for this account"})
            return
        # The client reconnects after this many ms when the stream ends or breaks.
        yield b"retry: 2000\n\n"
        status: str | None = None
        progress: dict[str, Any] | None = None
        errors_seen: int | None = None
        errors_since = 0.0
        checked = float("-inf")  # the first round reads the campaign
        sent = trio.current_time()
        sleep = POLL_SECONDS
        while True:
            now = trio.current_time()
            finished = False
            if now - checked >= (PROGRESS_SECONDS if sleep == POLL_SECONDS else IDLE_PROGRESS_SECONDS):
                checked = now
                fresh = await service.get(campaign.id)
                if fresh is None or fresh.deleted:
                    yield _event("gone", {"id": campaign.id})
                    return
                counts = await storage.counts(campaign.id)
                state = campaign_state(fresh, counts)
                latest = {
                    "datasets": {
                        "total": counts.total,
                        "pending": counts.pending,
                        "leased": counts.leased,
                        "done": counts.done,
                        "failed": counts.failed,
                    },
                    "results": counts.results,
                    "errors": counts.errors,
                    "state": {"key": state.key, "label": state.label, "tone": state.tone, "reason": state.reason},
                }
                if latest != progress:
                    progress = latest
                    yield _event("progress", latest)
                    sent = trio.current_time()
                if errors_seen is None:
                    errors_seen, errors_since = counts.errors, await _latest_error_time(service, campaign.id)
                elif counts.errors != errors_seen:
                    errors_seen = counts.errors
                    for chunk, seen_at in await _new_kernel_errors(service, campaign.id, errors_since):
                        errors_since = seen_at
                        yield chunk
                if status is not None and fresh.status != status:
                    if fresh.status == CampaignStatus.PAUSED:
                        yield _event("paused", await service.describe(fresh))
                    elif status == CampaignStatus.PAUSED and fresh.status not in FINISHED:
                        yield _event("resumed", await service.describe(fresh))
                status = fresh.status
                finished = status in FINISHED
            # Taken before the read: a commit that lands while it runs ends the wait below at once.
            commit = commits.next_commit(campaign.id)
            # Read after the status: a campaign seen finished has every result stored already.
            page = await pages.read(storage, campaign.id, position)
            if page.size:
                yield page.chunk
                position = page.last
                sent = trio.current_time()
            if page.size == EVENT_PAGE:
                sleep = POLL_SECONDS
                continue  # more are waiting: no sleep between full pages
            if finished and not page.held_back:
                final = await service.get(campaign.id)
                name = "complete" if status == CampaignStatus.COMPLETE else "cancelled"
                yield _event(name, await service.describe(final or campaign))
                return
            sleep = POLL_SECONDS if page.size else min(sleep * 2, IDLE_POLL_SECONDS)
            if trio.current_time() - sent >= KEEPALIVE_SECONDS - IDLE_PROGRESS_SECONDS:
                yield b": keepalive\n\n"
                sent = trio.current_time()
            if await commits.wait(campaign.id, commit, sleep):
                sleep = POLL_SECONDS  # this process stored results of the campaign: read them now


async def _latest_error_time(service: CampaignService, campaign_id: int) -> float:
    errors = await service.storage.kernel_errors(campaign_id, limit=1)
    return errors[0].last_seen.timestamp() if errors else 0.0


async def _new_kernel_errors(service: CampaignService, campaign_id: int, since: float) -> list[tuple[bytes, float]]:
    """`kernel_error` events for the errors seen after `since` (oldest first), each with its time."""
    errors = await service.storage.kernel_errors(campaign_id, limit=50)
    fresh = sorted((e for e in errors if e.last_seen.timestamp() > since), key=lambda e: e.last_seen)
    numbers: dict[int, int] = {}
    if fresh:
        for group in await service.storage.kernel_error_groups(campaign_id, limit=20, examples=50):
            numbers.update(zip(group.examples, group.example_numbers, strict=False))
    return [
        (
            _event(
                "kernel_error",
                {"dataset_id": e.dataset_id, "dataset_number": numbers.get(e.dataset_id), "message": e.message},
            ),
            e.last_seen.timestamp(),
        )
        for e in fresh
    ]
