"""`distribute datasets add ID FILE`: JSON lines sent to an open campaign, a batch per request.

Each line of FILE (`-`: stdin) is one dataset. Lines are read as they come (a generating script can
pipe into it), sent in batches of `--batch` as `{"datasets": [...]}`, and a batch the server refuses
for its backlog (429) is sent again after its Retry-After. A rich progress bar counts what was added;
the number added is the last word printed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from .errors import DistributeError

__all__ = ["add_datasets"]

MAX_WAIT = 30.0  # longest Retry-After honoured at once


def _lines(stream: TextIO) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            raise DistributeError(f"line {number} is not JSON: {exc}") from None


def _batches(stream: TextIO, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for _, dataset in _lines(stream):
        batch.append(dataset)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _send(client: httpx.Client, campaign_id: int, batch: list[Any]) -> dict[str, Any]:
    """Post one batch, waiting out back-pressure (429 + Retry-After) as often as the server asks."""
    body = json.dumps({"datasets": batch}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    while True:
        response = client.post(f"/api/campaigns/{campaign_id}/datasets", content=body, headers=headers)
        if response.status_code != 429:
            break
        time.sleep(min(MAX_WAIT, float(response.headers.get("Retry-After", "1") or 1)))
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise DistributeError(f"server said {response.status_code}: {message}")
    added: dict[str, Any] = response.json()
    return added


def add_datasets(client: httpx.Client, campaign_id: int, path: str, *, batch: int = 1000, quiet: bool = False) -> int:
    """Send every dataset of `path` (JSON lines, "-" for stdin) to the open campaign; prints the count added."""
    if batch < 1:
        raise DistributeError("--batch must be at least 1")
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    added = 0
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
            disable=quiet,
            console=Console(stderr=True),
        ) as progress:
            task = progress.add_task(f"campaign {campaign_id}", total=None)
            for datasets in _batches(stream, batch):
                answer = _send(client, campaign_id, datasets)
                added += int(answer["added"])
                progress.update(task, advance=int(answer["added"]))
    finally:
        if stream is not sys.stdin:
            stream.close()
    print(f"added to campaign {campaign_id}: {added}")
    return 0
