"""Authorization: a user only ever sees or changes their own campaigns and results.

The matrix sends every route that names a campaign (console pages, console actions, the JSON API)
another user's campaign and result ids, as a signed-in intruder with valid CSRF tokens and a valid
API token, and checks the answer is exactly 404 with none of the campaign's data in the body, and that
nothing changed: another user's campaign is indistinguishable from a missing one. (Not 403: that is
also what a refused CSRF token gets, so it would not show that the owner check ran.) A guard test
fails when a route that takes a campaign is added without being covered here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.support.protocol_client import work

from .conftest import Api, People, Visitor

SECRET_KERNEL = "({main: function (d) { return 'SECRET-RESULT-' + d.secret; }}) // SECRET-KERNEL-MARK"
SECRET_GENERATOR = "({main: function () { var a = []; for (var i = 0; i < 5; i++) a.push({secret: 'SECRET-DATASET-' + i}); return a; }})"
SECRET_NAME = "SECRET-CAMPAIGN-NAME"
MARKERS = ("SECRET-RESULT", "SECRET-KERNEL-MARK", "SECRET-DATASET", SECRET_NAME)

# (method, path template, who): every route that takes a campaign (or one of its results).
CONSOLE_ROUTES = [
    ("GET", "/campaigns/{c}"),
    ("GET", "/campaigns/{c}/live"),
    ("GET", "/campaigns/{c}/results"),
    ("GET", "/campaigns/{c}/results/{r}"),
    ("GET", "/campaigns/{c}/download/json"),
    ("GET", "/campaigns/{c}/download/csv"),
    ("GET", "/campaigns/{c}/download/msgpack"),
    ("GET", "/campaigns/{c}/execute"),
    ("GET", "/campaigns/{c}/execute.json"),
    ("POST", "/campaigns/{c}/reset"),
    ("POST", "/campaigns/{c}/delete"),
    ("POST", "/campaigns/{c}/restore"),
    ("POST", "/campaigns/{c}/resume"),
    ("POST", "/campaigns/{c}/pause"),
    ("POST", "/campaigns/{c}/cancel"),
    ("POST", "/campaigns/{c}/close"),
    ("POST", "/campaigns/{c}/kernel"),
]
API_ROUTES = [
    ("GET", "/api/campaigns/{c}"),
    ("GET", "/api/campaigns/{c}/results"),
    ("GET", "/api/campaigns/{c}/events"),
    ("POST", "/api/campaigns/{c}/reset"),
    ("DELETE", "/api/campaigns/{c}"),
    ("POST", "/api/campaigns/{c}/restore"),
    ("POST", "/api/campaigns/{c}/resume"),
    ("POST", "/api/campaigns/{c}/pause"),
    ("POST", "/api/campaigns/{c}/cancel"),
    ("POST", "/api/campaigns/{c}/close"),
    ("POST", "/api/campaigns/{c}/datasets"),
    ("POST", "/api/campaigns/{c}/kernel"),
]
# Admin routes: a 404 to everyone who is not an admin (signed out, a plain user, the campaign's own owner).
ADMIN_CONSOLE_ROUTES = [
    ("GET", "/admin"),
    ("GET", "/admin/users"),
    ("GET", "/admin/workers"),
    ("GET", "/admin/quotas"),
    ("POST", "/admin/campaigns/{c}/approve"),
    ("POST", "/admin/campaigns/{c}/reject"),
]
ADMIN_API_ROUTES = [
    ("GET", "/api/admin/campaigns"),
    ("POST", "/api/admin/campaigns/{c}/approve"),
    ("POST", "/api/admin/campaigns/{c}/reject"),
]
ADMIN_ROUTES = ADMIN_CONSOLE_ROUTES + ADMIN_API_ROUTES
# Public by design: the consent card volunteers see shows a campaign's name and description.
# The card and the state it shows are public: they say no more than the card itself.
# A campaign's leaderboard is public too: names only of volunteers who chose it, the rest as a count.
PUBLIC = {
    "/embed/<int:campaign_id>",
    "/embed/<int:campaign_id>/state",
    "/leaderboard/campaigns/<int:campaign_id>",
    "/leaderboard/campaigns/<int:campaign_id>.json",
}


def template_of(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: {"campaign_id": "{c}", "result_id": "{r}"}.get(m[1], "*"), rule)


async def test_the_matrix_covers_every_route_that_takes_a_campaign(console_server: LiveServer) -> None:
    from distribute.app import create_app

    app = create_app(console_server.platform)
    routes = set()
    for rule in app.url_map.iter_rules():
        if "campaign_id" in rule.arguments and rule.rule not in PUBLIC:
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((method, template_of(rule.rule)))
    owners = {(m, re.sub(r"/download/\w+$", "/download/*", p)) for m, p in CONSOLE_ROUTES + API_ROUTES}
    assert routes == owners | {(m, p) for m, p in ADMIN_ROUTES if "{c}" in p}


async def test_the_matrix_covers_every_admin_route(console_server: LiveServer) -> None:
    from distribute.app import create_app

    app = create_app(console_server.platform)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/admin", "/api/admin")):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((method, template_of(rule.rule)))
    assert routes == set(ADMIN_ROUTES)


@pytest.fixture
async def victim(people: People, api_of: Any, console_server: LiveServer) -> dict[str, Any]:
    """Alice's campaign with results; what an intruder must never see or change."""
    alice = await people.sign_up("alice@example.org")
    api: Api = await api_of(alice)
    files = {"kernel": ("k.js", SECRET_KERNEL.encode()), "generator": ("g.js", SECRET_GENERATOR.encode())}
    response = await api.client.post("/api/campaigns", files=files, data={"name": SECRET_NAME})
    campaign_id = response.json()["id"]
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await work(console_server.ws_url, lambda d: "SECRET-RESULT-" + d["secret"], campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    page = (await alice.get(f"/campaigns/{campaign_id}/results")).text
    result_id = int(re.search(r'data-result-id="(\d+)"', page)[1])  # type: ignore[index]
    return {"alice": alice, "api": api, "campaign": campaign_id, "result": result_id}


@pytest.fixture
async def intruder(people: People, api_of: Any, victim: dict[str, Any]) -> tuple[Visitor, Api]:
    mallory = await people.sign_up("mallory@example.org")
    api = await api_of(mallory)
    await api.create()  # an intruder with a campaign and results of their own
    return mallory, api


async def assert_untouched(victim: dict[str, Any]) -> None:
    campaign = await victim["api"].campaign(victim["campaign"])
    assert campaign["deleted"] is False and campaign["status"] == "complete"
    assert campaign["datasets"]["done"] == 5 and campaign["results"] == 5


@pytest.mark.parametrize(("method", "template"), CONSOLE_ROUTES)
async def test_console_routes_refuse_another_users_campaign(
    method: str, template: str, victim: dict[str, Any], intruder: tuple[Visitor, Api]
) -> None:
    mallory, _ = intruder
    path = template.format(c=victim["campaign"], r=victim["result"])
    if method == "GET":
        response = await mallory.get(path)
    else:
        response = await mallory.post(path, page="/campaigns")  # with Mallory's own valid CSRF token
    assert response.status_code == 404, (path, response.status_code)
    assert not any(marker in response.text for marker in MARKERS), path
    await assert_untouched(victim)


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
async def test_api_routes_refuse_another_users_campaign(
    method: str, template: str, victim: dict[str, Any], intruder: tuple[Visitor, Api]
) -> None:
    _, api = intruder
    path = template.format(c=victim["campaign"])
    response = await api.client.request(method, path)
    assert response.status_code == 404, (path, response.status_code)
    assert not any(marker in response.text for marker in MARKERS), path
    await assert_untouched(victim)


async def test_another_users_result_is_not_found_under_ones_own_campaign(
    victim: dict[str, Any], intruder: tuple[Visitor, Api]
) -> None:
    mallory, api = intruder
    own = (await api.client.get("/api/campaigns")).json()["campaigns"][0]["id"]
    response = await mallory.get(f"/campaigns/{own}/results/{victim['result']}")
    assert response.status_code == 404
    assert not any(marker in response.text for marker in MARKERS)


async def test_lists_show_only_ones_own_campaigns(victim: dict[str, Any], intruder: tuple[Visitor, Api]) -> None:
    mallory, api = intruder
    await mallory.post(f"/campaigns/{victim['campaign']}/delete", page="/campaigns")
    page = await mallory.get("/campaigns")
    listed = (await api.client.get("/api/campaigns")).json()["campaigns"]
    assert page.status_code == 200 and SECRET_NAME not in page.text
    assert [c["id"] for c in listed] != [] and victim["campaign"] not in [c["id"] for c in listed]


async def test_another_users_api_token_cannot_be_revoked(
    victim: dict[str, Any], intruder: tuple[Visitor, Api], console_server: LiveServer
) -> None:
    mallory, _ = intruder
    alice_tokens = (await victim["alice"].get("/account")).text
    token_id = re.search(r'data-token-id="(\d+)"', alice_tokens)[1]  # type: ignore[index]
    response = await mallory.post(f"/account/tokens/{token_id}/revoke", page="/account")
    assert response.status_code == 404
    assert (await victim["api"].client.get("/api/campaigns")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/campaigns",
        "/campaigns/new",
        "/account",
        "/campaigns/1",
        "/campaigns/1/results",
        "/campaigns/1/live",
        "/campaigns/1/download/json",
        "/campaigns/1/execute.json",
    ],
)
async def test_signed_out_visitors_are_sent_to_sign_in(path: str, people: People, victim: dict[str, Any]) -> None:
    visitor = await people.anonymous()
    response = await visitor.get(path)
    assert response.status_code in (302, 401)
    if response.status_code == 302:
        assert response.headers["location"].startswith("/signin")
    assert not any(marker in response.text for marker in MARKERS)


