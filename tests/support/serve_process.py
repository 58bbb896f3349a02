"""`distribute serve` as a child process of a Trio nursery: started on a free port, its URL read from
its first line, its stdout drained afterwards so it never blocks on a full pipe. For the tests that
run several servers on one database (scale-out, presence, behind nginx)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

__all__ = ["start_serve_process"]

READY = re.compile(rb"distribute serving on (http://[^\s,]+)")


async def start_serve_process(
    nursery: trio.Nursery, database: str, log: Path, env: dict[str, str] | None = None, port: int = 0
) -> tuple[trio.Process, str]:
    """Start `distribute serve --port PORT` (a free one by default) on `database` (stderr into `log`, `env`
    added to this process's environment) and return the process and its URL once it serves."""
    command = [sys.executable, "-m", "distribute", "serve", "--port", str(port), "--database", database]
    with log.open("wb") as stderr:  # the child keeps its own descriptor
        run = partial(
            trio.run_process,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            check=False,  # a server killed on purpose exits with -9
        )
        process: trio.Process = await nursery.start(run)
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(60):
        while (match := READY.search(seen)) is None:
            chunk = await process.stdout.receive_some()
            assert chunk, f"server exited before it was ready:\n{seen.decode()}\n{log.read_text()}"
            seen += chunk
    nursery.start_soon(_drain, process.stdout)
    return process, match.group(1).decode()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass
