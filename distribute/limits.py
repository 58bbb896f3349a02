"""Abuse limits as pure policy: rate meters, per-address admission, and slot allowances.

Nothing here does I/O or reads a clock: every call takes `now` (seconds, any monotonic clock), so
each policy is tested directly with explicit times. The gateway owns the instances and carries out
the verdicts (closing with 1008, granting fewer slots). What the limits are and why:

- `Meter`: two token buckets, frames and bytes received. A bucket holds `BURST_SECONDS` of its
  rate (and the byte bucket at least one frame of `max_frame_bytes`), so short bursts pass and a
  sustained flood does not.
- `Addresses`: per remote address, the connections open (capped), the tasks they hold together
  (capped) and one `Meter` shared by all of them; and the connections open in all (capped below
  the open-files limit, `connection_cap`). An IPv6 address counts as its /64 (`address_group`):
  one host usually has a whole /64 to pick addresses from.
- `SlotAllowance`: per worker identity (an address, and a client id when the worker sends one),
  how many slots a connection is trusted with. Each task that expired or was dropped unanswered
  halves it (floor 1); each answered task adds one back (so it doubles per round of answers),
  and a record with no miss for `forget_after` seconds is forgotten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .settings import Settings

__all__ = [
    "BURST_SECONDS",
    "Address",
    "Addresses",
    "ConnectionLimits",
    "Meter",
    "SlotAllowance",
    "TokenBucket",
    "address_group",
    "connection_cap",
    "identity_keys",
]

BURST_SECONDS = 2.0  # a bucket holds this many seconds of its rate


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up; starts full."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` tokens if there are that many; False (and nothing spent) if not."""
        tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


class Meter:
    """Frames and bytes received from one connection (or one address), as two token buckets."""

    __slots__ = ("bytes", "frames", "suffix")

    def __init__(
        self, frames_per_second: float, bytes_per_second: float, max_frame_bytes: int, now: float, suffix: str = ""
    ) -> None:
        self.frames = TokenBucket(frames_per_second, frames_per_second * BURST_SECONDS, now)
        self.bytes = TokenBucket(bytes_per_second, max(bytes_per_second * BURST_SECONDS, max_frame_bytes), now)
        self.suffix = suffix  # appended to the reason, e.g. " from this address"

    def over(self, size: int, now: float) -> str:
        """Count one frame of `size` bytes; the reason it breaks a limit, or "" if it does not."""
        if not self.frames.take(1.0, now):
            return f"frame rate over {_number(self.frames.rate)} frames/s{self.suffix}"
        if not self.bytes.take(size, now):
            return f"byte rate over {_number(self.bytes.rate)} bytes/s{self.suffix}"
        return ""


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:g}"


def address_group(remote: str) -> str:
    """The address every per-address limit counts `remote` under.

    IPv4 addresses count alone (an IPv4-mapped IPv6 address as its IPv4 address); an IPv6 address
    counts as its /64, which one host or home network usually has all to itself. Anything that is
    no IP address (a Unix socket, an empty string) counts as itself.
    """
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


FILES_RESERVED = 256  # open files kept for the database, logs, sandbox children and listening sockets


