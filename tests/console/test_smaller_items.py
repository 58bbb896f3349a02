"""Smaller defences of the console and the API pages: the API documentation loads nothing from another
origin, the console's cookies carry the `__Host-` prefix over https, and a malformed sign-up stamp is a
plain 400."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.conftest import LiveServer, StartServer
from tests.console.conftest import csrf_of, stamp_of

_ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]*)\"""")


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header of a response by cookie name (the header as sent)."""
    found = {}
    for key, value in response.headers.multi_items():
        if key == "set-cookie":
            found[value.split("=", 1)[0]] = value
    return found


async def test_the_api_docs_page_loads_its_scripts_and_styles_from_this_server_only(
    console_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=console_server.url, timeout=30) as client:
        page = await client.get("/api/docs")
        assert page.status_code == 200
        assets = _ASSET.findall(page.text)
        assert assets, page.text
        assert not re.search(r"https?://|//", " ".join(assets)), assets
        for asset in assets:
            url = urljoin(f"{console_server.url}/api/docs", asset)
            assert urlsplit(url).netloc == urlsplit(console_server.url).netloc
            response = await client.get(url)
            assert response.status_code == 200, url
            assert response.headers["content-type"].split(";")[0] in ("text/javascript", "text/css"), url
        assert (await client.get("/api/openapi.json")).status_code == 200


async def test_console_cookies_carry_the_host_prefix_over_https(start_server: StartServer, tmp_path: Any) -> None:
    server = await start_server(
        signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"), public_url="https://distribute.example.org"
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        form = await client.get("/signup")
        csrf_cookie = set_cookies(form)["__Host-distribute_csrf"]
        signed_up = await client.post(
            "/signup",
            data={
                "csrf": csrf_of(form.text),
                "stamp": stamp_of(form.text),
                "email": "hostprefix@example.org",
                "password": "correct horse battery",
                "password2": "correct horse battery",
                "website": "",
            },
            # httpx keeps Secure cookies off plain http: send the cookie as a browser on https would.
            headers={"Cookie": csrf_cookie.split(";")[0]},
        )
        assert signed_up.status_code == 303, signed_up.text
        session_cookie = set_cookies(signed_up)["__Host-distribute_session"]
        for cookie in (csrf_cookie, session_cookie):
            attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
            assert "secure" in attributes and "path=/" in attributes, cookie
            assert not any(part.startswith("domain") for part in attributes), cookie
        assert not any(name.startswith("distribute_") for name in set_cookies(form) | set_cookies(signed_up))
        # The server reads the prefixed name back: the visitor is signed in.
        account = await client.get("/account", headers={"Cookie": session_cookie.split(";")[0]})
        assert account.status_code == 200 and "hostprefix@example.org" in account.text


async def test_console_cookies_keep_their_plain_names_over_http(console_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=console_server.url, timeout=30) as client:
        response = await client.get("/signin")
        assert "distribute_csrf" in set_cookies(response)
        assert "secure" not in response.headers["set-cookie"].lower()


async def test_a_non_ascii_sign_up_stamp_is_refused_with_400(console_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=console_server.url, timeout=30) as client:
        form = await client.get("/signup")
        for stamp in ("é…", "1.é…", "é." + "0" * 32):
            response = await client.post(
                "/signup",
                data={
                    "csrf": csrf_of(form.text),
                    "stamp": stamp,
                    "email": "stamp@example.org",
                    "password": "correct horse battery",
                    "password2": "correct horse battery",
                    "website": "",
                },
            )
            assert response.status_code == 400, (stamp, response.status_code)
