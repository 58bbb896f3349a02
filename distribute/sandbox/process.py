"""One sandbox child process seen from Trio: starting it, one request/reply at a time, killing it.

The child (`distribute.sandbox.child`) speaks length-prefixed (4-byte big-endian) msgpack maps over
its stdin/stdout. This module owns the hard wall clock: a child that does not answer in time is
killed, and a child that dies (crash, fatal V8 out-of-memory, the system's OOM killer) is explained
from the tail of its stderr. Which child serves which job is `distribute.sandbox.pool`'s business.

A child is never trusted: every reply frame has a length limit chosen by the caller, checked on the
header before the body is read (a longer one kills the child). While a kernel runs, the child may send
"note" frames before its reply (the kernel's ctx.progress and ctx.checkpoint): `call` accepts them only
from a caller that asked for them, re-checks each one's kind, shape and size (`check_note`; a bad one
kills the child) and hands it to the caller. Every child starts through one path,
`SandboxProcess.start`: an empty environment, ``/`` as working directory, ``python -I`` and
`distribute.sandbox.confine` first (rlimits, no network, an unprivileged user when we are root, a
seccomp filter). The layers in force are logged once per process, when the first child is ready.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import msgpack
import trio

from ..errors import SandboxError
from ..plain import not_plain

__all__ = [
    "CHILD_MODULE",
    "REPLY_BYTES",
    "START_TIMEOUT",
    "ChildDied",
    "HardTimeout",
    "NoteHandler",
    "SandboxProcess",
    "check_note",
    "spawn_command",
]

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # a child must import mini-racer and initialise V8 within this
CHILD_MODULE = "distribute.sandbox.child"
REPLY_BYTES = 1 << 20  # longest reply frame by default: failures carry at most 16 KiB of message and of stack
_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from distribute.sandbox.confine import main; main(sys.argv[2:])"
_logged_isolation = False
NoteHandler = Callable[[str, float | bytes], Awaitable[None]]  # ("progress", fraction) or ("checkpoint", state)


def check_note(frame: dict[str, Any], max_state_bytes: int) -> tuple[str, float | bytes]:
    """A note frame from a child as (kind, value), or ValueError saying what is wrong with it.

    ``{"note": "progress", "f": 0..1}`` or ``{"note": "checkpoint", "state": bytes}``, where the state is
    at most `max_state_bytes` (0: checkpoints were not asked for) and one msgpack value of plain data.
    """
    kind = frame.get("note")
    if kind == "progress" and set(frame) == {"note", "f"}:
        fraction = frame["f"]
        if isinstance(fraction, int | float) and not isinstance(fraction, bool) and 0 <= fraction <= 1:
            return kind, float(fraction)
        raise ValueError("a progress note that is not a number from 0 to 1")
    if kind == "checkpoint" and set(frame) == {"note", "state"}:
        state = frame["state"]
        if not isinstance(state, bytes) or not 0 < len(state) <= max_state_bytes:
            size = len(state) if isinstance(state, bytes) else 0
            raise ValueError(f"a checkpoint note of {size:,} bytes, over the limit of {max_state_bytes:,}")
        try:
            value = msgpack.unpackb(state, raw=False, strict_map_key=True)
        except Exception as exc:  # garbage, trailing bytes, odd map keys
            raise ValueError(f"a checkpoint note that is not one msgpack value ({type(exc).__name__})") from None
        if problem := not_plain(value):
            raise ValueError(f"a checkpoint note that is not plain data ({problem})")
        return kind, state
    raise ValueError("a note of an unknown kind")


def _unprivileged() -> tuple[int, int]:
    """The (uid, gid) children run as: `nobody` when we are root, else (-1, -1) for "stay as we are"."""
    if os.geteuid() != 0:
        return -1, -1
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def spawn_command(module: str = CHILD_MODULE, jitless: bool = False) -> list[str]:
    """The command line of a child running `module` (its ``main()``) behind `distribute.sandbox.confine`."""
    uid, gid = _unprivileged()
    config = json.dumps({"uid": uid, "gid": gid, "jitless": jitless})
    return [sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, module, config]


def _log_isolation(ready: dict[str, Any]) -> None:
    global _logged_isolation
    if _logged_isolation:
        return
    _logged_isolation = True
    applied = ready.get("isolation") or {}
    network, syscalls = str(applied.get("network", "unknown")), str(applied.get("syscalls", "unknown"))
    text = (
        f"JavaScript sandbox isolation: network: {network}; system calls: {syscalls}; "
        f"user: uid {applied.get('uid')} gid {applied.get('gid')}; rlimits: {applied.get('rlimits')}"
    )
    if network.startswith("none") and syscalls.startswith("none"):
        log.warning("%s (no layer keeps a compromised child off the network)", text)
    else:
        log.info("%s", text)


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
        self.ready: dict[str, Any] = {}  # the child's first frame: its pid, its isolation

    @classmethod
    async def start(cls, module: str = CHILD_MODULE, *, jitless: bool = False) -> SandboxProcess:
        """Start a child and wait for its "ready" frame; SandboxError if it cannot start.

        `module` is what the child runs once confined (tests start probes the same way); `jitless`
        starts V8 without its JIT compilers.
        """
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the child object, closed in kill())
        try:
            process = await trio.lowlevel.open_process(
                spawn_command(module, jitless),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={},  # nothing of ours: the database URL, mail passwords and the like stay here
                cwd="/",
                start_new_session=True,  # a Ctrl-C on the terminal is for us, not for the children
            )
        except OSError as exc:
            stderr.close()
            raise SandboxError(f"cannot start the JavaScript sandbox: {exc}") from None
        child = cls(process, stderr)
        try:
            with trio.fail_after(START_TIMEOUT):
                ready = await child._receive(REPLY_BYTES)
        except (ChildDied, trio.TooSlowError) as exc:
            await child.kill()
            raise SandboxError(f"the JavaScript sandbox did not start: {exc or 'timed out'}") from None
        except BaseException:
            await child.kill()
            raise
        _log_isolation(ready)
        child.ready = ready
        return child

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.returncode is None

    async def call(
        self,
        request: dict[str, Any],
        wall: float,
        max_reply: int = REPLY_BYTES,
        on_note: NoteHandler | None = None,
        max_note_bytes: int = 0,
    ) -> dict[str, Any]:
        """One request/reply; kills the child if it is silent for `wall` seconds or the call is cancelled.

        A reply longer than `max_reply` bytes kills the child (ChildDied) before its body is read. Note
        frames before the reply go to `on_note` once `check_note` (with `max_note_bytes`) passes them;
        without `on_note`, or when one fails the check, the child is killed (ChildDied). The wall clock
        runs on across notes.
        """
        body = msgpack.packb(request)
        self.broken = True  # until the reply is in: a cancelled call leaves the stream mid-frame
        with trio.move_on_after(wall) as scope:
            try:
                await self._stdin().send_all(_HEADER.pack(len(body)) + body)
            except trio.BrokenResourceError:
                raise ChildDied(await self._death_reason()) from None
            while "note" in (reply := await self._receive(max_reply)):
                await self._note(reply, on_note, max_note_bytes)
        if scope.cancelled_caught:
            await self.kill()
            raise HardTimeout("it did not answer in time and was killed")
        self.broken = False
        return reply

    async def _note(self, frame: dict[str, Any], on_note: NoteHandler | None, max_note_bytes: int) -> None:
        try:
            if on_note is None:
                raise ValueError("a note nobody asked for")
            kind, value = check_note(frame, max_note_bytes)
        except ValueError as exc:
            await self.kill()
            raise ChildDied(f"it sent {exc} and was killed") from None
        await on_note(kind, value)

    def _stdin(self) -> trio.abc.SendStream:
        assert self.process.stdin is not None  # opened with stdin=PIPE
        return self.process.stdin

    async def _receive(self, max_reply: int) -> dict[str, Any]:
        (length,) = _HEADER.unpack(await self._read(4))
        if length > max_reply:
            await self.kill()
            raise ChildDied(f"it sent a reply of {length:,} bytes, over the limit of {max_reply:,}, and was killed")
        try:
            reply = msgpack.unpackb(await self._read(length))
        except ValueError as exc:  # msgpack's errors are ValueErrors
            await self.kill()
            raise ChildDied(f"it sent a malformed reply ({exc}) and was killed") from None
        if not isinstance(reply, dict):
            await self.kill()
            raise ChildDied("it sent a malformed reply and was killed")
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
