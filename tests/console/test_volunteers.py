"""Volunteers' credit over HTTP: the card's credit route, claim codes, the volunteer page, leaderboards,
and who may see what (a volunteer sees only their own credit; no route lists identities)."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from distribute.models import Site
from distribute.volunteers import claim_code
from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import work

from .conftest import People, Visitor

ALICE = "a1" * 16
BOB = "b2" * 16
COMPUTE_KERNEL = "({main: function (d) { return d.i; }})"


def generator(n: int) -> str:
    return f"({{main: function () {{ var a = []; for (var i = 0; i < {n}; i++) a.push({{i: i}}); return a; }}}})"


async def give(server: LiveServer, identity: str, datasets: int, host: str = "https://news.example") -> int:
    """A campaign of `datasets` datasets, all computed by a worker that sends `identity`."""
    campaign = await server.create_campaign(kernel=COMPUTE_KERNEL, generator=generator(datasets), static="")
    await server.wait_for(campaign, lambda c: c["status"] == "running")
    client = {"kind": "test", "id": identity, "host": host}
    await work(server.ws_url, lambda d: d["i"], campaign=campaign, client=client)
    await server.wait_complete(campaign)
    return campaign


async def stored_seconds(server: LiveServer, campaign: int) -> float:
    """The compute time of the campaign's results, as the results API reports it."""
    rows = await server.results(campaign)
    return float(sum(row["compute_ms"] for row in rows)) / 1000.0


async def credit_of(server: LiveServer, identity: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post("/embed/credit", json={"identity": identity})


async def test_the_credit_route_gives_an_identitys_total_and_nothing_else(console_server: LiveServer) -> None:
    campaign = await give(console_server, ALICE, 4)
    await give(console_server, BOB, 2)
    response = await credit_of(console_server, ALICE)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"seconds", "campaigns"}  # no identities, no campaign list
    assert body == {"seconds": round(await stored_seconds(console_server, campaign), 6), "campaigns": 1}
    assert BOB not in response.text and ALICE not in response.text


@pytest.mark.parametrize("identity", ["", "A1" * 16, "a1" * 15, "ip:127.0.0.1", 12, None])
async def test_the_credit_route_refuses_anything_but_a_broker_identity(
    console_server: LiveServer, identity: Any
) -> None:
    assert (await credit_of(console_server, identity)).status_code == 400


