"""The one exception tree of distribute.

Every error that the platform raises on purpose derives from `DistributeError`, so callers
(the API, the CLI) can turn any of them into a clear message without catching bare exceptions.
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "Conflict",
    "DistributeError",
    "GenerationError",
    "KernelError",
    "LeaseLost",
    "NotFound",
    "ProtocolError",
    "SandboxError",
    "SettingsError",
    "SourceError",
    "Unauthorized",
    "ValidationError",
]


class DistributeError(Exception):
    """Base class of every error distribute raises deliberately."""


class SettingsError(DistributeError):
    """A setting has an invalid value; raised at startup, before anything is served."""


class NotFound(DistributeError):
    """The object does not exist, or belongs to somebody else (we never say which)."""


class Unauthorized(DistributeError):
    """Missing or invalid credentials."""


class ValidationError(DistributeError):
    """User input (an upload, an API body, a CLI argument) is malformed."""


class Conflict(ValidationError):
    """A well-formed request the object's state does not allow now (a closed campaign, a cancelled one): 409."""


class Busy(ValidationError):
    """Valid, but not now: try again after `retry_after` seconds (the API answers 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(ValidationError):
    """One uploaded source is refused: `field` names it ("kernel", "generator", "static_dataset", ...),
    with the line and column (1-based) where the problem is, when there is one."""

    def __init__(self, field: str, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.line = line
        self.column = column


class LeaseLost(DistributeError):
    """This server process no longer holds a lease it was working under (another process took over)."""


class ProtocolError(DistributeError):
    """A worker broke the wire protocol; `code` is the WebSocket close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SandboxError(DistributeError):
    """Untrusted JavaScript failed in the sandbox (crash, timeout, memory, bad output)."""


class GenerationError(SandboxError):
    """A dataset generator failed; the message is stored on the campaign for its owner."""


class KernelError(SandboxError):
    """A kernel threw or misbehaved while computing one dataset."""

    def __init__(self, message: str, stack: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stack = stack
        self.kind = kind  # the sandbox's kind of failure when known ("static": loadStaticDataset threw)
