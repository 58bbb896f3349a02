"""CSRF, rate limits, security headers and upload limits of the console."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest
import trio

from distribute import auth
from distribute.auth import RateLimiter
from tests.conftest import LiveServer, StartServer

from .conftest import PASSWORD, Api, People, Visitor, csrf_of, stamp_of

# --------------------------------------------------------------------------- CSRF


async def campaign_of(visitor: Visitor, api_of: Any) -> tuple[Api, int]:
    api: Api = await api_of(visitor)
    campaign_id = await api.create()
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    return api, campaign_id


@pytest.mark.parametrize("token", [None, "", "forged-token-of-the-right-length-0123456789abcdef"])
async def test_deleting_a_campaign_without_the_right_csrf_token_is_refused_and_changes_nothing(
    token: str | None, people: People, api_of: Any
) -> None:
    alice = await people.sign_up("alice@example.org")
    api, campaign_id = await campaign_of(alice, api_of)
    data = {} if token is None else {"csrf": token}
    response = await alice.client.post(f"/campaigns/{campaign_id}/delete", data=data)
    assert response.status_code == 403 and "nothing was changed" in response.text
    assert (await api.campaign(campaign_id))["deleted"] is False


async def test_another_sessions_csrf_token_is_refused(people: People, api_of: Any) -> None:
    alice = await people.sign_up("alice@example.org")
    other_session = await people.sign_in("alice@example.org")
    api, campaign_id = await campaign_of(alice, api_of)
    foreign = await other_session.csrf("/campaigns")
    response = await alice.client.post(f"/campaigns/{campaign_id}/delete", data={"csrf": foreign})
    assert response.status_code == 403
    assert (await api.campaign(campaign_id))["deleted"] is False


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/account/password", {"current": PASSWORD, "password": "another long password"}),
        ("/account/tokens", {"name": "sneaky"}),
        ("/account/delete", {"password": PASSWORD}),
        ("/signout", {}),
    ],
)
async def test_account_forms_without_a_csrf_token_are_refused(
    path: str, fields: dict[str, str], people: People, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await alice.client.post(path, data=fields)
    assert response.status_code == 403
    assert (await alice.get("/account")).status_code == 200  # still signed in, same password
    assert "sneaky" not in (await alice.get("/account")).text
    await people.sign_in("alice@example.org")


async def test_creating_a_campaign_without_a_csrf_token_is_refused(people: People, console_server: LiveServer) -> None:
    alice = await people.sign_up("alice@example.org")
    files = {"kernel_file": ("k.js", b"({main: function () { return 1; }})")}
    data = {"generator_text": "({main: function () { return [1]; }})"}
    response = await alice.client.post("/campaigns/new", data=data, files=files)
    assert response.status_code == 403
    assert await console_server.platform.storage.list_campaigns() == []


async def test_signed_out_forms_need_the_double_submit_token(people: People) -> None:
    await people.sign_up("alice@example.org")
    visitor = await people.anonymous()
    token = await visitor.csrf("/signin")
    # The token without its cookie (a cross-site form cannot set our cookie) is refused.
    async with httpx.AsyncClient(base_url=visitor.server.url) as stranger:
        response = await stranger.post(
            "/signin", data={"csrf": token, "email": "alice@example.org", "password": PASSWORD}
        )
        assert response.status_code == 403 and "distribute_session" not in response.headers.get("set-cookie", "")
    wrong = await visitor.client.post(
        "/signin", data={"csrf": "x" * 43, "email": "alice@example.org", "password": PASSWORD}
    )
    assert wrong.status_code == 403


# --------------------------------------------------------------------------- rate limits


def test_the_rate_limiter_refuses_within_its_window_and_allows_again_after_it() -> None:
    now = 1000.0
    limiter = RateLimiter(limit=2, window=60.0, clock=lambda: now)
    key = "signin-email:alice@example.org"
    limiter.hit(key)
    now = 1010.0
    limiter.hit(key)
    now = 1059.0
    assert limiter.retry_after(key) == pytest.approx(1.0)  # refused: the first attempt leaves the window at 1060
    now = 1060.0
    assert limiter.retry_after(key) == 0.0  # allowed again
    limiter.hit(key)
    # The window slides: with the attempts of 1010 and 1060 in it, the next is allowed at 1070.
    assert limiter.retry_after(key) == pytest.approx(10.0)
    now = 1070.0
    assert limiter.retry_after(key) == 0.0


def test_the_rate_limiter_counts_each_key_on_its_own() -> None:
    now = 1000.0
    limiter = RateLimiter(limit=1, window=60.0, clock=lambda: now)
    limiter.hit("signin-ip:203.0.113.9")
    assert limiter.retry_after("signin-ip:203.0.113.9") == pytest.approx(60.0)
    assert limiter.retry_after("signin-ip:198.51.100.7") == 0.0
    # Several keys at once: refused while any of them is at its limit.
    assert limiter.retry_after("signin-ip:198.51.100.7", "signin-ip:203.0.113.9") == pytest.approx(60.0)


async def test_the_failed_sign_in_after_the_limit_is_refused_even_with_the_right_password(
    start_server: StartServer,
    people_on: Any,
) -> None:
    server = await start_server(signup_min_seconds=0.0, signin_limit=3)
    crowd = people_on(server)
    await crowd.sign_up("alice@example.org")
    attacker = await crowd.anonymous()
    for _ in range(3):
        response = await attacker.post("/signin", {"email": "alice@example.org", "password": "guess"}, page="/signin")
        assert response.status_code == 401
    refused = await attacker.post("/signin", {"email": "alice@example.org", "password": PASSWORD}, page="/signin")
    assert refused.status_code == 429 and "Too many attempts" in refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert attacker.session_cookie is None


async def test_a_successful_sign_in_does_not_count_against_the_limit(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=0.0, signin_limit=2)
    crowd = people_on(server)
    await crowd.sign_up("alice@example.org")
    for _ in range(4):
        await crowd.sign_in("alice@example.org")


async def test_password_reset_requests_are_rate_limited(
    start_server: StartServer, people_on: Any, tmp_path: Any
) -> None:
    server = await start_server(reset_limit=2, mail_outbox=str(tmp_path / "outbox"))
    crowd = people_on(server)
    visitor = await crowd.anonymous()
    statuses = [
        (await visitor.post("/reset", {"email": "someone@example.org"}, page="/reset")).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


async def test_sign_ups_from_one_address_are_rate_limited(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=0.0, signup_limit=2)
    crowd = people_on(server)
    await crowd.sign_up("one@example.org")
    await crowd.sign_up("two@example.org")
    with pytest.raises(AssertionError, match="Too many attempts"):
        await crowd.sign_up("three@example.org")
    assert await server.platform.storage.user_by_email("three@example.org") is None


# --------------------------------------------------------------------------- headers


def nonce_of(response: httpx.Response) -> str:
    match = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert match
    return match.group(1)


@pytest.mark.parametrize("path", ["/", "/how-it-works", "/benchmarks", "/signin", "/signup", "/reset"])
async def test_console_pages_carry_a_strict_policy_with_a_fresh_nonce(path: str, people: People) -> None:
    visitor = await people.anonymous()
    first, second = await visitor.get(path), await visitor.get(path)
    policy = first.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    assert first.headers["x-frame-options"] == "DENY"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in first.headers  # plain HTTP
    assert nonce_of(first) != nonce_of(second)
    scripts = re.findall(r"<script[^>]*>", first.text)
    assert scripts and all(f'nonce="{nonce_of(first)}"' in tag or "application/json" in tag for tag in scripts)


async def test_signed_in_pages_are_not_cached(people: People) -> None:
    alice = await people.sign_up("alice@example.org")
    for path in ("/campaigns", "/account"):
        assert (await alice.get(path)).headers["cache-control"] == "no-store"


async def test_embed_pages_may_be_framed_by_any_site(people: People, console_server: LiveServer) -> None:
    campaign = await console_server.create_campaign()
    visitor = await people.anonymous()
    for path in (f"/embed/{campaign}", "/embed/any"):
        response = await visitor.get(path)
        assert "frame-ancestors" not in response.headers.get("content-security-policy", "")
        assert "x-frame-options" not in response.headers


async def test_hsts_is_sent_only_over_tls(start_server: StartServer) -> None:
    server = await start_server(public_url="https://compute.example.org")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/signin", "/api/campaigns"):
            assert "max-age=" in (await client.get(path)).headers["strict-transport-security"]


async def test_the_reset_page_sends_no_referrer(people: People) -> None:
    visitor = await people.anonymous()
    assert (await visitor.get("/reset/some-token")).headers["referrer-policy"] == "no-referrer"


# --------------------------------------------------------------------------- uploads


async def test_an_oversized_upload_is_refused_with_a_clear_message(start_server: StartServer, people_on: Any) -> None:
    server = await start_server(signup_min_seconds=0.0, max_source_bytes=10_000)
    crowd = people_on(server)
    alice = await crowd.sign_up("alice@example.org")
    token = await alice.csrf("/campaigns/new")
    files = {"kernel_file": ("big.js", b"//" + b"x" * 200_000)}
    response = await alice.client.post("/campaigns/new", data={"csrf": token}, files=files)
    assert response.status_code == 413
    assert "Upload too large" in response.text and "MiB per file" in response.text
    assert "text/html" in response.headers["content-type"]
    assert response.headers["connection"] == "close"  # the rest of the body is still on its way
    assert await server.platform.storage.list_campaigns() == []
    with trio.fail_after(10):  # so the next request goes on a fresh connection, and is answered
        assert (await alice.client.get("/campaigns")).status_code == 200


async def test_a_file_over_the_per_file_limit_is_named_in_the_message(
    start_server: StartServer, people_on: Any
) -> None:
    server = await start_server(signup_min_seconds=0.0, max_source_bytes=10_000)
    crowd = people_on(server)
    alice = await crowd.sign_up("alice@example.org")
    token = await alice.csrf("/campaigns/new")
    data = {"csrf": token, "generator_text": "({main: function () { return [1]; }})"}
    files = {"kernel_file": ("big.js", b"//" + b"x" * 12_000)}
    response = await alice.client.post("/campaigns/new", data=data, files=files)
    assert response.status_code == 400
    assert "kernel is 12002 bytes; the limit is 10000" in response.text


async def test_the_csrf_cookie_is_httponly_and_samesite(people: People) -> None:
    visitor = await people.anonymous()
    response = await visitor.get("/signin")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("distribute_csrf=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert csrf_of(response.text) == visitor.client.cookies["distribute_csrf"]


async def test_failed_sign_ins_spread_over_many_accounts_from_one_address_are_limited_too(
    start_server: StartServer, people_on: Any
) -> None:
    server = await start_server(signup_min_seconds=0.0, signin_limit=2)
    crowd = people_on(server)
    await crowd.sign_up("alice@example.org")
    sprayer = await crowd.anonymous()
    for n in range(8):  # four times the per-account limit, each account tried once
        response = await sprayer.post("/signin", {"email": f"user{n}@example.org", "password": "guess"}, page="/signin")
        assert response.status_code == 401
    refused = await sprayer.post("/signin", {"email": "alice@example.org", "password": PASSWORD}, page="/signin")
    assert refused.status_code == 429


# --------------------------------------------------------------------------- password hashing as a cost


class CountingHasher:
    """Wraps the server's argon2 hasher (in this process) and counts its computations, and the most
    that ran at once in worker threads."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.lock = threading.Lock()
        self.calls = 0
        self.running = 0
        self.most_at_once = 0

    def _counted(self, fn: Any, *args: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.02)  # widens each computation, so that overlapping ones surely overlap
            return fn(*args)
        finally:
            with self.lock:
                self.running -= 1

    def hash(self, password: str) -> str:
        return str(self._counted(self.real.hash, password))

    def verify(self, password_hash: str, password: str) -> bool:
        return bool(self._counted(self.real.verify, password_hash, password))


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    auth._dummy_hash()  # made once per process, before counting starts
    counter = CountingHasher(auth._hasher)
    monkeypatch.setattr(auth, "_hasher", counter)
    return counter


