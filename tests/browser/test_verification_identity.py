"""The broker sends a worker identity in `hello`, kept across reconnects within one page session."""

from __future__ import annotations

import re

import trio

from tests.browser.conftest import Embedding, busy_kernel
from tests.conftest import LiveServer


async def identities(server: LiveServer, campaign: int) -> set[str]:
    """The identities of the connections now serving `campaign` (waits until there is one)."""
    with trio.fail_after(20):
        while True:
            found = {
                str(s.hello.client.get("id", ""))
                for s in server.platform.gateway.sessions.values()
                if s.hello.campaign == campaign
            }
            if found:
                return found
            await trio.sleep(0.05)


async def test_the_broker_keeps_one_identity_across_reconnects_and_a_new_tab_gets_another(
    embedding: Embedding,
) -> None:
    browser, live_server = embedding.browser, embedding.server
    campaign = await embedding.campaign(busy_kernel(50), 200)
    async with embedding.visit(campaign) as page:
        await embedding.start(page, done=2)
        (first,) = await identities(live_server, campaign)
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        # Kept in the broker origin's sessionStorage where the browser lets a cross-site frame use it
        # (this headless Chromium blocks third-party storage: then the id lives as long as the page).
        read = (
            "() => { try { return sessionStorage.getItem('distribute.worker-id'); } catch (e) { return 'blocked'; } }"
        )
        assert await browser.run(lambda: page.broker().evaluate(read)) in (first, "blocked")
        assert await browser.run(lambda: page.page.evaluate("() => sessionStorage.length")) == 0  # not the host's

        await browser.run(page.click, "pause")  # closes the socket
        await browser.run(page.wait_state, "paused")
        with trio.fail_after(10):
            while await identities_now(live_server, campaign):
                await trio.sleep(0.05)
        await browser.run(page.click, "pause")  # "Resume": a new connection
        assert await identities(live_server, campaign) == {first}

        async with embedding.visit(campaign) as other:  # a new page: a new session
            await browser.run(other.click, "contribute")
            with trio.fail_after(20):
                while len(found := await identities(live_server, campaign)) < 2:
                    await trio.sleep(0.05)
            assert first in found and len(found) == 2


async def identities_now(server: LiveServer, campaign: int) -> set[str]:
    return {
        str(s.hello.client.get("id", ""))
        for s in server.platform.gateway.sessions.values()
        if s.hello.campaign == campaign
    }
