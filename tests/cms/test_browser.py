"""Both CMS in headless Chromium: visitors compute a campaign against a real distribute server, the
block is set up in WordPress's block editor, the settings page is used like an administrator would.

Screenshots go to test-artifacts/ (docs/wordpress.md and docs/hugo.md show copies of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from distribute.embed import embed_snippet
from tests.browser.conftest import BrowserThread, HostSite, Visit, open_visit, outcome
from tests.cms.hugo import build_site
from tests.cms.test_wordpress import HOSTILE
from tests.cms.wordpress import PASSWORD, WordPress, iframes
from tests.conftest import SEED_ANSWER, LiveServer

ABOUT = "Finds every multiple of 123 below 10,000: a small test campaign."
INTRO = "Our readers lend their spare computing power to research. Click Contribute in the box below to join in."


def screenshot(page: Any, path: Path, width: int = 820, height: int = 470) -> None:
    """A small PNG of what the page shows (runs on the browser thread)."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(300)  # let the layout settle after the resize
    page.screenshot(path=str(path))


def log_in(page: Any, wordpress: WordPress) -> None:
    page.goto(f"{wordpress.url}/wp-login.php")
    page.fill("#user_login", "admin")
    page.fill("#user_pass", PASSWORD)
    page.click("#wp-submit")
    page.wait_for_url("**/wp-admin/**")


async def compute(chromium: BrowserThread, live_server: LiveServer, campaign: int, url: str, shot: Path) -> set[str]:
    """Opens `url`, clicks Contribute, waits until the campaign is complete; returns the hosts credited."""
    visit: Visit = await chromium.run(open_visit, chromium, url)
    try:
        await chromium.run(visit.click, "contribute")
        await live_server.wait_complete(campaign, timeout=60)
        stored = await outcome(live_server, campaign)
        assert sorted(n for value in stored.results.values() if value for n in value) == SEED_ANSWER
        await chromium.run(visit.wait_state, "done")
        await chromium.run(screenshot, visit.page, shot)
        return stored.hosts
    finally:
        await chromium.run(visit.close)


async def test_a_wordpress_visitor_computes_a_campaign(
    chromium: BrowserThread, live_server: LiveServer, wordpress: WordPress, artifacts: Path
) -> None:
    campaign = await live_server.create_campaign(name="Multiples of 123", description=ABOUT)
    await trio.to_thread.run_sync(lambda: wordpress.set_settings(server_url=live_server.url, throttle="high"))
    content = f'<!-- wp:paragraph --><p>{INTRO}</p><!-- /wp:paragraph -->\n\n<!-- wp:distribute/embed {{"campaign":"{campaign}"}} /-->'
    post = await trio.to_thread.run_sync(wordpress.create_post, "Lend us your spare CPU", content)
    hosts = await compute(chromium, live_server, campaign, post.url, artifacts / "wordpress-post.png")
    assert hosts == {wordpress.url}


async def test_a_hugo_visitor_computes_a_campaign(
    chromium: BrowserThread, live_server: LiveServer, host_site: HostSite, artifacts: Path, tmp_path: Path
) -> None:
    campaign = await live_server.create_campaign(name="Multiples of 123", description=ABOUT)
    body = f'{INTRO}\n\n{{{{< distribute campaign="{campaign}" >}}}}'
    params = f'server = "{live_server.url}"\nthrottle = "high"'
    built = await trio.to_thread.run_sync(
        lambda: build_site(tmp_path, {"lend-your-cpu": body}, params=params, title="Lend us your spare CPU")
    )
    assert built.returncode == 0, built.output
    url = host_site.add("posts/lend-your-cpu/", built.page("lend-your-cpu"))
    hosts = await compute(chromium, live_server, campaign, url, artifacts / "hugo-page.png")
    assert hosts == {f"http://localhost:{host_site.port}"}


