"""`distribute results ID --follow`: every result as one JSON line as it is stored, until the campaign completes.

It reads the API's event stream (`GET /api/campaigns/ID/events`) and remembers the cursor of the last
result it printed. When the connection drops or the server restarts, it connects again after a short
backoff and resumes after that cursor, so no result is printed twice and none is missed; it also
prints each dataset at most once. The exit status is 0 when the campaign completes, 1 when it was
cancelled or deleted; an answer such as 401 or 404 is an error at once (no retry).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO

import httpx

from .errors import DistributeError

__all__ = ["FollowError", "follow"]

READ_TIMEOUT = 45.0  # s without a byte (the server sends a keepalive at least every 15 s): reconnect
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 10.0


class FollowError(DistributeError):
    """The server refused the stream (a 4xx answer): retrying would not help."""


def follow(
    client: httpx.Client,
    campaign_id: int,
    out: IO[bytes] | None = None,
    *,
    after: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the campaign's results as JSON lines on `out` until it ends; returns the exit status."""
    out = out or sys.stdout.buffer
    cursor = after
    printed: set[int] = set()
    backoff = FIRST_BACKOFF
    timeout = httpx.Timeout(client.timeout.connect, read=READ_TIMEOUT)
    while True:
        try:
            params = {"after": cursor} if cursor else {}
            url = f"/api/campaigns/{campaign_id}/events"
            with client.stream("GET", url, params=params, timeout=timeout) as response:
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    response.read()
                    raise FollowError(_error(response))
                if response.status_code != 200:
                    raise httpx.TransportError(f"HTTP {response.status_code}")
                for name, event_id, data in _events(response, out):
                    if name == b"result":
                        backoff = FIRST_BACKOFF
                        cursor = event_id
                        dataset = _dataset_id(data)
                        if dataset not in printed:
                            printed.add(dataset)
                            out.write(data + b"\n")  # the row as the server encoded it: one JSON object
                    elif name == b"complete":
                        out.flush()
                        return 0
                    elif name in (b"cancelled", b"gone"):
                        out.flush()
                        print(f"campaign {campaign_id} was {'cancelled' if name == b'cancelled' else 'deleted'}",
                              file=sys.stderr)  # fmt: skip
                        return 1
        except (httpx.TransportError, httpx.StreamError):
            pass  # a dropped connection or a restarting server: connect again below
        out.flush()
        sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)


_DATASET_ID = b'{"dataset_id":'


def _dataset_id(row: bytes) -> int:
    """The row's `dataset_id`, read from its head (the server writes it first) without decoding the row."""
    if row.startswith(_DATASET_ID):
        head = row[len(_DATASET_ID) : row.find(b",", len(_DATASET_ID))]
        if head.isdigit():
            return int(head)
    return int(json.loads(row)["dataset_id"])


def _events(response: httpx.Response, out: IO[bytes]) -> Iterator[tuple[bytes, str | None, bytes]]:
    """(name, id, data) of each event of a server-sent event stream; `out` is flushed after each chunk read.

    Bytes, not text: a busy stream brings thousands of results a second, and most of the time a
    follower spends is here.
    """
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            name, event_id, data = b"message", None, b""
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip()
                elif line.startswith(b"data:"):
                    data += line[5:].strip()
                elif line.startswith(b"id:"):
                    event_id = line[3:].strip().decode()
            if data:
                yield name, event_id, data
        out.flush()  # once per chunk, not per line: a busy stream sends pages of results in one chunk


def _error(response: httpx.Response) -> str:
    try:
        message = response.json().get("error", response.text)
    except ValueError:
        message = response.text
    return f"HTTP {response.status_code}: {message}"
