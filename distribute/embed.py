"""The browser harness as the server serves it: embed pages, the sandboxed runner, the snippet.

- ``GET /embed/<id>`` and ``GET /embed/any``: the *broker* document, which a host site embeds in an
  iframe. It shows the consent card (campaign name, who runs it by the owner's display name and never
  by e-mail, the whole description, a line saying that it uses spare CPU while the page is open and can
  be paused, "What is this?") and loads nothing else until the visitor clicks "Contribute"; then it opens the WebSocket and starts
  the runner. It never runs campaign code. CSP: scripts and styles from this server only, connections
  to this server only, frames from this server only.
- ``GET /embed/runner``: the *runner* document, loaded by the broker in ``<iframe sandbox="allow-scripts">``
  and served with ``Content-Security-Policy: sandbox allow-scripts; default-src 'none'; script-src
  'sha256-…'; worker-src blob:; connect-src 'none'`` so that it has an opaque origin, may run only its
  own inline script (allowed by hash) and kernel workers made from blob: URLs, and cannot connect
  anywhere: not fetch, XHR, WebSocket, EventSource, importScripts, beacons, nor eval.
- ``GET /embed/static/<file>``: the built scripts and styles (``embed/build.mjs`` writes them into
  ``distribute/static/embed/``, which is not committed).

`embed_snippet` is the one definition of the plain-HTML iframe snippet (used by the CLI, the README,
the console and the CMS plugins); `demo_host_page` wraps it in a page for `make run`. The security
reasoning is in docs/harness-security.md, the embedding options in docs/embedding.md.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, request, send_from_directory

from .models import FINISHED_WITH_FAILURES, Campaign, CampaignStatus, servable_when_named
from .webstate import current_platform

__all__ = [
    "BUILD_DIR",
    "DEFAULT_HEIGHT",
    "THROTTLE_LEVELS",
    "demo_host_page",
    "embed_blueprint",
    "embed_snippet",
    "runner_csp",
]

BUILD_DIR = Path(__file__).parent / "static" / "embed"
# The one definition of the iframe, shared with the WordPress plugin and the Hugo shortcode (they
# carry verbatim copies; tests/cms checks that all copies are identical and the outputs agree).
SNIPPET: dict[str, Any] = json.loads((Path(__file__).parent / "snippet.json").read_text(encoding="utf-8"))
THROTTLE_LEVELS = tuple(SNIPPET["throttle"]["levels"])
DEFAULT_HEIGHT: int = SNIPPET["height"]["default"]
BUILD_HINT = "the browser harness is not built: run `cd embed && npm ci && node build.mjs`"

# Tokens of the outer iframe's sandbox attribute; docs/embedding.md explains the choice.
SNIPPET_SANDBOX = next(a["value"] for a in SNIPPET["attributes"] if a["name"] == "sandbox")

embed_blueprint = Blueprint("embed", __name__)


# --------------------------------------------------------------------------- the snippet


def embed_snippet(
    server_url: str, campaign_id: int | str, *, height: int = DEFAULT_HEIGHT, throttle: str = "low", site: str = ""
) -> str:
    """The iframe a host site pastes to let its visitors contribute to a campaign ("any" for any).

    `sandbox="allow-scripts allow-same-origin"` keeps our frame from navigating the host page,
    opening pop-ups, submitting forms or starting downloads, while it keeps its own origin (it needs
    it for its WebSocket); `referrerpolicy="strict-origin"` tells us the host's origin and nothing
    of the page path; `loading="lazy"` costs the host nothing until the frame is scrolled near.
    `site` is a registered site's key: `/embed/any?site=KEY` runs only what the site's policy admits.
    """
    if isinstance(campaign_id, bool) or not (campaign_id == "any" or str(campaign_id).isdigit()):
        raise ValueError(f"campaign_id must be a campaign number or 'any', not {campaign_id!r}")
    if throttle not in THROTTLE_LEVELS:
        raise ValueError(f"throttle must be one of {', '.join(THROTTLE_LEVELS)}, not {throttle!r}")
    bounds = SNIPPET["height"]
    if not bounds["min"] <= height <= bounds["max"]:
        raise ValueError(f"height must be between {bounds['min']} and {bounds['max']} pixels")
    base = server_url.rstrip("/")
    if urlsplit(base).scheme not in ("http", "https"):
        raise ValueError(f"server_url must be an http(s) URL, not {server_url!r}")
    campaign = "any" if campaign_id == "any" else str(int(campaign_id))
    src = SNIPPET["src"].replace("{server}", base).replace("{campaign}", campaign)
    if throttle != SNIPPET["throttle"]["default"]:
        src += SNIPPET["src_throttle"].replace("{throttle}", throttle)
    if site:
        if not re.fullmatch(SNIPPET["patterns"]["site"], site):
            raise ValueError(f"site must be a site key, not {site!r}")
        src += ("&" if "?" in src else "?") + SNIPPET["src_site"].replace("{site}", site)
    filled = {"{src}": src, "{height}": str(height)}
    parts = []
    for attribute in SNIPPET["attributes"]:
        value = attribute["value"]
        for placeholder, text in filled.items():
            value = value.replace(placeholder, text)
        parts.append(f'{attribute["name"]}="{html.escape(value, quote=True)}"')
    return "<iframe " + " ".join(parts) + "></iframe>"


def demo_host_page(server_url: str, campaign_id: int) -> str:
    """A complete stand-in for a host site's article page, embedding the campaign's snippet.

    Its animated counter is driven by requestAnimationFrame on the host page itself: while the
    campaign computes it keeps moving, which shows that the page stays responsive.
    """
    snippet = embed_snippet(server_url, campaign_id)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>A host site embedding distribute</title>
<style>
  body {{ font: 16px/1.5 Georgia, serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
  .frames {{ font: 13px system-ui, sans-serif; color: #555; }}
</style>
</head>
<body>
<h1>An ordinary website</h1>
<p>This page stands in for a blog or a news site on another origin. Below is the distribute
snippet, exactly as a site owner pastes it. Click <strong>Contribute</strong> in the box to lend
this browser's spare processing power to campaign {int(campaign_id)}.</p>
{snippet}
<p class="frames">This page's own animation frames: <span id="frames">0</span> (it keeps counting
while the campaign computes: the page stays responsive).</p>
<script>
  let frames = 0;
  const out = document.getElementById("frames");
  (function tick() {{ frames += 1; if (frames % 10 === 0) out.textContent = frames; requestAnimationFrame(tick); }})();
</script>
</body>
</html>
"""


