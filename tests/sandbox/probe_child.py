"""A stand-in sandbox child that reports what it can see and do (started through the real spawn path)."""

from __future__ import annotations

import os
import resource
import socket
import struct
import sys
from typing import Any

import msgpack

from distribute.sandbox.confine import applied

HEADER = struct.Struct(">I")


def write(out: Any, message: dict[str, Any]) -> None:
    body = msgpack.packb(message)
    out.write(HEADER.pack(len(body)) + body)
    out.flush()


def attempt(op: dict[str, Any]) -> dict[str, Any]:
    what = op["op"]
    if what == "env":
        return {"environ": dict(os.environ), "cwd": os.getcwd()}
    if what == "read":
        try:
            with open(op["path"], "rb") as file:
                return {"data": file.read(1 << 20)}
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    if what == "ids":
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
    if what == "rlimits":
        return {
            name: list(resource.getrlimit(getattr(resource, "RLIMIT_" + name)))
            for name in ("CPU", "NOFILE", "NPROC", "FSIZE", "CORE")
        }
    if what == "connect":
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(("127.0.0.1", op["port"]))
                sock.sendall(b"stolen secrets")
            return {"connected": True}
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    if what == "exec":
        try:
            os.execv("/bin/true", ["/bin/true"])
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"unknown": what}


def main() -> None:
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    write(out, {"ok": True, "ready": True, "pid": os.getpid(), "isolation": applied})
    while len(header := inp.read(4)) == 4:
        write(out, {"ok": True, **attempt(msgpack.unpackb(inp.read(HEADER.unpack(header)[0])))})
