"""Browser visits and slow tasks for the dwell-time tests, over real WebSockets and protocol v1.1.

A "visit" says `hello` exactly as the browser harness does (embed/src/session.js: `kind: "browser"`,
the embedding site, a per-tab id, its cores, throttle and workers), stays a while, hands its tasks
back with a final `release` (what the harness does on pagehide) and closes. A slow answerer is a
headless worker that holds its tasks for a while and reports that compute time.
"""

from __future__ import annotations

import itertools

import trio
from trio_websocket import open_websocket_url

from distribute import protocol as p
from tests.conftest import LiveServer
from tests.support.protocol_client import MAX_MESSAGE, receive, receive_tasks, send

SITE = "site.example"
_tabs = itertools.count(1)


def harness_client(site: str = SITE) -> dict[str, object]:
    """The `client` map of the harness's hello, for a new tab (its own id)."""
    return {"kind": "browser", "host": site, "id": f"{next(_tabs):032x}", "cores": 4, "throttle": 2, "workers": 2}


def headless_client() -> dict[str, object]:
    return {"kind": "headless", "id": f"{next(_tabs):032x}", "version": "test", "host": SITE}


async def first_tasks(server: LiveServer, campaign_id: int, slots: int, client: dict[str, object]) -> int:
    """How many tasks a new connection with this hello is given at first; it then hands them back and leaves."""
    with trio.fail_after(10):
        async with open_websocket_url(server.ws_url, max_message_size=MAX_MESSAGE) as ws:
            await send(ws, p.Hello(campaign=campaign_id, slots=slots, client=client))
            tasks = await receive_tasks(ws)
            await send(ws, p.Release(tuple(t.id for t in tasks), final=True))
    await settled(server)
    return len(tasks)


async def visit(server: LiveServer, campaign_id: int, stay: float) -> None:
    """One browser visit: takes tasks, stays `stay` seconds (the visitor reading the page), leaves."""
    async with open_websocket_url(server.ws_url, max_message_size=MAX_MESSAGE) as ws:
        await send(ws, p.Hello(campaign=campaign_id, slots=8, client=harness_client()))
        tasks = await receive_tasks(ws)
        await trio.sleep(stay)
        await send(ws, p.Release(tuple(t.id for t in tasks), final=True))


async def visits(server: LiveServer, campaign_id: int, count: int, stay: float) -> None:
    """`count` visits at once, each `stay` seconds long; returns once the server has seen them all end."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(visit, server, campaign_id, stay)
    await settled(server)


async def answer_slowly(server: LiveServer, campaign_id: int, count: int, seconds: float) -> None:
    """A headless worker takes `count` tasks, computes each for `seconds` (it says so) and leaves."""
    with trio.fail_after(30):
        async with open_websocket_url(server.ws_url, max_message_size=MAX_MESSAGE) as ws:
            await send(ws, p.Hello(campaign=campaign_id, slots=count, client=headless_client()))
            tasks: list[p.Task] = []
            while len(tasks) < count:
                message = await receive(ws)
                if isinstance(message, list):
                    tasks += message
            await send(ws, p.Release((), final=True))  # it leaves after these: no more tasks for it
            await trio.sleep(seconds)
            await send(ws, p.Results(tuple(p.Result(t.id, None, seconds * 1000.0) for t in tasks)))
        while (await server.platform.storage.counts(campaign_id)).done < count:  # any owner's campaign
            await trio.sleep(0.05)
    await settled(server)


async def settled(server: LiveServer) -> None:
    """Every connection has ended on the server's side (what it learnt from them is recorded)."""
    with trio.fail_after(10):
        while server.platform.gateway.sessions:
            await trio.sleep(0.01)