# --------------------------------------------------------------------------- built files


@dataclass(frozen=True)
class _Build:
    runner_script: str
    runner_hash: str  # CSP source expression, 'sha256-…'
    version: str  # changes with any built file: cache-busting query for the broker's assets
    stamp: tuple[float, ...]


_build_cache: _Build | None = None


def _load_build() -> _Build | None:
    """The built harness, re-read when its files change (a rebuild needs no server restart)."""
    global _build_cache
    files = sorted(BUILD_DIR.glob("*")) if BUILD_DIR.is_dir() else []
    needed = {BUILD_DIR / "runner.js", BUILD_DIR / "broker.js", BUILD_DIR / "broker.css"}
    if not needed.issubset(files):
        return None
    stamp = tuple(f.stat().st_mtime for f in files)
    if _build_cache is not None and _build_cache.stamp == stamp:
        return _build_cache
    runner = (BUILD_DIR / "runner.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(runner.encode("utf-8")).digest()).decode("ascii")
    version = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    _build_cache = _Build(runner, f"'sha256-{digest}'", version, stamp)
    return _build_cache


def runner_csp(script_hash: str, ancestors: Sequence[str] = ()) -> str:
    """The runner document's policy: opaque origin, its own script only, blob: workers, no network.

    'wasm-unsafe-eval' lets kernels compile WebAssembly (as the headless worker can); it does not
    allow eval or new Function. `ancestors` (origins) become its frame-ancestors: the broker's, and
    the host page's chain above it, since browsers check frame-ancestors against every ancestor.
    """
    policy = (
        "sandbox allow-scripts; default-src 'none'; "
        f"script-src {script_hash} 'wasm-unsafe-eval'; worker-src blob:; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    return f"{policy}; frame-ancestors {' '.join(ancestors)}" if ancestors else policy


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
MAX_ANCESTORS = 8


def _runner_ancestors(server: str) -> list[str]:
    """The broker's origin, then the origins the broker names for the pages above it (`ancestor`
    query parameters, which it reads from location.ancestorOrigins or its referrer)."""
    parts = urlsplit(server)
    origins = [f"{parts.scheme}://{parts.netloc}"]
    served = f"{request.scheme}://{request.host}"  # the same unless a proxy rewrites the address
    if served != origins[0] and _ORIGIN.fullmatch(served):
        origins.append(served)
    for value in request.args.getlist("ancestor")[:MAX_ANCESTORS]:
        if _ORIGIN.fullmatch(value) and value not in origins:
            origins.append(value)
    return origins


# --------------------------------------------------------------------------- pages


def _server_url() -> str:
    public = current_platform().settings.public_url.rstrip("/")
    return public or f"{request.scheme}://{request.host}"


def _ws_url(server: str) -> str:
    parts = urlsplit(server)
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path.rstrip('/')}/ws"


def _broker_headers(ws_url: str) -> dict[str, str]:
    ws_origin = "{0.scheme}://{0.netloc}".format(urlsplit(ws_url))
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {ws_origin}; frame-src 'self'; base-uri 'none'; form-action 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }


