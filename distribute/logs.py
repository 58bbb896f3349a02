"""What a server writes to its log: text or JSON lines, the ids that tie them together, and no secrets.

`configure_logging(settings)` installs one handler on the root logger: `log_format` text (a line for
people) or json (one object per line: time, level, logger, message, and `request_id` or
`connection_id` when the line was written inside an HTTP request or a worker's WebSocket session).
Those ids travel in context variables (`REQUEST_ID`, `CONNECTION_ID`): they are set once where a
request or a session starts (asgi.RequestIds, the gateway) and every task started inside inherits
them, so no call needs to pass them on.

Secrets are never logged on purpose (API tokens, passwords, session cookies, reset and verification
links, the database URL's password, the SMTP password). `Redact`, a filter on the handler, is the
defence in depth: it rewrites every message and traceback, whatever logger wrote it, replacing
what looks like a secret and the configured secret values themselves with ``***``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

from .settings import Settings

__all__ = [
    "CONNECTION_ID",
    "REQUEST_ID",
    "JsonFormatter",
    "Redact",
    "configure_logging",
    "redact",
    "request_id",
]

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
CONNECTION_ID: ContextVar[str] = ContextVar("connection_id", default="")

# An incoming X-Request-Id is kept only if it is short and plain: it lands in every log line and in a
# response header, so nothing that could break a line, a header or a log parser gets through.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

MASK = "***"
_PATTERNS = (
    # Authorization header values, wherever they are quoted
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{MASK}"),
    # API tokens (storage makes them "dst_" + random)
    (re.compile(r"\bdst_[A-Za-z0-9_-]+"), f"dst_{MASK}"),
    # a URL's password: scheme://user:PASSWORD@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), rf"\1{MASK}@"),
    # password-reset and address-verification links carry their token in the path
    (re.compile(r"(/(?:reset|verify)/)[^\s/?#\"'<>]+"), rf"\1{MASK}"),
    # the console's cookies (session and CSRF), with or without the __Host- prefix
    (re.compile(r"\b((?:__Host-)?distribute_(?:session|csrf)=)[^;\s\"']+"), rf"\1{MASK}"),
    # name=value or "name": "value" pairs whose name says secret
    (
        re.compile(
            r"(?i)([\"']?\b(?:password2?|passwd|secret|token|csrf|authorization|cookie|smtp_password)[\"']?"
            r"\s*[:=]\s*[\"']?)[^\s\"',;&]+"
        ),
        rf"\1{MASK}",
    ),
)


def redact(text: str, literals: Iterable[str] = ()) -> str:
    """`text` with every secret-looking part, and each of `literals`, replaced by ``***``."""
    for literal in literals:
        text = text.replace(literal, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def request_id(incoming: str | None, trusted: bool) -> str:
    """The id of an HTTP request: the proxy's `X-Request-Id` when the peer is trusted and the id is
    short and plain (so one id follows the request from the proxy's log into ours), else a new one."""
    if trusted and incoming and _PLAIN_ID.fullmatch(incoming):
        return incoming
    return secrets.token_hex(8)


class Redact(logging.Filter):
    """Rewrite each record's message (arguments merged in) and traceback without secrets."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        super().__init__()
        # Short values would mask ordinary words; the settings' checks do not forbid them, so skip them.
        self.literals = tuple(sorted({v for v in literals if len(v) >= 4}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler reports it, as logging does
            return True
        record.msg, record.args = redact(message, self.literals), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.literals)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.literals)
        return True


class _Context(logging.Filter):
    """Copy the current request and connection ids onto each record (unless it carries its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in (("request_id", REQUEST_ID), ("connection_id", CONNECTION_ID)):
            if not getattr(record, name, ""):
                setattr(record, name, variable.get())
        return True


# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the ids, `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value != "":  # "": no request or connection around
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request, connection = getattr(record, "request_id", ""), getattr(record, "connection_id", "")
        ids = ([f"request {request}"] if request else []) + ([f"connection {connection}"] if connection else [])
        record.context = f" [{', '.join(ids)}]" if ids else ""
        return super().format(record)


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets that must never appear in a log: the SMTP and database passwords."""
    try:
        database_password = urlsplit(settings.database).password or ""
    except ValueError:
        database_password = ""
    return [value for value in (settings.smtp_password, database_password) if value]


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of this process to `stream` (stderr) as `log_format` says, at `log_level`.

    Replaces the handler an earlier call installed, so calling it again changes the format. Python's
    warnings go through logging too, so in JSON mode they are JSON lines like the rest.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_distribute", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._distribute = True  # type: ignore[attr-defined]
    handler.addFilter(_Context())
    handler.addFilter(Redact(secret_values(settings)))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else _TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)
    return handler
