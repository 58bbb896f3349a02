"""A server-sent events reader for tests and benchmarks: parses a streamed httpx response into events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["Event", "read_events"]


@dataclass(frozen=True)
class Event:
    name: str  # "message" when the server named none; "comment" for a ": ..." line
    data: Any  # the JSON of `data:` (the comment's text for a comment)
    id: str | None = None


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Every event of the response's body, comments included, until the server ends it."""
    name, data, event_id = "message", "", None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Event("comment", line[1:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line == "" and data:
            yield Event(name, json.loads(data), event_id)
            name, data, event_id = "message", "", None
