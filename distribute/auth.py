"""Console authentication: password hashing, session cookies, CSRF tokens, rate limits, sign-up checks.

Pure policy and small primitives, no routes (those are in `distribute.console.accounts`):

- passwords are hashed with argon2id (argon2-cffi's defaults), in a worker thread because a hash
  takes tens of milliseconds of CPU and 64 MiB of memory on purpose; at most `HASH_CONCURRENCY`
  hashes or verifications run at once in a process, so a flood of sign-ins queues instead of
  taking the server's memory;
- the session cookie holds a random token whose SHA-256 hash is the database key
  (`storage.accounts.AccountStore`); it is `HttpOnly`, `SameSite=Lax`, and `Secure` behind TLS;
- CSRF: a signed-in form carries its session's CSRF token; a signed-out form (sign in, sign up,
  reset) carries a random token that must equal a cookie of the same value ("double submit"),
  which a cross-site attacker can neither read nor set;
- rate limits are sliding windows kept in memory, per server process;
- sign-up is guarded by a honeypot field, a signed form stamp that must be a little old, and a
  per-address rate limit: no third-party service, no JavaScript required.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "ANON_CSRF_COOKIE",
    "HASH_CONCURRENCY",
    "MIN_PASSWORD",
    "SESSION_COOKIE",
    "RateLimiter",
    "check_password",
    "cookie_name",
    "form_stamp",
    "hash_password",
    "new_csrf_token",
    "password_problem",
    "same_token",
    "stamp_problem",
    "verify_password",
]

SESSION_COOKIE = "distribute_session"
ANON_CSRF_COOKIE = "distribute_csrf"
HOST_PREFIX = "__Host-"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 would hash a megabyte happily: refuse it before it costs anything

T = TypeVar("T")

_hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended parameter set
HASH_CONCURRENCY = 2  # argon2 hashes at once per process: each one holds 64 MiB while it runs

_hash_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("argon2_limiter")


def _limiter() -> trio.CapacityLimiter:
    try:
        return _hash_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(HASH_CONCURRENCY)
        _hash_limiter.set(limiter)
        return limiter


async def _argon2(fn: Callable[..., T], *args: object) -> T:
    """Run one argon2 computation in a worker thread, at most HASH_CONCURRENCY at once."""
    return await trio.to_thread.run_sync(fn, *args, limiter=_limiter())


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so a sign-in takes as long either way."""
    return _hasher.hash(secrets.token_urlsafe(16))


def password_problem(password: str, email: str = "") -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    if email and password.strip().lower() == email.strip().lower():
        return "The password must not be your e-mail address."
    return None


async def hash_password(password: str) -> str:
    return await _argon2(_hasher.hash, password)


def check_password(password_hash: str | None, password: str) -> bool:
    """Synchronous check; a missing hash (an API-only account) still costs one verification."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await _argon2(check_password, password_hash, password)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time equality of two tokens; an empty or missing one never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def cookie_name(name: str, tls: bool) -> str:
    """A console cookie's name: over https with the `__Host-` prefix, which browsers accept only on a
    Secure cookie for path / without a Domain, so a sibling subdomain or a plain-http page cannot plant
    or overwrite it. Over plain http (development, tests) the plain name."""
    return HOST_PREFIX + name if tls else name


# --------------------------------------------------------------------------- sign-up stamp


def form_stamp(secret: bytes, now: float | None = None) -> str:
    """A value for the sign-up form's hidden field: when it was shown, signed with the server key."""
    issued = f"{now if now is not None else time.time():.3f}"
    mac = hmac.new(secret, b"signup:" + issued.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{issued}.{mac}"


def stamp_problem(secret: bytes, stamp: str, min_age: float, max_age: float = 86400.0) -> str | None:
    """Why a sign-up form's stamp is refused: forged, too old, or submitted faster than a person could."""
    if not stamp.isascii():  # a forgery: and hmac.compare_digest refuses non-ASCII strings
        return "The form has expired. Please fill it in again."
    issued, _, mac = stamp.rpartition(".")
    expected = hmac.new(secret, b"signup:" + issued.encode(), hashlib.sha256).hexdigest()[:32]
    if not mac or not hmac.compare_digest(mac, expected):
        return "The form has expired. Please fill it in again."
    try:
        age = time.time() - float(issued)
    except ValueError:
        return "The form has expired. Please fill it in again."
    if age > max_age:
        return "The form has expired. Please fill it in again."
    if age < min_age:
        return "That was quicker than a person can type. Please wait a moment and send the form again."
    return None


# --------------------------------------------------------------------------- rate limits


@dataclass
class RateLimiter:
    """At most `limit` events per key within a sliding `window` of seconds (in this process).

    Keys are strings such as "signin-ip:203.0.113.9" or "signin-email:a@b"; each key keeps at most
    `limit` timestamps, and keys are forgotten once their window has passed, so memory stays
    bounded by the traffic of one window.
    """

    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _events: dict[str, deque[float]] = field(default_factory=dict)
    _swept: float = 0.0

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def retry_after(self, *keys: str) -> float:
        """Seconds until one more event is allowed for every key (0: allowed now)."""
        now = self._now()
        wait = 0.0
        for key in keys:
            events = self._recent(key, now)
            if len(events) >= self.limit:
                wait = max(wait, events[0] + self.window - now)
        return wait

    def hit(self, *keys: str) -> None:
        now = self._now()
        self._sweep(now)
        for key in keys:
            events = self._events.setdefault(key, deque(maxlen=self.limit))
            events.append(now)

    def undo(self, *keys: str) -> None:
        """Forget each key's latest event (an attempt counted in advance that turned out fine)."""
        for key in keys:
            events = self._events.get(key)
            if events:
                events.pop()

    def clear(self, *keys: str) -> None:
        for key in keys:
            self._events.pop(key, None)

    def _now(self) -> float:
        return self.clock()

    def _sweep(self, now: float) -> None:
        if now - self._swept < self.window:
            return
        self._swept = now
        for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]:
            del self._events[key]
