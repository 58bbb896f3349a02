"""Which client a request comes from when trusted reverse proxies stand in front: pure policy, no I/O.

A reverse proxy (nginx, a cloud load balancer) opens its own TCP connection to the server, so the
socket's peer is the proxy; the proxy names the client it served in a header: `X-Forwarded-For`
(with `X-Forwarded-Proto` for the scheme) or RFC 7239's `Forwarded`. Anyone can send those headers,
so they count only when the socket's peer is one of the proxies the operator listed
(`forwarded_allow_ips`); otherwise the peer is the client, whatever the request says.

A proxy appends the address it received the request from to whatever list the client sent, so the
list reads left (farthest, claimed by the client) to right (nearest, written by the proxy that
talks to us). Walking it from the right, every address that is itself a trusted proxy is a hop we
believe; the first one that is not is the client. Entries further left were written by that client
and are never believed. An entry that is no IP address (`unknown`, an obfuscated `_name`, garbage)
ends the walk: the last trusted hop is then the best-known client.

`client_of(...)` is applied once per request and WebSocket (the ASGI middleware in asgi.py rewrites
the scope's `client` and `scheme`), so every per-address mechanism, the Origin check and the console's
cookie decision see the same answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HEADER_MODES", "Client", "TrustedProxies", "client_of", "forwarded_elements", "host_of"]

HEADER_MODES = ("x-forwarded-for", "forwarded")  # which header family the trusted proxies write

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose forwarding headers are believed: networks, or everyone ("*")."""

    networks: tuple[Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From `forwarded_allow_ips`: comma-separated addresses or CIDR networks, or "*" (raises ValueError)."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if "*" in items:
            return cls(everyone=True)
        return cls(networks=tuple(ipaddress.ip_network(item, strict=False) for item in items))

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def trusts(self, address: str) -> bool:
        """Is `address` (an IP address as text) one of the trusted proxies?"""
        ip = _ip(address)
        if ip is None:
            return False
        if self.everyone:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass(frozen=True)
class Client:
    """Who a request is from: the client's address, and the scheme it used ("" when only the socket knows)."""

    host: str
    scheme: str = ""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def host_of(node: str) -> str:
    """The address in a forwarded node: without quotes, the brackets of IPv6, or a port; "" if no IP address.

    Accepts `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711` and their quoted forms.
    """
    node = node.strip().strip('"').strip()
    if node.startswith("["):
        node = node[1 : node.find("]")] if "]" in node else ""
    elif node.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        node = node.split(":", 1)[0]
    ip = _ip(node)
    return "" if ip is None else str(ip)


def forwarded_elements(value: str) -> list[dict[str, str]]:
    """RFC 7239 `Forwarded` as its elements, left to right: `for=a;proto=https, for=b` gives two dicts.

    Parameter names are lower-cased; values lose their quotes. Commas and semicolons inside quoted
    strings are respected, so a quoted IPv6 node with a port survives.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    token, quoted = "", False
    for char in value + ",":
        if char == '"':
            quoted = not quoted
            token += char
        elif char in ",;" and not quoted:
            name, _, val = token.partition("=")
            if name.strip():
                current[name.strip().lower()] = val.strip().strip('"')
            token = ""
            if char == ",":
                if current:
                    elements.append(current)
                current = {}
        else:
            token += char
    return elements


def _joined(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """All lines of one header joined with commas, as HTTP says; None when absent."""
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


def _hops(headers: list[tuple[bytes, bytes]], mode: str) -> list[tuple[str, str]] | None:
    """(node, scheme) per hop, left to right, from the header family `mode`; None when the header is absent."""
    if mode == "forwarded":
        value = _joined(headers, b"forwarded")
        if value is None:
            return None
        return [(e.get("for", ""), e.get("proto", "")) for e in forwarded_elements(value)]
    value = _joined(headers, b"x-forwarded-for")
    if value is None:
        return None
    nodes = [node.strip() for node in value.split(",")]
    protos = [proto.strip() for proto in (_joined(headers, b"x-forwarded-proto") or "").split(",")]
    # One proto per hop when the proxies wrote one each; otherwise the nearest proxy's answer counts for all.
    if len(protos) != len(nodes):
        protos = [protos[-1]] * len(nodes)
    return list(zip(nodes, protos, strict=True))


def client_of(peer: str, headers: list[tuple[bytes, bytes]], trusted: TrustedProxies, mode: str) -> Client:
    """The client of a request whose socket peer is `peer`, given its raw headers (pure).

    The forwarding headers count only when `peer` is trusted; then the right-most address that is not
    itself trusted is the client, and the scheme is the one the proxy that received it reports
    ("http" or "https"; anything else is ignored).
    """
    if not trusted.trusts(peer):
        return Client(peer)
    hops = _hops(headers, mode)
    if not hops:
        return Client(peer)
    client, scheme = peer, ""
    for node, proto in reversed(hops):
        host = host_of(node)
        if not host:
            break
        client = host
        scheme = proto.lower() if proto.lower() in ("http", "https") else ""
        if not trusted.trusts(host):
            break
    return Client(client, scheme)
