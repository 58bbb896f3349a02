"""Results pages and downloads, and the execute page (a trial run in the owner's own browser).

Downloads are `CampaignService.export`, as for the API, so a file from the console is byte for byte
what `GET /api/campaigns/ID/results` gives. The execute page runs the kernel on a
few of the campaign's datasets through the harness's sandboxed runner (`/embed/runner`, loaded in
a sandboxed iframe exactly as the broker loads it); this module only serves the page and its data.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
from quart import Response, abort, g, jsonify, request

from ..campaigns import RESULT_FORMATS
from ..models import StoredResult
from ..webstate import current_platform
from .jsontext import Clipped, clipped, pretty
from .web import ConsoleBlueprint, console, login_required, page

__all__ = ["blueprint"]

blueprint = ConsoleBlueprint("results", __name__)

PER_PAGE = 50
EXECUTE_MAX = 20  # datasets one trial run may take
PREVIEW_CHARS = 400  # of pretty JSON per cell of the results table; the rest is on the result's own page


def decoded(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return msgpack.unpackb(data)
    except (ValueError, msgpack.ExtraData) as exc:
        return f"<undecodable msgpack: {exc}>"


def jsonable(value: Any) -> Any:
    """Workers only produce JSON-like values; anything else (bytes, say) is shown by its repr."""
    return json.loads(json.dumps(value, default=repr))


def preview(value: Any) -> Clipped:
    """Pretty JSON for a table cell, clipped between tokens (never inside one) with the count left out."""
    return clipped(pretty(value), PREVIEW_CHARS)


def row_view(row: StoredResult) -> dict[str, Any]:
    result = decoded(row.value)
    return {
        "id": row.id,
        "dataset_id": row.dataset_id,
        "dataset_number": row.dataset_number,
        "dataset": preview(decoded(row.dataset)),
        "result": None if row.value is None else preview(result),
        "empty": row.value is None,
        "compute_ms": row.compute_ms,
        "worker": row.worker,
        "host": row.host or "(headless or unknown)",
        "created": row.created,
        "kernel_version": row.kernel_version,
    }


@blueprint.get("/campaigns/<int:campaign_id>/results")
@login_required
async def table(campaign_id: int) -> Response:
    campaign = await current_platform().campaigns.owned(campaign_id, g.user)
    queries = console().queries
    total = await queries.result_count(campaign.id)
    pages = max(1, -(-total // PER_PAGE))
    try:
        number = min(max(1, int(request.args.get("page", "1"))), pages)
    except ValueError:
        number = 1
    rows = await queries.results_page(campaign.id, (number - 1) * PER_PAGE, PER_PAGE)
    return await page(
        "console/results.html",
        campaign=campaign,
        rows=[row_view(r) for r in rows],
        total=total,
        page_number=number,
        pages=pages,
        formats=RESULT_FORMATS,
    )


@blueprint.get("/campaigns/<int:campaign_id>/results/<int:result_id>")
@login_required
async def detail(campaign_id: int, result_id: int) -> Response:
    campaign = await current_platform().campaigns.owned(campaign_id, g.user)
    row = await console().queries.result(campaign.id, result_id)
    if row is None:
        abort(404)
    whole = {
        "dataset": pretty(decoded(row.dataset)),
        "result": None if row.value is None else pretty(decoded(row.value)),
    }
    return await page("console/result.html", campaign=campaign, row=row_view(row), pretty=whole)


@blueprint.get("/campaigns/<int:campaign_id>/download/<fmt>")
@login_required
async def download(campaign_id: int, fmt: str) -> Response:
    service = current_platform().campaigns
    campaign = await service.owned(campaign_id, g.user)
    chosen = next((f for f in RESULT_FORMATS if f == fmt), None)
    if chosen is None:
        abort(404)
    export = service.export(
        campaign,
        chosen,
        include_empty=request.args.get("include_empty") == "true",
        verified=request.args.get("verified") == "true",
        every_version=request.args.get("every_version") == "true",
    )
    return Response(export.chunks, mimetype=export.mimetype, headers=export.headers)


# --------------------------------------------------------------------------- execute


@blueprint.get("/campaigns/<int:campaign_id>/execute")
@login_required
async def execute(campaign_id: int) -> Response:
    campaign = await current_platform().campaigns.owned(campaign_id, g.user)
    return await page("console/execute.html", campaign=campaign, execute_max=EXECUTE_MAX)


@blueprint.get("/campaigns/<int:campaign_id>/execute.json")
@login_required
async def execute_data(campaign_id: int) -> Response:
    """What the execute page hands the runner: the kernel, the static dataset, and the first datasets
    as stored (msgpack, base64 in JSON), with their decoded form to show beside each result."""
    campaign = await current_platform().campaigns.owned(campaign_id, g.user)
    try:
        count = min(max(1, int(request.args.get("n", "5"))), EXECUTE_MAX)
    except ValueError:
        count = 5
    samples = await console().queries.sample_datasets(campaign.id, count)
    settings = current_platform().settings
    return jsonify(
        {
            "kernel": campaign.kernel,
            "static": campaign.static_dataset,
            "timeout": campaign.task_timeout,
            "maxResultBytes": settings.max_result_bytes,
            "datasets": [
                {"id": dataset_id, "msgpack": base64.b64encode(payload).decode(), "value": jsonable(decoded(payload))}
                for dataset_id, payload in samples
            ],
        }
    )
