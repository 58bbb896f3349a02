"""The admin pages: campaigns awaiting review (approve, reject with a reason), users, flagged workers,
quotas and usage per account; and the one-time offer that makes the first account of a fresh
database its operator.

Every `/admin` route answers 404 to everyone who is not an admin, signed in or not, exactly as an
address with nothing at it: the pages do not admit that they exist. The offer (`/operator`) is shown
only while no account is an admin; claiming it is atomic in storage, so two people who both saw it
cannot both become the first admin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from quart import current_app, g, redirect, request, url_for
from quart.typing import ResponseTypes

from ..campaigns import require_admin
from ..campaigns.service import REVIEW_REASON_MAX_CHARS
from ..errors import NotFound
from ..webstate import current_platform
from .web import ConsoleBlueprint, login_required, page

__all__ = ["blueprint", "load_operator_offer"]

blueprint = ConsoleBlueprint("admin", __name__)

_ADMIN_KNOWN = "distribute.admin_known"  # app extension: once an admin exists, the offer is never looked up again
NOTICES = {
    "approved": "The campaign is approved: workers that ask for any campaign may receive it now.",
    "rejected": "The campaign is rejected: no worker receives it. Its owner sees your reason.",
}


def admin_only(view: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """404 to everybody but an admin (signed out included): not a sign-in redirect, which would tell."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_admin(g.get("user"))
        return await view(*args, **kwargs)

    return wrapper


async def load_operator_offer() -> None:
    """`g.operator_offer`: a signed-in user may claim the admin role, since no account has it yet."""
    g.operator_offer = False
    user = g.get("user")
    if user is None or user.admin or current_app.extensions.get(_ADMIN_KNOWN):
        return
    if any(u.admin for u in await current_platform().storage.list_users()):
        current_app.extensions[_ADMIN_KNOWN] = True
        return
    g.operator_offer = True


@blueprint.post("/operator")
@login_required
async def claim_operator() -> ResponseTypes:
    """Become the first admin (the CSRF check ran before this, as for every console form)."""
    if not await current_platform().storage.claim_first_admin(g.user.id):
        raise NotFound("not found")
    current_app.extensions[_ADMIN_KNOWN] = True
    return redirect(url_for("console.admin.reviews"), 303)


@blueprint.get("/admin")
@admin_only
async def reviews() -> ResponseTypes:
    service = current_platform().campaigns
    storage = current_platform().storage
    pending = []
    for campaign in await service.awaiting_review(g.user):
        owner = await storage.get_user(campaign.owner_id)
        pending.append({"campaign": campaign, "owner": owner.email if owner else "?"})
    return await page(
        "console/admin.html",
        section="reviews",
        pending=pending,
        reason_max=REVIEW_REASON_MAX_CHARS,
        notice=NOTICES.get(request.args.get("done", "")),
    )


@blueprint.post("/admin/campaigns/<int:campaign_id>/approve")
@admin_only
async def approve(campaign_id: int) -> ResponseTypes:
    await current_platform().campaigns.approve(campaign_id, g.user)
    return redirect(url_for("console.admin.reviews", done="approved"), 303)


@blueprint.post("/admin/campaigns/<int:campaign_id>/reject")
@admin_only
async def reject(campaign_id: int) -> ResponseTypes:
    form = await request.form
    await current_platform().campaigns.reject(campaign_id, g.user, form.get("reason", ""))
    return redirect(url_for("console.admin.reviews", done="rejected"), 303)


@blueprint.get("/admin/users")
@admin_only
async def users() -> ResponseTypes:
    storage = current_platform().storage
    rows = [(u, await storage.account_usage(u.id, result_bytes=False)) for u in await storage.list_users()]
    return await page("console/admin.html", section="users", users=rows)


@blueprint.get("/admin/workers")
@admin_only
async def workers() -> ResponseTypes:
    flagged = await current_platform().storage.flagged_workers()
    return await page("console/admin.html", section="workers", flagged=flagged)


@blueprint.get("/admin/quotas")
@admin_only
async def quotas() -> ResponseTypes:
    platform = current_platform()
    settings = platform.settings
    limits = {
        "campaigns": settings.quota_campaigns,
        "datasets": settings.quota_datasets,
        "result_bytes": settings.quota_result_bytes,
        "generating": settings.quota_generators,
    }
    rows = [(u, await platform.storage.account_usage(u.id)) for u in await platform.storage.list_users()]
    return await page("console/admin.html", section="quotas", usage=rows, limits=limits)
