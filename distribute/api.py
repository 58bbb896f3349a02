"""The JSON API under /api/: campaigns, results downloads; Bearer-token authentication.

Request bodies are validated by quart-schema (pydantic models), which also produces the OpenAPI
document at /api/openapi.json. Every route sees only the caller's own campaigns: another user's
campaign is a 404, exactly like a missing one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, Field
from quart import Blueprint, Response, current_app, g, request
from quart_schema import DataSource, RequestSchemaValidationError, validate_querystring, validate_request
from quart_schema.pydantic import File
from werkzeug.datastructures import FileStorage

from .errors import NotFound, Unauthorized, ValidationError
from .models import Campaign, User
from .sandbox.kernels import kernel_syntax_error
from .work.verification import canonical, comparator_kernel

__all__ = [
    "RESULT_FORMATS",
    "CampaignFields",
    "api_blueprint",
    "campaign_json",
    "check_comparator",
    "create_from_sources",
    "decode_source",
    "owned_campaign",
    "results_download",
]

RESULT_FORMATS = ("json", "msgpack", "csv")

api_blueprint = Blueprint("api", __name__, url_prefix="/api")


class CampaignFields(BaseModel):
    """A new campaign's settings (the API's form and the console's share them)."""

    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=5000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    weight: float = Field(default=1.0, gt=0, le=1e6)
    replication: int = Field(default=1, ge=1, le=10)
    task_timeout: float | None = Field(default=None, gt=0, le=86400)


class CampaignForm(CampaignFields):
    kernel: File
    generator: File
    static_dataset: File | None = None
    comparator: File | None = None
    spot_checks: File | None = None


class ResultsQuery(BaseModel):
    format: Literal["json", "msgpack", "csv"] = "json"
    include_empty: bool = False
    verified: bool = False


def platform() -> Any:
    return current_app.extensions["distribute"]


@api_blueprint.errorhandler(RequestSchemaValidationError)
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
        user = await platform().storage.user_for_token(token.strip())
        if user is None:
            raise Unauthorized("invalid or revoked API token")
        g.user = user
        return await view(*args, **kwargs)

    return wrapper


async def owned_campaign(campaign_id: int, user: User) -> Campaign:
    campaign = await platform().storage.get_campaign(campaign_id)
    if campaign is None or campaign.owner_id != user.id:
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign


# Leading bytes of binary files an owner may pick by mistake (an image, an archive, a compiled
# module), so the error says what was uploaded instead of pointing at a byte that is not UTF-8.
BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00asm", "a WebAssembly module"),
    (b"\x7fELF", "an executable (ELF)"),
)
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def decode_source(label: str, data: bytes, limit: int) -> str:
    """Uploaded JavaScript or text: bounded, UTF-8, no NUL bytes (binary garbage)."""
    if len(data) > limit:
        raise ValidationError(f"{label} is {len(data)} bytes; the limit is {limit}")
    for signature, kind in BINARY_SIGNATURES:
        if data.startswith(signature):
            raise ValidationError(f"{label} is {kind}, not text: upload the source as UTF-8 text")
    if data.startswith(UTF16_MARKS):
        raise ValidationError(f"{label} is UTF-16 text (it starts with a byte-order mark): save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{label} is not valid UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise ValidationError(f"{label} contains NUL bytes: upload text, not a binary file")
    return text


async def campaign_json(campaign: Campaign) -> dict[str, Any]:
    """A campaign as the API and the console's live view show it, with its counts."""
    plat = platform()
    counts = await plat.storage.counts(campaign.id)
    errors = await plat.storage.kernel_errors(campaign.id, limit=20)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "description": campaign.description,
        "status": campaign.status,
        "deleted": campaign.deleted,
        "priority": campaign.priority,
        "weight": campaign.weight,
        "replication": campaign.replication,
        "comparator": bool(campaign.comparator),
        "task_timeout": campaign.task_timeout,
        "created": campaign.created.isoformat(),
        "generation_error": campaign.generation_error,
        "datasets": {
            "total": counts.total,
            "pending": counts.pending,
            "leased": counts.leased,
            "done": counts.done,
            "failed": counts.failed,
        },
        "results": counts.results,
        "verification": {
            "verified": counts.verified,
            "trusted": counts.trusted,
            "pending": counts.pending_verification,
            "conflict": counts.conflict,
            "flagged_workers": counts.flagged_workers,
        },
        "errors": counts.errors,
        "workers": plat.workers_on(campaign.id),
        "compute_seconds": round(counts.compute_seconds, 3),
        "kernel_errors": [
            {"dataset_id": e.dataset_id, "message": e.message, "stack": e.stack, "count": e.count} for e in errors
        ],
    }


