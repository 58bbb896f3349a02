"""The sans-I/O core the sync and the async client share: requests built as plain values, answers
parsed and checked, the server-sent-events parser, the result stream's cursor bookkeeping, the
retry policy and the reorder book of `map`. Nothing here sends a byte or sleeps; `sync` and `aio`
do the I/O (httpx.Client or httpx.AsyncClient, time.sleep or trio.sleep) around it.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import msgpack

from .. import __version__
from .errors import BY_STATUS, ClientError, ConnectionFailed, NotFound, ServerError, TooManyRequests

__all__ = [
    "FINISHED",
    "Call",
    "MapBook",
    "Result",
    "ResultCursor",
    "SSEParser",
    "ServerEvent",
    "Source",
    "backoff",
    "checked",
    "create_call",
    "default_server",
    "default_token",
    "headers",
    "is_finished",
    "retryable",
]

DEFAULT_SERVER = "http://127.0.0.1:8000"  # as the `distribute` command's own default
FINISHED = frozenset({"complete", "cancelled", "failed"})  # statuses a campaign never leaves by itself
RETRY_STATUSES = frozenset({502, 503, 504})  # a proxy whose server is restarting; worth another try
PAGE_LIMIT = 5000  # results per cursor page (the server allows 10,000): fewer round trips when busy
STREAM_TIMEOUT = httpx.Timeout(60.0)

# What a source argument may be: its text, its bytes, or a path to a file (str is always text).
Source = str | bytes | os.PathLike[str]


def default_server(server: str | None) -> str:
    return (server or os.environ.get("DISTRIBUTE_SERVER") or DEFAULT_SERVER).rstrip("/")


def default_token(token: str | None) -> str:
    found = token or os.environ.get("DISTRIBUTE_TOKEN")
    if not found:
        raise ClientError("an API token is needed: Client(token=...) or DISTRIBUTE_TOKEN")
    return found


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": f"distribute-client/{__version__}"}


@dataclass(frozen=True)
class Call:
    """One HTTP request as data: the sync and the async client each send it their way."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        # A stream is quiet between results; its keepalive comes every 15 s, so a minute of
        # silence is a dead connection.
        timeout = STREAM_TIMEOUT if self.headers.get("Accept") == "text/event-stream" else httpx.USE_CLIENT_DEFAULT
        return http.build_request(
            self.method,
            self.path,
            params=self.params or None,
            data=self.data,
            files=self.files,
            content=self.content,
            headers=self.headers or None,
            timeout=timeout,
        )


def _source(name: str, value: Source | Any) -> tuple[str, bytes]:
    """A source as an upload: a path is read (and names the file), text and bytes are sent as they
    are, anything else (a static dataset given as a dict or list) is sent as JSON."""
    if isinstance(value, os.PathLike):
        path = Path(value)
        return path.name, path.read_bytes()
    if isinstance(value, bytes):
        return f"{name}.js", value
    if isinstance(value, str):
        return f"{name}.js", value.encode()
    return f"{name}.json", json.dumps(value).encode()


def create_call(
    kernel: Source, generator: Source | None, static: Source | Any | None, options: Mapping[str, Any]
) -> Call:
    """`POST /api/campaigns`: the sources as files, the options as form fields (booleans as
    "true"/"false", as the API's form reads them). `comparator` and `spot_checks` are sources too."""
    files = {"kernel": _source("kernel", kernel)}
    if generator is not None:
        files["generator"] = _source("generator", generator)
    if static is not None:
        files["static_dataset"] = _source("static", static)
    form: dict[str, str] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in ("comparator", "spot_checks"):
            files[key] = _source(key, value)
        elif isinstance(value, bool):
            form[key] = "true" if value else "false"
        else:
            form[key] = str(value)
    if "name" not in form and isinstance(kernel, os.PathLike):
        form["name"] = Path(kernel).stem
    return Call("POST", "/api/campaigns", data=form, files=files)


def datasets_call(campaign_id: int, datasets: list[Any]) -> Call:
    """`POST /api/campaigns/ID/datasets` as msgpack: smaller than JSON and takes bytes too."""
    body = msgpack.packb(datasets, use_bin_type=True)
    return Call(
        "POST", f"/api/campaigns/{campaign_id}/datasets", content=body, headers={"Content-Type": "application/msgpack"}
    )