async def signed_out_form(visitor: Visitor, page: str) -> dict[str, str]:
    return {"csrf": csrf_of((await visitor.get(page)).text)}


def comparable(html: str) -> str:
    """A page without what differs on every request anyway: CSRF tokens and CSP nonces."""
    return re.sub(r'(name="csrf" value|nonce)="[^"]*"', r'\1=""', html)


async def test_concurrent_sign_ins_never_run_more_argon2_hashes_at_once_than_the_limit(
    start_server: StartServer, people_on: Any, hashes: CountingHasher
) -> None:
    server = await start_server(signup_min_seconds=0.0, signin_limit=50)
    crowd = people_on(server)
    visitors = [await crowd.anonymous() for _ in range(12)]
    forms = [await signed_out_form(visitor, "/signin") for visitor in visitors]
    statuses: list[int] = []

    async def sign_in(visitor: Visitor, form: dict[str, str], n: int) -> None:
        data = form | {"email": f"user{n}@example.org", "password": "a wrong password"}
        statuses.append((await visitor.client.post("/signin", data=data)).status_code)

    async with trio.open_nursery() as nursery:
        for n, (visitor, form) in enumerate(zip(visitors, forms, strict=True)):
            nursery.start_soon(sign_in, visitor, form, n)
    assert statuses == [401] * 12
    assert hashes.calls == 12
    assert hashes.most_at_once <= auth.HASH_CONCURRENCY <= 4


