"""The trusted-proxy policy (distribute/proxies.py) with explicit inputs: whose headers count, which hop is the client."""

from __future__ import annotations

import pytest

from distribute.asgi import ProxyHeaders
from distribute.errors import SettingsError
from distribute.proxies import Client, TrustedProxies, client_of, forwarded_elements, host_of
from distribute.settings import load_settings

NGINX = TrustedProxies.parse("127.0.0.1")


def xff(value: str, proto: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"example.org"), (b"x-forwarded-for", value.encode())]
    return headers + ([(b"x-forwarded-proto", proto.encode())] if proto is not None else [])


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() -> None:
    assert client_of("127.0.0.1", xff("203.0.113.7", "https"), TrustedProxies.parse(""), "x-forwarded-for") == Client(
        "127.0.0.1"
    )


def test_a_trusted_peer_names_the_client_and_its_scheme() -> None:
    assert client_of("127.0.0.1", xff("203.0.113.7", "https"), NGINX, "x-forwarded-for") == Client(
        "203.0.113.7", "https"
    )


def test_headers_from_a_peer_that_is_not_a_trusted_proxy_are_not_believed() -> None:
    assert client_of("198.51.100.9", xff("203.0.113.7", "https"), NGINX, "x-forwarded-for") == Client("198.51.100.9")


def test_addresses_a_client_prepended_are_ignored_the_rightmost_untrusted_one_counts() -> None:
    forged = xff("10.9.9.9, 203.0.113.7", "https")  # the client sent "10.9.9.9"; the proxy appended its address
    assert client_of("127.0.0.1", forged, NGINX, "x-forwarded-for").host == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_hop() -> None:
    trusted = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")
    assert client_of("127.0.0.1", xff("192.0.2.1, 203.0.113.7, 10.1.2.3"), trusted, "x-forwarded-for").host == (
        "203.0.113.7"
    )


def test_a_hop_that_is_no_address_ends_the_walk_at_the_last_trusted_one() -> None:
    trusted = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")
    assert client_of("127.0.0.1", xff("unknown, 10.1.2.3"), trusted, "x-forwarded-for").host == "10.1.2.3"


def test_the_proxy_named_nobody_then_the_peer_stays_the_client() -> None:
    assert client_of("127.0.0.1", [(b"host", b"x")], NGINX, "x-forwarded-for") == Client("127.0.0.1")


def test_a_scheme_other_than_http_or_https_is_ignored() -> None:
    assert client_of("127.0.0.1", xff("203.0.113.7", "gopher"), NGINX, "x-forwarded-for").scheme == ""


def test_rfc_7239_forwarded_is_read_in_forwarded_mode_only() -> None:
    headers = [(b"forwarded", b'for=10.0.0.1, for="[2001:db8:cafe::17]:4711";proto=https')]
    assert client_of("127.0.0.1", headers, NGINX, "forwarded") == Client("2001:db8:cafe::17", "https")
    assert client_of("127.0.0.1", headers, NGINX, "x-forwarded-for") == Client("127.0.0.1")


def test_x_forwarded_for_is_ignored_in_forwarded_mode() -> None:
    assert client_of("127.0.0.1", xff("203.0.113.7"), NGINX, "forwarded") == Client("127.0.0.1")


def test_forwarded_elements_respect_quoted_separators() -> None:
    assert forwarded_elements('for="a,b;c";proto=http, For=x') == [{"for": "a,b;c", "proto": "http"}, {"for": "x"}]


@pytest.mark.parametrize(
    ("node", "host"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:4711", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("unknown", ""),
        ("_hidden", ""),
    ],
)
def test_host_of_a_forwarded_node(node: str, host: str) -> None:
    assert host_of(node) == host


def test_a_star_trusts_every_peer_and_networks_match_by_cidr() -> None:
    assert TrustedProxies.parse("*").trusts("198.51.100.9")
    assert TrustedProxies.parse("10.0.0.0/8").trusts("10.200.0.1")
    assert not TrustedProxies.parse("10.0.0.0/8").trusts("11.0.0.1")
    assert TrustedProxies.parse("127.0.0.1").trusts("::ffff:127.0.0.1")  # an IPv4-mapped peer


def test_forwarded_allow_ips_refuses_what_is_no_address_or_network() -> None:
    assert load_settings(overrides={"forwarded_allow_ips": "127.0.0.1, ::1, 10.0.0.0/8"}).forwarded_allow_ips
    with pytest.raises(SettingsError):
        load_settings(overrides={"forwarded_allow_ips": "nginx.internal"})


async def test_the_middleware_rewrites_client_and_websocket_scheme_for_a_trusted_peer() -> None:
    seen: list[dict[str, object]] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(scope)

    wrapped = ProxyHeaders(app, NGINX, "x-forwarded-for")  # type: ignore[arg-type]
    scope = {"type": "websocket", "scheme": "ws", "client": ("127.0.0.1", 5000), "headers": xff("203.0.113.7", "https")}
    await wrapped(scope, None, None)  # type: ignore[arg-type]
    assert (seen[0]["client"], seen[0]["scheme"]) == (("203.0.113.7", 0), "wss")
