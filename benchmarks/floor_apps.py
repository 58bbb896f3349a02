"""Minimal WebSocket servers that answer every frame with a one-task `tasks` frame: the stack's floor.

Run as ``python -m benchmarks.floor_apps KIND`` with KIND one of:

- ``quart``: a Quart (quart-trio) app on Hypercorn, the stack distribute's /ws runs on;
- ``trio-websocket``: trio-websocket's server (wsproto underneath), no ASGI;
- ``wsproto``: one Trio task per connection feeding wsproto directly, no queues at all.

Each prints ``serving on http://127.0.0.1:PORT`` when ready. `benchmarks.floor` drives them with the
same load client as the real server, so the difference is what distribute itself costs.
"""

from __future__ import annotations

import itertools
import sys
from functools import partial

import msgpack
import trio

_ids = itertools.count(1)


def _frame() -> bytes:
    return msgpack.packb({"t": "tasks", "tasks": [[next(_ids), {"i": 1}]]})


async def _quart() -> None:
    import hypercorn.config
    import hypercorn.trio
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio(__name__)

    @app.websocket("/ws")
    async def ws() -> None:
        while True:
            await websocket.receive()
            await websocket.send(_frame())

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=trio.sleep_forever))
        print(f"serving on {binds[0]}", flush=True)


async def _trio_websocket() -> None:
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
                await ws.send_message(_frame())
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"serving on http://127.0.0.1:{server.port}", flush=True)


async def _wsproto() -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Message, Request

    async def handle(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            while data := await stream.receive_some(65536):
                ws.receive_data(data)
                out = b""
                for event in ws.events():
                    if isinstance(event, Request):
                        out += ws.send(AcceptConnection())
                    elif isinstance(event, Message):
                        out += ws.send(Message(data=_frame()))
                    elif isinstance(event, CloseConnection):
                        return
                if out:
                    await stream.send_all(out)
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(f"serving on http://127.0.0.1:{listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(handle, listeners)


APPS = {"quart": _quart, "trio-websocket": _trio_websocket, "wsproto": _wsproto}

if __name__ == "__main__":
    trio.run(APPS[sys.argv[1]])
