"""The JSON API under /api/: campaigns, results downloads; Bearer-token authentication.

A thin adapter over `CampaignService` (`platform.campaigns`): request bodies are validated by
quart-schema (pydantic models), which also produces the OpenAPI document at /api/openapi.json.
Every route sees only the caller's own campaigns: another user's campaign is a 404, exactly like a
missing one. The JSON error handlers here answer for the whole app (app.py registers them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from quart import Blueprint, Response, g, request
from quart_schema import (
    DataSource,
    RequestSchemaValidationError,
    document_request,
    validate_querystring,
    validate_request,
)
from quart_schema.pydantic import File
from werkzeug.datastructures import FileStorage

from .campaigns import CampaignFields, KernelUpdate, QuotaExceeded, ResultFormat, Uploads, stream
from .campaigns.batches import BatchTooLarge, UnsupportedBatch
from .errors import Busy, Conflict, SourceError, Unauthorized
from .webstate import current_platform

__all__ = ["CampaignForm", "api_blueprint", "error_status", "schema_error"]

api_blueprint = Blueprint("api", __name__, url_prefix="/api")


class CampaignForm(CampaignFields):
    kernel: File
    # Required, except for an open campaign (which must have none): checked below, where the form's other
    # errors are, so that a form missing both names both.
    generator: File | None = Field(default=None, validate_default=True)
    static_dataset: File | None = None
    comparator: File | None = None
    spot_checks: File | None = None
    skip_check: bool = Field(
        default=False,
        description="true: no trial run in the server's sandbox before the campaign goes live (for a kernel that"
        " needs browser-only APIs); the sources are still parsed",
    )

    @field_validator("generator")
    @classmethod
    def _generator_unless_open(cls, generator: File | None, info: ValidationInfo) -> File | None:
        if generator is None and not info.data.get("open"):
            raise ValueError("a generator is required (or open: true, for an open campaign)")
        return generator


class KernelForm(BaseModel):
    kernel: File
    static: File | None = Field(default=None, description="a new static dataset (absent: the current one is kept)")
    recompute: bool = Field(
        default=False,
        description="true: datasets done under an older kernel version are computed again (their old results are"
        " kept); false: only datasets not yet done use the new kernel",
    )
    skip_check: bool = Field(default=False, description="true: no trial run on the campaign's stored datasets")


class ResultsQuery(BaseModel):
    format: ResultFormat = "json"
    include_empty: bool = False
    verified: bool = False
    every_version: bool = Field(
        default=False, description="true: also the results of older kernel versions (default: each dataset's newest)"
    )
    after: str | None = Field(
        default=None,
        description="a cursor from an earlier page: the page starts after it. With `after` or `limit` the answer is"
        ' one JSON page {"results": [...], "cursor": "...", "complete": bool} of results in order of storage',
    )
    limit: int | None = Field(default=None, ge=1, le=stream.MAX_PAGE, description="results per page (default 1000)")


class EventsQuery(BaseModel):
    after: str | None = Field(
        default=None, description="a cursor: only results after it (the Last-Event-ID header does the same)"
    )


def error_status(status: int) -> Callable[[Exception], tuple[dict[str, str], int]]:
    """A handler answering `{"error": message}` with `status` (for the errors of distribute.errors)."""

    def handler(exc: Exception) -> tuple[dict[str, str], int]:
        return {"error": str(exc)}, status

    return handler


@api_blueprint.errorhandler(QuotaExceeded)
async def quota_exceeded(exc: QuotaExceeded) -> tuple[dict[str, str], int]:
    """403 (or 429 for what runs at once) naming the quota and its setting, not the 400 of bad input."""
    return {"error": str(exc)}, exc.status


@api_blueprint.errorhandler(Conflict)
async def conflict(exc: Conflict) -> tuple[dict[str, str], int]:
    """409: the campaign's state does not allow it (not open, not paused, cancelled, complete)."""
    return {"error": str(exc)}, 409


@api_blueprint.errorhandler(Busy)
async def busy(exc: Busy) -> tuple[dict[str, str], int, dict[str, str]]:
    """429 with Retry-After (seconds): an open campaign's backlog is full; the client sends again later."""
    return {"error": str(exc)}, 429, {"Retry-After": str(exc.retry_after)}


@api_blueprint.errorhandler(BatchTooLarge)
async def batch_too_large(exc: BatchTooLarge) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, 413


@api_blueprint.errorhandler(UnsupportedBatch)
async def unsupported_batch(exc: UnsupportedBatch) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, 415


@api_blueprint.errorhandler(SourceError)
async def source_refused(exc: SourceError) -> tuple[dict[str, Any], int]:
    """400 naming the upload at fault (`field`), with the line and column where there are any."""
    return {"error": str(exc), "field": exc.field, "line": exc.line, "column": exc.column}, 400


