"""One sandbox child process seen from Trio: starting it, one request/reply at a time, killing it.

The child (`distribute.sandbox.child`) speaks length-prefixed (4-byte big-endian) msgpack maps over
its stdin/stdout. This module owns the hard wall clock: a child that does not answer in time is
killed, and a child that dies (crash, fatal V8 out-of-memory, the system's OOM killer) is explained
from the tail of its stderr. Which child serves which job is `distribute.sandbox.pool`'s business.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import msgpack
import trio

from ..errors import SandboxError

__all__ = ["START_TIMEOUT", "ChildDied", "HardTimeout", "SandboxProcess"]

START_TIMEOUT = 30.0  # a child must import mini-racer and initialise V8 within this
_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class ChildDied(Exception):
    """The child process is gone (crash, fatal OOM, killed); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HardTimeout(ChildDied):
    """The child did not answer within the wall clock and was killed."""


class SandboxProcess:
    """A running `python -m distribute.sandbox.child`; `broken` once its stream can no longer be trusted."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.stderr = stderr  # a temp file: read only to explain a crash
        self.buffer = bytearray()
        self.jobs = 0
        self.broken = False

    @classmethod
    async def start(cls) -> SandboxProcess:
        """Start a child and wait for its "ready" frame; SandboxError if it cannot start."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the child object, closed in kill())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "distribute.sandbox.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,  # a Ctrl-C on the terminal is for us, not for the children
            )
        except OSError as exc:
            stderr.close()
            raise SandboxError(f"cannot start the JavaScript sandbox: {exc}") from None
        child = cls(process, stderr)
        try:
            with trio.fail_after(START_TIMEOUT):
                await child._receive()
        except (ChildDied, trio.TooSlowError) as exc:
            await child.kill()
            raise SandboxError(f"the JavaScript sandbox did not start: {exc or 'timed out'}") from None
        except BaseException:
            await child.kill()
            raise
        return child

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.returncode is None

    async def call(self, request: dict[str, Any], wall: float) -> dict[str, Any]:
        """One request/reply; kills the child if it is silent for `wall` seconds or the call is cancelled."""
        body = msgpack.packb(request)
        self.broken = True  # until the reply is in: a cancelled call leaves the stream mid-frame
        with trio.move_on_after(wall) as scope:
            try:
                await self._stdin().send_all(_HEADER.pack(len(body)) + body)
            except trio.BrokenResourceError:
                raise ChildDied(await self._death_reason()) from None
            reply = await self._receive()
        if scope.cancelled_caught:
            await self.kill()
            raise HardTimeout("it did not answer in time and was killed")
        self.broken = False
        return reply

    def _stdin(self) -> trio.abc.SendStream:
        assert self.process.stdin is not None  # opened with stdin=PIPE
        return self.process.stdin

    async def _receive(self) -> dict[str, Any]:
        header = await self._read(4)
        reply: dict[str, Any] = msgpack.unpackb(await self._read(_HEADER.unpack(header)[0]))
        return reply

    async def _read(self, n: int) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None  # opened with stdout=PIPE
        while len(self.buffer) < n:
            try:
                chunk = await stdout.receive_some(max(1 << 16, n - len(self.buffer)))
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                raise ChildDied(await self._death_reason())
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def _death_reason(self) -> str:
        self.broken = True
        with trio.move_on_after(5):
            await self.process.wait()
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 16384))
        tail = self.stderr.read().decode("utf-8", "replace")
        await self.kill()
        code = self.process.returncode
        if "out of memory" in tail:
            return "V8 ran out of memory (fatal out-of-memory error)"
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (possibly the system's out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"the sandbox process was killed by {name}{hint}"
        return f"the sandbox process exited unexpectedly with code {code}"

    async def kill(self) -> None:
        """Kill and reap the process (idempotent, shielded: it runs during cancellation too)."""
        self.broken = True
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    await pipe.aclose()
        self.stderr.close()
