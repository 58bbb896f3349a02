"""Campaign review in headless Chromium: a site that embeds `/embed/any` never computes a campaign
no admin has approved, and computes it once an admin approves it in the console.

The admin is a real person in a browser: they sign up on a fresh server, take the one-time
"make me the operator" offer, and press Approve on the admin page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.conftest import BrowserThread, Embedding, HostSite, busy_kernel, outcome
from tests.conftest import StartServer

PASSWORD = "correct horse battery"


def become_operator_and_approve(browser: BrowserThread, server_url: str, campaign_id: int) -> dict[str, Any]:
    """On the browser thread: sign up, claim the admin role, approve the campaign; what the pages showed."""
    context = browser.browser.new_context()
    try:
        page = context.new_page()
        page.goto(server_url + "/signup")
        page.fill("#email", "operator@example.org")
        page.fill("#password", PASSWORD)
        page.fill("#password2", PASSWORD)
        page.click("#signup-form button[type=submit]")
        page.wait_for_url("**/campaigns")
        page.click("#claim-operator")
        page.wait_for_url("**/admin")
        listed = page.locator(f"tr[data-campaign-id='{campaign_id}']").count()
        page.click(f"#approve-{campaign_id}")
        page.wait_for_url("**/admin?done=approved")
        return {"listed": listed, "after": page.locator("#nothing-to-review").count()}
    finally:
        context.close()


async def test_embed_any_never_computes_an_unreviewed_campaign_and_computes_it_once_approved(
    browser: BrowserThread, start_server: StartServer, host_site: HostSite, tmp_path: Path
) -> None:
    server = await start_server(
        campaign_review="required", signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox")
    )
    embedding = Embedding(browser, server, host_site)
    campaign = await embedding.campaign(busy_kernel(1), 10)  # a plain user's: pending
    await server.wait_for(campaign, lambda c: c["status"] == "running")
    assert (await server.campaign(campaign))["review"]["state"] == "pending"

    async with embedding.visit("any") as page:
        await browser.run(page.click, "contribute")
        await browser.run(page.wait_state, "done")  # the server had nothing it may give this page
        assert (await browser.run(page.state))["done"] == 0
    unreviewed = await server.campaign(campaign)
    assert unreviewed["datasets"]["done"] == 0 and unreviewed["results"] == 0

    seen = await browser.run(become_operator_and_approve, browser, server.url, campaign)
    assert seen == {"listed": 1, "after": 1}
    assert (await server.campaign(campaign))["review"]["state"] == "approved"

    async with embedding.visit("any") as page:
        await browser.run(page.click, "contribute")
        await server.wait_complete(campaign, timeout=60)
    stored = await outcome(server, campaign)
    assert stored.results == {i: i * 2 for i in range(10)}
    assert stored.hosts == {f"http://localhost:{host_site.port}"}