def parse_spot_checks(text: str) -> list[tuple[bytes, bytes]]:
    """Known-answer datasets: a JSON array of {"dataset": ..., "result": ...} (msgpack-packed here)."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"spot_checks is not valid JSON: {exc}") from None
    if not isinstance(items, list) or len(items) > MAX_SPOT_CHECKS:
        raise ValidationError(f"spot_checks must be a JSON array of at most {MAX_SPOT_CHECKS} items")
    checks: list[tuple[bytes, bytes]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"dataset", "result"} or item["result"] is None:
            raise ValidationError(f'spot_checks[{i}] must be {{"dataset": ..., "result": ...}} with a non-null result')
        checks.append((msgpack.packb(item["dataset"]), canonical(item["result"])))
    return checks


MAX_SPOT_CHECKS = 1000


async def check_comparator(comparator: str, *, timeout: float, heap_mib: int) -> None:
    """Parse (never run) a comparator exactly as the verifier will load it; ValidationError if it fails.

    The verifier wraps the owner's text in an expression (`verification.comparator_kernel`), so the
    text must be one expression: a function or an object with `compare`. A comparator that does
    not parse would otherwise only be logged at verification time, and replicas compared by bytes.
    """
    syntax = await kernel_syntax_error(comparator_kernel(comparator), timeout=timeout, heap_mib=heap_mib)
    if syntax is not None:
        raise ValidationError(
            f"the comparator does not parse: {syntax} (it must be one expression, "
            "`function (a, b) { ... }` or `({ compare: function (a, b) { ... } })`)"
        )


async def create_from_sources(
    user: User,
    fields: CampaignFields,
    kernel: bytes,
    generator: bytes,
    static: bytes | None,
    default_name: str,
    comparator: bytes | None = None,
    spot_checks: bytes | None = None,
) -> Campaign:
    """Check the uploaded sources and create the campaign (the API's and the console's one way)."""
    plat = platform()
    limit = plat.settings.max_source_bytes
    kernel_text = decode_source("kernel", kernel, limit)
    generator_text = decode_source("generator", generator, limit)
    static_text = decode_source("static_dataset", static, limit) if static else ""
    comparator_text = decode_source("comparator", comparator, limit) if comparator else ""
    checks = parse_spot_checks(decode_source("spot_checks", spot_checks, limit)) if spot_checks else []
    if not kernel_text.strip() or not generator_text.strip():
        raise ValidationError("kernel and generator must not be empty")
    settings = plat.settings
    syntax = await kernel_syntax_error(
        kernel_text, timeout=settings.generator_timeout, heap_mib=settings.generator_heap
    )
    if syntax is not None:
        raise ValidationError(f"the kernel does not parse: {syntax}")
    if comparator_text:
        await check_comparator(comparator_text, timeout=settings.generator_timeout, heap_mib=settings.generator_heap)
    campaign = await plat.create_campaign(
        user,
        name=fields.name or default_name,
        description=fields.description,
        kernel=kernel_text,
        generator=generator_text,
        static_dataset=static_text,
        priority=fields.priority,
        weight=fields.weight,
        replication=fields.replication,
        task_timeout=fields.task_timeout or plat.settings.task_timeout,
        comparator=comparator_text or None,
    )
    if checks:
        await plat.storage.add_spot_checks(campaign.id, checks)
    return campaign


@api_blueprint.post("/campaigns")
@validate_request(CampaignForm, source=DataSource.FORM_MULTIPART)
@require_user
async def create_campaign(data: CampaignForm) -> tuple[dict[str, Any], int]:
    static = data.static_dataset.read() if data.static_dataset else None
    campaign = await create_from_sources(
        g.user,
        data,
        data.kernel.read(),
        data.generator.read(),
        static,
        data.kernel.filename or "campaign",
        comparator=data.comparator.read() if data.comparator else None,
        spot_checks=data.spot_checks.read() if data.spot_checks else None,
    )
    return await campaign_json(campaign), 201


@api_blueprint.get("/campaigns")
@require_user
async def list_campaigns() -> dict[str, Any]:
    campaigns = await platform().storage.list_campaigns(g.user.id)
    return {"campaigns": [await campaign_json(c) for c in campaigns]}


@api_blueprint.get("/campaigns/<int:campaign_id>")
@require_user
async def show_campaign(campaign_id: int) -> dict[str, Any]:
    return await campaign_json(await owned_campaign(campaign_id, g.user))


@api_blueprint.post("/campaigns/<int:campaign_id>/reset")
@require_user
async def reset_campaign(campaign_id: int) -> dict[str, Any]:
    campaign = await owned_campaign(campaign_id, g.user)
    await platform().reset_campaign(campaign)
    return await campaign_json(await owned_campaign(campaign_id, g.user))


@api_blueprint.delete("/campaigns/<int:campaign_id>")
@require_user
async def delete_campaign(campaign_id: int) -> dict[str, Any]:
    campaign = await owned_campaign(campaign_id, g.user)
    await platform().set_deleted(campaign, True)
    return {"id": campaign_id, "deleted": True}


@api_blueprint.post("/campaigns/<int:campaign_id>/restore")
@require_user
async def restore_campaign(campaign_id: int) -> dict[str, Any]:
    campaign = await owned_campaign(campaign_id, g.user)
    await platform().set_deleted(campaign, False)
    return {"id": campaign_id, "deleted": False}


@api_blueprint.get("/campaigns/<int:campaign_id>/results")
@validate_querystring(ResultsQuery)
@require_user
async def campaign_results(campaign_id: int, query_args: ResultsQuery) -> Response:
    campaign = await owned_campaign(campaign_id, g.user)
    return results_download(campaign, query_args.format, query_args.include_empty, query_args.verified)


def results_download(campaign: Campaign, fmt: str, include_empty: bool = False, verified: bool = False) -> Response:
    """The streamed download of a campaign's results as json, msgpack or csv (API and console).

    `verified`: only results settled by a quorum (or accepted from a trusted worker).
    """
    rows = _result_rows(platform().storage, campaign.id, include_empty, verified)
    encoders = {
        "json": (_as_json, "application/json"),
        "msgpack": (_as_msgpack, "application/msgpack"),
        "csv": (_as_csv, "text/csv"),
    }
    encode, mimetype = encoders[fmt]
    response = Response(encode(rows), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="campaign-{campaign.id}-results.{fmt}"'
    return response


async def _result_rows(
    storage: Any, campaign_id: int, include_empty: bool, verified: bool = False, page: int = 2000
) -> AsyncIterator[dict[str, Any]]:
    """Stream results page by page, so a download of millions never sits in memory at once.

    The response body is produced after the view returned, outside the app context: everything it
    needs is passed in.
    """
    after = (0, 0)
    while True:
        batch = await storage.results(campaign_id, after=after, limit=page, verified=verified)
        for row in batch:
            if row.value is None and not include_empty:
                continue
            yield {
                "dataset_id": row.dataset_id,
                "dataset": msgpack.unpackb(row.dataset),
                "result": None if row.value is None else msgpack.unpackb(row.value),
                "compute_ms": row.compute_ms,
                "worker": row.worker,
                "host": row.host,
                "created": row.created.isoformat(),
                "verification": row.status,
            }
        if len(batch) < page:
            return
        after = (batch[-1].dataset_id, batch[-1].id)


CHUNK = 64 * 1024  # bytes per body chunk: one ASGI message per row would dominate the download


async def _as_json(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    parts: list[bytes] = [b"["]
    size, separator = 1, b""
    async for row in rows:
        encoded = separator + json.dumps(row).encode()
        separator = b",\n"
        parts.append(encoded)
        size += len(encoded)
        if size > CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]\n")
    yield b"".join(parts)


async def _as_msgpack(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """A stream of msgpack maps, one per result (read it with msgpack.Unpacker)."""
    packer = msgpack.Packer(autoreset=False)
    async for row in rows:
        packer.pack(row)
        if packer.getbuffer().nbytes > CHUNK:
            yield packer.bytes()
            packer.reset()
    yield packer.bytes()


CSV_COLUMNS = ("dataset_id", "dataset", "result", "compute_ms", "worker", "host", "created", "verification")


async def _as_csv(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for row in rows:
        writer.writerow([json.dumps(row[c]) if c in ("dataset", "result") else row[c] for c in CSV_COLUMNS])
        if buffer.tell() > CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
