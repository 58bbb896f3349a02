"""The embed pages and snippet as served (no browser needed): content, escaping and headers."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from distribute.embed import demo_host_page, embed_snippet, runner_csp
from tests.conftest import LiveServer


def attributes(snippet: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in re.findall(r'(\w+)="([^"]*)"', snippet)}


def test_the_snippet_is_a_lazy_titled_sandboxed_iframe() -> None:
    snippet = embed_snippet("https://compute.example.org/", 12)
    assert snippet.startswith("<iframe ") and snippet.endswith("></iframe>")
    attrs = attributes(snippet)
    assert attrs["src"] == "https://compute.example.org/embed/12"
    assert attrs["title"]
    assert attrs["loading"] == "lazy"
    assert attrs["referrerpolicy"] == "strict-origin"
    assert attrs["sandbox"] == "allow-scripts allow-same-origin"
    assert attrs["height"] == "220"


def test_the_snippet_carries_a_non_default_throttle_and_height() -> None:
    attrs = attributes(embed_snippet("http://127.0.0.1:8000", "any", height=300, throttle="high"))
    assert attrs["src"] == "http://127.0.0.1:8000/embed/any?throttle=high"
    assert attrs["height"] == "300"


def test_the_snippet_escapes_the_server_url() -> None:
    snippet = embed_snippet('https://x.example/"><script>alert(1)</script>', 1)
    assert "<script>" not in snippet
    assert attributes(snippet)["src"].startswith('https://x.example/"><script>')


@pytest.mark.parametrize(
    ("server", "campaign", "options"),
    [
        ("ftp://x", 1, {}),
        ("javascript:alert(1)", 1, {}),
        ("https://x", "12; drop", {}),
        ("https://x", True, {}),
        ("https://x", 1, {"throttle": "turbo"}),
        ("https://x", 1, {"height": 5}),
    ],
)
def test_the_snippet_refuses_bad_arguments(server: str, campaign: object, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        embed_snippet(server, campaign, **options)  # type: ignore[arg-type]


def test_the_demo_host_page_embeds_the_snippet() -> None:
    page = demo_host_page("http://127.0.0.1:8000", 3)
    assert page.startswith("<!doctype html>")
    assert embed_snippet("http://127.0.0.1:8000", 3) in page


def test_the_runner_policy_allows_nothing_but_its_script_and_blob_workers() -> None:
    assert runner_csp("'sha256-abc'") == (
        "sandbox allow-scripts; default-src 'none'; script-src 'sha256-abc' 'wasm-unsafe-eval'; "
        "worker-src blob:; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )


async def get(server: LiveServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.get(path)


async def test_the_consent_card_names_the_campaign_its_owner_and_purpose(live_server: LiveServer) -> None:
    campaign = await live_server.create_campaign(name="Primes <b>fast</b>", description="Finds primes & more.")
    response = await get(live_server, f"/embed/{campaign}")
    assert response.status_code == 200
    page = response.text
    assert "Primes &lt;b&gt;fast&lt;/b&gt;" in page and "<b>fast</b>" not in page
    # The owner has set no display name: the card names nobody, and nothing of the e-mail address.
    assert f"A campaign on {live_server.url.split('://', 1)[1]}" in page
    assert "owner0" not in page
    assert "Finds primes &amp; more." in page
    assert "What is this?" in page
    assert 'id="contribute"' in page


async def test_the_consent_card_names_the_owner_by_display_name_only(live_server: LiveServer) -> None:
    campaign = await live_server.create_campaign(name="Primes")
    owner = await live_server.platform.storage.user_by_email("owner0@example.org")
    assert owner is not None
    await live_server.platform.storage.accounts.set_display_name(owner.id, "Ada <Lab>")
    page = (await get(live_server, f"/embed/{campaign}")).text
    assert "Run by Ada &lt;Lab&gt;" in page
    assert "owner0" not in page


async def test_the_broker_page_allows_only_its_own_scripts_and_socket(live_server: LiveServer) -> None:
    campaign = await live_server.create_campaign()
    response = await get(live_server, f"/embed/{campaign}")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert f"connect-src 'self' {live_server.url.replace('http', 'ws')};" in policy
    assert "frame-src 'self'" in policy
    assert "x-frame-options" not in response.headers  # any site may embed it
    assert f'data-ws="{live_server.ws_url}"' in response.text


async def test_the_broker_page_takes_the_throttle_from_the_query(live_server: LiveServer) -> None:
    campaign = await live_server.create_campaign()
    page = (await get(live_server, f"/embed/{campaign}?throttle=medium")).text
    assert 'data-throttle="medium"' in page
    assert '<option value="medium" selected>' in page
    assert 'data-throttle="low"' in (await get(live_server, f"/embed/{campaign}?throttle=<x>")).text


async def test_the_any_page_needs_no_campaign(live_server: LiveServer) -> None:
    response = await get(live_server, "/embed/any")
    assert response.status_code == 200
    assert 'data-campaign="any"' in response.text


async def test_an_unknown_or_deleted_campaign_is_not_found(live_server: LiveServer) -> None:
    assert (await get(live_server, "/embed/999")).status_code == 404
    campaign = await live_server.create_campaign()
    async with httpx.AsyncClient(
        base_url=live_server.url, headers={"Authorization": f"Bearer {live_server.token}"}
    ) as client:
        assert (await client.delete(f"/api/campaigns/{campaign}")).status_code in (200, 204)
    assert (await get(live_server, f"/embed/{campaign}")).status_code == 404


async def test_the_runner_document_inlines_exactly_the_script_its_policy_allows(live_server: LiveServer) -> None:
    import base64
    import hashlib

    response = await get(live_server, "/embed/runner")
    assert response.status_code == 200
    script = re.search(r"<script>(.*)</script>", response.text, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in response.headers["content-security-policy"]


async def test_built_assets_are_served_as_javascript_and_css(live_server: LiveServer) -> None:
    js = await get(live_server, "/embed/static/broker.js?v=1")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "immutable" in js.headers["cache-control"]
    css = await get(live_server, "/embed/static/broker.css")
    assert "text/css" in css.headers["content-type"]
    assert (await get(live_server, "/embed/static/../embed.py")).status_code == 404