def _page(body: str, status: int, headers: dict[str, str]) -> Response:
    return Response(body, status=status, headers=headers, mimetype="text/html")


def _unavailable(message: str, status: int) -> Response:
    build = _load_build()
    version = build.version if build else "0"
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distribute</title>
<link rel="stylesheet" href="/embed/static/broker.css?v={version}"></head>
<body data-state="unavailable"><main><p id="status">{html.escape(message)}</p></main></body></html>
"""
    return _page(body, status, _broker_headers(_ws_url(_server_url())))


def _level(highest: str = "high") -> str:
    level = request.args.get("throttle", "low")
    level = level if level in THROTTLE_LEVELS else "low"
    return min(level, highest, key=THROTTLE_LEVELS.index)


@dataclass(frozen=True)
class _SiteCheck:
    """What a broker page for `/embed/any?site=KEY` carries: the ticket (empty: anonymous), the origin
    the server verified, and the highest throttle the site allows."""

    ticket: str = ""
    origin: str = ""
    highest: str = "high"


SITE_KEY = re.compile(SNIPPET["patterns"]["site"])


def _referrer_origin() -> str:
    """The embedding page's origin as the browser sent it (the snippet's referrerpolicy sends just that)."""
    parts = urlsplit(request.headers.get("Referer", ""))
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme in ("http", "https") and parts.netloc else ""


async def _site_check() -> _SiteCheck:
    """The site's ticket when the key names a verified site and the page framing us is on its origin.

    A key used anywhere else, an unverified site's key, or a page whose browser sent no Referer gets
    the anonymous broker: the key alone never grants a site's standing (docs/security.md).
    """
    key = request.args.get("site", "")
    if not key or not SITE_KEY.fullmatch(key):
        return _SiteCheck()
    platform = current_platform()
    site = await platform.storage.sites.site_by_key(key)
    if site is None or not site.verified or _referrer_origin() != site.origin:
        return _SiteCheck()
    return _SiteCheck(platform.gateway.tickets.sign(site, site.origin, time.time()), site.origin, site.max_throttle)


CONSENT = "Contribute uses this device's spare CPU while this page is open. You can pause or stop it at any time."


def _broker_page(
    *, campaign: str, title: str, byline: str, about: str, explain: str, state: str, site: _SiteCheck | None = None
) -> Response:
    """The consent card. `about` is shown whole: clamped to two lines on the card, with a "More" button
    (broker.js shows it when the text does not fit) that opens the full text in the card, as "What is
    this?" opens the explanation: each replaces the card's body, with a Back button, so nothing needs
    scrolling inside the 220 px frame. An empty `byline` leaves out the owner line. `site`: a verified
    site's ticket and limits (the throttle choices above its highest are not offered)."""
    build = _load_build()
    if build is None:
        return _unavailable(f"Not available: {BUILD_HINT}.", 503)
    server = _server_url()
    ws_url = _ws_url(server)
    esc = html.escape
    site = site or _SiteCheck()
    level, levels = _level(site.highest), THROTTLE_LEVELS[: THROTTLE_LEVELS.index(site.highest) + 1]
    options = "".join(f'<option value="{lvl}"{" selected" if lvl == level else ""}>{lvl}</option>' for lvl in levels)
    site_data = f' data-site="{esc(site.ticket)}" data-site-origin="{esc(site.origin)}"' if site.ticket else ""
    idle_status = CARD_STATUS.get(state, "Nothing runs until you click Contribute.")
    by = f'<p class="by">{esc(byline)}</p>\n' if byline else ""
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · distribute</title>
<link rel="stylesheet" href="/embed/static/broker.css?v={build.version}">
<script type="module" src="/embed/static/broker.js?v={build.version}"></script>
</head>
<body data-state="{state}" data-done="0">
<main id="card" data-campaign="{esc(campaign)}" data-ws="{esc(ws_url)}" data-runner="/embed/runner"
 data-throttle="{level}" data-view="card"{site_data}>
