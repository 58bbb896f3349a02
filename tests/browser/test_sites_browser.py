"""Registered sites in Chromium: a site's policy is enforced on its own pages, its key is ignored on any
other origin, its highest throttle holds, and its dashboard shows what its visitors computed.

The host pages are served by `host_site` (http://localhost:PORT), the distribute server is
http://127.0.0.1:PORT. The server runs the priority scheduler and the campaign not on the site's
allowlist has the higher priority, so without the policy it would be chosen first.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from distribute.embed import embed_snippet
from distribute.models import Site
from tests.browser.conftest import HOST_SCRIPT, BrowserThread, HostSite, busy_kernel, generator_of, open_visit
from tests.conftest import LiveServer, StartServer
from tests.console.conftest import People, Visitor

DATASETS = 6


@pytest.fixture
async def server(start_server: StartServer, tmp_path: Any) -> LiveServer:
    return await start_server(
        scheduler="priority", site_check_private=1, signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox")
    )


async def campaigns(server: LiveServer) -> tuple[int, int]:
    """(allowed, other): two campaigns of DATASETS datasets; `other` has the higher priority."""
    kernel, generator = busy_kernel(30), generator_of(DATASETS)
    allowed = await server.create_campaign(kernel=kernel, generator=generator, static="", skip_check="true")
    other = await server.create_campaign(kernel=kernel, generator=generator, static="", skip_check="true", priority=10)
    return allowed, other


async def verified_site(server: LiveServer, owner_id: int, origin: str, host_site: HostSite, **policy: Any) -> Site:
    """A site registered and proved the real way: its token served at ORIGIN/.well-known/distribute.txt."""
    service = server.platform.sites
    site = await service.register(owner_id, origin)
    host_site.add(".well-known/distribute.txt", site.token)
    assert await service.verify(site) == ""
    if policy:
        site = await service.set_policy(site, **policy)
    return site


def page_with_key(server: LiveServer, site: Site, *, throttle: str = "low") -> str:
    snippet = embed_snippet(server.url, "any", site=site.key, throttle=throttle)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>host</title></head><body>{snippet}{HOST_SCRIPT}</body></html>"


async def results_of(server: LiveServer, campaign_id: int) -> list[dict[str, Any]]:
    return await server.results(campaign_id, include_empty=True)


async def owner_of_token(server: LiveServer) -> int:
    user = await server.platform.storage.user_for_token(server.token)
    assert user is not None
    return user.id


async def test_a_sites_allowlist_is_enforced(server: LiveServer, browser: BrowserThread, host_site: HostSite) -> None:
    allowed, other = await campaigns(server)
    origin = f"http://localhost:{host_site.port}"
    site = await verified_site(
        server,
        await owner_of_token(server),
        origin,
        host_site,
        policy="campaigns",
        allowlist=str(allowed),
        max_throttle="high",
    )
    visit = await browser.run(open_visit, browser, host_site.add("article", page_with_key(server, site)))
    try:
        await browser.run(visit.click, "contribute")
        await server.wait_complete(allowed, timeout=60)
        # The site's visitor ran out of admitted work: the harness says so and asks again later.
        await browser.run(visit.wait_state, "done", 30)
    finally:
        await browser.run(visit.close)
    assert len(await results_of(server, allowed)) == DATASETS  # the campaign on the list is computed
    assert await results_of(server, other) == []  # the one not on it never was, despite its priority
    days = await server.platform.storage.sites.site_days(site.id)
    assert [(d.campaign_id, d.tasks) for d in days] == [(allowed, DATASETS)]  # attributed to the verified site


async def test_a_key_on_a_foreign_origin_is_ignored(
    server: LiveServer, browser: BrowserThread, host_site: HostSite
) -> None:
    allowed, other = await campaigns(server)
    # The site is 127.0.0.1:PORT; the page embedding its key is on localhost:PORT, another origin.
    site = await verified_site(
        server,
        await owner_of_token(server),
        f"http://127.0.0.1:{host_site.port}",
        host_site,
        policy="campaigns",
        allowlist=str(allowed),
        max_throttle="low",
    )
    visit = await browser.run(
        open_visit, browser, host_site.add("copied", page_with_key(server, site, throttle="high"))
    )
    try:
        card = await browser.run(
            lambda: visit.broker().evaluate("() => ({...document.getElementById('card').dataset})")
        )
        assert "site" not in card  # the server handed this page no ticket
        levels = await browser.run(lambda: visit.broker().locator("#throttle option").all_inner_texts())
        assert levels == ["low", "medium", "high"]  # the site's highest throttle does not apply either
        await browser.run(visit.click, "contribute")
        await server.wait_complete(other, timeout=60)  # anonymous behaviour: the scheduler's choice runs
    finally:
        await browser.run(visit.close)
    assert len(await results_of(server, other)) == DATASETS
    assert await server.platform.storage.sites.site_days(site.id) == []  # nothing credited to the site


async def test_a_sites_highest_throttle_is_the_highest_offered(
    server: LiveServer, browser: BrowserThread, host_site: HostSite
) -> None:
    origin = f"http://localhost:{host_site.port}"
    site = await verified_site(
        server, await owner_of_token(server), origin, host_site, policy="any", allowlist="", max_throttle="medium"
    )
    visit = await browser.run(
        open_visit, browser, host_site.add("capped", page_with_key(server, site, throttle="high"))
    )
    try:
        levels = await browser.run(lambda: visit.broker().locator("#throttle option").all_inner_texts())
        chosen = await browser.run(lambda: visit.broker().locator("#throttle").input_value())
    finally:
        await browser.run(visit.close)
    assert levels == ["low", "medium"] and chosen == "medium"


async def test_the_site_dashboard_shows_what_its_visitors_computed(
    server: LiveServer, browser: BrowserThread, host_site: HostSite
) -> None:
    owner: Visitor = await People(server).sign_up("site-owner@example.org")
    user = await server.platform.storage.user_by_email(owner.email)
    assert user is not None
    allowed, other = await campaigns(server)
    site = await verified_site(
        server,
        user.id,
        f"http://localhost:{host_site.port}",
        host_site,
        policy="any",
        allowlist="",
        max_throttle="high",
    )
    visit = await browser.run(open_visit, browser, host_site.add("article", page_with_key(server, site)))
    try:
        await browser.run(visit.click, "contribute")
        await server.wait_complete(other, timeout=60)
        await server.wait_complete(allowed, timeout=60)
    finally:
        await browser.run(visit.close)
    computed = {c: await results_of(server, c) for c in (allowed, other)}
    expected = {
        str(c): (len(rows), len(rows), sum(r["compute_ms"] for r in rows) / 3.6e6) for c, rows in computed.items()
    }

    cookie = owner.session_cookie
    assert cookie is not None

    def read_dashboard() -> dict[str, Any]:
        context = browser.browser.new_context()
        try:
            context.add_cookies([{"name": "distribute_session", "value": cookie, "url": server.url}])
            page = context.new_page()
            page.goto(f"{server.url}/sites/{site.id}")
            rows = page.eval_on_selector_all(
                "#site-days tbody tr",
                "rows => rows.map(r => [r.dataset.campaign, r.querySelector('[data-tasks]').textContent,"
                " r.querySelector('[data-verified]').textContent, r.querySelector('[data-hours]').textContent])",
            )
            bars = page.eval_on_selector_all("#chart-tasks rect", "rects => rects.map(r => r.dataset.campaign)")
            return {"rows": rows, "bars": bars, "total": page.locator("#total-tasks").inner_text()}
        finally:
            context.close()

    shown = await browser.run(read_dashboard)
    await owner.client.aclose()
    table = {c: (int(t), int(v), float(h)) for c, t, v, h in shown["rows"]}
    assert table.keys() == expected.keys()
    for campaign, (tasks, verified, hours) in expected.items():
        assert table[campaign][:2] == (tasks, verified)
        assert table[campaign][2] == pytest.approx(hours, abs=1e-4)
    assert int(shown["total"]) == 2 * DATASETS
    assert sorted(shown["bars"]) == sorted(expected)  # one bar segment per campaign on today's bar
    assert not re.search(r"[^0-9]", shown["total"])