async def test_the_block_is_set_up_in_the_block_editor_with_its_sidebar_controls(
    chromium: BrowserThread, live_server: LiveServer, wordpress: WordPress, artifacts: Path
) -> None:
    campaign = await live_server.create_campaign(name="Multiples of 123", description=ABOUT)
    await trio.to_thread.run_sync(lambda: wordpress.set_settings(server_url=live_server.url))
    preview = f'iframe[src="{live_server.url}/embed/{campaign}?throttle=medium"]'

    def edit() -> dict[str, Any]:
        context = chromium.browser.new_context(viewport={"width": 1200, "height": 720})
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            log_in(page, wordpress)
            page.goto(f"{wordpress.url}/wp-admin/post-new.php")
            page.wait_for_function(
                "() => window.wp && wp.blocks && wp.blocks.getBlockType('distribute/embed')", timeout=30_000
            )
            page.evaluate(
                """() => {
                  wp.data.dispatch('core/editor').editPost({ title: 'Lend us your spare CPU' });
                  const block = wp.blocks.createBlock('distribute/embed');
                  wp.data.dispatch('core/block-editor').insertBlocks(block);
                  wp.data.dispatch('core/block-editor').selectBlock(block.clientId);
                  wp.data.dispatch('core/edit-post').openGeneralSidebar('edit-post/block');
                  if (!wp.data.select('core/edit-post').isFeatureActive('fixedToolbar')) {
                    wp.data.dispatch('core/edit-post').toggleFeature('fixedToolbar');  // keeps the title visible
                  }
                }"""
            )
            # What an editor does: type the campaign and pick a CPU setting in the block's sidebar.
            page.get_by_label("Campaign", exact=True).fill(str(campaign))
            page.get_by_label("CPU setting").select_option("medium")
            # The editor previews the block through the server-side rendering: the real card.
            page.frame_locator(preview).locator("#contribute").wait_for(timeout=20_000)
            page.screenshot(path=str(artifacts / "wordpress-block-editor.png"))
            page.evaluate(
                "() => { wp.data.dispatch('core/editor').editPost({ status: 'publish' }); return wp.data.dispatch('core/editor').savePost(); }"
            )
            page.wait_for_function(
                "() => !wp.data.select('core/editor').isSavingPost() && wp.data.select('core/editor').getCurrentPost().status === 'publish'",
                timeout=20_000,
            )
            return {
                "link": page.evaluate("() => wp.data.select('core/editor').getCurrentPost().link"),
                "attributes": page.evaluate("() => wp.data.select('core/block-editor').getBlocks()[0].attributes"),
                "errors": errors,
            }
        finally:
            context.close()

    edited = await chromium.run(edit)
    assert edited["errors"] == []
    assert edited["attributes"] == {"campaign": str(campaign), "server": "", "throttle": "medium", "site": ""}
    async with httpx.AsyncClient(timeout=30) as client:
        published = (await client.get(edited["link"])).text
    assert iframes(published) == iframes(embed_snippet(live_server.url, campaign, throttle="medium"))


async def test_an_administrator_saves_the_settings_in_the_browser(
    chromium: BrowserThread, wordpress: WordPress, artifacts: Path
) -> None:
    await trio.to_thread.run_sync(wordpress.set_settings)

    def save() -> str:
        context = chromium.browser.new_context(viewport={"width": 1000, "height": 800})
        try:
            page = context.new_page()
            log_in(page, wordpress)
            page.goto(f"{wordpress.url}/wp-admin/options-general.php?page=distribute")
            page.fill("#distribute_server_url", "https://compute.example.org")
            page.fill("#distribute_campaign", "12")
            page.select_option("#distribute_throttle", "medium")
            page.fill(
                "#distribute_consent_text",
                "Our readers help science with their spare CPU. Nothing runs until you click Contribute.",
            )
            page.click("#submit")
            notice = page.locator("#setting-error-settings_updated")
            notice.wait_for(timeout=20_000)
            page.screenshot(path=str(artifacts / "wordpress-settings.png"))
            return notice.inner_text()
        finally:
            context.close()

    assert "Settings saved." in await chromium.run(save)
    settings = await trio.to_thread.run_sync(wordpress.get_settings)
    assert settings["server_url"] == "https://compute.example.org"
    assert settings["campaign"] == "12"
    assert settings["throttle"] == "medium"


async def test_hostile_attribute_values_never_run_in_the_browser(chromium: BrowserThread, wordpress: WordPress) -> None:
    await trio.to_thread.run_sync(wordpress.set_settings)
    post = await trio.to_thread.run_sync(wordpress.create_post, "Hostile attributes", "\n\n".join(HOSTILE))

    def look(as_admin: bool) -> dict[str, Any]:
        context = chromium.browser.new_context()
        dialogs: list[str] = []
        try:
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            if as_admin:
                log_in(page, wordpress)
            page.goto(post.url)
            page.wait_for_load_state("load")
            page.wait_for_timeout(300)
            return {
                "pwned": page.evaluate("() => window.__pwned !== undefined"),  # what PAYLOAD would set
                "notices": page.locator(".distribute-error").count(),
                "dialogs": dialogs,
            }
        finally:
            context.close()

    assert await chromium.run(look, True) == {"pwned": False, "notices": len(HOSTILE), "dialogs": []}
    assert await chromium.run(look, False) == {"pwned": False, "notices": 0, "dialogs": []}
