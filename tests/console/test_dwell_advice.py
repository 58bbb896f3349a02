"""The campaign page shows the dwell-time advice once the server has seen tasks outlast visits."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer
from tests.support.visits import answer_slowly, visits

from .conftest import People, counting_generator
from .test_browser import Owner, api_token, on, owner_of
from .test_live import events, stream


def advice_box(page: str) -> str:
    """The opening tag of the page's advice box."""
    match = re.search(r'<div [^>]*id="advice"[^>]*>', page)
    assert match, "the campaign page has no advice box"
    return match.group(0)


async def test_the_campaign_page_shows_the_advice_after_short_visits_on_long_tasks(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    api = await api_of(alice)
    campaign_id = await api.create(generator=counting_generator(100))
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    assert "hidden" in advice_box((await alice.get(f"/campaigns/{campaign_id}")).text)
    await answer_slowly(console_server, campaign_id, count=20, seconds=1.0)
    await visits(console_server, campaign_id, count=20, stay=0.3)
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    assert "hidden" not in advice_box(page)
    assert "median task 1.0 s; half of the visits end within" in page


async def test_the_live_view_carries_the_advice(people: People, api_of: Any, console_server: LiveServer) -> None:
    alice = await people.sign_up("alice@example.org")
    api = await api_of(alice)
    campaign_id = await api.create(generator=counting_generator(100))
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await answer_slowly(console_server, campaign_id, count=20, seconds=1.0)
    await visits(console_server, campaign_id, count=20, stay=0.3)
    with trio.fail_after(10):
        async with stream(alice, campaign_id) as response:
            event = await anext(events(response))
    assert event["advice"].endswith("split datasets or checkpoint")


def advice_shown(owner: Owner) -> str:
    """Wait (in Chromium) until the live view shows the advice without a reload; its text."""
    page = owner.page
    page.wait_for_function("() => !document.getElementById('advice').hidden", timeout=20_000)
    assert page.evaluate("() => window.__sameDocument") is True
    return str(page.evaluate("() => document.querySelector('#advice .message').textContent"))


@pytest.mark.browser
async def test_the_open_campaign_page_shows_the_advice_live_in_chromium(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_up, "owner@example.org")
        api = await api_token(console_server, "owner@example.org")
        campaign_id = await api.create(generator=counting_generator(100))
        await api.wait_for(campaign_id, lambda c: c["status"] == "running")
        await api.client.aclose()
        await on(browser, owner.go, f"/campaigns/{campaign_id}")
        await on(browser, owner.page.evaluate, "() => { window.__sameDocument = true; }")
        await answer_slowly(console_server, campaign_id, count=20, seconds=1.0)
        await visits(console_server, campaign_id, count=20, stay=0.3)
        text = await on(browser, advice_shown, owner)
        assert text.startswith("median task 1.0 s") and text.endswith("split datasets or checkpoint")
        assert owner.errors == []
    finally:
        await on(browser, owner.close)
