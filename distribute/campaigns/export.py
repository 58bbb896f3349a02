"""A campaign's results as a download: json, msgpack or csv, streamed page by page.

Every row names its dataset twice: `dataset_id` (global) and `dataset_number` (1..N within the campaign,
in generation order). CSV flattens plain-object results into `result.KEY` columns (see `CsvLayout`) and
rounds compute times to 0.1 ms; cells a spreadsheet would run as formulas are made inert.

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

from ..models import StoredResult
from ..storage import Storage

__all__ = [
    "CSV_COLUMNS",
    "RESULT_FORMATS",
    "CsvLayout",
    "ResultFormat",
    "ResultsExport",
    "export_results",
    "result_row",
]

ResultFormat = Literal["json", "msgpack", "csv"]
RESULT_FORMATS: tuple[ResultFormat, ...] = ("json", "msgpack", "csv")
CHUNK = 64 * 1024  # bytes per body chunk: one ASGI message per row would dominate the download
# The CSV's fixed columns; between "dataset" and "compute_ms" come the result's: see `CsvLayout`.
CSV_COLUMNS = (
    "dataset_id",
    "dataset_number",
    "dataset",
    "result",
    "compute_ms",
    "worker",
    "host",
    "created",
    "verification",
    "kernel_version",
)
MAX_RESULT_COLUMNS = 200  # more distinct keys than this and results stay JSON in one "result" column

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
    storage: Storage,
    campaign_id: int,
    fmt: ResultFormat,
    *,
    include_empty: bool = False,
    verified: bool = False,
    every_version: bool = False,
) -> ResultsExport:
    """The campaign's results in `fmt`; `verified`: only results settled by a quorum (or a trusted worker).

    Each dataset shows the result of its newest kernel version; `every_version` adds the older versions' too.
    """
    encode, mimetype = ENCODERS[fmt]

    def rows() -> AsyncIterator[Row]:
        return _result_rows(storage, campaign_id, include_empty, verified, every_version)

    return ResultsExport(encode(rows), mimetype, f"campaign-{campaign_id}-results.{fmt}")


async def _result_rows(
    storage: Storage, campaign_id: int, include_empty: bool, verified: bool, every_version: bool, page: int = 2000
) -> AsyncIterator[Row]:
    after = (0, 0)
    while True:
        batch = await storage.results(
            campaign_id, after=after, limit=page, verified=verified, every_version=every_version
        )
        for row in batch:
            if row.value is None and not include_empty:
                continue
            yield result_row(row)
        if len(batch) < page:
            return
        after = (batch[-1].dataset_id, batch[-1].id)


def result_row(row: StoredResult) -> Row:
    """One result as every JSON surface shows it (the download, the cursor pages, the event stream)."""
    return {
        "dataset_id": row.dataset_id,
        "dataset_number": row.dataset_number,
        "dataset": msgpack.unpackb(row.dataset),
        "result": None if row.value is None else msgpack.unpackb(row.value),
        "compute_ms": row.compute_ms,
        "worker": row.worker,
        "host": row.host,
        "created": row.created.isoformat(),
        "verification": row.status,
        "kernel_version": row.kernel_version,
    }


async def _as_json(rows: Callable[[], AsyncIterator[Row]]) -> AsyncIterator[bytes]:
    parts: list[bytes] = [b"["]
    size, separator = 1, b""
    async for row in rows():
        encoded = separator + json.dumps(row).encode()
        separator = b",\n"
        parts.append(encoded)
        size += len(encoded)
        if size > CHUNK:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"]\n")
    yield b"".join(parts)


async def _as_msgpack(rows: Callable[[], AsyncIterator[Row]]) -> AsyncIterator[bytes]:
    """A stream of msgpack maps, one per result (read it with msgpack.Unpacker)."""
    packer = msgpack.Packer(autoreset=False)
    async for row in rows():
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


def plain_object(value: Any) -> bool:
    """A result CSV spreads over columns: a JSON object (a dict whose keys are all strings)."""
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


@dataclass
class CsvLayout:
    """The columns of a CSV download, chosen from all its results before the first line is written.

    A plain-object result fills one column per key, named "result." + key (the prefix keeps a key such
    as "host" apart from the fixed columns), in the order the keys are first seen. A value that is an
    array or object itself is written as JSON in its cell, null as an empty cell, true/false as such;
    a key a result lacks leaves its cell empty. Any other result (a number, an array, a string...) is
    JSON in the "result" column, which is there whenever such a result is (or no plain object is):
    then object results leave it empty. Empty results (include_empty) are "null" there. With more
    than MAX_RESULT_COLUMNS distinct keys nothing is flattened: every result is JSON in "result".
    """

    keys: dict[str, None]  # insertion-ordered set
    json_column: bool = False

    @classmethod
    def of(cls, results: list[Any]) -> CsvLayout:
        layout = cls({})
        layout.add(results)
        return layout.settled()

    def add(self, results: list[Any]) -> None:
        for value in results:
            if value is None:  # an empty result: "null" in the result column if there is one
                continue
            if plain_object(value):
                self.keys.update(dict.fromkeys(value))
            else:
                self.json_column = True

    def settled(self) -> CsvLayout:
        if len(self.keys) > MAX_RESULT_COLUMNS:
            return CsvLayout({}, json_column=True)
        return CsvLayout(self.keys, json_column=self.json_column or not self.keys)

    @property
    def flattens(self) -> bool:
        return bool(self.keys)

    def header(self) -> list[str]:
        result = ["result"] if self.json_column else []
        result += [f"result.{key}" for key in self.keys]
        return [*CSV_COLUMNS[:3], *result, *CSV_COLUMNS[4:]]

    def line(self, row: Row) -> list[Any]:
        value = row["result"]
        flat = self.flattens and plain_object(value)
        result = [("" if flat else json.dumps(value))] if self.json_column else []
        result += [_cell(value[key]) if flat and key in value else "" for key in self.keys]
        fixed = [row["dataset_id"], row["dataset_number"], json.dumps(row["dataset"])]
        rest = [round(row["compute_ms"], 1), row["worker"], row["host"], row["created"], row["verification"],
                row["kernel_version"]]  # fmt: skip
        return [_inert(cell) for cell in (*fixed, *result, *rest)]


def _cell(value: Any) -> Any:
    """One key's value in its own column: strings and numbers as they are, anything else in JSON spelling."""
    if value is None:
        return ""
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)


async def _as_csv(rows: Callable[[], AsyncIterator[Row]]) -> AsyncIterator[bytes]:
    # The header needs every result's keys: a first pass reads the results once for them alone.
    layout = CsvLayout({})
    async for row in rows():
        layout.add([row["result"]])
    layout = layout.settled()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(layout.header())
    async for row in rows():
        writer.writerow(layout.line(row))
        if buffer.tell() > CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


ENCODERS: dict[ResultFormat, tuple[Callable[[Callable[[], AsyncIterator[Row]]], AsyncIterator[bytes]], str]] = {
    "json": (_as_json, "application/json"),
    "msgpack": (_as_msgpack, "application/msgpack"),
    "csv": (_as_csv, "text/csv"),
}
