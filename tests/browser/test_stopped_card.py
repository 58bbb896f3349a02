"""The embed card of a campaign that stopped, in headless Chromium: it says so, and thanks nobody for
work that did not succeed (a paused campaign, one that paused itself, one that finished with failures)."""

from __future__ import annotations

import httpx
import pytest
import trio

from tests.browser.conftest import BrowserThread, Embedding, Visit, host_page
from tests.conftest import LiveServer
from tests.support.protocol_client import work

pytestmark = pytest.mark.browser

# Works in the server's sandbox but not in a browser's Web Worker (where importScripts exists):
# a kernel relying on something only one of them has, so no check at upload could tell.
FAILS_IN_BROWSERS = """({
  main: function (d) {
    if (typeof importScripts === "function") throw new Error("this kernel needs a server");
    return d.i;
  }
})"""


def broken(dataset: object) -> object:
    raise RuntimeError("ReferenceError: main is not defined")


def open_card(browser: BrowserThread, url: str) -> Visit:
    """A host page whose card needs no Contribute button (open_visit waits for one): waits for its status line."""
    context = browser.browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.frame_locator("iframe").first.locator("#status").wait_for(state="visible")
    return Visit(context, page)


async def card_of(embedding: Embedding, campaign_id: int) -> tuple[dict[str, object], bool]:
    """The stopped card's state and status line, and whether Contribute is shown."""
    url = embedding.host_site.add(f"stopped{campaign_id}", host_page(embedding.server.url, campaign_id))
    page = await embedding.browser.run(open_card, embedding.browser, url)
    try:
        shown = await embedding.browser.run(page.state)
        contribute = await embedding.browser.run(lambda: page.broker().locator("#contribute").is_visible())
    finally:
        await embedding.browser.run(page.close)
    return shown, contribute


async def paused_by_failures(server: LiveServer) -> int:
    campaign_id = await server.create_campaign(name="Broken")
    with trio.fail_after(30):
        assert (await work(server.ws_url, broken, campaign=campaign_id, slots=2)).bye == "paused"
    await server.wait_for(campaign_id, lambda c: c["state"]["key"] == "paused")  # stored just after workers hear
    return campaign_id


async def test_the_card_of_an_auto_paused_campaign_says_it_stopped_instead_of_thanking(embedding: Embedding) -> None:
    campaign_id = await paused_by_failures(embedding.server)
    shown, contribute = await card_of(embedding, campaign_id)
    assert shown["state"] == "halted" and not contribute
    assert str(shown["status"]).startswith("This campaign has stopped for now") and "Thank" not in shown["status"]


async def test_a_visitor_computing_when_the_campaign_pauses_itself_is_told_it_stopped(embedding: Embedding) -> None:
    campaign_id = await embedding.campaign(FAILS_IN_BROWSERS, 400)
    async with embedding.visit(campaign_id) as page:
        await embedding.browser.run(page.click, "contribute")
        await embedding.browser.run(page.wait_state, "done", 60)
        shown = await embedding.browser.run(page.state)
    await embedding.server.wait_for(campaign_id, lambda c: c["state"]["key"] == "paused")
    assert shown["status"].startswith("Stopped: this campaign is paused") and "Thank" not in shown["status"]


async def test_the_card_of_a_campaign_finished_with_failures_claims_no_success(embedding: Embedding) -> None:
    server = embedding.server
    campaign_id = await server.create_campaign(name="Picky")

    def picky(dataset: dict[str, int]) -> list[int]:
        if dataset["min"] % 1000 == 0:
            raise ValueError("cannot handle this one")
        return [dataset["min"]]

    assert (await work(server.ws_url, picky, campaign=campaign_id)).bye == "complete"
    assert (await server.wait_complete(campaign_id))["state"]["key"] == "finished_with_failures"
    shown, contribute = await card_of(embedding, campaign_id)
    assert not contribute
    assert shown["state"] == "ended" and shown["status"] == "This campaign has ended: there is nothing left to compute."


FAILS_ON_ONE = """({
  main: function (d) {
    if (d.i === 0) throw new Error("cannot handle this one");
    return d.i;
  }
})"""


async def test_a_visitor_computing_to_the_end_of_a_campaign_with_failures_is_not_thanked_for_a_success(
    embedding: Embedding,
) -> None:
    campaign_id = await embedding.campaign(FAILS_ON_ONE, 5)  # too few outcomes to pause itself
    async with embedding.visit(campaign_id) as page:
        await embedding.browser.run(page.click, "contribute")
        await embedding.browser.run(page.wait_state, "ended", 60)
        shown = await embedding.browser.run(page.state)
    campaign = await embedding.server.wait_complete(campaign_id)
    assert campaign["state"]["key"] == "finished_with_failures"
    assert "Some of this campaign's datasets failed" in shown["status"] and "Thank" not in shown["status"]


async def test_the_cards_state_is_public_and_says_only_what_the_card_says(embedding: Embedding) -> None:
    server = embedding.server
    campaign_id = await server.create_campaign(name="Plain")
    assert (await work(server.ws_url, campaign=campaign_id)).bye == "complete"
    await server.wait_complete(campaign_id)
    async with httpx.AsyncClient(base_url=server.url) as anyone:  # no session, no token
        shown = await anyone.get(f"/embed/{campaign_id}/state")
        assert shown.status_code == 200 and shown.json() == {"state": "complete"}
        assert shown.headers["cache-control"] == "no-store"
        assert (await server.client.delete(f"/api/campaigns/{campaign_id}")).status_code < 300
        assert (await anyone.get(f"/embed/{campaign_id}/state")).status_code == 404
        assert (await anyone.get("/embed/999999/state")).status_code == 404