# --------------------------------------------------------------------------- site owners

SECRET_ORIGIN = "https://secret-site-of-alice.example"
# Every route that takes a site: another user's site is a 404, like a missing one.
SITE_ROUTES = [
    ("GET", "/sites/{s}"),
    ("POST", "/sites/{s}/verify"),
    ("POST", "/sites/{s}/policy"),
    ("POST", "/sites/{s}/delete"),
]


async def test_the_matrix_covers_every_route_that_takes_a_site(console_server: LiveServer) -> None:
    from distribute.app import create_app

    app = create_app(console_server.platform)
    routes = {
        (method, re.sub(r"<(?:\w+:)?site_id>", "{s}", rule.rule))
        for rule in app.url_map.iter_rules()
        if "site_id" in rule.arguments
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(SITE_ROUTES)


@pytest.fixture
async def site_victim(people: People, console_server: LiveServer) -> dict[str, Any]:
    """Alice's site: its origin and key are what an intruder must never see, and it must never change."""
    alice = await people.sign_up("alice-site@example.org")
    response = await alice.post("/sites", {"origin": SECRET_ORIGIN}, page="/sites")
    site_id = int(re.search(r"/sites/(\d+)", response.headers["location"])[1])  # type: ignore[index]
    site = await console_server.platform.storage.sites.site(site_id)
    assert site is not None
    return {"alice": alice, "site": site}


async def assert_site_untouched(server: LiveServer, site: Any) -> None:
    assert await server.platform.storage.sites.site(site.id) == site


@pytest.mark.parametrize(("method", "template"), SITE_ROUTES)
@pytest.mark.parametrize("who", ["campaign owner", "site owner", "volunteer"])
async def test_site_routes_refuse_another_users_site(
    method: str,
    template: str,
    who: str,
    site_victim: dict[str, Any],
    intruder: tuple[Visitor, Api],
    people: People,
    console_server: LiveServer,
) -> None:
    site = site_victim["site"]
    if who == "campaign owner":
        mallory, _ = intruder
    else:  # a site owner with a site of their own, or a volunteer's account with nothing
        mallory = await people.sign_up(f"{who.replace(' ', '-')}@example.org")
        if who == "site owner":
            await mallory.post("/sites", {"origin": "https://mallory.example"}, page="/sites")
    path = template.format(s=site.id)
    data = {"policy": "campaigns", "allowlist": "1", "max_throttle": "low"}
    response = await (mallory.get(path) if method == "GET" else mallory.post(path, data, page="/sites"))
    assert response.status_code == 404, (path, response.status_code)
    assert SECRET_ORIGIN not in response.text and site.key not in response.text and site.token not in response.text
    await assert_site_untouched(console_server, site)


async def test_the_site_list_shows_only_ones_own_sites(
    site_victim: dict[str, Any], intruder: tuple[Visitor, Api]
) -> None:
    mallory, _ = intruder
    page = await mallory.get("/sites")
    assert page.status_code == 200 and SECRET_ORIGIN not in page.text
    assert SECRET_ORIGIN in (await site_victim["alice"].get("/sites")).text


async def test_a_site_owner_cannot_reach_another_users_campaign(
    site_victim: dict[str, Any], victim: dict[str, Any], console_server: LiveServer
) -> None:
    alice = site_victim["alice"]  # a site owner with no campaign of her own
    response = await alice.get(f"/campaigns/{victim['campaign']}")
    assert response.status_code == 404 and not any(marker in response.text for marker in MARKERS)


@pytest.mark.parametrize("path", ["/sites", "/sites/1"])
async def test_signed_out_visitors_are_sent_to_sign_in_from_site_pages(
    path: str, people: People, site_victim: dict[str, Any]
) -> None:
    visitor = await people.anonymous()
    response = await visitor.get(path)
    assert response.status_code in (302, 401) and SECRET_ORIGIN not in response.text


# --------------------------------------------------------------------------- admins' routes, and admins


@pytest.fixture
async def admin(people: People, api_of: Any, console_server: LiveServer) -> tuple[Visitor, Api]:
    """An admin: signed in to the console, and with an API token."""
    visitor = await people.sign_up("operator@example.org")
    user = await console_server.platform.storage.user_by_email(visitor.email)
    assert user is not None
    await console_server.platform.storage.set_admin(user.id, True)
    return visitor, await api_of(visitor)


async def request_as(who: Visitor | Api, method: str, path: str) -> Any:
    """The request with a reason (for a rejection) and, in the console, a valid CSRF token of the caller's."""
    if isinstance(who, Api):
        return await who.client.request(method, path, json={"reason": "not yours to judge"})
    if method == "GET":
        return await who.get(path)
    page = "/campaigns" if who.session_cookie else "/signin"
    return await who.post(path, {"reason": "not yours to judge"}, page=page)


@pytest.mark.parametrize("who", ["signed out", "another user", "the owner"])
@pytest.mark.parametrize(("method", "template"), ADMIN_ROUTES)
async def test_admin_routes_are_not_found_for_everyone_but_admins(
    method: str, template: str, who: str, victim: dict[str, Any], intruder: tuple[Visitor, Api], people: People
) -> None:
    mallory, mallory_api = intruder
    api = template.startswith("/api/")
    caller: Visitor | Api = {
        "signed out": await people.anonymous(),
        "another user": mallory_api if api else mallory,
        "the owner": victim["api"] if api else victim["alice"],
    }[who]
    if api and who == "signed out":
        response = await caller.client.request(method, template.format(c=victim["campaign"]))  # type: ignore[union-attr]
        assert response.status_code == 401  # the API names no route to a caller without a token
    else:
        response = await request_as(caller, method, template.format(c=victim["campaign"]))
        assert response.status_code == 404, (who, template, response.status_code)
    assert not any(marker in response.text for marker in MARKERS)
    await assert_untouched(victim)
    assert (await victim["api"].campaign(victim["campaign"]))["review"] == {"state": "approved", "reason": ""}


@pytest.mark.parametrize(("method", "template"), ADMIN_ROUTES)
async def test_an_admin_reaches_every_admin_route(
    method: str, template: str, victim: dict[str, Any], admin: tuple[Visitor, Api]
) -> None:
    visitor, api = admin
    caller: Visitor | Api = api if template.startswith("/api/") else visitor
    response = await request_as(caller, method, template.format(c=victim["campaign"]))
    assert response.status_code in (200, 303), (template, response.status_code)


@pytest.mark.parametrize(("method", "template"), CONSOLE_ROUTES)
async def test_an_admin_has_no_owners_standing_on_the_console(
    method: str, template: str, victim: dict[str, Any], admin: tuple[Visitor, Api]
) -> None:
    visitor, _ = admin
    path = template.format(c=victim["campaign"], r=victim["result"])
    response = await visitor.get(path) if method == "GET" else await visitor.post(path, page="/campaigns")
    assert response.status_code == 404, (path, response.status_code)
    assert not any(marker in response.text for marker in MARKERS), path
    await assert_untouched(victim)


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
async def test_an_admin_has_no_owners_standing_in_the_api(
    method: str, template: str, victim: dict[str, Any], admin: tuple[Visitor, Api]
) -> None:
    _, api = admin
    response = await api.client.request(method, template.format(c=victim["campaign"]))
    assert response.status_code == 404, (template, response.status_code)
    assert not any(marker in response.text for marker in MARKERS), template
    await assert_untouched(victim)
