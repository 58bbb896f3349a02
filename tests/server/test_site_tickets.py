"""Site tickets at the server: the broker page hands one out only on the site's own origin, and the
gateway believes only a genuine, unexpired ticket, caps its slots and credits its results to the site."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import pytest
import trio

from distribute import protocol as p
from distribute.models import Site, SitePolicy
from distribute.work.sites import SiteGrant, SiteTickets, slots_for
from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import connect, receive, receive_tasks, send

ORIGIN = "https://blog.example.org"
SITE = Site(7, 1, ORIGIN, "key-of-the-site", "token", True, SitePolicy.CAMPAIGNS, (3,), "low")


def campaign(campaign_id: int, owner_id: int) -> Any:
    return type("C", (), {"id": campaign_id, "owner_id": owner_id})()


def test_a_ticket_carries_the_sites_policy() -> None:
    tickets = SiteTickets(b"secret")
    grant = tickets.check(tickets.sign(SITE, ORIGIN, 1000.0), 1001.0)
    assert grant == SiteGrant(7, "campaigns", frozenset({3}), "low", ORIGIN)


def test_a_forged_or_expired_ticket_is_anonymous() -> None:
    tickets = SiteTickets(b"secret", lifetime=60)
    ticket = tickets.sign(SITE, ORIGIN, 1000.0)
    assert SiteTickets(b"another server").check(ticket, 1001.0) is None
    signature = ticket.split(".")[1]
    widened = tickets.sign(Site(7, 1, ORIGIN, "k", "t", True), ORIGIN, 1000.0).split(".")[0]  # policy "any"
    assert tickets.check(f"{widened}.{signature}", 1001.0) is None
    assert tickets.check(ticket, 1061.0) is None
    assert tickets.check("garbage", 1001.0) is None and tickets.check(None, 1001.0) is None


def test_policies_admit_only_what_they_list() -> None:
    by_campaign = SiteGrant(1, SitePolicy.CAMPAIGNS, frozenset({3}), "high", ORIGIN)
    by_owner = SiteGrant(1, SitePolicy.OWNERS, frozenset({9}), "high", ORIGIN)
    anything = SiteGrant(1, SitePolicy.ANY, frozenset(), "high", ORIGIN)
    assert by_campaign.admits(campaign(3, 1)) and not by_campaign.admits(campaign(4, 9))
    assert by_owner.admits(campaign(4, 9)) and not by_owner.admits(campaign(3, 1))
    assert anything.admits(campaign(5, 5))


def test_the_slots_are_capped_at_the_sites_highest_throttle() -> None:
    grant = SiteGrant(1, SitePolicy.ANY, frozenset(), "low", ORIGIN)
    assert grant.cap_slots(48, {"cores": 17}) == slots_for("low", 17) == 2
    medium = SiteGrant(1, SitePolicy.ANY, frozenset(), "medium", ORIGIN)
    assert (
        medium.cap_slots(48, {"cores": 17}) == 16 and medium.cap_slots(200, {"cores": 10**6}) == 62
    )  # cores clipped to 64


def test_hello_carries_a_site_ticket_with_a_length_cap() -> None:
    hello = p.decode_client(p.encode(p.Hello(slots=2, site="abc.def")))
    assert isinstance(hello, p.Hello) and hello.site == "abc.def"
    assert p.decode_client(p.encode(p.Hello(slots=2))).site is None  # type: ignore[union-attr]
    with pytest.raises(p.ProtocolError):
        p.decode_client(p.encode(p.Hello(slots=2, site="x" * 2049)))


# --------------------------------------------------------------------------- at a running server


async def site_of(server: LiveServer, **policy: Any) -> Site:
    user = await server.platform.storage.user_for_token(server.token)
    assert user is not None
    storage = server.platform.storage.sites
    site = await storage.create_site(user.id, "http://blog.example", "the-site-key", "token")
    await storage.set_site_verified(site.id)
    updated = await storage.set_site_policy(site.id, **policy) if policy else await storage.site(site.id)
    assert updated is not None
    return updated


async def ticket_of(server: LiveServer, referer: str) -> str:
    page = await server.client.get("/embed/any", params={"site": "the-site-key"}, headers={"Referer": referer})
    found = re.search(r'data-site="([^"]+)"', page.text)
    return html.unescape(found[1]) if found else ""


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    return await start_server()


async def test_the_broker_page_gives_a_ticket_only_to_the_sites_origin(server: LiveServer) -> None:
    await site_of(server)
    assert await ticket_of(server, "http://blog.example/")
    assert await ticket_of(server, "http://copycat.example/") == ""
    assert await ticket_of(server, "https://blog.example/") == ""  # another scheme is another origin


async def test_an_unverified_sites_key_gets_no_ticket(server: LiveServer) -> None:
    site = await site_of(server)
    await server.platform.storage.sites.delete_site(site.id)
    user = await server.platform.storage.user_for_token(server.token)
    assert user is not None
    await server.platform.storage.sites.create_site(user.id, "http://blog.example", "the-site-key", "token")
    assert await ticket_of(server, "http://blog.example/") == ""


async def test_a_ticketed_worker_gets_the_slots_of_the_highest_throttle_and_credits_the_site(
    server: LiveServer,
) -> None:
    site = await site_of(server, policy="any", allowlist=[], max_throttle="low")
    campaign_id = await server.create_campaign()
    await server.wait_for(campaign_id, lambda c: c["status"] in ("running", "generating"))
    ticket = await ticket_of(server, "http://blog.example/")
    async with await connect(server.ws_url) as ws:
        await send(ws, p.Hello(slots=50, client={"kind": "test", "cores": 8}, site=ticket))
        info = await receive(ws)
        assert isinstance(info, p.CampaignInfo)
        tasks = await receive_tasks(ws)
        assert len(tasks) == slots_for("low", 8) == 2
        await send(ws, p.Result(tasks[0].id, 1, 5.0))
        with trio.fail_after(20):
            while not await server.platform.storage.sites.site_days(site.id):
                await trio.sleep(0.05)
    days = await server.platform.storage.sites.site_days(site.id)
    assert [(d.campaign_id, d.tasks) for d in days] == [(campaign_id, 1)]
    rows = await server.results(campaign_id)
    assert all(r["host"] == "" for r in rows)  # the claimed host stays what the worker said: nothing


async def test_a_forged_ticket_is_served_as_anonymous(server: LiveServer) -> None:
    site = await site_of(server, policy="campaigns", allowlist=[999], max_throttle="low")
    campaign_id = await server.create_campaign()
    await server.wait_for(campaign_id, lambda c: c["status"] in ("running", "generating"))
    forged = SiteTickets(b"not the server's").sign(site, "http://blog.example", time.time())
    async with await connect(server.ws_url) as ws:
        await send(ws, p.Hello(slots=4, client={"kind": "test", "cores": 8}, site=forged))
        info = await receive(ws)
        assert isinstance(info, p.CampaignInfo) and info.id == campaign_id  # not held to the allowlist
        assert len(await receive_tasks(ws)) == 4  # nor to the site's highest throttle
