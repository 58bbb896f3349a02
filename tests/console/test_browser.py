"""The console in headless Chromium, as a campaign owner uses it.

Each flow drives real pages (Playwright's sync API on the browser thread) against a real server,
with a headless worker or a real SMTP server where the flow needs one, and writes screenshots of
what it saw into test-artifacts/ for a reviewer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from distribute.worker import run_worker
from tests.browser.conftest import BrowserThread
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_STATIC, LiveServer, StartServer, slow_seed_kernel

from .conftest import ARTIFACTS, PASSWORD, Api, Inbox, People, reset_link

pytestmark = pytest.mark.browser  # (also when tests/browser/conftest.py is not loaded as a plugin)

# The seed kernel, slowed to ~50 ms a dataset so that the live view has something to follow.
SLOW_SEED_KERNEL = slow_seed_kernel(50)

# Throws on the third dataset of the counting generator.
PICKY_KERNEL = """({
  main: function (d) {
    if (d.i === 2) throw new RangeError("two is not allowed here");
    return { i: d.i, square: d.i * d.i };
  }
})"""


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


class Owner:
    """One browser context (a person's browser) on the console; use only on the browser thread."""

    def __init__(self, browser: BrowserThread, server: LiveServer) -> None:
        self.server = server
        self.context = browser.browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def go(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def sign_up(self, email: str, password: str = PASSWORD) -> None:
        self.go("/signup")
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        self.page.fill("#password2", password)
        self.page.click("#signup-form button[type=submit]")
        self.page.wait_for_url("**/campaigns")

    def sign_in(self, email: str, password: str) -> None:
        self.go("/signin")
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        self.page.click("#signin-form button[type=submit]")
        self.page.wait_for_url("**/campaigns")

    def close(self) -> None:
        self.context.close()


async def owner_of(browser: BrowserThread, server: LiveServer) -> Owner:
    return await browser.run(Owner, browser, server)


async def on(browser: BrowserThread, fn: Callable[..., Any], *args: Any) -> Any:
    return await browser.run(fn, *args)


async def api_token(server: LiveServer, email: str) -> Api:
    import httpx

    user = await server.platform.storage.user_by_email(email)
    assert user is not None
    token = await server.platform.storage.create_token(user.id, "tests")
    return Api(httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30))


# --------------------------------------------------------------------------- the main flow


def create_by_upload(owner: Owner) -> int:
    page = owner.page
    page.click("#new-campaign")
    page.wait_for_url("**/campaigns/new")
    page.fill("#name", "Multiples of 123")
    page.fill("#description", "Finds every multiple of 123 below 10,000.")
    page.set_input_files(
        "#kernel_file", {"name": "kernel.js", "mimeType": "text/javascript", "buffer": SLOW_SEED_KERNEL.encode()}
    )
    page.set_input_files(
        "#generator_file", {"name": "generator.js", "mimeType": "text/javascript", "buffer": SEED_GENERATOR.encode()}
    )
    page.set_input_files(
        "#static_dataset_file", {"name": "static.json", "mimeType": "application/json", "buffer": SEED_STATIC.encode()}
    )
    shot(page, "new-campaign")
    page.click("#create-campaign")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    page.wait_for_function("() => Number(document.getElementById('live').dataset.updates) >= 1", timeout=10_000)
    page.evaluate("() => { window.__sameDocument = true; }")
    return int(page.url.rsplit("/", 1)[1])


def watch_to_completion(owner: Owner) -> dict[str, Any]:
    page = owner.page
    page.wait_for_function("() => document.getElementById('percent').textContent === '100 %'", timeout=60_000)
    page.wait_for_function("() => Number(document.getElementById('chart').dataset.points) >= 3", timeout=10_000)
    shot(page, "campaign-live")
    return page.evaluate(
        """() => ({
          sameDocument: window.__sameDocument === true,
          navigations: performance.getEntriesByType('navigation').length,
          points: Number(document.getElementById('chart').dataset.points),
          line: document.querySelector('#chart .line').getAttribute('d'),
          peak: document.getElementById('chart-max').textContent,
          done: document.getElementById('stat-done').textContent,
          status: document.querySelector('[data-status]').textContent,
          hosts: document.querySelector('#hosts tbody').textContent,
        })"""
    )


def download(owner: Owner, fmt: str) -> str:
    with owner.page.expect_download() as info:
        owner.page.click(f"#download-{fmt}")
    return Path(info.value.path()).read_bytes().decode()  # as sent: CSV lines end with \r\n


async def test_an_owner_uploads_a_campaign_watches_it_finish_live_and_downloads_the_results(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_up, "owner@example.org")
        await on(browser, shot, owner.page, "campaigns-empty")
        campaign_id = await on(browser, create_by_upload, owner)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_worker(console_server.url, campaign=campaign_id, host="https://lab.example"))
            seen = await on(browser, watch_to_completion, owner)
        assert seen["sameDocument"] and seen["navigations"] == 1  # updated live, never reloaded
        assert seen["points"] >= 3 and seen["line"].startswith("M")
        # The chart drew the work it followed, not a flat line at zero: a nonzero peak, and a
        # line that rises above the chart's baseline (y = 180 in its 600 by 180 view box).
        peak = re.fullmatch(r"peak (\d+(?:\.\d+)?)/s", seen["peak"])
        assert peak and float(peak[1]) > 0, seen["peak"]
        heights = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", seen["line"])]
        assert len(heights) == seen["points"] and min(heights) < 180, seen["line"]
        assert (seen["done"], seen["status"]) == ("100", "complete")
        assert "https://lab.example" in seen["hosts"]

        api = await api_token(console_server, "owner@example.org")
        from_api_json = (await api.client.get(f"/api/campaigns/{campaign_id}/results")).json()
        from_api_csv = (await api.client.get(f"/api/campaigns/{campaign_id}/results", params={"format": "csv"})).text
        await api.client.aclose()
        downloaded_json = json.loads(await on(browser, download, owner, "json"))
        downloaded_csv = await on(browser, download, owner, "csv")
        assert downloaded_json == from_api_json
        assert sorted(n for row in downloaded_json for n in row["result"]) == SEED_ANSWER
        assert downloaded_csv == from_api_csv and downloaded_csv.count("\n") == len(from_api_json) + 1

        await on(browser, owner.go, f"/campaigns/{campaign_id}/results")
        await on(browser, shot, owner.page, "results")
        await on(browser, owner.page.click, "#results-table a")
        await on(browser, shot, owner.page, "result")
        await on(browser, owner.go, "/campaigns")
        await on(browser, shot, owner.page, "campaigns")
        assert owner.errors == []
    finally:
        await on(browser, owner.close)


