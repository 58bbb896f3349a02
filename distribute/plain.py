"""Plain data: what a result may hold (`not_plain`), the rules every surface relies on.

Pure: no I/O. The wire protocol (`distribute.protocol`) decodes frames into these values and the
gateway checks every result with `not_plain` before anything else touches it; the browser harness
applies the same rules before a result leaves the worker (embed/src/scan.js).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = ["MAX_DEPTH", "OddKeys", "key_kind", "not_plain"]

MAX_DEPTH = 100  # deepest nesting of a result (embed/src/scan.js refuses deeper ones alike)


@dataclass(frozen=True, slots=True)
class OddKeys:
    """A decoded map with a key that is not a string (never a dict: such keys are never hashed)."""

    kind: str  # the msgpack type of the first such key, e.g. "int"


_SCALARS = frozenset({str, int, float, bool, type(None)})
_TEXT = frozenset({str})


class _NotPlain(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []  # innermost step first


def _kind(value: Any) -> str:
    if isinstance(value, bytes):
        return "binary data (msgpack bin)"
    if isinstance(value, msgpack.Timestamp):
        return "a msgpack timestamp"
    if isinstance(value, msgpack.ExtType):
        return f"a msgpack extension (type {value.code})"
    return type(value).__name__


def key_kind(key: Any) -> str:
    if isinstance(key, bytes):
        return "bin"
    if isinstance(key, msgpack.Timestamp):
        return "timestamp"
    if isinstance(key, msgpack.ExtType):
        return "ext"
    return type(key).__name__


def _check(value: Any, depth: int) -> None:
    """Raise _NotPlain if `value` (a list or a map at `depth`, 1 for the result) holds anything else.

    The types of a container's items are checked in C (`frozenset.issuperset(map(type, ...))`);
    only the items that are containers themselves, or not plain, are looked at one by one.
    """
    if type(value) is list:
        if not value:
            return
        if depth > MAX_DEPTH:
            raise _NotPlain(f"nested deeper than {MAX_DEPTH} levels")
        if _SCALARS.issuperset(map(type, value)):
            return
        for index, item in enumerate(value):
            if type(item) not in _SCALARS:
                try:
                    _check(item, depth + 1)
                except _NotPlain as exc:
                    exc.path.append(f"[{index}]")
                    raise
        return
    if type(value) is dict:
        if not _TEXT.issuperset(map(type, value)):
            odd = next(key for key in value if type(key) is not str)
            raise _NotPlain(f"a map key of type {key_kind(odd)} ({odd!r:.40})")
        if not value:
            return
        if depth > MAX_DEPTH:
            raise _NotPlain(f"nested deeper than {MAX_DEPTH} levels")
        if _SCALARS.issuperset(map(type, value.values())):
            return
        for key, item in value.items():
            if type(item) not in _SCALARS:
                try:
                    _check(item, depth + 1)
                except _NotPlain as exc:
                    exc.path.append(f"[{key[:40]!r}]")
                    raise
        return
    if isinstance(value, OddKeys):
        raise _NotPlain(f"a map key of type {value.kind}")
    raise _NotPlain(_kind(value))


def not_plain(value: Any) -> str:
    """Why a decoded result is not plain data, or "" if it is.

    Plain data is what every download and the console can show and what verification can compare:
    nil, booleans, integers, floats, strings, arrays, and maps with string keys, nested at most
    MAX_DEPTH levels, the rules the browser harness applies before a result leaves the worker
    (embed/src/scan.js, which also lets binary data through; the server refuses it). The reason
    says what was found and where, e.g. ``binary data (msgpack bin) at result["a"][2]``.
    """
    kind = type(value)
    if kind in _SCALARS or (kind is list and _SCALARS.issuperset(map(type, value))):
        return ""  # the common cases, without a call
    try:
        _check(value, 1)
    except _NotPlain as exc:
        steps = exc.path[::-1]
        where = "".join(steps) if len(steps) <= 40 else "".join(steps[:40]) + "…"
        return f"{exc.what} at result{where}"
    return ""