def page_call(campaign_id: int, after: str | None, limit: int = PAGE_LIMIT) -> Call:
    params = {"limit": str(limit)}
    if after is not None:
        params["after"] = after
    return Call("GET", f"/api/campaigns/{campaign_id}/results", params=params)


def events_call(campaign_id: int, after: str | None) -> Call:
    params = {"after": after} if after is not None else {}
    return Call("GET", f"/api/campaigns/{campaign_id}/events", params=params, headers={"Accept": "text/event-stream"})


def retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def checked(response: httpx.Response) -> Any:
    """The decoded JSON of a successful answer; otherwise the `ClientError` that says why, with
    the server's message (its `error`, the upload at fault, the validation details)."""
    if response.status_code < 400:
        return response.json()
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        message = str(body["error"])
        if body.get("field"):
            message = f"{body['field']}: {message}"
        if body.get("details"):
            message += ": " + json.dumps(body["details"])
    else:
        message = response.text.strip() or response.reason_phrase
    status = response.status_code
    if status == 429:
        raise TooManyRequests(message, status, body, retry_after(response))
    if status >= 500:
        raise ServerError(message, status, body)
    raise BY_STATUS.get(status, ClientError)(message, status, body)


def retryable(exc: BaseException) -> bool:
    """Worth another try after a pause: the server is unreachable or restarting."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ClientError) and exc.status in RETRY_STATUSES


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential with full jitter, so
    many clients of one restarted server do not come back in step."""
    return random.uniform(0, min(cap, base * 2**attempt))


def reraise(exc: Exception) -> NoReturn:
    """Raise `exc` as the client's own error: a ClientError as it is, a transport error as
    `ConnectionFailed` (with the original as its cause)."""
    if isinstance(exc, ClientError):
        raise exc
    raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc


def is_finished(info: Mapping[str, Any]) -> bool:
    return info.get("status") in FINISHED


