"""Campaign pages: the list, a new campaign, one campaign's page, delete/restore, reset, snippets.

A thin adapter over `CampaignService` (`platform.campaigns`), like the JSON API: every route takes
the campaign through `campaigns.owned`, so another user's campaign is a 404 exactly like a missing
one, and creating a campaign goes through `campaigns.create`, so the console and
`POST /api/campaigns` accept and refuse exactly the same uploads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import pydantic
from quart import Response, g, redirect, request, url_for
from quart.datastructures import FileStorage
from quart.typing import ResponseTypes

from ..campaigns import CampaignFields, CampaignService, Uploads
from ..embed import SNIPPET, embed_snippet
from ..errors import SourceError, ValidationError
from ..models import DESCRIPTION_MAX_CHARS, User
from ..webstate import current_platform
from .web import ConsoleBlueprint, console, login_required, page, server_url

__all__ = ["blueprint", "cms_snippets"]

blueprint = ConsoleBlueprint("campaigns", __name__)

SOURCES = (
    ("kernel", "Kernel", True),
    ("generator", "Dataset generator", True),
    ("static_dataset", "Static dataset", False),
    ("comparator", "Result comparator (JS compare(a, b), for replication)", False),
    ("spot_checks", "Spot checks (JSON [{dataset, result}])", False),
)
FIELD_NAMES = ("name", "description", "priority", "weight", "replication", "task_timeout")
NOTICES = {
    "deleted": "The campaign is deleted: no worker gets its tasks any more. You can restore it below.",
    "restored": "The campaign is restored.",
    "reset": "Every result and error was discarded; all datasets are pending again.",
    "resumed": "The campaign is resumed: workers receive its tasks again.",
    "paused": "The campaign is paused: no worker receives its tasks until you resume it.",
    "cancelled": "The campaign is cancelled: no worker receives its tasks any more. Its results are kept.",
    "closed": "The campaign is closed: it takes no more datasets and completes once every one is answered.",
}


def cms_snippets(server: str, campaign_id: int) -> list[tuple[str, str, str]]:
    """(id, title, text) of each ready-to-paste snippet: plain HTML, WordPress, Hugo (snippet.json's)."""

    def paste(cms: str) -> str:
        text: str = SNIPPET["paste"][cms]
        return text.replace("{campaign}", str(campaign_id)).replace("{server}", server.rstrip("/"))

    return [
        ("html", "HTML", embed_snippet(server, campaign_id)),
        ("wordpress", "WordPress shortcode", paste("wordpress")),
        ("hugo", "Hugo shortcode", paste("hugo")),
    ]


@blueprint.get("/campaigns")
@login_required
async def index() -> Response:
    service = current_platform().campaigns
    campaigns = [await service.describe(c) for c in await service.list_for(g.user)]
    deleted = []
    for campaign_id in await console().accounts.deleted_campaign_ids(g.user.id):
        campaign = await service.get(campaign_id)
        if campaign is not None:
            deleted.append(campaign)
    return await page("console/campaigns.html", campaigns=campaigns, deleted=deleted)


# --------------------------------------------------------------------------- new campaign


# The "Start from the example" button's campaign: the demo's, which the README and How it works show.
EXAMPLE = {
    name: resources.files("distribute").joinpath("demo_files", file).read_text("utf-8")
    for name, file in (("kernel", "kernel.js"), ("generator", "generator.js"), ("static_dataset", "static.json"))
}


async def new_form(status: int = 200, **context: Any) -> Response:
    settings = current_platform().settings
    values = {"priority": "0", "weight": "1", "replication": "1", "task_timeout": ""} | context.pop("values", {})
    return await page(
        "console/campaign_new.html",
        status,
        sources=SOURCES,
        values=values,
        max_source_bytes=settings.max_source_bytes,
        default_timeout=settings.task_timeout,
        description_max=DESCRIPTION_MAX_CHARS,
        check_datasets=settings.check_datasets,
        example=EXAMPLE,
        **context,
    )


def chosen_source(files: Any, form: Any, name: str) -> tuple[bytes | None, str]:
    """An uploaded file wins over pasted text; returns (bytes or None, file name)."""
    upload: FileStorage | None = files.get(name + "_file")
    if upload is not None and upload.filename:
        data = upload.read()
        if data:
            return data, upload.filename
    text = form.get(name + "_text", "")
    return (text.encode() if text.strip() else None), ""


def as_text(data: bytes) -> str | None:
    """An uploaded file's text for its textarea when the form comes back, or None if it is not text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def field_errors(exc: pydantic.ValidationError) -> dict[str, str]:
    return {str(error["loc"][0]): error["msg"] for error in exc.errors(include_url=False)}


@blueprint.route("/campaigns/new", methods=["GET", "POST"])
@login_required
async def new() -> ResponseTypes:
    if request.method == "GET":
        return await new_form()
    form = await request.form
    files = await request.files
    values = {name: form.get(name, "") for name in FIELD_NAMES}
    values |= {name + "_text": form.get(name + "_text", "") for name, _, _ in SOURCES}
    values["skip_check"] = "on" if form.get("skip_check") else ""
    values["open"] = "on" if form.get("open") else ""  # an open campaign: no generator, datasets sent later
    chosen = {name: chosen_source(files, form, name) for name, _, _ in SOURCES}
    for name, (data, filename) in chosen.items():  # a form that comes back keeps every upload, as text
        text = as_text(data) if filename and data else None
        if text is not None:
            values[name + "_text"] = text
    raw: dict[str, object] = {k: v for k, v in values.items() if k in FIELD_NAMES and v.strip() != ""}
    raw["open"] = bool(values["open"])
    try:
        fields = CampaignFields.model_validate(raw)
    except pydantic.ValidationError as exc:
        return await new_form(400, values=values, errors=field_errors(exc))
    missing = {
        name: "Upload a file or paste the text."
        for name, _, required in SOURCES
        if required and not chosen[name][0] and not (name == "generator" and fields.open)
    }
    if missing:
        return await new_form(400, values=values, errors=missing)
    kernel, kernel_file = chosen["kernel"]
    uploads = Uploads(
        kernel=kernel or b"",
        generator=chosen["generator"][0] or b"",
        static_dataset=chosen["static_dataset"][0],
        comparator=chosen["comparator"][0],
        spot_checks=chosen["spot_checks"][0],
    )
    default_name = kernel_file.rsplit(".", 1)[0] or "Untitled campaign"
    service = current_platform().campaigns
    try:
        campaign = await service.create(g.user, fields, uploads, default_name, skip_check=bool(values["skip_check"]))
    except SourceError as exc:
        return await new_form(400, values=values, errors={exc.field: str(exc)})
    except ValidationError as exc:
        return await new_form(400, values=values, error=str(exc))
    return redirect(url_for("console.campaigns.show", campaign_id=campaign.id), 303)


# --------------------------------------------------------------------------- one campaign


@blueprint.get("/campaigns/<int:campaign_id>")
@login_required
async def show(campaign_id: int) -> Response:
    service = current_platform().campaigns
    campaign = await service.owned(campaign_id, g.user)
    queries = console().queries
    return await page(
        "console/campaign.html",
        campaign=campaign,
        data=await service.describe(campaign),
        hosts=await queries.hosts(campaign.id),
        snippets=cms_snippets(server_url(), campaign.id),
        preview_snippet=embed_snippet(server_url(), campaign.id),  # the real card, as a host page frames it
        preview_style=next(a["value"] for a in SNIPPET["attributes"] if a["name"] == "style"),
        notice=NOTICES.get(request.args.get("done", "")),
    )


# The buttons of a campaign's page: action -> (the change, the notice the page then shows).
CHANGES: dict[str, tuple[Callable[[CampaignService, int, User], Awaitable[object]], str]] = {
    "delete": (CampaignService.delete, "deleted"),
    "restore": (CampaignService.restore, "restored"),
    "reset": (CampaignService.reset, "reset"),
    "resume": (CampaignService.resume, "resumed"),
    "pause": (CampaignService.pause, "paused"),
    "cancel": (CampaignService.cancel, "cancelled"),
    "close": (CampaignService.close, "closed"),
}


@login_required
async def change(campaign_id: int, action: str) -> ResponseTypes:
    """Delete, restore, reset, resume, pause, cancel or close a campaign (POST /campaigns/ID/ACTION), then back
    to its page."""
    method, notice = CHANGES[action]
    await method(current_platform().campaigns, campaign_id, g.user)
    return redirect(url_for("console.campaigns.show", campaign_id=campaign_id, done=notice), 303)


for _action in CHANGES:
    blueprint.add_url_rule(
        f"/campaigns/<int:campaign_id>/{_action}", _action, change, methods=["POST"], defaults={"action": _action}
    )
