"""Volunteers in a real browser: remembered consent on one site, and this browser's credit on the card.

The broker keeps a remembered choice in its own origin's localStorage, which browsers partition by
the top-level site. This headless Chromium blocks a cross-site frame's storage altogether, so the
tests of remembering embed the snippet in a page of the server's own site (another port of
127.0.0.1: same site, another origin), and one test checks the fallback where storage is blocked.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from tests.browser.conftest import BrowserThread, Embedding, HostSite, Visit, busy_kernel, host_page
from tests.conftest import LiveServer, StartServer
from tests.console.conftest import People

DECIDED = "() => document.body.dataset.remembered !== undefined && document.body.dataset.storage !== undefined"


def same_site_page(embedding: Embedding, campaign: int) -> str:
    """A host page on the server's site (127.0.0.1, another port), where the broker may use storage."""
    url = embedding.host_site.add(f"page{len(embedding.host_site.pages)}", host_page(embedding.server.url, campaign))
    return url.replace("//localhost:", "//127.0.0.1:")


def new_context(browser: BrowserThread) -> Any:
    return browser.browser.new_context()


def open_in(context: Any, url: str) -> Visit:
    """A host page in `context` (storage shared with its other pages), once the broker has decided
    whether a remembered choice starts work."""
    page = context.new_page()
    visit = Visit(context, page)
    page.on("request", lambda request: visit.requests.append(request.url))
    page.goto(url)
    page.frame_locator("iframe").first.locator("#contribute").wait_for(state="attached")
    visit.broker().wait_for_function(DECIDED)
    return visit


def card(visit: Visit) -> dict[str, Any]:
    seen: dict[str, Any] = visit.broker().evaluate(
        "() => ({state: document.body.dataset.state, remembered: document.body.dataset.remembered,"
        " storage: document.body.dataset.storage,"
        " option: !document.getElementById('remember').closest('label').hidden,"
        " withdraw: !document.getElementById('withdraw').hidden})"
    )
    return seen


def remember_and_contribute(visit: Visit) -> None:
    visit.broker().locator("#remember").check()
    visit.click("contribute")


async def connected(server: LiveServer, campaign: int) -> int:
    return sum(1 for s in server.platform.gateway.sessions.values() if s.hello.campaign == campaign)


async def wait_connected(server: LiveServer, campaign: int, wanted: int) -> None:
    with trio.fail_after(20):
        while await connected(server, campaign) != wanted:
            await trio.sleep(0.05)


async def test_remembered_consent_starts_work_on_the_next_visit_without_a_click(embedding: Embedding) -> None:
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(20), 2000)
    url = same_site_page(embedding, campaign)
    context = await browser.run(new_context, browser)
    try:
        first = await browser.run(open_in, context, url)
        assert (await browser.run(card, first))["state"] == "idle"
        await browser.run(remember_and_contribute, first)
        await browser.run(first.wait_done, 1)
        assert (await browser.run(card, first))["withdraw"]
        await browser.run(first.page.close)
        await wait_connected(embedding.server, campaign, 0)

        second = await browser.run(open_in, context, url)  # no click on this page
        await browser.run(second.wait_done, 1)
        seen = await browser.run(card, second)
        assert seen["remembered"] == "true" and seen["withdraw"] and not seen["option"]
        assert await connected(embedding.server, campaign) == 1
    finally:
        await browser.run(context.close)


async def test_withdrawing_stops_work_at_once_and_the_next_visit_asks_again(embedding: Embedding) -> None:
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(20), 2000)
    url = same_site_page(embedding, campaign)
    context = await browser.run(new_context, browser)
    try:
        first = await browser.run(open_in, context, url)
        await browser.run(remember_and_contribute, first)
        await browser.run(first.wait_done, 1)
        await browser.run(first.click, "withdraw")
        await wait_connected(embedding.server, campaign, 0)  # the socket closed: nothing computes
        seen = await browser.run(card, first)
        assert seen["state"] == "idle" and seen["remembered"] == "false" and seen["option"] and not seen["withdraw"]
        await browser.run(first.page.close)

        again = await browser.run(open_in, context, url)
        seen = await browser.run(card, again)
        assert seen["state"] == "idle" and seen["remembered"] == "false" and seen["option"]
        assert await connected(embedding.server, campaign) == 0
    finally:
        await browser.run(context.close)


