"""Site tickets: what a worker embedded on a registered site may run, as the broker page vouched for it.

The broker page (`/embed/any?site=KEY`) is served only after the server compared the origin the
request came from (its Referer, which the snippet's `referrerpolicy="strict-origin"` sets to the host
page's origin) with the site's registered origin. When they match, the page carries a *ticket*: the
site's id, policy, allowlist and highest throttle, the verified origin and an expiry, signed with
HMAC-SHA256 under the server secret. The harness sends it back in `hello` (`site`); the gateway
believes a ticket only if its signature holds and it has not expired, so no other page can make one
up. A ticket copied from a real broker page is as good as that page (it names its site and origin);
what it buys is the site's *restrictions* and its attribution, nothing more.

Pure: no I/O, every call that needs the time takes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..models import Campaign, Site, SitePolicy

__all__ = ["MAX_TICKET_CHARS", "SiteGrant", "SiteTickets", "slots_for"]

MAX_TICKET_CHARS = 2048  # the longest `site` a hello may carry (protocol.py checks it)
THROTTLE_ORDER = ("low", "medium", "high")


def slots_for(level: str, cores: int) -> int:
    """The slots the browser harness asks for at `level` on `cores` cores (embed/src/throttle.js `plan`)."""
    spare = cores - 1 if cores > 1 else 1
    workers = spare if level == "high" else max(1, spare // 2) if level == "medium" else 1
    depth = 2 if level == "high" else 1
    return min(256, workers * (depth + 1))


@dataclass(frozen=True, slots=True)
class SiteGrant:
    """What a verified site's visitor may run: the site's policy as its ticket carried it."""

    site_id: int
    policy: str
    allowlist: frozenset[int]
    max_throttle: str
    origin: str

    def admits(self, campaign: Campaign) -> bool:
        """Whether the site's policy admits the campaign (the server's own rule for "any" applies as well)."""
        if self.policy == SitePolicy.CAMPAIGNS:
            return campaign.id in self.allowlist
        if self.policy == SitePolicy.OWNERS:
            return campaign.owner_id in self.allowlist
        return True

    def cap_slots(self, slots: int, client: dict[str, Any]) -> int:
        """At most the slots of the site's highest throttle on the cores the browser reports (1 to 64)."""
        cores = client.get("cores")
        cores = min(64, max(1, cores)) if isinstance(cores, int) and not isinstance(cores, bool) else 1
        return max(1, min(slots, slots_for(self.max_throttle, cores)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SiteTickets:
    """Signs and checks tickets. `secret` is the server secret (shared by every server process on one
    database); until the platform sets it, a random one of this process."""

    def __init__(self, secret: bytes | None = None, lifetime: float = 6 * 3600.0) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, b"site-ticket:" + payload.encode("ascii"), hashlib.sha256).digest())

    def sign(self, site: Site, origin: str, now: float) -> str:
        """A ticket for a visitor of `site` whose broker page was requested from `origin` (already compared)."""
        body = [site.id, site.policy, sorted(site.allowlist), site.max_throttle, origin, int(now + self.lifetime)]
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def check(self, ticket: str | None, now: float) -> SiteGrant | None:
        """The grant a ticket carries; None when it is absent, malformed, forged or expired (anonymous)."""
        if not ticket or len(ticket) > MAX_TICKET_CHARS or ticket.count(".") != 1:
            return None
        payload, signature = ticket.split(".")
        try:
            if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload).encode("ascii")):
                return None
            site_id, policy, allowlist, throttle, origin, expiry = json.loads(_unb64(payload))
        except (ValueError, TypeError, UnicodeError):
            return None
        if now > expiry or policy not in (SitePolicy.ANY, SitePolicy.CAMPAIGNS, SitePolicy.OWNERS):
            return None
        level = throttle if throttle in THROTTLE_ORDER else "low"
        return SiteGrant(int(site_id), policy, frozenset(int(i) for i in allowlist), level, str(origin))

    def admit(self, ticket: str | None, slots: int, client: dict[str, Any], now: float) -> tuple[SiteGrant | None, int]:
        """A new connection's site (None: anonymous) and its slots, capped by the site's highest throttle."""
        grant = self.check(ticket, now)
        return grant, slots if grant is None else grant.cap_slots(slots, client)
