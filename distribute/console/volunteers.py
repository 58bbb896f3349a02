"""Volunteers in the console: their credit across browsers (claimed identities), and leaderboards.

- ``/volunteer`` (signed in): the account's credit in all and per campaign, summed over the browser
  identities it claimed; a form that takes a claim code from a consent card's "Keep my credit"; the
  choice to appear by display name on leaderboards (off unless chosen). Any account is a volunteer
  account: signing up is how a volunteer creates one.
- ``/leaderboard/campaigns/<id>`` and ``/leaderboard/sites?site=KEY`` (public): the same figures as
  the JSON routes of `distribute.volunteers`; named volunteers only if they chose it, others as a count.
  A site's board is that of a registered, verified site (KEY: its public key), titled with its origin.

A claim code is signed and short-lived (`volunteers.claim_code`); it is posted in a form body, never
put in a URL. An identity claimed by one account cannot be claimed by another.
"""

from __future__ import annotations

import time
from typing import Any

from quart import g, request
from quart.typing import ResponseTypes

from ..errors import NotFound
from ..volunteers import LEADERBOARD_NAMES, board_site, claimed_identity, leaderboard_json
from ..webstate import current_platform
from .web import ConsoleBlueprint, console, login_required, page

__all__ = ["blueprint"]

blueprint = ConsoleBlueprint("volunteers", __name__)


def minutes(seconds: float) -> str:
    """Compute time as people read it: seconds, minutes or hours."""
    if seconds < 60:
        return f"{round(seconds)} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600, 1):g} h"


async def _volunteer_page(status: int = 200, **context: Any) -> ResponseTypes:
    platform = current_platform()
    credit_store = platform.storage.credit
    identities = await credit_store.claimed(g.user.id)
    credit = await credit_store.credit(identities)
    rows = []
    for share in credit.campaigns:
        campaign = await platform.campaigns.get(share.campaign_id)
        name = campaign.name if campaign is not None and not campaign.deleted else f"Campaign {share.campaign_id}"
        rows.append({"id": share.campaign_id, "name": name, "time": minutes(share.seconds), "seconds": share.seconds})
    return await page(
        "console/volunteer.html",
        status,
        total=minutes(credit.seconds),
        total_seconds=credit.seconds,
        campaigns=rows,
        browsers=len(identities),
        listed=await credit_store.listed(g.user.id),
        **context,
    )


@blueprint.get("/volunteer")
@login_required
async def volunteer() -> ResponseTypes:
    return await _volunteer_page()


@blueprint.post("/volunteer/claim")
@login_required
async def claim() -> ResponseTypes:
    code = (await request.form).get("code", "")
    identity = claimed_identity(await console().server_secret(), code, time.time())
    if identity is None:
        return await _volunteer_page(400, error="That code is not valid (or has expired): ask the card for a new one.")
    if not await current_platform().storage.credit.claim(g.user.id, identity):
        return await _volunteer_page(409, error="That browser's credit already belongs to another account.")
    return await _volunteer_page(notice="This browser's credit is now part of your account.")


@blueprint.post("/volunteer/listing")
@login_required
async def listing() -> ResponseTypes:
    listed = (await request.form).get("listed") == "on"
    await current_platform().storage.credit.set_listed(g.user.id, listed)
    notice = "Leaderboards show your display name." if listed else "Leaderboards count you without your name."
    return await _volunteer_page(notice=notice)


@blueprint.get("/leaderboard/campaigns/<int:campaign_id>")
async def campaign_leaderboard(campaign_id: int) -> ResponseTypes:
    platform = current_platform()
    campaign = await platform.campaigns.get(campaign_id)
    if campaign is None or campaign.deleted:
        raise NotFound("no such campaign")
    board = await platform.storage.credit.leaderboard(campaign_id=campaign_id, limit=LEADERBOARD_NAMES)
    return await page("console/leaderboard.html", title=campaign.name, board=leaderboard_json(board), minutes=minutes)


@blueprint.get("/leaderboard/sites")
async def site_leaderboard() -> ResponseTypes:
    site = await board_site(request.args.get("site", ""))
    if site is None:
        raise NotFound("no such site")
    board = await current_platform().storage.credit.leaderboard(site_id=site.id, limit=LEADERBOARD_NAMES)
    board_json = leaderboard_json(board)
    return await page("console/leaderboard.html", title=site.origin, origin=True, board=board_json, minutes=minutes)