async def test_where_storage_is_blocked_the_card_offers_no_remembering_and_asks_every_visit(
    embedding: Embedding,
) -> None:
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(20), 2000)
    context = await browser.run(new_context, browser)
    url = embedding.host_site.add("crosssite", host_page(embedding.server.url, campaign))  # localhost: another site
    try:
        first = await browser.run(open_in, context, url)
        seen = await browser.run(card, first)
        assert seen["storage"] == "blocked" and not seen["option"] and not seen["withdraw"]
        await browser.run(first.click, "contribute")
        await browser.run(first.wait_done, 1)
        await browser.run(first.page.close)
        await wait_connected(embedding.server, campaign, 0)
        again = await browser.run(open_in, context, url)
        assert (await browser.run(card, again))["state"] == "idle"
        assert await connected(embedding.server, campaign) == 0
    finally:
        await browser.run(context.close)


# --------------------------------------------------------------------------- credit on the card


def credit_on_card(visit: Visit) -> dict[str, Any]:
    """Reload the host page (a next visit in this tab: the broker's sessionStorage keeps its identity)
    and read the credit the card shows."""
    visit.page.reload()
    visit.page.frame_locator("iframe").first.locator("#contribute").wait_for(state="attached")
    visit.broker().wait_for_function("() => document.body.dataset.credit !== undefined")
    seen: dict[str, Any] = visit.broker().evaluate(
        "() => ({seconds: Number(document.body.dataset.credit), line: document.getElementById('credit-text').textContent,"
        " shown: !document.getElementById('credit').hidden})"
    )
    return seen


async def identity_of(server: LiveServer, campaign: int) -> str:
    with trio.fail_after(20):
        while True:
            for session in server.platform.gateway.sessions.values():
                if session.hello.campaign == campaign:
                    return str(session.hello.client["id"])
            await trio.sleep(0.05)


async def test_credit_appears_in_the_card_after_verified_results_and_not_before(
    start_server: StartServer, browser: BrowserThread, host_site: HostSite
) -> None:
    # Both browsers run on this machine: copies need distinct identities only.
    server = await start_server(verify_distinct_addresses=0)
    embedding = Embedding(browser, server, host_site)
    campaign = await embedding.campaign(busy_kernel(30), 3, replication=2)
    url = same_site_page(embedding, campaign)
    context = await browser.run(new_context, browser)
    try:
        first = await browser.run(open_in, context, url)
        await browser.run(first.click, "contribute")
        identity = await identity_of(server, campaign)
        with trio.fail_after(30):  # one copy of each dataset answered, no quorum yet
            while (await server.platform.storage.counts(campaign)).pending_verification < 3:
                await trio.sleep(0.05)
        before = await browser.run(credit_on_card, first)
        assert before == {"seconds": 0, "line": "", "shown": False}

        async with embedding.visit(campaign) as other:  # another browser: the second copies
            await browser.run(other.click, "contribute")
            await server.wait_complete(campaign, timeout=60)
        stored = await server.platform.storage.credit.credit([identity])
        assert stored.seconds > 0 and [c.campaign_id for c in stored.campaigns] == [campaign]
        after = await browser.run(credit_on_card, first)
        assert after["shown"] and after["seconds"] == round(stored.seconds, 6)
        assert after["line"].startswith("You have given ") and after["line"].endswith(" to 1 campaign.")
    finally:
        await browser.run(context.close)


def keep_my_credit(visit: Visit) -> dict[str, Any]:
    """Click "Keep my credit" and read the claim code and the instructions the card shows."""
    visit.click("keep-credit")
    visit.broker().wait_for_function("() => document.getElementById('keep-code').value !== ''")
    seen: dict[str, Any] = visit.broker().evaluate(
        "() => ({code: document.getElementById('keep-code').value, text: document.getElementById('keep-text').textContent})"
    )
    return seen


