"""Owner-readable wording shared by generator and kernel failures (limits as owners wrote them)."""

from __future__ import annotations

from typing import Any

__all__ = ["heap_note", "seconds", "too_large"]


def seconds(value: float) -> str:
    """5.0 -> '5', 0.25 -> '0.25'."""
    return f"{value:g}"


def heap_note(reply: dict[str, Any], heap_mib: int) -> str:
    """For a timeout: a heap well on its way to the limit hints where the time went (allocation and GC)."""
    used = reply.get("heap_used_mib") or 0
    return f" (its heap had grown to {used} MiB of its {heap_mib} MiB memory limit)" if used * 4 >= heap_mib else ""


def too_large(what: str, reply: dict[str, Any], limit: int) -> str:
    """A child's "size" failure: its JSON text (a lower bound, measured in V8) or its msgpack was over `limit`."""
    measured = "its JSON text is" if reply.get("json") else "it is"
    return f"{what} is too large: {measured} {reply.get('size', 0):,} bytes, over the limit of {limit:,} bytes"
