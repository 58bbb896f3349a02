"""A stand-in sandbox child that breaks the protocol on purpose (started through the real spawn path).

The generator source of the "gen" request names the lie: ``many`` (20,000 datasets per pull), ``over-max``
(every dataset asked for, past max_datasets), ``huge-item``, ``big-batch``, ``big-frame`` (a header of
1 GiB, then silence) and ``skip-lie`` (skips more than asked). The kernel source of a "kernel" request
names a lie about notes, sent before each "run" reply: ``big-checkpoint`` (over the checkpoint limit),
``garbage-checkpoint`` (not msgpack), ``bad-progress`` (a fraction of 2) and ``odd-note`` (an unknown kind).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from typing import Any

import msgpack

HEADER = struct.Struct(">I")


def write(out: Any, message: dict[str, Any]) -> None:
    body = msgpack.packb(message)
    out.write(HEADER.pack(len(body)) + body)
    out.flush()


NOTES = {
    "big-checkpoint": lambda limit: {"note": "checkpoint", "state": msgpack.packb("x" * limit)},
    "garbage-checkpoint": lambda limit: {"note": "checkpoint", "state": b"\xc1"},
    "bad-progress": lambda limit: {"note": "progress", "f": 2.0},
    "odd-note": lambda limit: {"note": "result", "value": b"\x01"},
}


def main() -> None:
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    write(out, {"ok": True, "ready": True, "pid": os.getpid()})
    lie, max_bytes = "", 0
    while len(header := inp.read(4)) == 4:
        req = msgpack.unpackb(inp.read(HEADER.unpack(header)[0]))
        op = req.get("op")
        if op == "kernel":
            lie, max_bytes = req["kernel"], req["checkpoint_max_bytes"]
            write(out, {"ok": True})
        elif op == "run" and lie in NOTES:
            write(out, NOTES[lie](max_bytes))
            write(out, {"ok": True, "value": None, "ms": 1.0})
        elif op == "gen":
            lie, max_bytes = req["source"], req["max_dataset_bytes"]
            write(out, {"ok": True, "mode": "iterator", "count": None})
        elif op == "pull" and lie == "many":
            write(out, {"ok": True, "items": [b"\x01"] * 20_000, "done": False})
        elif op == "pull" and lie == "over-max":
            write(out, {"ok": True, "items": [b"\x01"] * req["n"], "done": False})
        elif op == "pull" and lie == "huge-item":
            write(out, {"ok": True, "items": [b"\x01" * (max_bytes + 1)], "done": False})
        elif op == "pull" and lie == "big-batch":
            limit = 3 * req["batch_json"] + max_bytes
            write(out, {"ok": True, "items": [b"\x01" * max_bytes] * (limit // max_bytes + 1), "done": False})
        elif op == "pull" and lie == "big-frame":
            out.write(HEADER.pack(1 << 30) + b"\x00" * 65536)
            out.flush()
            time.sleep(3600)
        elif op == "skip" and lie == "skip-lie":
            write(out, {"ok": True, "skipped": req["n"] + 1000, "done": False})
        elif op == "skip":
            write(out, {"ok": True, "skipped": req["n"], "done": False})
        else:
            write(out, {"ok": True})