@dataclass(frozen=True, slots=True)
class Result:
    """One stored result. `value` is what the kernel returned, `dataset` what it was given,
    `dataset_number` its 1-based position in the campaign (the order datasets were generated or
    added), `cursor` where a stream resumes just after it (pass it as `results(after=...)`)."""

    dataset_number: int
    dataset: Any
    value: Any
    cursor: str
    dataset_id: int = 0
    compute_ms: float | None = None
    worker: str | None = None
    host: str | None = None
    created: str | None = None
    verification: str | None = None
    kernel_version: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Result:
        get = row.get  # positional and unconverted: this runs once per result of a busy stream
        return cls(
            row["dataset_number"],
            get("dataset"),
            get("result"),
            row["cursor"],
            get("dataset_id", 0),
            get("compute_ms"),
            get("worker"),
            get("host"),
            get("created"),
            get("verification"),
            get("kernel_version"),
        )


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its name, its data (JSON-decoded) and its id (a result's cursor)."""

    name: str
    data: Any
    id: str | None


class SSEParser:
    """Server-sent events (the text/event-stream format: `event:`, `data:`, `id:` fields, a blank
    line ends an event, a line starting with ':' is a comment such as a keepalive), fed the bytes
    as they come (`chunk`) or a line at a time (`feed`)."""

    def __init__(self) -> None:
        self._name, self._data, self._id = "message", [], None  # type: tuple[str, list[str], str | None]
        self._pending = b""

    def chunk(self, data: bytes) -> list[ServerEvent]:
        """The events completed by `data`. Whole events are cut out of the bytes at once: on a busy
        stream this costs a fraction of splitting and decoding it line by line."""
        buffer = self._pending + data
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: wait for the rest
                self._pending = buffer
                return []
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buffer.split(b"\n\n")
        self._pending = blocks.pop()
        events = []
        for block in blocks:
            name, event_id, data_lines = "message", None, []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data_lines.append(line[6:] if line.startswith(b"data: ") else line[5:])
                elif line.startswith(b"event:"):
                    name = line[6:].strip().decode()
                elif line.startswith(b"id:"):
                    event_id = line[3:].strip().decode()
            if data_lines:
                text = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
                events.append(ServerEvent(name, json.loads(text) if text else None, event_id))
        return events

    def feed(self, line: str) -> ServerEvent | None:
        # The hot path of a busy stream (four lines a result): the common fields are tested first.
        if line.startswith("data:"):
            self._data.append(line[6:] if line.startswith("data: ") else line[5:])
            return None
        if not line or line == "\r":
            if not self._data:
                self._name, self._id = "message", None
                return None
            text = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
            event = ServerEvent(self._name, json.loads(text) if text else None, self._id)
            self._name, self._data, self._id = "message", [], None
            return event
        if line.startswith(":"):
            return None
        key, _, value = line.rstrip("\r\n").partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self._name = value
        elif key == "id":
            self._id = value
        return None


class ResultCursor:
    """Where a result stream stands: the cursor after the last result handed out, and whether the
    campaign has ended with every result sent. A reconnection resumes from `cursor`, so each result
    is handed out once even across disconnects and server restarts."""

    def __init__(self, after: str | None) -> None:
        self.cursor = after
        self.ended = False  # the campaign finished and the stream sent its last result
        self.info: dict[str, Any] | None = None  # the last campaign JSON an event carried

    def page(self, body: Mapping[str, Any]) -> list[Result]:
        """The results of a JSON page (`{"results", "cursor", "complete"}`)."""
        results = [Result.from_row(row) for row in body["results"]]
        self.cursor = body.get("cursor") or (results[-1].cursor if results else self.cursor)
        self.ended = bool(body.get("complete"))
        return results

    def event(self, event: ServerEvent) -> Result | None:
        """A `result` event as a Result; other events update what is known of the campaign."""
        if event.name == "result":
            result = Result.from_row(event.data)
            self.cursor = event.id or result.cursor
            return result
        if event.name in ("complete", "cancelled"):
            self.info = event.data
            self.ended = True
        elif event.name == "error":  # the server refused the stream (e.g. too many open for the account)
            raise TooManyRequests(str((event.data or {}).get("error", "the event stream was refused")), 429, event.data)
        elif event.name == "gone":
            raise NotFound(f"campaign {(event.data or {}).get('id')} was deleted", 404, event.data)
        elif event.name in ("paused", "resumed"):
            self.info = event.data
        return None


class MapBook:
    """The bookkeeping of one `map`: datasets sent and not yet handed back (the window that gives
    back-pressure), and, in ordered mode, results held until every earlier dataset's has come."""

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        self.sent = 0  # datasets the server accepted
        self.handed = 0  # results handed to the caller
        self.closed = False  # the input is exhausted and the campaign closed
        self._first: int | None = None  # the number of the first dataset sent (1 on a new campaign)
        self._next = 1  # ordered mode: the dataset number to hand out next
        self._held: dict[int, Result] = {}
        self._seen: set[int] = set()  # unordered mode: numbers handed out

    def accepted(self, answer: Mapping[str, Any]) -> None:
        """Note an upload's answer (`{"added", "first", "last", ...}`)."""
        if self._first is None:
            self._first = int(answer["first"])
            if self.handed == 0:
                self._next = self._first
        self.sent += int(answer["added"])

    def outstanding(self) -> int:
        return self.sent - self.handed

    def receive(self, result: Result) -> list[Result]:
        """The results that can be handed out now that `result` arrived, in the order to hand them."""
        if not self.ordered:
            self.handed += 1
            self._seen.add(result.dataset_number)
            return [result]
        self._held[result.dataset_number] = result
        ready = []
        while self._next in self._held:
            ready.append(self._held.pop(self._next))
            self._next += 1
        self.handed += len(ready)
        return ready

    def done(self) -> bool:
        return self.closed and self.handed >= self.sent

    def finish(self) -> tuple[list[Result], list[int]]:
        """At the campaign's end: what is still held (behind datasets that failed for good), in
        order, and the numbers of the datasets that never got a result."""
        first = self._first or 1
        numbers = range(first, first + self.sent)
        if self.ordered:
            missing = [n for n in numbers if n >= self._next and n not in self._held]
        else:
            missing = [n for n in numbers if n not in self._seen]
        held = [self._held[n] for n in sorted(self._held)]
        self.handed += len(held)
        self._held.clear()
        return held, missing
