"""The event pages that streams of one campaign share (`campaigns.stream.EventPages`), on the memory backend."""

from __future__ import annotations

from pathlib import Path

import msgpack

from distribute.campaigns.stream import EVENT_PAGE, EventPages, decode_cursor, encode_cursor
from distribute.models import FinishedTask
from distribute.plugins import open_storage
from distribute.storage import Storage
from distribute.storage.stream import START


async def _answered(storage: Storage, n: int) -> int:
    user = await storage.create_user("a@example.org")
    campaign = await storage.create_campaign(
        user.id, name="c", kernel="k", generator="g", static_dataset="", task_timeout=5.0
    )
    await storage.add_datasets(campaign.id, [msgpack.packb(i) for i in range(n)], exhausted=True)
    leased = await storage.lease(campaign.id, n, "p", 60)
    finished = [FinishedTask(d.id, campaign.id, msgpack.packb(1), 1.0, "w", "", "accepted", "") for d in leased]
    await storage.store_outcomes(finished, [], 3)
    return campaign.id


async def test_a_full_page_is_encoded_once_for_every_stream(tmp_path: Path) -> None:
    storage = await open_storage(f"memory://{tmp_path}")
    try:
        campaign = await _answered(storage, EVENT_PAGE + 10)
        pages = EventPages()
        first = await pages.read(storage, campaign, START)
        again = await pages.read(storage, campaign, START)
        assert first.size == EVENT_PAGE and again is first
        assert first.chunk.count(b"event: result\n") == EVENT_PAGE
    finally:
        await storage.aclose()


async def test_a_short_page_is_read_afresh_each_time(tmp_path: Path) -> None:
    storage = await open_storage(f"memory://{tmp_path}")
    try:
        campaign = await _answered(storage, EVENT_PAGE + 10)
        pages = EventPages()
        full = await pages.read(storage, campaign, START)
        tail = await pages.read(storage, campaign, full.last)
        assert tail.size == 10 and await pages.read(storage, campaign, full.last) is not tail
    finally:
        await storage.aclose()


def test_a_cursor_names_its_position_and_back() -> None:
    assert decode_cursor(encode_cursor((912, 4410))) == (912, 4410)
    assert decode_cursor(None) == decode_cursor("") == START