async def test_the_credit_route_is_rate_limited_per_address(start_server: StartServer) -> None:
    server = await start_server(credit_limit=3)
    answers = [(await credit_of(server, ALICE)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]


async def claim_code_of(server: LiveServer, identity: str) -> str:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/embed/claim-code", json={"identity": identity})
    assert response.status_code == 200
    assert response.json()["url"].endswith("/volunteer")
    code: str = response.json()["code"]
    return code


def total_on(page: str) -> float:
    return float(re.search(r'id="credit-total" data-seconds="([0-9.e+-]+)"', page)[1])  # type: ignore[index]


async def test_a_claimed_browsers_credit_adds_up_on_the_volunteer_page(
    console_server: LiveServer, people: People
) -> None:
    first = await give(console_server, ALICE, 3)
    second = await give(console_server, BOB, 2)
    ada = await people.sign_up("ada@example.org")
    for identity in (ALICE, BOB):
        code = await claim_code_of(console_server, identity)
        response = await ada.post("/volunteer/claim", {"code": code}, page="/volunteer")
        assert response.status_code == 200, response.text
    page = (await ada.get("/volunteer")).text
    expected = await stored_seconds(console_server, first) + await stored_seconds(console_server, second)
    assert expected > 0 and total_on(page) == pytest.approx(expected)
    assert page.count("data-campaign-id=") == 2


async def test_a_forged_or_expired_claim_code_is_refused(console_server: LiveServer, people: People) -> None:
    await give(console_server, ALICE, 2)
    ada = await people.sign_up("ada@example.org")
    forged = claim_code(b"not the server's secret", ALICE, 2e9)
    secret = await console_server.platform.storage.accounts.secret()
    expired = claim_code(secret, ALICE, 1e9)
    for code in (forged, expired, "garbage"):
        response = await ada.post("/volunteer/claim", {"code": code}, page="/volunteer")
        assert response.status_code == 400
    assert total_on((await ada.get("/volunteer")).text) == 0.0


async def test_a_volunteer_cannot_take_or_see_another_volunteers_credit(
    console_server: LiveServer, people: People
) -> None:
    await give(console_server, ALICE, 3)
    ada = await people.sign_up("ada@example.org")
    code = await claim_code_of(console_server, ALICE)
    assert (await ada.post("/volunteer/claim", {"code": code}, page="/volunteer")).status_code == 200
    mallory = await people.sign_up("mallory@example.org")
    response = await mallory.post("/volunteer/claim", {"code": code}, page="/volunteer")  # a stolen code
    assert response.status_code == 409
    assert total_on((await mallory.get("/volunteer")).text) == 0.0
    assert total_on((await ada.get("/volunteer")).text) > 0


async def test_the_volunteer_page_needs_a_sign_in(console_server: LiveServer, people: People) -> None:
    visitor: Visitor = await people.anonymous()
    response = await visitor.get("/volunteer")
    assert response.status_code == 302 and response.headers["location"].startswith("/signin")


async def board(server: LiveServer, campaign: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get(f"/leaderboard/campaigns/{campaign}.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def test_a_leaderboard_counts_anonymous_volunteers_and_names_only_those_who_chose_it(
    console_server: LiveServer, people: People
) -> None:
    campaign = await console_server.create_campaign(kernel=COMPUTE_KERNEL, generator=generator(6), static="")
    await console_server.wait_for(campaign, lambda c: c["status"] == "running")
    for identity in (ALICE, BOB):
        client = {"kind": "test", "id": identity, "host": "https://news.example"}
        await work(console_server.ws_url, lambda d: d["i"], campaign=campaign, client=client, max_tasks=3, slots=1)
    await console_server.wait_complete(campaign)
    total = await stored_seconds(console_server, campaign)
    anonymous = await board(console_server, campaign)
    assert anonymous["seconds"] == round(total, 6)
    assert anonymous["named"] == [] and anonymous["anonymous"]["volunteers"] == 2
    assert ALICE not in str(anonymous) and BOB not in str(anonymous)

    ada = await people.sign_up("ada@example.org")
    await ada.post("/account/name", {"display_name": "Ada L."}, page="/account")
    await ada.post("/volunteer/claim", {"code": await claim_code_of(console_server, ALICE)}, page="/volunteer")
    assert (await board(console_server, campaign))["named"] == []  # claimed, but not chosen to be listed
    await ada.post("/volunteer/listing", {"listed": "on"}, page="/volunteer")
    named = await board(console_server, campaign)
    alice_seconds = (await console_server.platform.storage.credit.credit([ALICE])).seconds
    assert named["named"] == [{"name": "Ada L.", "seconds": round(alice_seconds, 6)}]
    assert named["anonymous"]["volunteers"] == 1
    page = (await ada.get(f"/leaderboard/campaigns/{campaign}")).text
    assert "Ada L." in page and 'data-volunteers="1"' in page


NEWS = "https://news.example"


async def news_site(server: LiveServer, people: People, verified: bool = True) -> Site:
    """A site registered by its owner for NEWS (verified: the owner proved control of the origin)."""
    await people.sign_up("editor@example.org")
    owner = await server.platform.storage.user_by_email("editor@example.org")
    assert owner is not None
    site = await server.platform.storage.sites.create_site(owner.id, NEWS, "news-site-key", "token")
    if verified:
        await server.platform.storage.sites.set_site_verified(site.id)
    return site


async def ticket_of(server: LiveServer, site: Site) -> str:
    """The ticket the site's broker page carries when a page of the site's origin frames it."""
    page = await server.client.get("/embed/any", params={"site": site.key}, headers={"Referer": f"{NEWS}/story"})
    found = re.search(r'data-site="([^"]+)"', page.text)
    assert found, "the broker page gave no ticket"
    return html.unescape(found[1])


async def site_board(server: LiveServer, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.get("/leaderboard/sites.json", params={"site": key})


async def test_a_sites_leaderboard_counts_only_results_its_broker_page_vouched_for(
    console_server: LiveServer, people: People
) -> None:
    site = await news_site(console_server, people)
    campaign = await console_server.create_campaign(kernel=COMPUTE_KERNEL, generator=generator(6), static="")
    await console_server.wait_for(campaign, lambda c: c["status"] == "running")
    client = {"kind": "test", "id": ALICE, "host": NEWS}
    ticket = await ticket_of(console_server, site)
    await work(
        console_server.ws_url, lambda d: d["i"], campaign=campaign, client=client, max_tasks=3, slots=1, site=ticket
    )
    claimer = {"kind": "test", "id": BOB, "host": NEWS}  # claims the site's origin, without its broker page
    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign, client=claimer, max_tasks=3, slots=1)
    await console_server.wait_complete(campaign)
    alice = (await console_server.platform.storage.credit.credit([ALICE])).seconds
    assert alice < await stored_seconds(console_server, campaign)  # Bob's results hold compute time too
    response = await site_board(console_server, site.key)
    assert response.status_code == 200
    body = response.json()
    assert (body["origin"], body["seconds"], body["anonymous"]["volunteers"]) == (NEWS, round(alice, 6), 1)


async def test_a_sites_leaderboard_page_is_titled_with_the_sites_origin(
    console_server: LiveServer, people: People
) -> None:
    site = await news_site(console_server, people)
    response = await console_server.client.get("/leaderboard/sites", params={"site": site.key})
    assert response.status_code == 200
    assert re.search(rf"<h1>Leaderboard: <span[^>]*>{re.escape(NEWS)}</span></h1>", response.text)


@pytest.mark.parametrize("path", ["/leaderboard/sites.json", "/leaderboard/sites"])
async def test_a_site_leaderboard_is_not_found_for_an_unknown_key_or_an_unverified_site(
    console_server: LiveServer, people: People, path: str
) -> None:
    site = await news_site(console_server, people, verified=False)
    for params in ({"site": site.key}, {"site": "no-such-key"}, {"site": ""}, {"host": NEWS}):
        response = await console_server.client.get(path, params=params)
        assert response.status_code == 404, params


async def test_a_verified_sites_dashboard_links_to_its_public_leaderboard(
    console_server: LiveServer, people: People
) -> None:
    editor = await people.sign_up("owner@example.org")
    owner = await console_server.platform.storage.user_by_email("owner@example.org")
    assert owner is not None
    storage = console_server.platform.storage.sites
    site = await storage.create_site(owner.id, NEWS, "news-site-key", "token")
    link = f'href="/leaderboard/sites?site={site.key}"'
    assert link not in (await editor.get(f"/sites/{site.id}")).text  # unverified: it has no board
    await storage.set_site_verified(site.id)
    assert link in (await editor.get(f"/sites/{site.id}")).text