def connection_cap(setting: int, open_files: int) -> int:
    """The most worker connections open at once: `setting`, or (0) derived from the open-files limit.

    Every connection is one file descriptor; the process keeps at least FILES_RESERVED (or a tenth
    of the limit, whichever is more) for everything else, so a flood of connections cannot leave
    the server unable to open its database or start a sandbox. A setting above that is lowered to it.
    """
    room = max(1, open_files - max(FILES_RESERVED, open_files // 10))
    return room if setting <= 0 else min(setting, room)


@dataclass(eq=False, slots=True)
class Address:
    """One remote address: its open connections, the tasks they hold together, their shared meter."""

    meter: Meter
    key: str = ""  # its address_group
    connections: int = 0
    held: int = 0
    wakers: dict[int, Callable[[], None]] = field(default_factory=dict)  # connection id -> wake-up


class Addresses:
    """Admission per remote address and in all; an address is forgotten when its last connection closes."""

    def __init__(self, settings: Settings, max_connections: int = 0) -> None:
        self.settings = settings
        self.max_connections = max_connections or connection_cap(settings.max_connections, 1 << 30)
        self.connections = 0  # open in all
        self.by_address: dict[str, Address] = {}  # by address_group

    def admit(self, remote: str, now: float) -> Address | str:
        """Count a new connection from `remote`: its Address, or the reason it is refused."""
        if self.connections >= self.max_connections:
            return f"too many connections to this server (limit {self.max_connections})"
        key = address_group(remote)
        address = self.by_address.get(key)
        if address is None:
            s = self.settings
            meter = Meter(
                s.max_frames_per_second_per_ip,
                s.max_bytes_per_second_per_ip,
                s.max_frame_bytes,
                now,
                " from this address",
            )
            address = self.by_address[key] = Address(meter, key)
        if address.connections >= self.settings.max_connections_per_ip:
            return f"too many connections from this address (limit {self.settings.max_connections_per_ip})"
        address.connections += 1
        self.connections += 1
        return address

    def leave(self, address: Address) -> None:
        """A connection `admit` counted has closed."""
        self.connections -= 1
        address.connections -= 1
        if address.connections <= 0 and self.by_address.get(address.key) is address:
            del self.by_address[address.key]

    def room(self, address: Address) -> int:
        """How many more tasks the connections of this address may hold together."""
        return self.settings.max_tasks_per_ip - address.held


@dataclass(eq=False, slots=True)
class _Record:
    slots: int
    since: float  # time of the latest miss


class SlotAllowance:
    """How many slots a worker identity is trusted with; misses halve it, answers earn it back."""

    def __init__(self, ceiling: int, forget_after: float, max_records: int = 100_000) -> None:
        self.ceiling = ceiling
        self.forget_after = forget_after
        self.max_records = max_records
        self._records: dict[str, _Record] = {}  # oldest miss first; only identities below the ceiling

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.since >= self.forget_after:
            del self._records[key]
            return None
        return record

    def allowance(self, key: str, now: float) -> int:
        record = self._record(key, now)
        return self.ceiling if record is None else record.slots

    def granted(self, requested: int, keys: Iterable[str], now: float) -> int:
        """The slots a connection asking for `requested` gets: the smallest allowance of its keys."""
        slots = min(requested, self.ceiling)
        for key in keys:
            record = self._record(key, now)
            if record is not None and record.slots < slots:
                slots = record.slots
        return slots

    def missed(self, key: str, count: int, now: float, granted: int) -> int:
        """`count` tasks expired or were dropped unanswered by a connection granted `granted` slots."""
        if count <= 0:
            return self.allowance(key, now)
        base = min(self.allowance(key, now), max(1, granted))
        slots = max(1, base >> min(count, 62))
        self._records.pop(key, None)
        self._records[key] = _Record(slots, now)  # re-inserted: the dict stays in order of the last miss
        while len(self._records) > self.max_records:
            del self._records[next(iter(self._records))]
        return slots

    def answered(self, key: str, count: int, now: float) -> None:
        """`count` tasks were answered (a result or a kernel error): one slot back for each."""
        record = self._record(key, now)
        if record is None:
            return
        record.slots += count
        if record.slots >= self.ceiling:
            del self._records[key]


def identity_keys(remote: str, client: dict[str, object]) -> tuple[str, ...]:
    """The identities a connection's record is kept under: its address, and its client id if any."""
    identity = client.get("id")
    if isinstance(identity, str | int) and not isinstance(identity, bool) and str(identity):
        return (f"ip:{address_group(remote)}", f"id:{str(identity)[:128]}")
    return (f"ip:{address_group(remote)}",)


@dataclass(eq=False, slots=True)
class ConnectionLimits:
    """One connection's share of the limits: its meter, its address, and its liveness clock."""

    address: Address
    meter: Meter
    keys: tuple[str, ...]
    heard: float  # the latest frame, or when the connection last went from holding no task to some
    missed: set[int] = field(default_factory=set)  # held datasets already counted as expired

    def over(self, size: int, now: float) -> str:
        """Count a received frame (connection first, then its address); the broken limit or ""."""
        self.heard = now
        return self.meter.over(size, now) or self.address.meter.over(size, now)
