"""A kernel update reaches a browser mid-campaign: the harness loads the new campaign frame's kernel before
its next task, and every result of a recomputed campaign is the new version's, computed by the new code."""

from __future__ import annotations

from tests.browser.conftest import Embedding
from tests.conftest import slow_seed_kernel


async def test_a_browser_computing_a_campaign_switches_to_the_new_kernel_version(embedding: Embedding) -> None:
    browser, server = embedding.browser, embedding.server
    old = slow_seed_kernel(20)
    new = old.replace("return results.length > 0 ? results : null;", "return {version: 2, found: results};")
    campaign = await server.create_campaign(kernel=old)
    async with embedding.visit(campaign) as page:
        await browser.run(page.click, "contribute")
        await server.wait_for(campaign, lambda c: c["datasets"]["done"] >= 5)
        files = {"kernel": ("kernel2.js", new.encode())}
        response = await server.client.post(
            f"/api/campaigns/{campaign}/kernel", files=files, data={"recompute": "true"}
        )
        assert response.status_code == 200, response.text
        await server.wait_complete(campaign, timeout=90)
    rows = (await server.client.get(f"/api/campaigns/{campaign}/results", params={"include_empty": "true"})).json()
    assert len(rows) == 100 and {row["kernel_version"] for row in rows} == {2}
    assert all(row["result"]["version"] == 2 for row in rows)  # computed by the new code, in the browser
    everything = (
        await server.client.get(f"/api/campaigns/{campaign}/results", params={"every_version": "true"})
    ).json()
    assert any(row["kernel_version"] == 1 for row in everything)  # the browser's answers before the update