<h1>{esc(title)}</h1>
{by}<div class="about-wrap"><p class="about" id="about">{esc(about)}</p>
<button id="more" class="link" type="button" aria-controls="full" aria-expanded="false" hidden>More</button></div>
<p class="consent" id="consent">{esc(CONSENT)}
<button id="what" class="link" type="button" aria-controls="explain" aria-expanded="false">What is this?</button>
<label class="remember" title="Remember my choice on this site: the next visit starts without a click"><input type="checkbox" id="remember"> Remember<span class="wide"> on this site</span></label>
<button id="withdraw" class="link" type="button" hidden>Forget my choice</button></p>
<p id="credit" class="credit" hidden><span id="credit-text"></span>
<button id="keep-credit" class="link" type="button" aria-controls="keep" aria-expanded="false">Keep my credit</button></p>
<div class="controls">
<button id="contribute" type="button">Contribute</button>
<button id="pause" type="button">Pause</button>
<button id="stop" type="button">Stop</button>
<label>CPU <select id="throttle" title="How much of this device's processing power to lend">{options}</select></label>
</div>
<p id="status" role="status" aria-live="polite" tabindex="-1">{esc(idle_status)}</p>
<section class="panel" id="explain" aria-labelledby="explain-title" hidden>
<div class="head"><h2 id="explain-title">What is this?</h2><button class="back" type="button">Back</button></div>
<p>{esc(explain)}</p>
</section>
<section class="panel" id="keep" aria-labelledby="keep-title" hidden>
<div class="head"><h2 id="keep-title">Keep my credit</h2><button class="back" type="button">Back</button></div>
<p id="keep-text">Asking for a code…</p>
<input id="keep-code" type="text" readonly aria-label="Claim code" spellcheck="false">
</section>
<section class="panel" id="full" aria-labelledby="full-title" hidden>
<div class="head"><h2 id="full-title">{esc(title)}</h2><button class="back" type="button">Back</button></div>
<div class="text" tabindex="0" role="region" aria-label="Full description">{esc(about)}</div>
</section>
</main>
</body>
</html>
"""
    return _page(body, 200, _broker_headers(ws_url))


# The card of a campaign with no work to give: its body's data-state (models.campaign_state key ->
# card state) and its status line. Only a campaign whose every dataset has its result thanks anyone.
CARD_STATES = {
    "complete": "complete",
    FINISHED_WITH_FAILURES: "ended",
    CampaignStatus.CANCELLED: "ended",  # stopped for good by its owner: nothing left to compute, no thanks
    CampaignStatus.PAUSED: "halted",
}
CARD_STATUS = {
    "complete": "This campaign is complete. Thank you!",
    "ended": "This campaign has ended: there is nothing left to compute.",
    "halted": "This campaign has stopped for now: there is nothing to compute. Its owner may resume it later.",
}


def _explain(what: str, server: str) -> str:
    # Short enough to read whole in the default 220 px frame down to about 300 px wide.
    host = urlsplit(server).netloc or server
    return (
        f"Contribute lends this device's spare processing power to {what}, through distribute at {host}. "
        "Small pieces of the problem are computed in a sandbox that cannot see this website, your cookies or "
        "your files; only the results go back. It runs only after you click Contribute, while this page is "
        "open and visible; pause or stop it at any time. Nothing is kept on your device unless you ask to be remembered."
    )


def _byline(display_name: str, server: str) -> str:
    """Who runs a campaign: the owner's display name, never derived from the e-mail address; without
    one, where it runs."""
    if display_name:
        return f"Run by {display_name}"
    return f"A campaign on {urlsplit(server).netloc or server}"


@embed_blueprint.get("/embed/<int:campaign_id>")
async def broker_for_campaign(campaign_id: int) -> Response:
    campaigns = current_platform().campaigns
    campaign = await campaigns.get(campaign_id)
    if campaign is None or campaign.deleted:
        return _unavailable("This campaign does not exist (any more).", 404)
    if campaign.status == CampaignStatus.FAILED or not servable_when_named(campaign):  # failed, or rejected
        return _unavailable("This campaign is not available.", 404)
    owner = await campaigns.owner_of(campaign)
    name = campaign.name or f"Campaign {campaign.id}"
    return _broker_page(
        campaign=str(campaign.id),
        title=name,
        byline=_byline(owner.display_name if owner else "", _server_url()),
        about=campaign.description or "A computation that anyone can help with from their browser.",
        explain=_explain(f"“{name}”", _server_url()),
        state=await _card_state(campaign),
    )


async def _card_state(campaign: Campaign) -> str:
    """What the card shows of a campaign's state: complete, ended (with failures), halted (paused) or idle."""
    return CARD_STATES.get((await current_platform().campaigns.state(campaign)).key, "idle")