async def test_a_flood_of_sign_ins_past_the_limit_is_refused_without_computing_hashes(
    start_server: StartServer, people_on: Any, hashes: CountingHasher
) -> None:
    server = await start_server(signup_min_seconds=0.0, signin_limit=2)
    crowd = people_on(server)
    await crowd.sign_up("alice@example.org")
    before = hashes.calls
    attackers = [await crowd.anonymous() for _ in range(10)]
    forms = [await signed_out_form(attacker, "/signin") for attacker in attackers]
    statuses: list[int] = []

    async def guess(attacker: Visitor, form: dict[str, str]) -> None:
        data = form | {"email": "alice@example.org", "password": "a guessed password"}
        statuses.append((await attacker.client.post("/signin", data=data)).status_code)

    async with trio.open_nursery() as nursery:  # all at once: none waits for another's hash
        for attacker, form in zip(attackers, forms, strict=True):
            nursery.start_soon(guess, attacker, form)
    assert sorted(statuses) == [401, 401] + [429] * 8
    assert hashes.calls - before == 2  # the refused ones cost no hash
    later = await crowd.anonymous()
    refused = await later.post("/signin", {"email": "alice@example.org", "password": PASSWORD}, page="/signin")
    assert refused.status_code == 429 and hashes.calls - before == 2


