"""The mailbox of a kernel's ctx.progress and ctx.checkpoint, read by the sandbox child while the kernel runs.

The prelude (`prelude.js`, ``__d.mailbox``) makes one SharedArrayBuffer per kernel job, before any owner
code runs, and hands it to the child as a memoryview of its memory (mini-racer converts a
SharedArrayBuffer to a memoryview without calling into V8). While a task runs on mini-racer's V8
thread, the child's main thread reads it every POLL_SECONDS and sends what changed to the parent as
note frames. Layout (little-endian): int32 checkpoint count (odd while one is written), int32 its
length, int32 progress count, 4 bytes of padding, float64 the fraction, then the checkpoint's msgpack.
The prelude copies a checkpoint into the buffer at most every 20 ms (each is still checked and encoded
at once), so a kernel that checkpoints in a tight loop cannot keep rewriting it faster than a poll copies
it out. Owner code cannot reach the buffer (it lives in the prelude's closure), but every read is bounded and
checked as if it could, and the parent checks every note again.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ..plain import not_plain

__all__ = ["MAILBOX_DATA", "POLL_SECONDS", "Mailbox", "Note"]

POLL_SECONDS = 0.25  # how often a running kernel's mailbox is read: progress leaves at most 4 times a second
_MAILBOX = struct.Struct("<iii4xd")  # checkpoint count, its length, progress count, the fraction
MAILBOX_DATA = _MAILBOX.size  # where the checkpoint's bytes start
Note = dict[str, Any]  # a note frame: {"note": "progress", "f": x} or {"note": "checkpoint", "state": bytes}


class Mailbox:
    """The SharedArrayBuffer a kernel's ctx.progress and ctx.checkpoint write into (prelude.js, `mailbox`).

    Read by this process while the kernel runs (V8 runs on mini-racer's thread, so no callback into
    Python is needed); the isolate writes it concurrently, so each read is bounded by the buffer, a
    checkpoint counts only if its count did not change while it was copied, and a fraction outside 0..1
    is dropped.
    `poll` turns what changed into notes, paced as the browser harness paces them: progress at most every
    POLL_SECONDS, a checkpoint at most once per `interval` (the newest one written waits in the buffer).
    """

    def __init__(self, view: memoryview, limit: int, interval: float, progress: bool) -> None:
        self.view, self.limit, self.interval, self.progress = view, limit, interval, progress
        self.seen_checkpoint = self.seen_progress = 0
        self.checkpoint_at = -float("inf")

    def start(self) -> None:
        """A new task: what the previous one wrote is not news."""
        self.seen_checkpoint, _, self.seen_progress, _ = _MAILBOX.unpack_from(self.view)
        self.checkpoint_at = -float("inf")

    def poll(self, now: float) -> list[Note]:
        notes: list[Note] = []
        count, length, progress_count, fraction = _MAILBOX.unpack_from(self.view)
        if self.progress and progress_count != self.seen_progress:
            self.seen_progress = progress_count
            if 0.0 <= fraction <= 1.0:
                notes.append({"note": "progress", "f": fraction})
        if (
            self.limit
            and count != self.seen_checkpoint
            and count % 2 == 0
            and now - self.checkpoint_at >= self.interval
        ):
            state = bytes(self.view[MAILBOX_DATA : MAILBOX_DATA + max(0, min(length, self.limit))])
            if _MAILBOX.unpack_from(self.view)[0] == count:  # not rewritten while it was copied
                self.seen_checkpoint, self.checkpoint_at = count, now
                if len(state) == length and _plain_msgpack(state):
                    notes.append({"note": "checkpoint", "state": state})
        return notes

    def close(self) -> None:
        self.view.release()  # before the isolate (and the buffer's memory) goes


def _plain_msgpack(state: bytes) -> bool:
    """What the parent accepts (`distribute.sandbox.process.check_note`): anything else is not sent."""
    try:
        return not not_plain(msgpack.unpackb(state, raw=False, strict_map_key=True))
    except Exception:  # garbage, trailing bytes, odd map keys
        return False