# --------------------------------------------------------------------------- execute


def run_on_execute_page(owner: Owner, campaign_id: int) -> list[dict[str, str]]:
    page = owner.page
    owner.go(f"/campaigns/{campaign_id}/execute")
    page.fill("#count", "4")
    page.click("#run")
    page.wait_for_function("() => document.getElementById('execute').dataset.finished", timeout=30_000)
    shot(page, "execute")
    return page.evaluate(
        """() => [...document.querySelectorAll('#exec-results tbody tr')].map((row) => ({
          dataset: row.dataset.datasetId,
          outcome: row.querySelector('[data-outcome]').dataset.outcome,
          text: row.children[2].textContent.trim(),
        }))"""
    )


async def test_the_execute_page_runs_the_kernel_in_the_sandbox_and_shows_results_and_an_error(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    await people.sign_up("owner@example.org")
    api = await api_token(console_server, "owner@example.org")
    campaign_id = await api.create(kernel=PICKY_KERNEL)
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await api.client.aclose()
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_in, "owner@example.org", PASSWORD)
        rows = await on(browser, run_on_execute_page, owner, campaign_id)
        frames = await on(browser, lambda: [f.url for f in owner.page.frames])
    finally:
        await on(browser, owner.close)
    assert [row["outcome"] for row in rows] == ["result", "result", "error", "result"]
    assert rows[3]["text"] == '{"i":3,"square":9}'
    assert rows[2]["text"].startswith("RangeError: two is not allowed here")
    assert "kernel.js:3" in rows[2]["text"]  # the stack points into the kernel as written
    assert not any("/embed/runner" in url for url in frames)  # the sandbox is gone once the run is over
    assert (await console_server.client.get(f"/api/campaigns/{campaign_id}")).status_code == 404  # not ours
    assert (await (await api_token(console_server, "owner@example.org")).campaign(campaign_id))["results"] == 0