async def test_sign_up_of_an_existing_and_a_new_address_answer_alike_and_both_hash(
    people: People, console_server: LiveServer, hashes: CountingHasher
) -> None:
    await people.sign_up("alice@example.org")
    answers = []
    for address in ("alice@example.org", "bob@example.org"):
        visitor = await people.anonymous()
        form = (await visitor.get("/signup")).text
        data = {"csrf": csrf_of(form), "stamp": stamp_of(form), "email": address, "password": "a password for x"}
        before = hashes.calls
        response = await visitor.client.post("/signup", data=data)
        assert hashes.calls - before == 1, address
        answers.append((response.status_code, response.headers.get("location"), comparable(response.text)))
    assert answers[0] == answers[1]
    found = await console_server.platform.storage.accounts.credentials("alice@example.org")
    assert found is not None and auth.check_password(found[1], PASSWORD)  # alice's password is untouched


async def test_reset_of_a_known_and_an_unknown_address_answer_alike_and_both_hash(
    people: People, hashes: CountingHasher
) -> None:
    await people.sign_up("alice@example.org")
    answers = []
    for address in ("alice@example.org", "nobody@example.org"):
        visitor = await people.anonymous()
        before = hashes.calls
        response = await visitor.post("/reset", {"email": address}, page="/reset")
        assert hashes.calls - before == 1, address
        answers.append((response.status_code, comparable(response.text.replace(address, "ADDRESS"))))
    assert answers[0] == answers[1]