@embed_blueprint.get("/embed/<int:campaign_id>/state")
async def card_state(campaign_id: int) -> Response:
    """The card's state of a campaign, for a broker whose visitor computed to its end: "complete" is
    thanked, "ended" (finished with failed datasets) is not. Public, as the card itself is."""
    campaigns = current_platform().campaigns
    campaign = await campaigns.get(campaign_id)
    if campaign is None or campaign.deleted or campaign.status == CampaignStatus.FAILED:
        return Response('{"state": null}', status=404, mimetype="application/json")
    return Response(
        json.dumps({"state": await _card_state(campaign)}),
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


@embed_blueprint.get("/embed/any")
async def broker_for_any() -> Response:
    server = _server_url()
    host = urlsplit(server).netloc or server
    return _broker_page(
        campaign="any",
        title="Lend spare computing power",
        byline=f"Campaigns hosted at {host}",
        about="Your browser helps whichever campaign needs it most.",
        explain=_explain("the campaigns hosted there", server),
        state="idle",
        site=await _site_check(),
    )


@embed_blueprint.get("/embed/runner")
async def runner() -> Response:
    build = _load_build()
    if build is None:
        return Response(BUILD_HINT, status=503, mimetype="text/plain")
    body = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>runner</title></head>'
        f"<body><script>{build.runner_script}</script></body></html>\n"
    )
    headers = {
        "Content-Security-Policy": runner_csp(build.runner_hash, _runner_ancestors(_server_url())),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }
    return Response(body, status=200, headers=headers, mimetype="text/html")


@embed_blueprint.get("/embed/static/<path:name>")
async def static_file(name: str) -> Response:
    response = await send_from_directory(BUILD_DIR, name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if request.args.get("v") else "no-cache"
    return response
