"""The campaign lifecycle on the console: Pause, Cancel and Close buttons (CSRF-protected forms) on the
campaign page, in headless Chromium and through the console's forms, and an open campaign made from
the new-campaign form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer

from .conftest import PASSWORD, Api, People, Visitor, counting_generator, csrf_of
from .test_browser import Owner, on, owner_of, shot

pytestmark = pytest.mark.browser

OPEN_KERNEL = "({main: function (d) { return d.i; }})"


@dataclass
class Alice:
    visitor: Visitor
    api: Api


@pytest.fixture
async def alice(people: People, api_of: Any) -> Alice:
    visitor = await people.sign_up("alice@example.org")
    return Alice(visitor, await api_of(visitor))


async def running(alice: Alice) -> int:
    campaign_id = await alice.api.create(generator=counting_generator(20))
    await alice.api.wait_for(campaign_id, lambda c: c["status"] == "running")
    return campaign_id


async def create_open(alice: Alice) -> int:
    response = await alice.api.client.post(
        "/api/campaigns", files={"kernel": ("k.js", OPEN_KERNEL.encode())}, data={"open": "true"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def click_and_wait(owner: Owner, campaign_id: int, button: str, done: str, confirm: bool = False) -> dict[str, Any]:
    owner.go(f"/campaigns/{campaign_id}")
    if confirm:
        owner.page.once("dialog", lambda dialog: dialog.accept())
    owner.page.click(f"#{button}")
    owner.page.wait_for_url(f"**?done={done}")
    owner.page.wait_for_function("() => Number(document.getElementById('live').dataset.updates) >= 1")
    shown: dict[str, Any] = owner.page.evaluate(
        """() => ({badge: document.querySelector("[data-status]").textContent.trim(),
                  banner: !document.getElementById("paused-banner").hidden,
                  reason: document.querySelector("#paused-banner .reason").textContent,
                  buttons: ["pause", "cancel", "close"].filter((id) => document.getElementById(id))})"""
    )
    return shown


async def signed_in_owner(browser: BrowserThread, console_server: LiveServer) -> Owner:
    owner = await owner_of(browser, console_server)
    await on(browser, owner.sign_in, "alice@example.org", PASSWORD)
    return owner


async def test_the_pause_button_pauses_the_campaign_and_shows_why(
    browser: BrowserThread, console_server: LiveServer, alice: Alice
) -> None:
    campaign_id = await running(alice)
    owner = await signed_in_owner(browser, console_server)
    try:
        shown = await on(browser, click_and_wait, owner, campaign_id, "pause", "paused")
        await on(browser, shot, owner.page, "campaign-paused-by-owner")
    finally:
        await on(browser, owner.close)
    assert shown["badge"] == "paused" and shown["banner"] and shown["reason"] == "paused by its owner"
    assert "pause" not in shown["buttons"] and "cancel" in shown["buttons"]
    assert (await alice.api.campaign(campaign_id))["state"]["reason"] == "paused by its owner"


async def test_the_cancel_button_asks_then_cancels_for_good(
    browser: BrowserThread, console_server: LiveServer, alice: Alice
) -> None:
    campaign_id = await running(alice)
    owner = await signed_in_owner(browser, console_server)
    try:
        shown = await on(browser, click_and_wait, owner, campaign_id, "cancel", "cancelled", True)
        await on(browser, shot, owner.page, "campaign-cancelled")
    finally:
        await on(browser, owner.close)
    assert shown["badge"] == "cancelled" and not shown["banner"] and shown["buttons"] == []
    assert (await alice.api.campaign(campaign_id))["status"] == "cancelled"


async def test_the_close_button_closes_an_open_campaign(
    browser: BrowserThread, console_server: LiveServer, alice: Alice
) -> None:
    campaign_id = await create_open(alice)
    owner = await signed_in_owner(browser, console_server)
    try:
        shown = await on(browser, click_and_wait, owner, campaign_id, "close", "closed", True)
    finally:
        await on(browser, owner.close)
    assert "close" not in shown["buttons"] and shown["badge"] in ("running", "complete")
    assert (await alice.api.campaign(campaign_id))["open"] is False


async def test_an_open_campaign_waits_for_datasets_and_offers_close(alice: Alice) -> None:
    campaign_id = await create_open(alice)
    page = (await alice.visitor.get(f"/campaigns/{campaign_id}")).text
    assert 'id="close"' in page and 'id="pause"' in page and "waiting for datasets" in page
    assert 'id="no-generator"' in page


async def test_a_lifecycle_form_without_its_csrf_token_changes_nothing(alice: Alice) -> None:
    campaign_id = await running(alice)
    response = await alice.visitor.client.post(f"/campaigns/{campaign_id}/cancel", data={"csrf": "forged"})
    assert response.status_code == 403
    assert (await alice.api.campaign(campaign_id))["status"] == "running"


async def test_pausing_a_paused_campaign_from_the_console_says_why_not(alice: Alice) -> None:
    campaign_id = await running(alice)
    await alice.api.client.post(f"/api/campaigns/{campaign_id}/pause")
    response = await alice.visitor.post(f"/campaigns/{campaign_id}/pause", page=f"/campaigns/{campaign_id}")
    assert response.status_code == 400 and "only a generating or running one pauses" in response.text


async def test_the_new_campaign_form_creates_an_open_campaign_without_a_generator(alice: Alice) -> None:
    form = (await alice.visitor.get("/campaigns/new")).text
    response = await alice.visitor.client.post(
        "/campaigns/new",
        data={"csrf": csrf_of(form), "name": "open one", "kernel_text": OPEN_KERNEL, "open": "1"},
        files={"kernel_file": ("", b"")},
    )
    assert response.status_code == 303, response.text
    campaign_id = int(response.headers["location"].rstrip("/").rsplit("/", 1)[1])
    campaign = await alice.api.campaign(campaign_id)
    assert campaign["open"] is True and campaign["name"] == "open one"
