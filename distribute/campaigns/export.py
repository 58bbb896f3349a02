"""A campaign's results as a download: json, msgpack or csv, streamed page by page.

`export_results` returns the body as an async iterator of chunks plus its media type and file
name; the web adapters wrap it in a response as it is. A download of millions of results never
sits in memory at once, and the body is produced after the view returned, outside the app
context, so everything it needs is bound here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from ..storage import Storage

__all__ = ["CSV_COLUMNS", "RESULT_FORMATS", "ResultFormat", "ResultsExport", "export_results"]

ResultFormat = Literal["json", "msgpack", "csv"]
RESULT_FORMATS: tuple[ResultFormat, ...] = ("json", "msgpack", "csv")
CHUNK = 64 * 1024  # bytes per body chunk: one ASGI message per row would dominate the download
CSV_COLUMNS = ("dataset_id", "dataset", "result", "compute_ms", "worker", "host", "created", "verification")

Row = dict[str, Any]  # one result as the download shows it: msgpack values decoded


@dataclass(frozen=True)
class ResultsExport:
    """A download: its body, media type and the headers that make it a file."""

    chunks: AsyncIterator[bytes]
    mimetype: str
    filename: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Disposition": f'attachment; filename="{self.filename}"'}


def export_results(
    storage: Storage, campaign_id: int, fmt: ResultFormat, *, include_empty: bool = False, verified: bool = False
) -> ResultsExport:
    """The campaign's results in `fmt`; `verified`: only results settled by a quorum (or a trusted worker)."""
    encode, mimetype = ENCODERS[fmt]
    rows = _result_rows(storage, campaign_id, include_empty, verified)
    return ResultsExport(encode(rows), mimetype, f"campaign-{campaign_id}-results.{fmt}")


async def _result_rows(
    storage: Storage, campaign_id: int, include_empty: bool, verified: bool, page: int = 2000
) -> AsyncIterator[Row]:
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


async def _as_json(rows: AsyncIterator[Row]) -> AsyncIterator[bytes]:
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


async def _as_msgpack(rows: AsyncIterator[Row]) -> AsyncIterator[bytes]:
    """A stream of msgpack maps, one per result (read it with msgpack.Unpacker)."""
    packer = msgpack.Packer(autoreset=False)
    async for row in rows:
        packer.pack(row)
        if packer.getbuffer().nbytes > CHUNK:
            yield packer.bytes()
            packer.reset()
    yield packer.bytes()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: Any) -> Any:
    """A cell a spreadsheet would run as a formula (workers name their own host) gets a leading "'".

    Numbers stay as they are: "-5" is a number to every spreadsheet, not a formula.
    """
    if not isinstance(cell, str) or not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell


async def _as_csv(rows: AsyncIterator[Row]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for row in rows:
        writer.writerow([_inert(json.dumps(row[c]) if c in ("dataset", "result") else row[c]) for c in CSV_COLUMNS])
        if buffer.tell() > CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


ENCODERS: dict[ResultFormat, tuple[Callable[[AsyncIterator[Row]], AsyncIterator[bytes]], str]] = {
    "json": (_as_json, "application/json"),
    "msgpack": (_as_msgpack, "application/msgpack"),
    "csv": (_as_csv, "text/csv"),
}