async def test_keep_my_credit_gives_a_code_that_adds_this_browsers_credit_to_an_account(
    start_server: StartServer, browser: BrowserThread, host_site: HostSite
) -> None:
    server = await start_server(signup_min_seconds=0.0)
    embedding = Embedding(browser, server, host_site)
    campaign = await embedding.campaign(busy_kernel(30), 4)
    context = await browser.run(new_context, browser)
    try:
        visit = await browser.run(open_in, context, same_site_page(embedding, campaign))
        await browser.run(visit.click, "contribute")
        identity = await identity_of(server, campaign)
        await server.wait_complete(campaign, timeout=60)
        shown = await browser.run(credit_on_card, visit)
        kept = await browser.run(keep_my_credit, visit)
    finally:
        await browser.run(context.close)
    assert shown["shown"] and f"{server.url}/volunteer" in kept["text"]
    assert not [url for url in visit.requests if identity in url]  # the identity never travels in a URL
    people = People(server)
    try:
        ada = await people.sign_up("ada@example.org")
        response = await ada.post("/volunteer/claim", {"code": kept["code"]}, page="/volunteer")
        page = (await ada.get("/volunteer")).text
    finally:
        for visitor in people.made:
            await visitor.client.aclose()
    assert response.status_code == 200
    total = re.search(r'id="credit-total" data-seconds="([0-9.e+-]+)"', page)
    assert total is not None and float(total[1]) == pytest.approx(shown["seconds"], abs=1e-6)


def read_leaderboard(browser: BrowserThread, url: str) -> dict[str, Any]:
    context = browser.browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        seen: dict[str, Any] = page.evaluate(
            "() => ({total: Number(document.getElementById('board-total').dataset.seconds),"
            " volunteers: Number(document.getElementById('board-anonymous').dataset.volunteers),"
            " named: document.querySelectorAll('#board-named tbody tr').length, text: document.body.innerText})"
        )
        return seen
    finally:
        context.close()


async def test_a_campaigns_leaderboard_page_shows_the_stored_compute_and_counts_anonymous_volunteers(
    embedding: Embedding,
) -> None:
    campaign = await embedding.campaign(busy_kernel(30), 4)
    outcome = await embedding.contribute(campaign)
    stored = sum(row["compute_ms"] for row in await embedding.server.results(campaign)) / 1000.0
    board = await embedding.browser.run(
        read_leaderboard, embedding.browser, f"{embedding.server.url}/leaderboard/campaigns/{campaign}"
    )
    assert len(outcome.results) == 4 and stored > 0
    assert board["total"] == pytest.approx(stored) and board["volunteers"] == 1 and board["named"] == 0
    assert "1 volunteer who chose not to be named" in board["text"]


@pytest.mark.parametrize("browser", ["firefox"], indirect=True)
async def test_a_choice_remembered_on_one_site_holds_there_and_not_on_another_site(embedding: Embedding) -> None:
    """Firefox partitions (rather than blocks) a cross-site frame's storage, as browsers do by default:
    the choice made inside one site's page is kept for that site only."""
    browser = embedding.browser
    campaign = await embedding.campaign(busy_kernel(20), 2000)
    one_site = embedding.host_site.add("partitioned", host_page(embedding.server.url, campaign))  # localhost
    other_site = same_site_page(embedding, campaign)  # 127.0.0.1: another site
    context = await browser.run(new_context, browser)
    try:
        first = await browser.run(open_in, context, one_site)
        assert (await browser.run(card, first))["storage"] == "yes"
        await browser.run(remember_and_contribute, first)
        await browser.run(first.wait_done, 1)
        await browser.run(first.page.close)
        await wait_connected(embedding.server, campaign, 0)

        elsewhere = await browser.run(open_in, context, other_site)
        seen = await browser.run(card, elsewhere)
        assert seen["state"] == "idle" and seen["remembered"] == "false"
        await browser.run(elsewhere.page.close)

        again = await browser.run(open_in, context, one_site)  # the same site: starts by itself
        await browser.run(again.wait_done, 1)
        assert (await browser.run(card, again))["remembered"] == "true"
    finally:
        await browser.run(context.close)
