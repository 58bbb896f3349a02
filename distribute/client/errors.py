"""The client's exception tree: every failure the server reports, with its message and HTTP status.

`ClientError` is the one base class to catch; the subclasses name the statuses a caller may want to
treat apart (a 404 campaign, a 409 transition the campaign's state refuses, a refused token).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "MissingResults",
    "NotFound",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
]


class ClientError(Exception):
    """A request the server refused or could not answer: `message` is the server's own words
    (its JSON `error`), `status` the HTTP status (None when no answer came), `body` the decoded
    JSON answer when there was one."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.message = message
        self.status = status
        self.body = body


class BadRequest(ClientError):
    """400: the request (an upload, an option, a dataset) was refused; `body` may name the `field`."""


class Unauthorized(ClientError):
    """401: no token, or a token the server does not know (or has revoked)."""


class NotFound(ClientError):
    """404: no such campaign among the token owner's own."""


class Conflict(ClientError):
    """409: the campaign's state forbids it (adding to a closed campaign, resuming a cancelled one)."""


class TooManyRequests(ClientError):
    """429: back-pressure or a quota; `retry_after` is the server's Retry-After in seconds, if any."""

    def __init__(self, message: str, status: int | None = 429, body: Any = None, retry_after: float | None = None):
        super().__init__(message, status, body)
        self.retry_after = retry_after


class ServerError(ClientError):
    """5xx: the server failed (or a proxy in front of it did)."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection broke, for longer than the client retries."""


class MissingResults(ClientError):
    """A `map` ended without a result for some datasets (they failed on every try): their numbers."""

    def __init__(self, numbers: list[int]) -> None:
        shown = ", ".join(map(str, numbers[:20])) + (" …" if len(numbers) > 20 else "")
        super().__init__(f"{len(numbers)} datasets ended without a result (failed): {shown}")
        self.numbers = numbers


BY_STATUS: dict[int, type[ClientError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict}
