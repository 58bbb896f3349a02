"""One worker connection as the gateway keeps it: the socket it speaks over (`WebSocketLike`), its state
(`Session`: its hello, the campaign it serves, the tasks it holds, who it is for replicas and credit) and a
new connection's limits (`limits_of`).

Plain records and one constructor, no I/O: the gateway (`gateway.py`) runs the loops that use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import trio

from . import protocol as p
from .errors import ProtocolError
from .limits import Address, ConnectionLimits, Meter, address_group
from .models import Campaign
from .settings import Settings
from .work.sites import SiteGrant
from .work.verification import worker_key

__all__ = ["PEER_GONE", "Session", "WebSocketLike", "limits_of"]

# What a send raises when the worker has gone: the stream is broken or closed, or Hypercorn's own
# task is busy writing the close handshake the worker just started (Hypercorn answers a close frame
# itself, concurrently with our handler). Either way there is nobody left to talk to.
PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


class WebSocketLike(Protocol):
    async def accept(self) -> None: ...
    async def receive(self) -> str | bytes: ...
    async def send(self, data: bytes) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(eq=False, slots=True)
class Session:
    id: int
    remote: str
    hello: p.Hello
    have: set[str]
    campaign: Campaign | None = None
    held: dict[int, tuple[int, int, float]] = field(default_factory=dict)  # dataset id -> (campaign, bytes, sent at)
    inflight_bytes: int = 0
    idle_sent: bool = False
    leaving: bool = False  # the worker said it is leaving (a final `release`): send it no more tasks
    pongs: list[int] = field(default_factory=list)
    event: trio.Event = field(default_factory=trio.Event)
    close: ProtocolError | None = None
    tasks_done: int = 0
    looked_up: bool = False  # storage was asked once about a campaign this process did not know
    worker: str = ""  # "connection@address", stored with every result
    host: str = ""  # the embedding site the results are credited to
    key: tuple[str, str] = ("", "")  # (worker identity or "ip:ADDRESS", address): who gets replicas
    site: SiteGrant | None = None  # the registered site its broker page verified (work/sites.py); None: anonymous

    def __post_init__(self) -> None:
        # Computed once, not once per result: both are stored with every outcome.
        self.worker = f"{self.id}@{self.remote}"
        self.host = str(self.hello.client.get("host", ""))[:200]
        # The identity a worker sends ("id" in hello's client map) is only a hint: the address
        # constrains replicas too (verify_distinct_addresses), an IPv6 address as its /64.
        group = address_group(self.remote)
        self.key = (worker_key(str(self.hello.client.get("id", ""))[:64], group), group)

    def wake(self) -> None:
        self.event.set()


def limits_of(settings: Settings, address: Address) -> ConnectionLimits:
    """A new connection's limits: its own meter, its address's shared state; keys follow its hello."""
    now = trio.current_time()
    meter = Meter(settings.max_frames_per_second, settings.max_bytes_per_second, settings.max_frame_bytes, now)
    return ConnectionLimits(address, meter, (), heard=now)
