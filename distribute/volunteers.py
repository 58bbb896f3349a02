"""Volunteers' standing on the public side: this browser's credit for the consent card, and leaderboards.

- ``POST /embed/credit`` with ``{"identity": "<32 hex>"}``: the credit of that identity, for the card
  ("you have given 14 min to 3 campaigns"). The identity is the broker's random id, which only that
  browser holds: it is treated as a bearer secret, so it travels in a POST body (never in a URL, which
  logs keep), the answer names no other identity, and lookups are rate-limited per client address.
- ``POST /embed/claim-code`` with the same body: a claim code for "keep my credit", which the volunteer
  pastes into the console's volunteer page (signed in) to add this identity's credit to their account.
  The code is signed with the server's secret and expires after `CLAIM_MINUTES`; it carries the identity,
  so it is a bearer secret too, and it never appears in a URL.
- ``GET /leaderboard/campaigns/<id>.json`` and ``GET /leaderboard/sites.json?site=KEY``: a campaign's or
  a registered, verified site's credit (KEY is the site's public key, the one its snippet carries);
  volunteers whose account chose to be listed appear by display name, everyone else only as a count.
  No identity is ever listed. A site's board counts only results the server attributed to that site
  (its broker page vouched for the worker), never the host a worker merely claims.

Credit is read from storage (`storage.credit`), which counts only accepted and verified results.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import time
from typing import Any, cast

from quart import Blueprint, Response, current_app, request

from .auth import RateLimiter
from .models import Site
from .storage.credit import Leaderboard
from .webstate import current_platform

__all__ = [
    "CLAIM_MINUTES",
    "IDENTITY",
    "board_site",
    "claim_code",
    "claimed_identity",
    "leaderboard_json",
    "volunteers_blueprint",
]

volunteers_blueprint = Blueprint("volunteers", __name__)

IDENTITY = re.compile(r"[0-9a-f]{32}")  # what the broker makes (session.js workerIdentity)
MAX_BODY = 1024
MAX_SITE_KEY = 64  # site keys are at most this long (the snippet's `site` pattern)
LEADERBOARD_NAMES = 50

CLAIM_MINUTES = 15
_CLAIM_MAC = 16  # bytes of HMAC-SHA256 kept in a claim code

LIMITER_EXTENSION = "volunteers.limiter"  # this app's RateLimiter of credit lookups, in `app.extensions`


def _limiter() -> RateLimiter:
    limiter = current_app.extensions.get(LIMITER_EXTENSION)
    if limiter is None:
        settings = current_platform().settings
        limiter = current_app.extensions[LIMITER_EXTENSION] = RateLimiter(settings.credit_limit, settings.rate_window)
    return cast(RateLimiter, limiter)


def _json(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(
        json.dumps(body), status=status, mimetype="application/json", headers={"Cache-Control": "no-store", **headers}
    )


def claim_code(secret: bytes, identity: str, now: float) -> str:
    """A code that lets whoever holds it claim `identity` until CLAIM_MINUTES from `now`."""
    body = bytes.fromhex(identity) + struct.pack(">I", int(now) + CLAIM_MINUTES * 60)
    mac = hmac.new(secret, b"claim:" + body, hashlib.sha256).digest()[:_CLAIM_MAC]
    return base64.urlsafe_b64encode(body + mac).decode("ascii")


def claimed_identity(secret: bytes, code: str, now: float) -> str | None:
    """The identity a claim code carries, or None if it is malformed, forged or expired."""
    try:
        raw = base64.urlsafe_b64decode(code.strip().encode("ascii"))
    except (ValueError, UnicodeError):
        return None
    if len(raw) != 20 + _CLAIM_MAC:
        return None
    body, mac = raw[:20], raw[20:]
    if not hmac.compare_digest(mac, hmac.new(secret, b"claim:" + body, hashlib.sha256).digest()[:_CLAIM_MAC]):
        return None
    (until,) = struct.unpack(">I", body[16:])
    return body[:16].hex() if now <= until else None


async def _identity_from_body() -> str | Response:
    """The identity a card POSTs, after the per-address rate limit; or the refusal to send."""
    limiter, key = _limiter(), "credit-ip:" + str(request.remote_addr or "unknown")
    wait = limiter.retry_after(key)
    if wait > 0:
        return _json({"error": "too many requests"}, 429, **{"Retry-After": str(int(wait) + 1)})
    limiter.hit(key)
    if (request.content_length or 0) > MAX_BODY:
        return _json({"error": "too large"}, 413)
    body = await request.get_json(force=True, silent=True)
    identity = body.get("identity") if isinstance(body, dict) else None
    if not isinstance(identity, str) or not IDENTITY.fullmatch(identity):
        return _json({"error": "identity: 32 lower-case hex digits"}, 400)
    return identity


@volunteers_blueprint.post("/embed/credit")
async def credit_of_identity() -> Response:
    """This browser's credit: seconds in all, and the number of campaigns it gave to."""
    identity = await _identity_from_body()
    if isinstance(identity, Response):
        return identity
    credit = await current_platform().storage.credit.credit([identity])
    return _json({"seconds": round(credit.seconds, 6), "campaigns": len(credit.campaigns)})


@volunteers_blueprint.post("/embed/claim-code")
async def claim_code_for_identity() -> Response:
    """A claim code for this browser's identity, to paste into the console's volunteer page."""
    identity = await _identity_from_body()
    if isinstance(identity, Response):
        return identity
    platform = current_platform()
    code = claim_code(await platform.storage.accounts.secret(), identity, time.time())
    public = platform.settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return _json({"code": code, "url": public + "/volunteer", "minutes": CLAIM_MINUTES})


def leaderboard_json(board: Leaderboard) -> dict[str, Any]:
    """A leaderboard as the JSON routes and the console pages give it."""
    return {
        "seconds": round(board.seconds, 6),
        "named": [{"name": entry.name, "seconds": round(entry.seconds, 6)} for entry in board.named],
        "anonymous": {"volunteers": board.anonymous, "seconds": round(board.anonymous_seconds, 6)},
    }


@volunteers_blueprint.get("/leaderboard/campaigns/<int:campaign_id>.json")
async def campaign_leaderboard(campaign_id: int) -> Response:
    platform = current_platform()
    campaign = await platform.campaigns.get(campaign_id)
    if campaign is None or campaign.deleted:
        return _json({"error": "no such campaign"}, 404)
    board = await platform.storage.credit.leaderboard(campaign_id=campaign_id, limit=LEADERBOARD_NAMES)
    return _json({"campaign": campaign_id, **leaderboard_json(board)})


async def board_site(key: str) -> Site | None:
    """The registered site whose public key this is, if its owner proved control of its origin; else None.

    An unverified site has no board: nothing is attributed to it, and its origin is only what its owner typed.
    """
    if not key or len(key) > MAX_SITE_KEY:
        return None
    site = await current_platform().storage.sites.site_by_key(key)
    return site if site is not None and site.verified else None


@volunteers_blueprint.get("/leaderboard/sites.json")
async def site_leaderboard() -> Response:
    site = await board_site(request.args.get("site", ""))
    if site is None:
        return _json({"error": "no such site"}, 404)
    board = await current_platform().storage.credit.leaderboard(site_id=site.id, limit=LEADERBOARD_NAMES)
    return _json({"site": site.key, "origin": site.origin, **leaderboard_json(board)})
