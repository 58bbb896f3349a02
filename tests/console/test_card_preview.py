"""The campaign page shows its owner the card exactly as visitors see it, and lets them contribute from
their own tab (headless Chromium against a real server)."""

from __future__ import annotations

from typing import Any

import pytest

from distribute.embed import SNIPPET_SANDBOX
from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer

from .conftest import Api, People
from .test_browser import ARTIFACTS, Owner, api_token, on, owner_of

pytestmark = pytest.mark.browser


def preview(owner: Owner, campaign_id: int) -> dict[str, Any]:
    owner.go(f"/campaigns/{campaign_id}")
    frame_element = owner.page.locator("#preview iframe")
    frame_element.scroll_into_view_if_needed()  # the snippet's frame loads lazily, as on a host page
    card = owner.page.frame_locator("#preview iframe")
    card.locator("#contribute").wait_for(state="visible")
    ARTIFACTS.mkdir(exist_ok=True)
    owner.page.locator("#preview").screenshot(path=str(ARTIFACTS / "console-card-preview.png"))
    return {
        "src": frame_element.get_attribute("src"),
        "sandbox": frame_element.get_attribute("sandbox"),
        "height": frame_element.get_attribute("height"),
        "box": frame_element.bounding_box(),
        "title": card.locator("h1").text_content(),
        "by": card.locator(".by").text_content(),
        "consent": card.locator("#consent").is_visible(),
        "state": card.locator("body").get_attribute("data-state"),
        "runners": card.locator("iframe.runner").count(),
    }


async def test_the_campaign_page_previews_the_real_card_with_nothing_running(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    visitor = await people.sign_up("owner@example.org")
    await visitor.post("/account/name", {"display_name": "The Prime Lab"}, page="/account")
    api = await api_token(console_server, "owner@example.org")
    campaign_id = await api.create()
    await api.client.aclose()
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_in, "owner@example.org", "correct horse battery")
        seen = await on(browser, preview, owner, campaign_id)
        assert owner.errors == []
    finally:
        await on(browser, owner.close)
    assert seen["src"] == f"{console_server.url}/embed/{campaign_id}"
    assert seen["sandbox"] == SNIPPET_SANDBOX  # framed as the snippet frames it on a host page
    assert seen["height"] == "220" and seen["box"]["height"] == 220
    assert seen["box"]["width"] <= 480  # the snippet's own style (max-width:480px) applies here too
    assert seen["by"] == "Run by The Prime Lab"
    assert seen["consent"] and seen["state"] == "idle" and seen["runners"] == 0  # nothing runs before the click


def contribute_here(owner: Owner, campaign_id: int) -> dict[str, Any]:
    owner.go(f"/campaigns/{campaign_id}")
    owner.page.click("#contribute-here")
    owner.page.wait_for_url(f"**/embed/{campaign_id}")
    owner.page.click("#contribute")
    owner.page.wait_for_function("() => Number(document.body.dataset.done) >= 3", timeout=60_000)
    return {"url": owner.page.url, "done": int(owner.page.evaluate("() => document.body.dataset.done"))}


async def test_contribute_from_this_tab_computes_the_campaign_in_the_owners_browser(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    await people.sign_up("owner@example.org")
    api: Api = await api_token(console_server, "owner@example.org")
    try:
        campaign_id = await api.create()
        await api.wait_for(campaign_id, lambda c: c["status"] in ("running", "complete"))
        owner = await owner_of(browser, console_server)
        try:
            await on(browser, owner.sign_in, "owner@example.org", "correct horse battery")
            seen = await on(browser, contribute_here, owner, campaign_id)
            # Results reach storage with the next group commit; this browser is the only worker.
            stored = await api.wait_for(campaign_id, lambda c: c["results"] >= 3)
        finally:
            await on(browser, owner.close)
    finally:
        await api.client.aclose()
    assert seen["url"] == f"{console_server.url}/embed/{campaign_id}"
    assert seen["done"] >= 3 and stored["results"] >= 3  # the owner's own tab computed them