async def schema_error(exc: RequestSchemaValidationError) -> tuple[dict[str, Any], int]:
    """400 with pydantic's list of errors: each names its field (`loc`) and what was sent (`input`).

    A missing field's `input` is the whole form, uploaded files included: those are shown by name,
    since a file object is not JSON (it made the response a 500).
    """
    details = exc.validation_error
    if not hasattr(details, "errors"):
        return {"error": "request validation failed", "details": str(details)}, 400
    errors = details.errors(include_url=False, include_context=False)
    return {"error": "request validation failed", "details": [_json_safe(e) for e in errors]}, 400


def _json_safe(value: Any) -> Any:
    if isinstance(value, FileStorage):
        return f"<uploaded file {value.filename or ''}>"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def require_user(view: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send 'Authorization: Bearer TOKEN'")
        user = await current_platform().storage.user_for_token(token.strip())
        if user is None:
            raise Unauthorized("invalid or revoked API token")
        g.user = user
        return await view(*args, **kwargs)

    return wrapper


@api_blueprint.post("/campaigns")
@validate_request(CampaignForm, source=DataSource.FORM_MULTIPART)
@require_user
async def create_campaign(data: CampaignForm) -> tuple[dict[str, Any], int]:
    uploads = Uploads(
        kernel=data.kernel.read(),
        generator=data.generator.read() if data.generator else b"",
        static_dataset=data.static_dataset.read() if data.static_dataset else None,
        comparator=data.comparator.read() if data.comparator else None,
        spot_checks=data.spot_checks.read() if data.spot_checks else None,
    )
    campaigns = current_platform().campaigns
    name = data.kernel.filename or "campaign"
    campaign = await campaigns.create(g.user, data, uploads, name, skip_check=data.skip_check)
    return await campaigns.describe(campaign), 201


@api_blueprint.get("/campaigns")
@require_user
async def list_campaigns() -> dict[str, Any]:
    campaigns = current_platform().campaigns
    return {"campaigns": [await campaigns.describe(c) for c in await campaigns.list_for(g.user)]}


@api_blueprint.get("/campaigns/<int:campaign_id>")
@require_user
async def show_campaign(campaign_id: int) -> dict[str, Any]:
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.owned(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/reset")
@require_user
async def reset_campaign(campaign_id: int) -> dict[str, Any]:
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.reset(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/resume")
@require_user
async def resume_campaign(campaign_id: int) -> dict[str, Any]:
    """Resume a paused campaign (409 if it is not paused); answers the campaign as `GET` does."""
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.resume(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/pause")
@require_user
async def pause_campaign(campaign_id: int) -> dict[str, Any]:
    """The owner pauses a generating or running campaign (409 otherwise); answers the campaign."""
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.pause(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/cancel")
@require_user
async def cancel_campaign(campaign_id: int) -> dict[str, Any]:
    """Stop a campaign for good, keeping its results (409 for a finished one); answers the campaign."""
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.cancel(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/close")
@require_user
async def close_campaign(campaign_id: int) -> dict[str, Any]:
    """No more datasets will come to this open campaign (idempotent; 409 for one never open)."""
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.close(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/datasets")
@require_user
async def add_datasets(campaign_id: int) -> tuple[dict[str, int], int]:
    """A batch of datasets for an open campaign: JSON `{"datasets": [...]}` or a msgpack array.

    201 `{"added", "first", "last", "total"}` (first..last: the datasets' numbers, in the order sent);
    413 over `max_upload_batch_bytes` (checked before the body is read whole), 400 for a malformed
    batch, 409 for a campaign that is not open, 429 with Retry-After while its backlog is full.
    """
    platform = current_platform()
    campaigns = platform.campaigns
    await campaigns.owned(campaign_id, g.user)  # another user's campaign: 404 before its body is read
    body = await _capped_body(platform.settings.max_upload_batch_bytes)  # (Quart's request limit applies too)
    added = await campaigns.add_datasets(campaign_id, g.user, body, request.headers.get("Content-Type", ""))
    return added, 201


async def _capped_body(limit: int) -> bytes:
    """The request body, refused (BatchTooLarge) as soon as it is known to be over `limit` bytes."""
    too_large = f"the batch is over {limit} bytes (setting max_upload_batch_bytes): send smaller batches"
    length = request.content_length
    if length is not None and length > limit:
        raise BatchTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise BatchTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


@api_blueprint.post("/campaigns/<int:campaign_id>/kernel")
@document_request(KernelForm, source=DataSource.FORM_MULTIPART)
@require_user
async def update_kernel(campaign_id: int) -> dict[str, Any]:
    """A new kernel version (N+1), checked like at creation (400 naming the upload, and nothing changes);
    answers the campaign as `GET` does."""
    campaigns = current_platform().campaigns
    await campaigns.owned(campaign_id, g.user)  # before the body: another user's campaign is a 404, never a 400
    try:
        data = KernelForm.model_validate({**(await request.form).to_dict(), **(await request.files).to_dict()})
    except ValidationError as exc:
        raise RequestSchemaValidationError(exc) from None
    update = KernelUpdate(
        kernel=data.kernel.read(),
        static_dataset=data.static.read() if data.static else None,
        recompute=data.recompute,
        skip_check=data.skip_check,
    )
    return await campaigns.describe(await campaigns.update_kernel(campaign_id, g.user, update))


@api_blueprint.delete("/campaigns/<int:campaign_id>")
@require_user
async def delete_campaign(campaign_id: int) -> dict[str, Any]:
    await current_platform().campaigns.delete(campaign_id, g.user)
    return {"id": campaign_id, "deleted": True}


@api_blueprint.post("/campaigns/<int:campaign_id>/restore")
@require_user
async def restore_campaign(campaign_id: int) -> dict[str, Any]:
    await current_platform().campaigns.restore(campaign_id, g.user)
    return {"id": campaign_id, "deleted": False}


@api_blueprint.get("/campaigns/<int:campaign_id>/results")
@validate_querystring(ResultsQuery)
@require_user
async def campaign_results(campaign_id: int, query_args: ResultsQuery) -> Response | dict[str, Any]:
    """The campaign's results: a download (json, msgpack or csv), or with `after`/`limit` a page of a cursor.

    Pages list every answer once, in order of storage (a replicated dataset's answer when its quorum
    settles it); each row is a download row plus its own `cursor`. Pass the page's `cursor` as `after`
    for the next page: it stays valid across server restarts. `complete` is true when the campaign is
    finished (complete or cancelled) and this page reached the end. 400 for a malformed cursor.
    """
    campaigns = current_platform().campaigns
    if query_args.after is not None or query_args.limit is not None:
        campaign = await campaigns.owned(campaign_id, g.user)
        return await stream.result_page(campaigns, campaign, query_args.after, query_args.limit or 1000)
    export = campaigns.export(
        await campaigns.owned(campaign_id, g.user),
        query_args.format,
        include_empty=query_args.include_empty,
        verified=query_args.verified,
        every_version=query_args.every_version,
    )
    return Response(export.chunks, mimetype=export.mimetype, headers=export.headers)


@api_blueprint.get("/campaigns/<int:campaign_id>/events")
@validate_querystring(EventsQuery)
@require_user
async def campaign_events(campaign_id: int, query_args: EventsQuery) -> Response | tuple[dict[str, str], int]:
    """Server-sent events of the campaign as it runs (text/event-stream).

    Events: `result` (a results-page row; its SSE `id` is its cursor), `progress` (the campaign's
    `datasets`, `results`, `errors` and `state`, at most twice a second, when they change),
    `kernel_error` (`dataset_id`, `dataset_number`, `message`), `paused` and `resumed` (the campaign),
    and at the end `complete` or `cancelled` (the campaign) once every result has been sent; a
    `: keepalive` comment at least every 15 s. Resume with `?after=CURSOR` or the `Last-Event-ID`
    header (an EventSource sends it by itself when it reconnects). 429 when the account already holds
    `event_streams_per_user` streams in this server process; 400 for a malformed cursor.
    """
    campaigns = current_platform().campaigns
    campaign = await campaigns.owned(campaign_id, g.user)
    after = query_args.after or request.headers.get("Last-Event-ID") or None
    stream.decode_cursor(after)  # a malformed cursor is a 400 now, not an event later
    if stream.slots_for(campaigns).full(g.user.id):
        return {"error": "too many open event streams for this account; close one first"}, 429
    body = stream.events(campaigns, campaign, g.user.id, after)
    response = Response(body, mimetype="text/event-stream")
    response.timeout = None  # Quart would cut a response body off after RESPONSE_TIMEOUT (60 s)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must pass events on at once
    return response


# ----------------------------------------------------------------------- admins: campaign review
# Every route answers 404 to a caller who is not an admin, as for a route that does not exist.


@api_blueprint.get("/admin/campaigns")
@require_user
async def campaigns_awaiting_review() -> dict[str, Any]:
    """Admins: the campaigns whose review is pending, oldest first."""
    campaigns = current_platform().campaigns
    return {"campaigns": [await campaigns.describe(c) for c in await campaigns.awaiting_review(g.user)]}


@api_blueprint.post("/admin/campaigns/<int:campaign_id>/approve")
@require_user
async def approve_campaign(campaign_id: int) -> dict[str, Any]:
    """Admins: approve a campaign; workers that ask for any campaign may then receive it."""
    campaigns = current_platform().campaigns
    return await campaigns.describe(await campaigns.approve(campaign_id, g.user))


@api_blueprint.post("/admin/campaigns/<int:campaign_id>/reject")
@require_user
async def reject_campaign(campaign_id: int) -> dict[str, Any]:
    """Admins: reject a campaign with a reason its owner sees (JSON `{"reason": "..."}`, required); no
    worker receives it any more. The body is read after the admin check, so that nobody else learns
    from a 400 that the route exists."""
    campaigns = current_platform().campaigns
    body = await request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) else None
    return await campaigns.describe(
        await campaigns.reject(campaign_id, g.user, reason if isinstance(reason, str) else "")
    )
