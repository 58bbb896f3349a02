"""Accessibility and small screens, checked in Chromium on every page a person reads.

- axe-core (the npm package embed/ installs as a development dependency) is injected into every
  console page, /api/docs and the embed card (before Contribute and while it runs); no violation of
  impact "serious" or "critical" may remain. A failure lists each one as page, rule id, impact,
  target selector and what to fix.
- At 375 x 740 (a small phone) no console page is wider than the screen.
- The card and the campaign form work with the keyboard alone.

To check a new page, add it to PUBLIC_PAGES, OWNER_PAGES or ADMIN_PAGES; `test_every_get_route_of_the_console_is_checked`
fails until every GET route of distribute/console/ is in one of them or in NOT_PAGES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from distribute.models import Review, Verdicts
from tests.browser.conftest import BrowserThread, Embedding, busy_kernel
from tests.conftest import LiveServer

from .conftest import COUNTING_KERNEL, PASSWORD, FailingCampaign, People, counting_generator

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
AXE_SOURCE = REPO / "embed" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class Page:
    """A page to check: its route as the console declares it, and the concrete path to open.

    `path` may name {campaign} (a finished campaign with results and kernel errors), {result} (one of
    its results), {reset} (a valid password-reset token), {verify} (an e-mail verification token), {site}
    and {site_key} (the id and public key of a verified site credited with the campaign's results).
    `ready` is a selector to wait for when the page renders itself after loading."""

    route: str
    path: str
    ready: str = ""


# Pages anybody can open (visited signed out).
PUBLIC_PAGES = [
    Page("/", "/"),
    Page("/how-it-works", "/how-it-works"),
    Page("/benchmarks", "/benchmarks"),
    Page("/signin", "/signin"),
    Page("/signup", "/signup"),
    Page("/reset", "/reset"),
    Page("/reset/<token>", "/reset/{reset}"),
    Page("/verify/<token>", "/verify/{verify}"),
    Page("/api/docs", "/api/docs", ready=".swagger-ui .opblock"),
    Page("/leaderboard/campaigns/<int:campaign_id>", "/leaderboard/campaigns/{campaign}"),
    Page("/leaderboard/sites", "/leaderboard/sites?site={site_key}"),  # the verified site's, with its results
]

# Pages of a signed-in owner of a finished campaign with results and kernel errors.
OWNER_PAGES = [
    Page("/campaigns", "/campaigns"),
    Page("/campaigns/new", "/campaigns/new"),
    Page("/campaigns/<int:campaign_id>", "/campaigns/{campaign}"),
    Page("/campaigns/<int:campaign_id>/results", "/campaigns/{campaign}/results"),
    Page("/campaigns/<int:campaign_id>/results/<int:result_id>", "/campaigns/{campaign}/results/{result}"),
    Page("/campaigns/<int:campaign_id>/execute", "/campaigns/{campaign}/execute"),
    Page("/account", "/account"),
    Page("/volunteer", "/volunteer"),
    Page("/sites", "/sites"),
    Page("/sites/<int:site_id>", "/sites/{site}"),  # a verified site whose visitors computed the campaign
]

# Admin pages: the owner above is made an admin for them, with their campaign awaiting review.
ADMIN_PAGES = [
    Page("/admin", "/admin"),
    Page("/admin/users", "/admin/users"),
    Page("/admin/workers", "/admin/workers"),
    Page("/admin/quotas", "/admin/quotas"),
]

# GET routes of the console that are not pages a person reads, and why.
NOT_PAGES = {
    "/benchmarks/files/<path:name>": "the plots shown on /benchmarks (images)",
    "/campaigns/<int:campaign_id>/live": "the campaign page's event stream",
    "/campaigns/<int:campaign_id>/download/<fmt>": "result files",
    "/campaigns/<int:campaign_id>/execute.json": "the data the execute page loads",
}

_ROUTE = re.compile(r"@blueprint\.(get|route)\(\s*\"([^\"]+)\"([^)]*)\)")


def console_get_routes() -> set[str]:
    """Every GET route declared in distribute/console/*.py."""
    routes = set()
    for module in (REPO / "distribute" / "console").glob("*.py"):
        for kind, route, rest in _ROUTE.findall(module.read_text(encoding="utf-8")):
            if kind == "get" or "GET" in rest:
                routes.add(route)
    return routes


def test_every_get_route_of_the_console_is_checked() -> None:
    routes = console_get_routes()
    assert "/campaigns" in routes and "/" in routes  # the scan found the blueprints
    checked = {page.route for page in PUBLIC_PAGES + OWNER_PAGES + ADMIN_PAGES} | set(NOT_PAGES)
    assert sorted(routes - checked) == [], "add these routes to PUBLIC_PAGES, OWNER_PAGES, ADMIN_PAGES or NOT_PAGES"


# --------------------------------------------------------------------------- axe in the browser


def axe_violations(frame: Any, where: str) -> list[str]:
    """Runs on the browser thread: axe-core over `frame`'s document; its serious and critical violations,
    one line per element: where, rule id, impact, target selector, what to fix."""
    if not frame.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol, which the page's CSP does not govern (a <script> would be refused).
        frame.evaluate(AXE_SOURCE.read_text(encoding="utf-8"))
    found = frame.evaluate(
        """async (impacts) => {
          const results = await axe.run(document, {resultTypes: ['violations']});
          return results.violations.filter(v => impacts.includes(v.impact)).flatMap(v => v.nodes.map(n => ({
            id: v.id, impact: n.impact || v.impact, help: v.help, target: n.target.join(' >> '),
            summary: (n.failureSummary || '').replace(/\\s+/g, ' '),
          })));
        }""",
        list(BLOCKING_IMPACTS),
    )
    return [
        f"{where}: {v['id']} ({v['impact']}) at {v['target']}: {v['help']}. {v['summary']}"
        for v in found
        if v["impact"] in BLOCKING_IMPACTS
    ]


def overflow(page: Any, where: str) -> list[str]:
    """Runs on the browser thread: the page's width if wider than its viewport, and the elements that stick out
    of a parent that fits (where the overflow starts)."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    if width <= PHONE["width"]:
        return []
    culprits = page.evaluate(
        """(limit) => [...document.querySelectorAll('body *')]
          .filter(e => e.getBoundingClientRect().right > limit)
          .filter(e => e.parentElement.getBoundingClientRect().right <= limit)  // where the overflow starts
          .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
            + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '')
            + ' right=' + Math.round(e.getBoundingClientRect().right))""",
        PHONE["width"],
    )
    return [f"{where}: {width} px wide; sticking out: {', '.join(culprits)}"]


@dataclass
class Site:
    """The concrete paths of one server's pages."""

    server: LiveServer
    owner_email: str
    values: dict[str, str]

    def url(self, page: Page) -> str:
        return self.server.url + page.path.format(**self.values)


async def site_of(campaign: FailingCampaign, server: LiveServer) -> Site:
    storage = server.platform.storage
    user = await storage.user_by_email(campaign.owner.email)
    assert user is not None
    reset = await storage.accounts.create_reset(user.id, timedelta(minutes=30))
    await storage.set_admin(user.id, True)  # for the admin pages, which then list something
    await storage.set_review(campaign.id, Review.PENDING)
    await storage.apply_verdicts(Verdicts(liars=("a-flagged-worker",)))
    results = (await campaign.owner.get(f"/campaigns/{campaign.id}/results")).text
    result = re.search(rf"/campaigns/{campaign.id}/results/(\d+)", results)
    assert result, "the campaign has no result to open"
    site = await storage.sites.create_site(user.id, "https://blog.example.org", "site-key-of-the-owner", "token")
    await storage.sites.set_site_verified(site.id)
    await credit_to_site(server, site.id)
    values = {"campaign": str(campaign.id), "result": result.group(1), "reset": reset, "verify": "no-such-token"}
    values["site"], values["site_key"] = str(site.id), site.key
    return Site(server, campaign.owner.email, values)


async def credit_to_site(server: LiveServer, site_id: int) -> None:
    """Every stored result as if the site's visitors had computed it: its dashboard has figures and charts."""
    storage: Any = server.platform.storage
    if not hasattr(storage, "sql"):  # memory://
        async with storage.tables.session() as t:
            for result in t.results.values():
                result.site = site_id
        return
    from pony.orm import db_session

    def update() -> None:
        with db_session:
            storage.sql.execute("UPDATE result SET site = ?", (site_id,))

    await trio.to_thread.run_sync(update)


def open_page(page: Any, site: Site, which: Page) -> None:
    page.goto(site.url(which), wait_until="load")
    if which.ready:
        page.wait_for_selector(which.ready)


def visit_all(
    browser: BrowserThread, site: Site, viewport: dict[str, int], check: Any, scheme: str = "light"
) -> list[str]:
    """Runs on the browser thread: `check(page, where)` on every public page signed out, then on every
    owner page signed in; every problem found, in order."""
    # bypass_csp: so that axe can be injected; color_scheme: the console follows the system's light or dark.
    context = browser.browser.new_context(viewport=viewport, bypass_csp=True, color_scheme=scheme)
    problems: list[str] = []
    try:
        page = context.new_page()
        for public in PUBLIC_PAGES:
            open_page(page, site, public)
            problems += check(page, public.path)
        page.goto(site.server.url + "/signin")
        page.fill("#email", site.owner_email)
        page.fill("#password", PASSWORD)
        page.click("#signin-form button[type=submit]")
        page.wait_for_url("**/campaigns")
        for owned in OWNER_PAGES + ADMIN_PAGES:
            open_page(page, site, owned)
            assert "/signin" not in page.url, f"{owned.path} sent the owner to sign in"
            problems += check(page, owned.path)
    finally:
        context.close()
    return problems


def campaign_server(campaign: FailingCampaign) -> LiveServer:
    server: LiveServer = campaign.owner.server
    return server


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_finds_no_serious_violation_on_any_console_page(
    browser: BrowserThread, failing_campaign: FailingCampaign, scheme: str
) -> None:
    assert AXE_SOURCE.is_file(), f"{AXE_SOURCE} is missing: `make embed` installs it (npm ci in embed/)"
    site = await site_of(failing_campaign, campaign_server(failing_campaign))
    problems = await browser.run(visit_all, browser, site, DESKTOP, axe_violations, scheme)
    assert problems == [], f"axe-core, serious and critical, {scheme} colours:\n" + "\n".join(problems)


async def test_no_console_page_is_wider_than_a_375_px_phone(
    browser: BrowserThread, failing_campaign: FailingCampaign
) -> None:
    site = await site_of(failing_campaign, campaign_server(failing_campaign))
    problems = await browser.run(visit_all, browser, site, PHONE, overflow)
    assert problems == [], "horizontal overflow at 375 px:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the embed card


def card_violations(visit: Any, scheme: str) -> dict[str, list[str]]:
    """Runs on the browser thread: axe over the card before Contribute, then while it runs."""
    visit.page.emulate_media(color_scheme=scheme)
    before = axe_violations(visit.broker(), f"card before Contribute ({scheme})")
    visit.click("contribute")
    visit.wait_state("running")
    return {"before": before, "running": axe_violations(visit.broker(), f"card while running ({scheme})")}


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_finds_no_serious_violation_on_the_card_before_and_while_running(
    embedding: Embedding, scheme: str
) -> None:
    campaign = await embedding.campaign(busy_kernel(200), 200)
    async with embedding.visit(campaign) as visit:
        found = await embedding.browser.run(card_violations, visit, scheme)
    assert found["before"] + found["running"] == [], "axe-core on the card:\n" + "\n".join(
        found["before"] + found["running"]
    )


def focused_id(frame: Any) -> str:
    return str(frame.evaluate("() => document.hasFocus() && document.activeElement ? document.activeElement.id : ''"))


def tab_to(page: Any, frame: Any, element_id: str, presses: int = 25) -> bool:
    """Press Tab (on the host page, as a person would) until `element_id` in `frame` has the focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if focused_id(frame) == element_id:
            return True
    return False


def operate_card_by_keyboard(visit: Any) -> dict[str, Any]:
    """Runs on the browser thread: Tab to Contribute, Enter; Tab to Pause, Enter; Tab to Stop, Enter."""
    broker, page, seen = visit.broker(), visit.page, {}
    seen["contribute"] = tab_to(page, broker, "contribute")
    page.keyboard.press("Enter")
    visit.wait_state("running")
    seen["pause"] = tab_to(page, broker, "pause")
    page.keyboard.press("Enter")
    visit.wait_state("paused")
    seen["stop"] = tab_to(page, broker, "stop")
    page.keyboard.press("Enter")
    visit.wait_state("stopped")
    return seen


async def test_the_card_is_operated_with_the_keyboard_alone(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(200), 200)
    async with embedding.visit(campaign) as visit:
        reached = await embedding.browser.run(operate_card_by_keyboard, visit)
    assert reached == {"contribute": True, "pause": True, "stop": True}


# --------------------------------------------------------------------------- the campaign form


def create_campaign_by_keyboard(browser: BrowserThread, server: LiveServer, email: str) -> str:
    """Runs on the browser thread: sign in, then fill and send the new-campaign form with keys only."""
    context = browser.browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(server.url + "/signin")
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("#signin-form button[type=submit]")
        page.wait_for_url("**/campaigns")
        page.goto(server.url + "/campaigns/new")
        frame = page.main_frame
        typed = {
            "name": "Counted by keyboard",
            "kernel_text": COUNTING_KERNEL,
            "generator_text": counting_generator(5),
        }
        for field, text in typed.items():
            assert tab_to(page, frame, field, presses=60), f"Tab never reached #{field}"
            page.keyboard.type(text)
        assert tab_to(page, frame, "create-campaign", presses=60), "Tab never reached the submit button"
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/campaigns/\d+$"))
        return str(page.url)
    finally:
        context.close()


async def test_a_campaign_is_created_with_the_keyboard_alone(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    owner = await people.sign_up("keys@example.org")
    url = await browser.run(create_campaign_by_keyboard, browser, console_server, owner.email)
    campaign_id = int(url.rsplit("/", 1)[1])
    with trio.fail_after(30):
        while (await owner.get(f"/campaigns/{campaign_id}")).status_code != 200:
            await trio.sleep(0.05)
    page = (await owner.get(f"/campaigns/{campaign_id}")).text
    assert "Counted by keyboard" in page


def violations_of_markup(browser: BrowserThread, html: str) -> list[str]:
    context = browser.browser.new_context()
    try:
        page = context.new_page()
        page.set_content(html)
        return axe_violations(page.main_frame, "made-up page")
    finally:
        context.close()


async def test_the_axe_check_reports_a_violation_with_its_rule_impact_and_target(browser: BrowserThread) -> None:
    markup = "<!doctype html><html lang='en'><title>t</title><main><img src='x.png' id='no-alt'></main></html>"
    found = await browser.run(violations_of_markup, browser, markup)
    assert any(line.startswith("made-up page: image-alt (critical) at #no-alt:") for line in found), found


def overflow_of_markup(browser: BrowserThread, html: str) -> list[str]:
    context = browser.browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.set_content(html)
        return overflow(page, "made-up page")
    finally:
        context.close()


async def test_the_overflow_check_names_the_element_that_sticks_out(browser: BrowserThread) -> None:
    markup = "<!doctype html><body style='margin:0'><main><p id='fits'>x</p><div id='wide' style='width:500px'>w</div>"
    found = await browser.run(overflow_of_markup, browser, markup)
    assert found == ["made-up page: 500 px wide; sticking out: div#wide right=500"], found
