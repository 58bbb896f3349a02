"""Accounts over HTTP: sign up, sign in and out, sessions, password change, API tokens, deletion."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import trio

from tests.conftest import LiveServer, StartServer
from tests.support.protocol_client import work

from .conftest import PASSWORD, People, Visitor, csrf_of, stamp_of, table_rows


async def send_sign_up_form(visitor: Visitor, **fields: str) -> httpx.Response:
    """Fill in the sign-up form as a person would (with its CSRF token and time stamp) for
    new@example.org and send it; `fields` replace or add form fields."""
    form = (await visitor.get("/signup")).text
    data = {"csrf": csrf_of(form), "stamp": stamp_of(form), "email": "new@example.org", "password": PASSWORD}
    return await visitor.client.post("/signup", data=data | fields)


async def test_sign_up_signs_the_new_user_in(people: People) -> None:
    alice = await people.sign_up("alice@example.org")
    page = await alice.get("/campaigns")
    assert page.status_code == 200
    assert "alice@example.org" in page.text and "Your campaigns" in page.text


async def test_passwords_are_stored_as_argon2id_hashes(people: People, console_server: LiveServer) -> None:
    await people.sign_up("alice@example.org")
    found = await console_server.platform.storage.accounts.credentials("alice@example.org")
    assert found is not None
    password_hash = found[1]
    assert password_hash is not None and password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash


async def test_only_the_hash_of_a_session_token_is_stored(people: People, console_server: LiveServer) -> None:
    await people.sign_up("alice@example.org")
    alice = await people.sign_in("alice@example.org")
    token = alice.session_cookie
    assert token
    rows = await table_rows(console_server, "web_session")
    stored = [str(value) for row in rows for value in row]
    assert not any(token in value for value in stored)  # a copy of the database opens no session
    assert hashlib.sha256(token.encode()).hexdigest() in stored


async def test_the_session_cookie_is_httponly_and_samesite_lax_and_not_secure_over_http(people: People) -> None:
    response = await send_sign_up_form(await people.anonymous(), email="a@example.org")
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "distribute_session=" in v)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in attributes


async def test_the_session_cookie_is_secure_behind_tls(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=0.0, public_url="https://compute.example.org")
    response = await send_sign_up_form(await people_on(server).anonymous(), email="a@example.org")
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


async def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(people: People) -> None:
    await people.sign_up("alice@example.org")
    visitor = await people.anonymous()
    wrong = await visitor.post("/signin", {"email": "alice@example.org", "password": "nope nope nope"}, page="/signin")
    unknown = await visitor.post("/signin", {"email": "bob@example.org", "password": PASSWORD}, page="/signin")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong e-mail address or password." in wrong.text and "Wrong e-mail address or password." in unknown.text
    assert visitor.session_cookie is None


async def test_sign_in_with_the_right_password_opens_a_session(people: People) -> None:
    await people.sign_up("alice@example.org")
    alice = await people.sign_in("alice@example.org")
    assert (await alice.get("/account")).status_code == 200


async def test_sign_in_only_follows_next_to_a_path_on_this_site(people: People) -> None:
    await people.sign_up("alice@example.org")
    for target, landing in [
        ("https://evil.example/", "/campaigns"),
        ("//evil.example/x", "/campaigns"),
        ("/\\evil.example", "/campaigns"),
        ("/account", "/account"),
    ]:
        visitor = await people.anonymous()
        response = await visitor.post(
            "/signin", {"email": "alice@example.org", "password": PASSWORD, "next": target}, page="/signin"
        )
        assert response.headers["location"] == landing, target


async def test_a_signed_in_visitor_is_sent_on_from_the_sign_in_and_sign_up_pages(people: People) -> None:
    alice = await people.sign_up("alice@example.org")
    for path in ("/signin", "/signup"):
        response = await alice.get(path)
        assert response.status_code == 302 and response.headers["location"] == "/campaigns"


async def test_sign_up_refuses_an_existing_address_a_short_password_and_a_filled_honeypot(people: People) -> None:
    await people.sign_up("alice@example.org")
    visitor = await people.anonymous()

    async def attempt(**fields: str) -> str:
        return (await send_sign_up_form(visitor, **fields)).text

    # An existing address gets the answer a new one gets (no account is revealed), but no session.
    await attempt(email="alice@example.org", password="someone else's password")
    assert visitor.session_cookie is None
    assert (
        await visitor.post("/signin", {"email": "alice@example.org", "password": PASSWORD}, page="/signin")
    ).status_code == 303
    visitor.client.cookies.clear()
    assert "at least 10 characters" in await attempt(password="short")
    assert "Sign-up refused" in await attempt(website="http://spam.example")
    assert "expired" in await attempt(stamp="1.forged")
    assert visitor.session_cookie is None


async def test_a_sign_up_sent_faster_than_a_person_types_is_refused(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=30.0)
    response = await send_sign_up_form(await people_on(server).anonymous(), email="bot@example.org")
    assert response.status_code == 400 and "quicker than a person" in response.text
    assert await server.platform.storage.user_by_email("bot@example.org") is None


async def test_sign_out_ends_the_session_on_the_server(people: People, console_server: LiveServer) -> None:
    alice = await people.sign_up("alice@example.org")
    old_cookie = alice.session_cookie
    assert old_cookie
    response = await alice.post("/signout", page="/account")
    assert response.status_code == 303
    # Replaying the old cookie (say, stolen before sign-out) no longer opens anything.
    async with httpx.AsyncClient(base_url=console_server.url, cookies={"distribute_session": old_cookie}) as thief:
        page = await thief.get("/account")
        assert page.status_code == 302 and page.headers["location"].startswith("/signin")


async def test_changing_the_password_ends_every_other_session(people: People) -> None:
    laptop = await people.sign_up("alice@example.org")
    phone = await people.sign_in("alice@example.org")
    new_password = "a much better passphrase"
    response = await laptop.post("/account/password", {"current": PASSWORD, "password": new_password}, page="/account")
    assert response.status_code == 303
    assert (await laptop.get("/account")).status_code == 200  # the browser that changed it stays signed in
    assert (await phone.get("/account")).status_code == 302
    await people.sign_in("alice@example.org", new_password)


async def test_changing_the_password_needs_the_current_one(people: People) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await alice.post(
        "/account/password", {"current": "wrong", "password": "whatever else 1"}, page="/account"
    )
    assert response.status_code == 400 and "current password is wrong" in response.text
    await people.sign_in("alice@example.org")


async def test_an_api_token_is_shown_once_works_and_stops_working_when_revoked(
    people: People, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    created = await alice.post("/account/tokens", {"name": "laptop"}, page="/account")
    assert created.status_code == 201
    token = created.text.split('id="new-token">', 1)[1].split("<", 1)[0]
    api = httpx.AsyncClient(base_url=console_server.url, headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/campaigns")).status_code == 200
    listing = (await alice.get("/account")).text
    assert "laptop" in listing and token not in listing
    token_id = listing.split('data-token-id="', 1)[1].split('"', 1)[0]
    assert (await alice.post(f"/account/tokens/{token_id}/revoke", page="/account")).status_code == 303
    assert (await api.get("/api/campaigns")).status_code == 401
    await api.aclose()


async def test_deleting_the_account_removes_its_campaigns_datasets_and_results(
    people: People, console_server: LiveServer, api_of: Any
) -> None:
    alice = await people.sign_up("alice@example.org")
    api = await api_of(alice)
    campaign_id = await api.create()
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    bob = await people.sign_up("bob@example.org")  # another user's account stays

    response = await alice.post("/account/delete", {"password": PASSWORD}, page="/account")
    assert response.status_code == 303 and alice.session_cookie is None
    storage = console_server.platform.storage
    assert await storage.user_by_email("alice@example.org") is None
    assert await storage.get_campaign(campaign_id) is None
    counts = await storage.counts(campaign_id)
    assert (counts.total, counts.results, counts.errors) == (0, 0, 0)
    assert (await api.client.get("/api/campaigns")).status_code == 401
    assert (await bob.get("/account")).status_code == 200


async def test_after_deleting_the_account_its_old_session_cookie_no_longer_signs_in(
    people: People, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    old_cookie = alice.session_cookie
    assert old_cookie
    response = await alice.post("/account/delete", {"password": PASSWORD}, page="/account")
    assert response.status_code == 303
    # Replaying the cookie (say, kept by another copy of the browser) opens nothing.
    async with httpx.AsyncClient(base_url=console_server.url, cookies={"distribute_session": old_cookie}) as thief:
        page = await thief.get("/account")
    assert page.status_code == 302 and page.headers["location"].startswith("/signin")


async def test_deleting_the_account_needs_the_password(people: People, console_server: LiveServer) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await alice.post("/account/delete", {"password": "not it"}, page="/account")
    assert response.status_code == 400 and "nothing was deleted" in response.text
    assert await console_server.platform.storage.user_by_email("alice@example.org") is not None


ENDLESS = "({main: function* () { for (var i = 0; ; i++) yield {i: i}; }})"


async def test_deleting_the_account_while_its_generator_runs_leaves_the_server_healthy(
    people: People, console_server: LiveServer, api_of: Any
) -> None:
    alice = await people.sign_up("alice@example.org")
    api = await api_of(alice)
    campaign_id = await api.create(generator=ENDLESS)
    await api.wait_for(campaign_id, lambda c: c["datasets"]["total"] > 0)
    response = await alice.post("/account/delete", {"password": PASSWORD}, page="/account")
    assert response.status_code == 303
    await trio.sleep(1.0)  # the generator's next batch finds its campaign gone
    assert (await console_server.client.get("/-/health")).status_code == 200
    assert await console_server.platform.storage.get_campaign(campaign_id) is None
    other = await console_server.create_campaign()
    assert (await console_server.wait_for(other, lambda c: c["status"] == "running"))["datasets"]["total"] == 100
