"""Sites' origins: how they are written down, and which addresses the proof-of-control fetch may reach."""

from __future__ import annotations

from typing import Any

import pytest

from distribute.errors import ValidationError
from distribute.settings import load_settings
from distribute.sites import SiteService, normalise_origin


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("https://Blog.Example.org/", "https://blog.example.org"),
        ("https://blog.example.org:443", "https://blog.example.org"),
        ("http://blog.example.org:8080", "http://blog.example.org:8080"),
        ("http://[2001:DB8::1]:80", "http://[2001:db8::1]"),
    ],
)
def test_an_origin_is_kept_in_one_spelling(given: str, origin: str) -> None:
    assert normalise_origin(given) == origin


@pytest.mark.parametrize(
    "given",
    [
        "blog.example.org",
        "ftp://blog.example.org",
        "https://blog.example.org/path",
        "https://u:p@blog.example.org",
        "https://blog.example.org?x=1",
        "https://bad_host.example",
        "https://blog.example.org:99999",
    ],
)
def test_anything_but_an_origin_is_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        normalise_origin(given)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.10", "169.254.169.254", "[::1]", "[fe80::1]", "0.0.0.0", "224.0.0.1"],
)
async def test_the_fetch_refuses_private_loopback_link_local_and_reserved_addresses(address: str) -> None:
    service = SiteService(Any, load_settings(overrides={}, environ={}))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="private, loopback or reserved"):
        await service._address(address, 80)


async def test_the_fetch_may_reach_private_addresses_when_allowed() -> None:
    service = SiteService(Any, load_settings(overrides={"site_check_private": 1}, environ={}))  # type: ignore[arg-type]
    assert await service._address("127.0.0.1", 80) == "127.0.0.1"
