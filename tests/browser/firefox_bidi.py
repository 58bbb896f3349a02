"""Debian's Firefox ESR as a browser Playwright can drive over WebDriver BiDi.

Playwright drives a stock Firefox through its "moz-firefox" channel: it starts the executable with
`--remote-debugging-port=0`, reads "WebDriver BiDi listening on ws://..." from its stderr and speaks
WebDriver BiDi to it. Playwright 1.65 sends one command that Firefox 153 ESR does not know yet,
`emulation.setMediaFeaturesOverride` (to emulate `prefers-color-scheme`, which no test here uses), on
every new context, and Firefox answers "unknown command", so no context could open.

This module is the executable Playwright starts instead: it runs Firefox ESR, relays its stderr,
and sits between Playwright and Firefox as a WebDriver BiDi relay that forwards every message
unchanged, except that an "unknown command" answer to a command in `NOT_IN_ESR` becomes an empty
success. Everything else (navigation, scripts, frames, input, network events) is Firefox's own.

Run as `python tests/browser/firefox_bidi.py FIREFOX-ARGS...`; `launcher()` writes the shell
script that does so, for Playwright's `executable_path`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, open_websocket_url, serve_websocket

FIREFOX = "/usr/bin/firefox-esr"
# Commands newer Playwright sends that this Firefox ESR answers with "unknown command", and whose
# effect no test relies on.
NOT_IN_ESR = frozenset({"emulation.setMediaFeaturesOverride"})
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
MAX_MESSAGE = 256 * 1024 * 1024  # screenshots and large evaluations travel as one message


def launcher(directory: Path) -> Path:
    """Write an executable that runs this relay (with this Python) in front of Firefox ESR."""
    script = directory / "firefox-esr-bidi"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} "$@"\n')
    script.chmod(0o755)
    return script


def launch(playwright: Any, workdir: Path) -> Any:
    """Firefox ESR over WebDriver BiDi ("moz-firefox" channel) from Playwright's sync API: headless,
    with a fresh profile that Playwright makes in a temporary directory; as root too (Firefox only
    refuses when HOME is not owned by the user running it). Site isolation stays on, as in visitors'
    Firefox, so the runner frame lives in a process of its own.

    By default Firefox dispatches WebDriver BiDi input from the top-level page's process, so a click
    over a cross-origin (out-of-process) iframe, the embed frame, would reach the host page's <iframe>
    element and never the frame's button. With `remote.events.async.mouse.enabled` the mouse events
    go through the parent process like a real mouse's and reach the frame. Keys have no such switch
    in Firefox 153: key presses cannot reach a focused element inside a cross-origin frame."""
    return playwright.firefox.launch(
        channel="moz-firefox",
        executable_path=str(launcher(workdir)),
        headless=True,
        env={**os.environ, "MOZ_HEADLESS": "1"},
        firefox_user_prefs={"remote.events.async.mouse.enabled": True},
    )


def _answer(message: str, methods: dict[Any, str]) -> str:
    """Firefox's answer, or an empty success where it does not know a command listed in NOT_IN_ESR."""
    data = json.loads(message)
    if data.get("type") == "error" and data.get("error") == "unknown command":
        if methods.pop(data.get("id"), None) in NOT_IN_ESR:
            return json.dumps({"type": "success", "id": data["id"], "result": {}})
    elif "id" in data:
        methods.pop(data["id"], None)
    return message


async def _relay(upstream_url: str, request: WebSocketRequest) -> None:
    client = await request.accept()
    async with open_websocket_url(upstream_url + request.path, max_message_size=MAX_MESSAGE) as firefox:
        methods: dict[Any, str] = {}  # command id -> method, until answered

        async def to_firefox(nursery: trio.Nursery) -> None:
            try:
                while True:
                    message = await client.get_message()
                    command = json.loads(message)
                    methods[command.get("id")] = command.get("method", "")
                    await firefox.send_message(message)
            except ConnectionClosed:
                nursery.cancel_scope.cancel()

        async def to_playwright(nursery: trio.Nursery, side: WebSocketConnection) -> None:
            try:
                while True:
                    await client.send_message(_answer(await side.get_message(), methods))
            except ConnectionClosed:
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(to_firefox, nursery)
            nursery.start_soon(to_playwright, nursery, firefox)
    await client.aclose()


async def _serve_relay(upstream_url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await _relay(upstream_url, request)

    await serve_websocket(
        handler, "127.0.0.1", 0, ssl_context=None, max_message_size=MAX_MESSAGE, task_status=task_status
    )


async def main(args: list[str]) -> int:
    process = await trio.lowlevel.open_process([FIREFOX, *args], stderr=subprocess.PIPE)
    assert process.stderr is not None
    async with trio.open_nursery() as nursery:

        async def relay_stderr() -> None:
            pending = b""
            async for chunk in process.stderr:  # type: ignore[union-attr]
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    found = LISTENING.search(line)
                    if found:
                        server = await nursery.start(_serve_relay, found.group(1))
                        line = f"WebDriver BiDi listening on ws://127.0.0.1:{server.port}"
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()

        nursery.start_soon(relay_stderr)
        code = await process.wait()
        nursery.cancel_scope.cancel()
    return code


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
