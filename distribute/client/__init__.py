"""`distribute.client`: campaigns from Python, over the server's JSON API (httpx).

`Client` blocks, `AsyncClient` is the same for Trio; both share the sans-I/O `core` (requests as
data, answers checked into the `ClientError` tree). See docs/client.md. It never imports the
server's modules, so it works against any distribute server, local or remote.
"""

from .aio import AsyncCampaign, AsyncClient
from .core import Result
from .errors import (
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    MissingResults,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from .sync import Campaign, Client

__all__ = [
    "AsyncCampaign",
    "AsyncClient",
    "BadRequest",
    "Campaign",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "MissingResults",
    "NotFound",
    "Result",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
]