# --------------------------------------------------------------------------- accounts


def request_reset(owner: Owner, email: str) -> None:
    owner.go("/signin")
    owner.page.click("text=Forgot your password?")
    owner.page.fill("#email", email)
    owner.page.click("#reset-form button[type=submit]")
    owner.page.wait_for_selector("#reset-sent")


def choose_password(owner: Owner, link: str, password: str) -> str:
    owner.page.goto(link)
    shot(owner.page, "reset-form")
    owner.page.fill("#password", password)
    owner.page.click("#new-password-form button[type=submit]")
    owner.page.wait_for_url("**/signin?done=reset")
    return owner.page.text_content(".notice") or ""


async def test_a_forgotten_password_is_reset_through_the_mailed_link(
    browser: BrowserThread, start_server: StartServer, smtp_inbox: Inbox, people_on: Any
) -> None:
    server = await start_server(
        signup_min_seconds=0.0, smtp_host="127.0.0.1", smtp_port=smtp_inbox.port, smtp_security="none"
    )
    await people_on(server).sign_up("forgetful@example.org")
    owner = await owner_of(browser, server)
    try:
        await on(browser, request_reset, owner, "forgetful@example.org")
        link = reset_link(await smtp_inbox.wait_for("forgetful@example.org"))
        assert urlsplit(link).netloc == urlsplit(server.url).netloc
        notice = await on(browser, choose_password, owner, link, "remembered at last")
        assert "password has been changed" in notice
        await on(browser, owner.sign_in, "forgetful@example.org", "remembered at last")
    finally:
        await on(browser, owner.close)


def sign_out_and_replay(owner: Owner, browser: BrowserThread) -> str:
    old = {c["name"]: c for c in owner.context.cookies()}["distribute_session"]
    assert old["httpOnly"] and old["sameSite"] == "Lax"
    owner.page.click("#signout")
    owner.page.wait_for_url("**/signin?done=signedout")
    assert "distribute_session" not in {c["name"] for c in owner.context.cookies()}
    thief = browser.browser.new_context()
    try:
        thief.add_cookies([old])
        page = thief.new_page()
        page.goto(owner.server.url + "/campaigns")
        return urlsplit(page.url).path
    finally:
        thief.close()


async def test_signing_out_invalidates_the_old_session_cookie(
    browser: BrowserThread, console_server: LiveServer
) -> None:
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_up, "leaving@example.org")
        landed = await on(browser, sign_out_and_replay, owner, browser)
    finally:
        await on(browser, owner.close)
    assert landed == "/signin"


# --------------------------------------------------------------------------- the other main pages


def visit_main_pages(owner: Owner) -> dict[str, str]:
    titles = {}
    for name, path in [("home", "/"), ("how-it-works", "/how-it-works"), ("benchmarks", "/benchmarks")]:
        owner.go(path)
        titles[name] = owner.page.title()
        shot(owner.page, name)
    owner.context.clear_cookies()
    for name, path in [("signin", "/signin"), ("signup", "/signup"), ("reset", "/reset")]:
        owner.go(path)
        titles[name] = owner.page.title()
        shot(owner.page, name)
    return titles


def account_with_token(owner: Owner) -> str:
    owner.go("/account")
    owner.page.fill("#token-name", "laptop")
    owner.page.click("#token-form button[type=submit]")
    owner.page.wait_for_selector("#new-token")
    owner.page.click("[data-copy='#new-token']")
    owner.page.wait_for_selector("text=Copied ✓")
    shot(owner.page, "account")
    return owner.page.evaluate("() => navigator.clipboard.readText()")


async def test_screenshots_of_the_main_pages(browser: BrowserThread, console_server: LiveServer) -> None:
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.context.grant_permissions, ["clipboard-read", "clipboard-write"])
        await on(browser, owner.sign_up, "reviewer@example.org")
        copied = await on(browser, account_with_token, owner)
        titles = await on(browser, visit_main_pages, owner)
        assert owner.errors == []
    finally:
        await on(browser, owner.close)
    assert copied.startswith("dst_")
    assert titles["home"].endswith("· distribute") and titles["signin"] == "Sign in · distribute"
    for name in ("home", "how-it-works", "benchmarks", "signin", "signup", "reset", "account"):
        assert (ARTIFACTS / f"console-{name}.png").stat().st_size > 10_000
